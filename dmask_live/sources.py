"""Frames in: a camera (PyAV's v4l2 / avfoundation / dshow inputs) or a video file.

A :class:`FrameReader` thread drains a source into a one-slot :class:`LatestFrame`: the mask
loop always takes the newest frame and every frame it never took is counted as dropped
(real-time paths never queue).  Read errors (camera busy, unplugged) are reported to the
holder and the reader keeps trying to reopen the camera, so the loop can send the neutral
frame meanwhile and pick the camera up again when it comes back.

Raw frames live only in memory here: nothing in this module writes or logs pixels.
"""

from __future__ import annotations

import errno
import logging
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """The source cannot deliver frames now (missing, busy, unplugged, unreadable)."""


class SourceEnded(Exception):
    """The source reached its end (a file without ``loop``)."""


@dataclass(frozen=True)
class SourceFrame:
    """One input frame: RGB pixels, media time in seconds, and when it arrived (monotonic)."""

    rgb: np.ndarray
    timestamp: float
    index: int
    arrived: float


def default_camera(system: str | None = None) -> str | None:
    """The first camera on this platform, as PyAV's input format names it (None: must be given)."""
    system = system or platform.system()
    return {"Linux": "/dev/video0", "Darwin": "0"}.get(system)


def camera_format(system: str | None = None) -> str | None:
    system = system or platform.system()
    return {"Linux": "v4l2", "Darwin": "avfoundation", "Windows": "dshow"}.get(system)


def _hint(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code == errno.EBUSY:
        return " (camera busy: another application is using it; close that application)"
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return " (no such camera: is it plugged in? list cameras with `v4l2-ctl --list-devices` on Linux)"
    if code in (errno.EACCES, errno.EPERM):
        return " (permission denied: on Linux add yourself to the 'video' group)"
    return ""


class AvSource:
    """A PyAV input: a camera device or a file.

    Files are paced like a camera (``realtime``): each frame is released at its
    presentation time after the first, so a slow mask loop drops frames exactly as it
    would with a live camera.  ``loop`` restarts a file at its end with timestamps that
    keep increasing.
    """

    def __init__(self, url: str, *, input_format: str | None = None, options: dict | None = None,
                 realtime: bool = False, loop: bool = False, label: str | None = None) -> None:
        self.url = url
        self.label = label or url
        self.input_format = input_format
        self.options = dict(options or {})
        self.realtime = realtime
        self.loop = loop
        self._stop = threading.Event()
        self._container = None
        self._frames = None
        self._index = 0
        self._loop_offset = 0.0
        self._last_time = None
        self._pace_start: float | None = None
        self._open()
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 30
        self.fps = float(rate)
        self.size = (int(stream.codec_context.width), int(stream.codec_context.height))

    def _open(self) -> None:
        import av

        try:
            self._container = av.open(self.url, format=self.input_format, options=self.options,
                                      timeout=(5.0, 5.0))
        except Exception as exc:  # noqa: BLE001 - PyAV raises many OSError/FFmpegError kinds
            raise SourceError(f"{self.label} unavailable: {exc}{_hint(exc)}") from exc
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.label} has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)

    def read(self) -> SourceFrame:
        """The next frame; blocks for a camera's next frame or a file's presentation time."""
        frame = self._next_av_frame()
        media_time = frame.time if frame.time is not None else self._index / self.fps
        timestamp = media_time + self._loop_offset
        self._last_time = timestamp
        arrived = self._pace(timestamp)
        rgb = frame.to_ndarray(format="rgb24")
        out = SourceFrame(np.ascontiguousarray(rgb), timestamp, self._index, arrived)
        self._index += 1
        return out

    def _next_av_frame(self):
        import av

        for _attempt in range(2):
            try:
                return next(self._frames)
            except (StopIteration, av.error.EOFError):
                if not self.loop or self._index == 0:
                    raise SourceEnded(f"{self.label}: end of stream") from None
                self._restart()
            except Exception as exc:  # noqa: BLE001 - read errors: unplugged, I/O
                raise SourceError(f"{self.label} read failed: {exc}{_hint(exc)}") from exc
        raise SourceEnded(f"{self.label}: no frames after restart")

    def _restart(self) -> None:
        """Back to the start of the file; timestamps go on from the last one."""
        self._container.close()
        self._loop_offset = (self._last_time or 0.0) + 1.0 / self.fps
        self._open()
        first = self._container.streams.video[0].start_time
        if first is not None:
            self._loop_offset -= float(first * self._container.streams.video[0].time_base)

    def _pace(self, timestamp: float) -> float:
        now = time.monotonic()
        if not self.realtime:
            return now
        if self._pace_start is None:
            self._pace_start = now - timestamp
        due = self._pace_start + timestamp
        if due > now:
            self._stop.wait(due - now)
            return due
        return now

    def interrupt(self) -> None:
        """Wake a paced read early (the reader is stopping)."""
        self._stop.set()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def open_camera(device: str | None, *, width: int, height: int, fps: float,
                input_format: str | None = None, extra_options: dict | None = None) -> AvSource:
    """Open a camera by PyAV input format (v4l2, avfoundation, dshow; ``lavfi`` for tests).

    ``extra_options`` go to the FFmpeg input as given, e.g. ``{"input_format": "mjpeg"}`` for
    webcams that deliver 720p at 30 fps only as MJPEG.
    """
    input_format = input_format or camera_format()
    device = device or default_camera()
    if input_format is None:
        raise SourceError(f"no camera input known for platform {platform.system()!r}; use --source FILE")
    if device is None:
        raise SourceError(
            "no default camera on this platform: pass --camera 'video=<camera name>' "
            "(names: ffmpeg -list_devices true -f dshow -i dummy)"
        )
    options = {}
    if input_format != "lavfi":
        options = {"video_size": f"{width}x{height}", "framerate": f"{fps:g}"}
    options.update(extra_options or {})
    if input_format == "avfoundation" and ":" not in device:
        device = f"{device}:none"  # video only, no microphone
    return AvSource(device, input_format=input_format, options=options, label=f"camera {device}")


