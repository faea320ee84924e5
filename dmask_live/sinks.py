"""Where masked frames go: a virtual webcam, a video file, or memory (tests, benchmarks).

Sinks form a registry like pyvirtualcam's backends: ``open_sink`` tries the names it is
given in order and raises one :class:`SinkUnavailableError` listing every failure, with the
exact set-up steps for this platform when no virtual camera could be opened.

Every sink checks its input at the boundary (dtype, shape, layout) with a precise message,
because a sink is the last place where a wrong frame could still be stopped.  The callers
(``dmask_live.vcam``) only ever pass ``MaskedFrame.image`` or the pipeline's neutral frame.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class SinkUnavailableError(RuntimeError):
    """No sink in the requested list could be opened; the message lists every failure."""


def check_frame(frame: np.ndarray, width: int, height: int) -> None:
    """Refuse anything but a C-contiguous ``(height, width, 3)`` uint8 RGB array."""
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"unexpected frame type: {type(frame).__name__} != numpy.ndarray")
    if frame.dtype != np.uint8:
        raise TypeError(f"unexpected frame dtype: {frame.dtype} != uint8")
    if frame.shape != (height, width, 3):
        raise ValueError(f"unexpected frame shape: {frame.shape} != {(height, width, 3)} (height, width, 3)")
    if not frame.flags.c_contiguous:
        raise ValueError("unexpected frame layout: not C-contiguous (use numpy.ascontiguousarray)")


def virtual_camera_setup_help(system: str | None = None) -> str:
    """The exact steps that make a virtual camera appear on this platform."""
    system = system or platform.system()
    if system == "Linux":
        return (
            "Set up a v4l2loopback virtual camera (Debian/Ubuntu package v4l2loopback-dkms):\n"
            "    sudo apt install v4l2loopback-dkms\n"
            "    sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=dmask-live\n"
            "exclusive_caps=1 is required for Chrome-based apps (Meet in Chrome, Teams, Zoom's web client).\n"
            "Then pass the new device if it is not the first one: --device /dev/videoN "
            "(v4l2-ctl --list-devices shows it)."
        )
    if system in ("Windows", "Darwin"):
        return (
            "Install OBS Studio (https://obsproject.com), open it once and click 'Start Virtual Camera', "
            "then stop it and close OBS; 'OBS Virtual Camera' then appears to pyvirtualcam and to "
            "Zoom, Teams and Meet."
        )
    return f"No virtual camera support is known for platform {system!r}; use --sink file instead."


class FrameSink:
    """Interface of a sink: constructed ready to use, then ``send`` frames, then ``close``.

    Subclasses implement ``_write(frame, timestamp)``; the boundary checks live here.
    """

    name = "sink"

    def __init__(self, *, width: int, height: int, fps: float, device: str | None = None, **kw) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        self.width = int(width)
        self.height = int(height)
        self.fps = float(fps)
        self.device = device or ""
        self.frames_sent = 0
        self._closed = False

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Send one RGB frame; ``timestamp`` (seconds) is the media time when the sink records it."""
        if self._closed:
            raise RuntimeError(f"{self.name} sink is closed")
        check_frame(frame, self.width, self.height)
        self._write(frame, timestamp)
        self.frames_sent += 1

    def close(self) -> None:
        """Release the device or file; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _write(self, frame: np.ndarray, timestamp: float | None) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def __enter__(self) -> FrameSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PyVirtualCamSink(FrameSink):
    """A system virtual webcam through pyvirtualcam (v4l2loopback, OBS Virtual Camera)."""

    name = "pyvirtualcam"

    def __init__(self, *, width: int, height: int, fps: float, device: str | None = None, **kw) -> None:
        super().__init__(width=width, height=height, fps=fps, device=device)
        import pyvirtualcam

        backend = kw.get("backend")
        self._camera = pyvirtualcam.Camera(
            width=self.width, height=self.height, fps=self.fps,
            fmt=pyvirtualcam.PixelFormat.RGB, device=device, backend=backend,
        )
        self.device = self._camera.device
        log.info("virtual camera %s (%s backend) %dx%d @ %.3g fps",
                 self.device, self._camera.backend, self.width, self.height, self.fps)

    def _write(self, frame: np.ndarray, timestamp: float | None) -> None:
        self._camera.send(frame)

    def _release(self) -> None:
        self._camera.close()


class FileSink(FrameSink):
    """Writes the masked stream to a video file with PyAV (H.264 when available).

    ``device`` is the output path.  Timestamps are the wall-clock time since the sink
    opened, so the file plays back as a viewer of the virtual camera saw it.
    """

    name = "file"
    CODECS = ("libx264", "mpeg4")

    def __init__(self, *, width: int, height: int, fps: float, device: str | None = None, **kw) -> None:
        super().__init__(width=width, height=height, fps=fps, device=device)
        import av

        if not device:
            raise ValueError("the file sink needs an output path (--device masked.mp4)")
        path = Path(device)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output folder does not exist: {path.parent}")
        self._container = av.open(str(path), mode="w")
        self._stream = self._add_stream(av)
        self._start = time.monotonic()
        self._last_pts = -1
        self._av = av

    def _add_stream(self, av):
        errors = []
        even = self.width % 2 == 0 and self.height % 2 == 0
        for codec in self.CODECS:
            if codec not in av.codecs_available:
                errors.append(f"{codec}: not in this PyAV build")
                continue
            try:
                stream = self._container.add_stream(codec, rate=Fraction(round(self.fps * 1000), 1000))
                stream.width, stream.height = self.width, self.height
                stream.pix_fmt = "yuv420p" if even else "yuv444p"
                stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)  # wall-clock ms
                if codec == "libx264":
                    stream.options = {"preset": "veryfast", "tune": "zerolatency"}
                return stream
            except Exception as exc:  # noqa: BLE001 - each failure is reported below
                errors.append(f"{codec}: {exc}")
        self._container.close()
        raise RuntimeError("no usable video encoder: " + "; ".join(errors))

    def _write(self, frame: np.ndarray, timestamp: float | None) -> None:
        av_frame = self._av.VideoFrame.from_ndarray(frame, format="rgb24")
        pts = int(round((time.monotonic() - self._start) * 1000))
        pts = max(pts, self._last_pts + 1)  # strictly increasing, whatever the clock did
        av_frame.pts, av_frame.time_base = pts, Fraction(1, 1000)
        self._last_pts = pts
        for packet in self._stream.encode(av_frame):
            self._container.mux(packet)

    def _release(self) -> None:
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()


class MemorySink(FrameSink):
    """Keeps what was sent, in memory, for tests and benchmarks (``test``), or only counts (``null``).

    ``records`` holds one ``(send_time_monotonic, timestamp)`` per frame; ``frames`` holds
    copies of the frames when ``keep_frames`` (at most ``max_frames``, the newest kept).
    """

    name = "test"

    def __init__(self, *, width: int, height: int, fps: float, device: str | None = None,
                 keep_frames: bool = True, max_frames: int = 300, **kw) -> None:
        super().__init__(width=width, height=height, fps=fps, device=device or "memory")
        self.keep_frames = keep_frames
        self.max_frames = max_frames
        self.frames: list[np.ndarray] = []
        self.records: list[tuple[float, float | None]] = []

    def _write(self, frame: np.ndarray, timestamp: float | None) -> None:
        self.records.append((time.monotonic(), timestamp))
        if self.keep_frames:
            self.frames.append(frame.copy())
            if len(self.frames) > self.max_frames:
                del self.frames[0]


class NullSink(MemorySink):
    name = "null"

    def __init__(self, **kw) -> None:
        kw.setdefault("keep_frames", False)
        super().__init__(**kw)


SinkFactory = Callable[..., FrameSink]
SINKS: dict[str, SinkFactory] = {}


def register_sink(name: str, factory: SinkFactory) -> None:
    """Register (or replace) a sink under ``name``."""
    SINKS[name] = factory


register_sink("pyvirtualcam", PyVirtualCamSink)
register_sink("file", FileSink)
register_sink("test", MemorySink)
register_sink("null", NullSink)

VIRTUAL_CAMERA_SINKS = frozenset({"pyvirtualcam"})


def parse_sink_names(spec: str | Sequence[str] | None) -> list[str]:
    """``"pyvirtualcam,file"`` → ``["pyvirtualcam", "file"]``; None → the default list."""
    if spec is None:
        return ["pyvirtualcam"]
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise ValueError("no sink named")
    return names


def open_sink(names: str | Sequence[str] | None, *, width: int, height: int, fps: float,
              device: str | None = None, **kw) -> FrameSink:
    """Open the first sink of ``names`` that works; else one error listing every failure."""
    errors: list[str] = []
    tried_virtual_camera = False
    for name in parse_sink_names(names):
        factory = SINKS.get(name)
        if factory is None:
            errors.append(f"'{name}' sink: unknown (known: {', '.join(sorted(SINKS))})")
            continue
        tried_virtual_camera |= name in VIRTUAL_CAMERA_SINKS
        try:
            return factory(width=width, height=height, fps=fps, device=device, **kw)
        except Exception as exc:  # noqa: BLE001 - every failure goes into the combined message
            detail = str(exc).strip().replace("\n", "\n    ") or type(exc).__name__
            errors.append(f"'{name}' sink: {detail}")
    message = "no output could be opened:\n  " + "\n  ".join(errors)
    if tried_virtual_camera:
        message += "\n\n" + virtual_camera_setup_help()
    raise SinkUnavailableError(message)
