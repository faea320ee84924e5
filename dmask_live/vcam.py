"""``dmask-live vcam``: the mask as a webcam for Zoom, Teams and Meet.

camera (reader thread) → one-slot newest-frame holder → mask loop (this thread, which owns
the pipeline's GL context) → sink (pyvirtualcam, file, memory).  The camera's clock paces the
loop; while the camera is missing, busy or unplugged the loop sends the neutral frame at
``--fps`` until frames come back.  Only ``MaskedFrame.image`` or the neutral frame ever reach
a sink, and both are checked there (dtype, shape) first.

Exit codes: 0 done, 1 failure while running, 3 no output (no virtual camera), 4 no camera /
source, 5 the masking pipeline could not start, 130 interrupted before the loop ran.

Examples::

    dmask-live vcam                                    # first camera → first virtual camera
    dmask-live vcam --camera /dev/video2 --device /dev/video10 --width 1280 --height 720 \
        --camera-option input_format=mjpeg --metrics ocular.jsonl
    dmask-live vcam --source demo.mp4 --loop --sink file --device masked.mp4 --duration 10
    dmask-live vcam --masker neutral --frames 100      # check the virtual camera without models
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from dmask_live.sinks import FrameSink, SinkUnavailableError, check_frame, open_sink
from dmask_live.sources import (
    FrameReader,
    LatestFrame,
    SourceError,
    SourceFrame,
    default_camera,
    open_camera,
    open_file,
)
from dmask_live.types import AvatarState, MaskedFrame, OcularMetrics

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_NO_SINK, EXIT_NO_SOURCE, EXIT_NO_MASKER = 0, 1, 3, 4, 5


class Masker(Protocol):
    """What the loop needs from ``dmask_live.pipeline.MaskPipeline``."""

    def process(self, rgb: np.ndarray, timestamp: float) -> MaskedFrame: ...

    def neutral_frame(self, size: tuple[int, int]) -> np.ndarray: ...

    def close(self) -> None: ...


class MaskerUnavailableError(RuntimeError):
    """The masking pipeline could not be created (not installed, models missing, no GL)."""


class NeutralMasker:
    """Sends only the neutral frame: checks a set-up without models; the benchmark's anchor."""

    def __init__(self, output_size: tuple[int, int], gray: int = 96) -> None:
        self.output_size = output_size
        self._neutral = self.neutral_frame(output_size, gray)

    def neutral_frame(self, size: tuple[int, int], gray: int = 96) -> np.ndarray:
        width, height = size
        return np.full((height, width, 3), gray, np.uint8)

    def process(self, rgb: np.ndarray, timestamp: float) -> MaskedFrame:
        return MaskedFrame(
            image=self._neutral,
            state=AvatarState.untracked(self.output_size, timestamp),
            metrics=OcularMetrics(timestamp=timestamp, tracked=False),
        )

    def close(self) -> None:
        pass


def pipeline_masker_factory(output_size: tuple[int, int], *, placement: str = "follow",
                            threads: int = 1) -> Callable[[], Masker]:
    """A factory that builds the real pipeline (on the calling thread: it owns a GL context)."""

    def make() -> Masker:
        try:
            from dmask_live.pipeline import MaskPipeline

            return MaskPipeline(output_size=output_size, placement=placement, threads=threads)
        except ImportError as exc:
            raise MaskerUnavailableError(f"the masking pipeline is not installed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - models missing, GL unavailable, ...
            raise MaskerUnavailableError(
                f"the masking pipeline could not start: {exc}\n"
                "Build the landmark models first with `dmask-live models`."
            ) from exc

    return make


@dataclass
class LoopConfig:
    output_size: tuple[int, int]  # (width, height) of every frame sent
    fps: float  # pace of neutral frames while the camera is away; the camera paces the rest
    max_frames: int | None = None
    duration: float | None = None
    stall_timeout: float = 1.0  # no frame for this long → camera counted as gone
    metrics_path: Path | None = None
    status: StatusLine | None = None
    preview: Preview | None = None


@dataclass
class LoopStats:
    frames_sent: int = 0
    masked_frames: int = 0
    neutral_frames: int = 0
    tracked_frames: int = 0
    mask_errors: int = 0
    received: int = 0
    dropped: int = 0
    source_outages: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    first_send: float | None = None  # monotonic seconds
    last_send: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # per sent frame: "masked" or "neutral"

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms, np.float64)
        p50, p95 = (np.percentile(lat, [50, 95]) if lat.size else (np.nan, np.nan))
        return {
            "frames_sent": self.frames_sent, "masked_frames": self.masked_frames,
            "neutral_frames": self.neutral_frames, "tracked_frames": self.tracked_frames,
            "mask_errors": self.mask_errors, "received": self.received, "dropped": self.dropped,
            "source_outages": self.source_outages, "elapsed_s": round(self.elapsed_s, 3),
            "fps_sent": self._fps_sent(),
            "latency_ms_p50": _round(p50), "latency_ms_p95": _round(p95),
        }


    def _fps_sent(self) -> float | None:
        """Frames per second between the first and the last frame sent."""
        if self.frames_sent < 2 or self.last_send is None or self.last_send <= self.first_send:
            return None
        return round((self.frames_sent - 1) / (self.last_send - self.first_send), 2)