def open_file(path: str | Path, *, loop: bool = False, realtime: bool = True) -> AvSource:
    """A video file played like a camera (paced at its own frame rate unless ``realtime=False``)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"source file not found: {path}")
    return AvSource(str(path), realtime=realtime, loop=loop, label=f"source {path.name}")


@dataclass(frozen=True)
class HolderSnapshot:
    received: int
    dropped: int
    error: str | None
    ended: bool
    last_arrival: float | None


class LatestFrame:
    """A one-slot holder: ``put`` replaces (counting a drop), ``take`` gets the newest."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: SourceFrame | None = None
        self._received = 0
        self._dropped = 0
        self._error: str | None = None
        self._ended = False
        self._last_arrival: float | None = None

    def put(self, frame: SourceFrame) -> None:
        with self._cond:
            if self._frame is not None:
                self._dropped += 1
            self._frame = frame
            self._received += 1
            self._error = None
            self._last_arrival = frame.arrived
            self._cond.notify_all()

    def take(self, timeout: float) -> SourceFrame | None:
        """The newest frame not taken yet, or None after ``timeout`` s / at the end."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._ended, timeout)
            frame, self._frame = self._frame, None
            return frame

    def report_error(self, message: str) -> None:
        with self._cond:
            self._error = message
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def snapshot(self) -> HolderSnapshot:
        with self._cond:
            return HolderSnapshot(self._received, self._dropped, self._error,
                                  self._ended and self._frame is None, self._last_arrival)


class FrameReader(threading.Thread):
    """Drains a source into a :class:`LatestFrame`; reopens it after errors when ``retry``."""

    def __init__(self, open_source: Callable[[], object], holder: LatestFrame, *, retry: bool = True,
                 retry_interval: float = 1.0, source=None) -> None:
        super().__init__(name="dmask-frame-reader", daemon=True)
        self._open_source = open_source
        self._holder = holder
        self._retry = retry
        self._retry_interval = retry_interval
        self._source = source
        self._stop_event = threading.Event()
        self._last_timestamp: float | None = None
        self._offset = 0.0

    def stop(self) -> None:
        self._stop_event.set()
        source = self._source
        if source is not None and hasattr(source, "interrupt"):
            source.interrupt()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                if self._source is None and not self._reopen():
                    continue
                try:
                    frame = self._source.read()
                except SourceEnded:
                    break
                except Exception as exc:  # noqa: BLE001 - any read failure means "camera lost"
                    self._lost(exc)
                    continue
                self._holder.put(self._monotonic(frame))
        finally:
            self._close_source()
            self._holder.end()

    def _reopen(self) -> bool:
        try:
            self._source = self._open_source()
            return True
        except Exception as exc:  # noqa: BLE001
            self._holder.report_error(str(exc) if isinstance(exc, SourceError) else f"source failed: {exc}")
            if not self._retry:
                self._stop_event.set()
            else:
                self._stop_event.wait(self._retry_interval)
            return False

    def _lost(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, SourceError) else f"source read failed: {exc}"
        self._holder.report_error(message)
        self._close_source()
        if not self._retry:
            self._stop_event.set()
        else:
            self._stop_event.wait(self._retry_interval)

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            try:
                source.close()
            except Exception:  # noqa: BLE001 - closing a lost device may fail again
                log.debug("closing the source failed", exc_info=True)

    def _monotonic(self, frame: SourceFrame) -> SourceFrame:
        """Timestamps keep increasing across reconnects (a camera restarts its clock)."""
        timestamp = frame.timestamp + self._offset
        if self._last_timestamp is not None and timestamp <= self._last_timestamp:
            self._offset += self._last_timestamp - timestamp + 1e-3
            timestamp = frame.timestamp + self._offset
        self._last_timestamp = timestamp
        if timestamp == frame.timestamp:
            return frame
        return SourceFrame(frame.rgb, timestamp, frame.index, frame.arrived)