def _round(value: float) -> float | None:
    return None if value != value else round(float(value), 2)


class StatusLine:
    """One console line: rewritten in place on a TTY, a periodic log line otherwise."""

    def __init__(self, stream=None, *, tty: bool | None = None, log_interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = 0.25 if self.tty else log_interval
        self._sends: deque[float] = deque(maxlen=120)
        self._latencies: deque[float] = deque(maxlen=30)
        self._last_shown = 0.0
        self._width = 0

    def record(self, now: float, latency_ms: float | None) -> None:
        self._sends.append(now)
        if latency_ms is not None:
            self._latencies.append(latency_ms)

    def update(self, now: float, state: str, dropped: int, force: bool = False) -> None:
        if not force and now - self._last_shown < self.interval:
            return
        self._last_shown = now
        recent = [t for t in self._sends if now - t <= 1.0]
        latency = f"{np.median(self._latencies):5.0f}" if self._latencies else "    -"
        line = f"dmask-live vcam | {len(recent):3d} fps | latency {latency} ms | {state} | dropped {dropped}"
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self.stream.flush()
            self._width = len(line)
        else:
            log.info("%s", line)

    def break_line(self) -> None:
        """End the in-place line so a log message that follows starts on its own line."""
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def finish(self) -> None:
        self.break_line()


class Preview:
    """A local window showing the *masked* output: OpenCV's GUI when built in, else Tk.

    opencv-python-headless has no GUI; Tk needs a display.  When neither works the preview
    is turned off with one clear warning and the virtual camera goes on.
    """

    def __init__(self, title: str = "dmask-live (masked output)") -> None:
        self.title = title
        self._show = None
        errors = []
        for opener in (self._open_cv2, self._open_tk):
            try:
                self._show = opener()
                break
            except Exception as exc:  # noqa: BLE001 - report every failure together
                last_line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                errors.append(f"{opener.__name__[6:]}: {last_line}")
        if self._show is None:
            log.warning("--preview unavailable (%s). The preview needs a GUI build of OpenCV "
                        "(pip install opencv-python) or Tk with a display; continuing without it.",
                        "; ".join(errors))

    def _open_cv2(self):
        import cv2

        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)

        def show(image: np.ndarray) -> None:
            cv2.imshow(self.title, image[:, :, ::-1])
            cv2.waitKey(1)

        self._close = lambda: cv2.destroyWindow(self.title)
        return show

    def _open_tk(self):
        import tkinter

        root = tkinter.Tk()
        root.title(self.title)
        label = tkinter.Label(root)
        label.pack()

        def show(image: np.ndarray) -> None:
            height, width = image.shape[:2]
            ppm = f"P6 {width} {height} 255 ".encode() + image.tobytes()
            photo = tkinter.PhotoImage(data=ppm, format="PPM")
            label.configure(image=photo)
            label.image = photo  # keep a reference: Tk does not
            root.update()

        self._close = root.destroy
        return show

    def show(self, image: np.ndarray) -> None:
        if self._show is None:
            return
        try:
            self._show(image)
        except Exception as exc:  # noqa: BLE001 - a closed window must not stop the camera
            log.warning("preview closed (%s); the virtual camera goes on", exc)
            self._show = None

    def close(self) -> None:
        if self._show is not None:
            self._show = None
            try:
                self._close()
            except Exception:  # noqa: BLE001
                pass


class _Loop:
    """State of one run of the mask loop; see :func:`run_loop`."""

    def __init__(self, holder: LatestFrame, sink: FrameSink, masker: Masker, config: LoopConfig) -> None:
        self.holder, self.sink, self.masker, self.config = holder, sink, masker, config
        self.stats = LoopStats()
        width, height = config.output_size
        self.neutral = np.ascontiguousarray(masker.neutral_frame((width, height)))
        check_frame(self.neutral, width, height)
        self.start = time.monotonic()
        self.source_error: str | None = None
        self.source_away = False
        self.tracked = False
        self.metrics_file = open(config.metrics_path, "w", encoding="utf-8") if config.metrics_path else None

    def done(self, now: float) -> bool:
        cfg = self.config
        if cfg.max_frames is not None and self.stats.frames_sent >= cfg.max_frames:
            return True
        return cfg.duration is not None and now - self.start >= cfg.duration

    def step(self) -> bool:
        """Wait for the newest frame (at most one frame interval) and send one frame; False at the end."""
        frame = self.holder.take(timeout=1.0 / self.config.fps)
        now = time.monotonic()
        snap = self.holder.snapshot()
        self.stats.received, self.stats.dropped = snap.received, snap.dropped
        if frame is not None:
            self._source_back()
            self._send_masked(frame)
        elif snap.ended:
            if snap.error:  # a source that is not retried (a file) failed: say why the run ends
                self._break_status()
                log.error("%s; stopping", snap.error)
            return False
        else:
            last = snap.last_arrival if snap.last_arrival is not None else self.start
            if snap.error or now - last > self.config.stall_timeout:
                self._source_gone(snap.error or f"no frame for {now - last:.1f} s")
                self._send(self.neutral, None, "neutral", None)
        if self.config.status is not None:
            self.config.status.update(time.monotonic(), self._state_text(), snap.dropped)
        return True

    def _send_masked(self, frame: SourceFrame) -> None:
        try:
            masked = self.masker.process(frame.rgb, frame.timestamp)
            image = self._checked_image(masked, frame)
        except Exception as exc:  # noqa: BLE001 - a masking failure shows the neutral frame, never input
            self.stats.mask_errors += 1
            if self.stats.mask_errors == 1:
                self._break_status()
                log.error("masking failed (%s: %s); sending the neutral frame", type(exc).__name__, exc)
            self._send(self.neutral, frame.timestamp, "neutral", frame)
            return
        self.tracked = bool(masked.state.tracked)
        self.stats.tracked_frames += self.tracked
        self._send(image, frame.timestamp, "masked", frame)
        if self.metrics_file is not None:
            sent_index = self.stats.frames_sent - 1
            record = {"frame": sent_index, "source_frame": frame.index, **masked.metrics.to_dict()}
            self.metrics_file.write(json.dumps(record) + "\n")

    def _checked_image(self, masked: MaskedFrame, frame: SourceFrame) -> np.ndarray:
        """The pipeline's image if it is a proper output frame; raises otherwise (→ neutral frame)."""
        image = masked.image
        width, height = self.config.output_size
        try:
            check_frame(image, width, height)
        except (TypeError, ValueError) as exc:
            raise RuntimeError(f"the pipeline returned an unusable image: {exc}") from exc
        if np.shares_memory(image, frame.rgb):
            raise RuntimeError("the pipeline returned the input buffer; refusing to send it")
        return image

    def _send(self, image: np.ndarray, timestamp: float | None, kind: str, frame: SourceFrame | None) -> None:
        self.sink.send(image, timestamp)
        now = time.monotonic()
        latency = (now - frame.arrived) * 1000.0 if frame is not None else None
        stats = self.stats
        stats.frames_sent += 1
        stats.first_send = now if stats.first_send is None else stats.first_send
        stats.last_send = now
        stats.kinds.append(kind)
        if kind == "masked":
            stats.masked_frames += 1
        else:
            stats.neutral_frames += 1
        if latency is not None:
            stats.latencies_ms.append(latency)
        if self.config.status is not None:
            self.config.status.record(now, latency)
        if self.config.preview is not None:
            self.config.preview.show(image)

    def _source_gone(self, reason: str) -> None:
        if self.source_away and reason == self.source_error:
            return
        if not self.source_away:
            self.stats.source_outages += 1
        self.source_away, self.source_error = True, reason
        self._break_status()
        log.warning("%s; sending the neutral frame until frames come back (Ctrl-C to stop)", reason)

    def _source_back(self) -> None:
        if self.source_away:
            self._break_status()
            log.info("frames are back; masking resumes")
        self.source_away, self.source_error = False, None

    def _break_status(self) -> None:
        if self.config.status is not None:
            self.config.status.break_line()

    def _state_text(self) -> str:
        if self.source_away:
            return "NO CAMERA (neutral frame)"
        return "tracking" if self.tracked else "searching face"

    def close(self) -> None:
        self.stats.elapsed_s = time.monotonic() - self.start
        if self.metrics_file is not None:
            self.metrics_file.close()
        if self.config.status is not None:
            self.config.status.update(time.monotonic(), self._state_text(), self.stats.dropped, force=True)
            self.config.status.finish()


def run_loop(open_source: Callable[[], object], sink: FrameSink, make_masker: Callable[[], Masker],
             config: LoopConfig, *, first_source=None, retry: bool = True,
             retry_interval: float = 1.0) -> LoopStats:
    """Mask frames from a source into a sink until the source ends, a limit is reached or Ctrl-C.

    ``open_source()`` (re)opens the source and raises on failure; ``first_source`` is an already
    open one.  ``make_masker()`` runs here, on the calling thread, which then does all masking.
    """
    holder = LatestFrame()
    reader = FrameReader(open_source, holder, retry=retry, retry_interval=retry_interval, source=first_source)
    masker = loop = None
    try:
        masker = make_masker()
        loop = _Loop(holder, sink, masker, config)
        reader.start()
        while not loop.done(time.monotonic()) and loop.step():
            pass
    except KeyboardInterrupt:
        if loop is not None:
            loop.stats.interrupted = True
            loop._break_status()
        log.info("stopped (Ctrl-C)")
    finally:
        reader.stop()
        if reader.is_alive():
            reader.join(timeout=3.0)
        elif reader.ident is None:  # never started: the source it was handed is still open
            _close_quietly(first_source)
        if loop is not None:
            loop.close()
        if masker is not None:
            masker.close()
    if loop is None:  # interrupted while the masker was being built
        raise KeyboardInterrupt
    return loop.stats


# ---------------------------------------------------------------- command line


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--camera", help=f"camera device (default {default_camera() or 'none: required'}; "
                        "macOS an avfoundation index, Windows 'video=<name>')")
    parser.add_argument("--camera-format", help="PyAV input format (default v4l2 / avfoundation / dshow)")
    parser.add_argument("--camera-option", action="append", default=[], metavar="KEY=VALUE",
                        help="FFmpeg input option for the camera, repeatable (e.g. input_format=mjpeg)")
    parser.add_argument("--source", type=Path, help="a video file instead of the camera (demos, tests)")
    parser.add_argument("--loop", action="store_true", help="restart --source at its end")
    parser.add_argument("--width", type=_positive(int), help="width (camera default 640; file: its own)")
    parser.add_argument("--height", type=_positive(int), help="height (camera default 480; file: its own)")
    parser.add_argument("--fps", type=_positive(float), help="frame rate (default camera 30, file: its own)")
    parser.add_argument("--sink", default="pyvirtualcam",
                        help="output(s) tried in order, comma-separated: pyvirtualcam, file, test, null")
    parser.add_argument("--device", help="output device, e.g. /dev/video10 (pyvirtualcam) or a path (file)")
    parser.add_argument("--preview", action="store_true", help="show the masked output in a local window")
    parser.add_argument("--metrics", type=Path, help="write the ocular measurements as JSON lines")
    parser.add_argument("--frames", type=_positive(int), help="stop after this many frames sent")
    parser.add_argument("--duration", type=_positive(float), help="stop after this many seconds")
    parser.add_argument("--masker", choices=("pipeline", "neutral"), default="pipeline",
                        help="'neutral' sends only the neutral frame (checks the set-up without models)")
    parser.add_argument("--placement", default="follow", help="avatar placement passed to the pipeline")
    parser.add_argument("--threads", type=_positive(int), default=1, help="pipeline worker threads")


@dataclass
class _SourcePlan:
    open_source: Callable[[], object]
    first_source: object | None
    retry: bool
    size: tuple[int, int]
    fps: float
    label: str


def _plan_source(args) -> _SourcePlan:
    """Open the file or camera named by ``args``; a missing file raises SourceError."""
    if args.source is not None:
        source = open_file(args.source, loop=args.loop)
        size = (args.width or source.size[0], args.height or source.size[1])
        return _SourcePlan(lambda: open_file(args.source, loop=args.loop), source, False, size,
                           args.fps or source.fps, f"source {args.source}")
    size = (args.width or 640, args.height or 480)
    fps = args.fps or 30.0
    extra = _camera_options(args.camera_option)
    if args.camera is None and default_camera() is None:
        open_camera(None, width=size[0], height=size[1], fps=fps)  # raises the how-to-name-it message

    def open_source():
        return open_camera(args.camera, width=size[0], height=size[1], fps=fps,
                           input_format=args.camera_format, extra_options=extra)

    label = f"camera {args.camera or default_camera()}"
    return _SourcePlan(open_source, None, True, size, fps, label)


def _camera_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SourceError(f"--camera-option needs KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


def run(args) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:  # Ctrl-C before the loop ran (opening devices, loading models)
        print("dmask-live vcam: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    try:
        plan = _plan_source(args)
    except SourceError as exc:
        print(f"dmask-live vcam: {exc}", file=sys.stderr)
        return EXIT_NO_SOURCE
    try:
        sink = open_sink(args.sink, width=plan.size[0], height=plan.size[1], fps=plan.fps, device=args.device)
    except SinkUnavailableError as exc:
        print(f"dmask-live vcam: {exc}", file=sys.stderr)
        _close_quietly(plan.first_source)
        return EXIT_NO_SINK
    try:
        camera = args.camera or default_camera()
        if args.source is None and camera and _same_path(camera, sink.device):
            print(f"dmask-live vcam: the camera {camera} is the virtual camera the mask is sent to; "
                  "pass the real camera with --camera (v4l2-ctl --list-devices lists them)", file=sys.stderr)
            return EXIT_NO_SOURCE
        return _run_with_sink(args, plan, sink)
    finally:
        sink.close()


def _same_path(a: str, b: str) -> bool:
    return bool(a) and bool(b) and os.path.realpath(a) == os.path.realpath(b)


def _run_with_sink(args, plan: _SourcePlan, sink: FrameSink) -> int:
    first_source = plan.first_source
    if first_source is None:
        try:
            first_source = plan.open_source()
        except SourceError as exc:  # the reader retries and the loop reports it with the neutral frame
            log.debug("first open failed: %s", exc)
    if args.masker == "neutral":
        make_masker = lambda: NeutralMasker(plan.size)  # noqa: E731
    else:
        make_masker = pipeline_masker_factory(plan.size, placement=args.placement, threads=args.threads)
    config = LoopConfig(output_size=plan.size, fps=plan.fps, max_frames=args.frames, duration=args.duration,
                        metrics_path=args.metrics, status=StatusLine(),
                        preview=Preview() if args.preview else None)
    log.info("%s → %s sink %s, %dx%d @ %.3g fps", plan.label, sink.name, sink.device, *plan.size, plan.fps)
    try:
        stats = run_loop(plan.open_source, sink, make_masker, config,
                         first_source=first_source, retry=plan.retry)
    except MaskerUnavailableError as exc:
        print(f"dmask-live vcam: {exc}", file=sys.stderr)
        return EXIT_NO_MASKER
    except Exception as exc:  # noqa: BLE001 - e.g. the virtual camera vanished: a message, not a trace
        log.debug("vcam failed", exc_info=True)
        print(f"dmask-live vcam: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if config.preview is not None:
            config.preview.close()
    log.info("summary: %s", json.dumps(stats.summary()))
    if stats.received == 0:
        print(f"dmask-live vcam: {plan.label} never delivered a frame", file=sys.stderr)
        return EXIT_NO_SOURCE
    return EXIT_OK


def _close_quietly(source) -> None:
    if source is not None:
        try:
            source.close()
        except Exception:  # noqa: BLE001
            pass
