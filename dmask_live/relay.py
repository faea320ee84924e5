"""Media stages of the masked teleconsult: latest-frame holding, masking once, fan-out.

Data flow for the patient's video (one ``MaskingRelay`` per consult)::

    remote track ─reader─▶ LatestFrameSlot ─mask loop─▶ LatestFrameSlot ─output stage─▶ FrameBroadcast × 2
                (always    (newest wins,    (to RGB,     (newest wins)   (own thread:    (decoded frames;
                 drains)    drops counted)   masker)                      to YUV + one    VP8 packets ─▶
                                                                          shared VP8      KeyframeGatedTrack
                                                                          encode)         × N viewers)

The reader never waits for the masker, so aiortc's receive queue never grows; the masker
runs once per frame however many consumers there are, and masking frame n+1 overlaps the
output stage of frame n; a consumer that keeps up gets every masked frame. A VP8 viewer
starts, and after any skipped packet restarts, at a key frame. Only rendered images (avatar
or neutral) ever enter the broadcasts: a masker error or a lost face yields the neutral
frame, never the input.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame
from av.frame import Frame

from dmask_live.types import AvatarState, MaskedFrame, OcularMetrics
from dmask_live.vp8_encoder import SharedVp8Encoder

logger = logging.getLogger(__name__)

T = TypeVar("T")
NEUTRAL_RGB = (139, 152, 168)  # the renderer's neutral background (renderer.BACKGROUND)


class Masker(Protocol):
    """What the relay needs from the masking pipeline (``PipelineWorker`` provides it)."""

    async def process(self, image: np.ndarray, timestamp: float) -> MaskedFrame: ...

    async def close(self) -> None: ...


class TaskSet:
    """Background tasks kept alive in a set; failures are logged, never silently lost."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class LatestFrameSlot(Generic[T]):
    """A one-item holder: ``put`` never waits and replaces a waiting item (counted as a drop)."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._full = False
        self._closed = False
        self._event = asyncio.Event()
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T) -> None:
        if self._closed:
            return
        if self._full:
            self.dropped += 1
        self._item, self._full = item, True
        self.put_count += 1
        self._event.set()

    async def get(self) -> T | None:
        """The newest item, waiting for one; None once closed and empty."""
        while not self._full:
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()
        item, self._item, self._full = self._item, None, False
        return item

    def close(self) -> None:
        self._closed = True
        self._event.set()


class FrameBroadcast:
    """The latest published frame with a sequence number; many readers, nothing queued."""

    def __init__(self) -> None:
        self._latest: Frame | None = None
        self._seq = 0
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def seq(self) -> int:
        return self._seq

    def publish(self, frame: Frame) -> None:
        if self._closed:
            return
        self._latest, self._seq = frame, self._seq + 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def next_after(self, seq: int) -> tuple[int, Frame] | None:
        """The newest frame published after ``seq``, waiting for one; None once closed."""
        while self._seq <= seq or self._latest is None:
            if self._closed:
                return None
            await self._changed.wait()
        return self._seq, self._latest

    def close(self) -> None:
        self._closed = True
        self._changed.set()


class BroadcastTrack(MediaStreamTrack):
    """One consumer's view of a ``FrameBroadcast`` (e.g. a peer connection's sender)."""

    def __init__(self, kind: str, broadcast: FrameBroadcast) -> None:
        super().__init__()
        self.kind = kind
        self._broadcast = broadcast
        self._seq = broadcast.seq
        self.received = 0
        self.skipped = 0
        self.last_gap = 0  # frames published but not seen between the last two recv() results

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        result = await self._broadcast.next_after(self._seq)
        if result is None:
            self.stop()
            raise MediaStreamError
        seq, frame = result
        self.last_gap = seq - self._seq - 1 if self.received else 0
        self.skipped += self.last_gap
        self._seq = seq
        self.received += 1
        return frame


class KeyframeGatedTrack(BroadcastTrack):
    """A viewer's view of shared VP8 packets that always starts, and restarts, at a key frame.

    A delta frame only decodes on top of the frames before it. A viewer whose sender starts
    reading after the join key frame went by (DTLS set-up takes longer than a frame under load),
    or that skipped a packet because it fell behind, would otherwise decode deltas against a
    picture it never had: a grey screen until the next key frame, which a shared encoder with no
    key-frame timer may never send. So deltas are withheld until a key frame, which is requested.
    """

    def __init__(self, broadcast: FrameBroadcast, request_keyframe: Callable[[], None]) -> None:
        super().__init__("video", broadcast)
        self._request_keyframe = request_keyframe
        self._need_keyframe = True
        self.withheld = 0  # deltas not sent while waiting for a key frame

    async def recv(self) -> Frame:
        while True:
            packet = await super().recv()
            if self.last_gap:
                self._need_keyframe = True
            if not self._need_keyframe:
                return packet
            if getattr(packet, "is_keyframe", False):
                self._need_keyframe = False
                return packet
            self.withheld += 1
            self._request_keyframe()  # idempotent until the encoder runs: one key frame for all


async def forward_track(source: MediaStreamTrack, broadcast: FrameBroadcast) -> None:
    """Drain ``source`` into ``broadcast`` until it ends (used for unmasked clinician media)."""
    try:
        while True:
            broadcast.publish(await source.recv())
    except MediaStreamError:
        return


def frame_to_rgb(frame: VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame (OpenCV for yuv420p: ~50x faster than swscale here)."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


def rgb_to_frame(image: np.ndarray) -> VideoFrame:
    """A yuv420p VideoFrame of an RGB image (what the VP8/H.264 encoders take)."""
    height, width = image.shape[:2]
    if width % 2 == 0 and height % 2 == 0:
        return VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    return VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")


def flat_frame(size: tuple[int, int], rgb: tuple[int, int, int] = NEUTRAL_RGB) -> np.ndarray:
    """A flat (height, width, 3) uint8 image; ``size`` is (width, height)."""
    width, height = size
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rgb
    return image


class NeutralMasker:
    """Stand-in masker: every frame becomes the flat neutral frame (fail-closed by design).

    Used by tests, and by the server when the real pipeline cannot be loaded.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0

    async def process(self, image: np.ndarray, timestamp: float) -> MaskedFrame:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        height, width = image.shape[:2]
        return MaskedFrame(
            image=flat_frame((width, height)),
            state=AvatarState.untracked((width, height), timestamp),
            metrics=OcularMetrics(timestamp=timestamp, tracked=False),
        )

    async def close(self) -> None:
        return None


@dataclass
class RelayStats:
    frames_in: int = 0
    frames_out: int = 0
    errors: int = 0
    untracked: int = 0
    waited_for_fresh: int = 0  # overload: a waiting frame swapped for the next one (also in dropped)
    encode_dropped: int = 0  # masked frames replaced before the encoder got to them (newest wins)
    masker_ms: float = 0.0  # moving averages: the masker alone, and frame arrival → masked frame out
    relay_ms: float = 0.0

    def timed(self, masker_s: float, relay_s: float) -> None:
        weight = 0.05 if self.frames_out > 20 else 1.0 / (self.frames_out + 1)
        self.masker_ms += weight * (masker_s * 1000.0 - self.masker_ms)
        self.relay_ms += weight * (relay_s * 1000.0 - self.relay_ms)

    def as_dict(self, dropped: int) -> dict:
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": dropped,
            "errors": self.errors,
            "untracked": self.untracked,
            "waited_for_fresh": self.waited_for_fresh,
            "encode_dropped": self.encode_dropped,
            "masker_ms": round(self.masker_ms, 1),
            "relay_ms": round(self.relay_ms, 1),
        }


MetricsCallback = Callable[[dict], None]


class MaskingRelay:
    """Masks one patient video source once per frame and broadcasts only the renderings.

    ``masker_factory`` makes the masker on the first ``attach``; ``stop`` closes it. The shared
    VP8 encode runs as its own stage (own thread, newest frame wins), so masking frame n+1 overlaps
    encoding frame n instead of waiting for it.

    ``trace_frames`` > 0 keeps, for the last that many frames, the monotonic time of each stage
    (``TRACE_STAGES``) keyed by the input pts: what the relay benchmark breaks latency down with.
    """

    trace_frames = 0

    def __init__(
        self,
        masker_factory: Callable[[], Masker],
        *,
        neutral_frame: Callable[[tuple[int, int]], np.ndarray] = flat_frame,
        on_metrics: MetricsCallback | None = None,
        metrics_hz: float = 15.0,
        log_interval_s: float = 10.0,
        stale_after_s: float = 2.0,
        idle_refresh_s: float = 1.0,
        fresh_fraction: float = 0.3,
        name: str = "relay",
    ) -> None:
        self.name = name
        self.output = FrameBroadcast()
        self.encoded = FrameBroadcast()  # the same masked frames as VP8 packets, for VP8 viewers
        self.encoder = SharedVp8Encoder()
        self._encode = False
        self._output_slot: LatestFrameSlot[_Rendering] = LatestFrameSlot()
        self._output_loop: asyncio.Task | None = None
        self.trace: deque[dict] | None = deque(maxlen=self.trace_frames) if self.trace_frames else None
        self.stats = RelayStats()
        self._masker_factory = masker_factory
        self._masker: Masker | None = None
        self._neutral_frame = neutral_frame
        self._neutral_cache: dict[tuple[int, int], np.ndarray] = {}
        self._on_metrics = on_metrics
        self._metrics_interval = 1.0 / metrics_hz if metrics_hz > 0 else 0.0
        self._last_metrics = -1e9
        self._log_interval = log_interval_s
        self._stale_after = stale_after_s
        self._idle_refresh = idle_refresh_s
        self._last_log = time.monotonic()
        self._slot: LatestFrameSlot[tuple[VideoFrame, float]] = LatestFrameSlot()
        self._tasks = TaskSet(name)
        # Own threads for the input conversion and for the output stage (to YUV + the shared encode):
        # the default executor also runs aiortc's encoders, and waiting behind them would delay frames.
        self._convert = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dmask-relay-convert")
        self._output_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dmask-relay-output")
        self._reader: asyncio.Task | None = None
        self._mask_loop: asyncio.Task | None = None
        self._fps = _RateMeter()
        self._pts_offset = 0
        self._last_pts: int | None = None
        self._last_pts_at = 0.0  # monotonic time the last pts was given out
        self._showing_neutral = False
        self._last_arrival: float | None = None
        self._interval_s = 1.0 / 30.0  # moving average of the source's frame interval
        self.fresh_fraction = fresh_fraction
        self._last_size: tuple[int, int] | None = None
        self._last_time_base = _TIME_BASE
        self._stopped = False

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    def subscribe(self) -> BroadcastTrack:
        """A new consumer track of the masked video (decoded frames; the consumer encodes)."""
        return BroadcastTrack("video", self.output)

    def subscribe_encoded(self) -> KeyframeGatedTrack:
        """A new consumer track of the masked video as VP8 packets, encoded once for all.

        The track starts at a key frame (requested now, and again when its sender first reads
        if the join key frame has gone by) and restarts at one after any skipped packet.
        """
        self._encode = True
        self.request_keyframe()
        return KeyframeGatedTrack(self.encoded, self.request_keyframe)

    def request_keyframe(self) -> None:
        """A VP8 viewer joined, skipped a packet or sent PLI/FIR: the next encode makes a key frame.

        When no next frame is coming (the patient left or stalled: the neutral frame stays up),
        the neutral frame is sent again as that key frame, so no viewer waits on a frozen stream.
        """
        self.encoder.request_keyframe()
        if self._showing_neutral and not self._stopped:
            self._publish(self._ended_frame())

    def attach(self, source: MediaStreamTrack) -> None:
        """Start masking ``source`` (a new source replaces the previous one)."""
        if self._stopped:
            raise RuntimeError("relay stopped")
        if self._masker is None:
            self._masker = self._masker_factory()  # created on first use: it may load models
        if self._reader is not None:
            self._reader.cancel()
        self._reader = self._tasks.spawn(self._read(source), "reader")
        if self._mask_loop is None:
            self._mask_loop = self._tasks.spawn(self._run_mask_loop(), "mask")
            self._output_loop = self._tasks.spawn(self._run_output_loop(), "output")

    async def stop(self) -> None:
        """Stop reading and masking; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._slot.close()
        self._output_slot.close()
        self.output.close()
        self.encoded.close()
        await self._tasks.cancel_all()
        if self._masker is not None:
            try:
                await self._masker.close()
            except Exception:
                logger.exception("%s: closing the masker failed", self.name)
        self._convert.shutdown(wait=False)
        self._output_thread.shutdown(wait=False)
        self._log_counts()

    async def _read(self, source: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await source.recv()
                now = time.monotonic()
                if self._last_arrival is not None:
                    self._interval_s += 0.1 * (now - self._last_arrival - self._interval_s)
                self._last_arrival = now
                self.stats.frames_in += 1
                self._slot.put((frame, now))
        except MediaStreamError:
            logger.info("%s: patient video ended", self.name)
            self._slot.put(_SOURCE_ENDED)  # after the last frame: consumers then see the neutral frame

    async def _run_mask_loop(self) -> None:
        while True:
            # While the neutral frame is up it is re-sent now and then: viewers' streams stay live
            # (a browser shows "patient not connected", not a frozen or black picture).
            wait_s = self._idle_refresh if self._showing_neutral else self._stale_after
            try:
                frame = await asyncio.wait_for(self._slot.get(), wait_s)
            except asyncio.TimeoutError:
                frame = _SOURCE_ENDED  # stalled (e.g. vanished without hanging up): not "live" any more
            if frame is None:
                return
            if frame is _SOURCE_ENDED:
                if self._last_pts is not None:
                    self._publish(self._ended_frame())
                    self._showing_neutral = True
                continue
            self._showing_neutral = False
            frame, arrived = await self._fresher(*frame)
            record = self._trace_record(frame, arrived)
            self._publish(await self._mask(frame, arrived, record))
            if time.monotonic() - self._last_log >= self._log_interval:
                self._log_counts()

    async def _mask(self, frame: VideoFrame, arrived: float, record: dict | None = None) -> _Rendering:
        size = (frame.width, frame.height)
        self._last_size = size
        time_base = self._last_time_base = frame.time_base or _TIME_BASE
        pts = self._output_pts(frame.pts if frame.pts is not None else 0)
        timestamp = float(pts * time_base)
        _mark(record, "pts_out", pts)
        masker_s = 0.0  # stays 0 when the frame never reached the masker
        try:
            rgb = await self._in_thread(frame_to_rgb, frame)
            started = _mark(record, "rgb")
            try:
                masked = await self._masker.process(rgb, timestamp)
            finally:
                masker_s = _mark(record, "masked") - started
            image = self._checked(masked, rgb)
            metrics = masked.metrics
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # fail closed: the neutral frame, never the input
            self.stats.errors += 1
            if self.stats.errors <= 3 or self.stats.errors % 100 == 0:
                logger.error(
                    "%s: masking failed (%d so far): %s", self.name, self.stats.errors, type(exc).__name__
                )
            image, metrics = self._neutral(size), OcularMetrics(timestamp=timestamp, tracked=False)
        if not metrics.tracked:
            self.stats.untracked += 1
        self._send_metrics(metrics)
        return _Rendering(image, pts, time_base, arrived, record, masker_s)

    async def _in_thread(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._convert, partial(fn, *args, **kwargs))

    async def _fresher(self, frame: VideoFrame, arrived: float) -> tuple[VideoFrame, float]:
        """Under overload, a frame that has already waited may be swapped for one due very soon.

        When masking takes longer than the frame interval, the frame picked up has waited up to one
        interval; waiting a little for the next one instead keeps latency near masking time plus
        transport, at the cost of a few more dropped frames (counted). No effect when keeping up.
        A frame a whole interval old means the next one is being decoded right now: wait for it too
        (measured: such frames were a third of the overload p95), unless the source has stalled.
        """
        interval = self._interval_s
        overloaded = self.stats.frames_out > 10 and self.stats.masker_ms / 1000.0 > interval
        age = time.monotonic() - arrived
        patience = _STALL_INTERVALS * interval - age  # until the next frame is half an interval late
        if not overloaded or age <= self.fresh_fraction * interval or patience <= 0:
            return frame, arrived
        try:
            newer = await asyncio.wait_for(self._slot.get(), patience)
        except asyncio.TimeoutError:
            return frame, arrived
        if newer is None or newer is _SOURCE_ENDED:
            if newer is _SOURCE_ENDED:
                self._slot.put(newer)
            return frame, arrived
        self._slot.dropped += 1
        self.stats.waited_for_fresh += 1
        return newer

    def _publish(self, rendering: _Rendering) -> None:
        """Hand a rendering to the output stage (newest wins: the mask loop never waits for it)."""
        self._output_slot.put(rendering)
        self.stats.encode_dropped = self._output_slot.dropped

    async def _run_output_loop(self) -> None:
        """The output stage: rendering → yuv420p frame (+ one shared VP8 packet) → the broadcasts.

        One thread hop per frame for both steps; masking frame n+1 overlaps this for frame n.
        """
        loop = asyncio.get_running_loop()
        while (rendering := await self._output_slot.get()) is not None:
            try:
                frame, packet = await loop.run_in_executor(self._output_thread, self._to_outputs, rendering)
            except Exception as exc:  # one bad encode must not end the stream: the next frame goes out
                self.stats.errors += 1
                logger.error("%s: output stage failed: %s: %s", self.name, type(exc).__name__, exc)
                self.encoder.request_keyframe()  # the packet chain may be broken
                continue
            self.output.publish(frame)
            if packet is not None:
                self.encoded.publish(packet)
            if rendering.arrived is not None:
                self.stats.timed(rendering.masker_s, time.monotonic() - rendering.arrived)
                self.stats.frames_out += 1
                self._fps.tick()

    def _to_outputs(self, rendering: _Rendering) -> tuple[VideoFrame, Any]:
        """(on the output thread) the yuv420p frame, and its VP8 packet when VP8 viewers exist."""
        frame = self._video_frame(rendering.image, rendering.pts, rendering.time_base)
        _mark(rendering.record, "yuv")
        packet = self.encoder.encode(frame) if self._encode else None
        _mark(rendering.record, "encoded")
        return frame, packet

    def _trace_record(self, frame: VideoFrame, arrived: float) -> dict | None:
        if self.trace is None:
            return None
        record = {"pts_in": frame.pts, "arrived": arrived, "picked": time.monotonic()}
        self.trace.append(record)
        return record

    def _ended_frame(self) -> _Rendering:
        """The neutral frame, its pts advanced by the time since the last frame (≥ one 30 fps tick)."""
        now = time.monotonic()
        if self._last_pts is None:
            pts = 0
        else:
            elapsed = int((now - self._last_pts_at) / self._last_time_base)
            pts = self._last_pts + max(int(3000 * _TIME_BASE / self._last_time_base), elapsed, 1)
        self._last_pts, self._last_pts_at = pts, now
        return _Rendering(self._neutral(self._last_size or (640, 480)), pts, self._last_time_base)

    def _checked(self, masked: MaskedFrame, source: np.ndarray) -> np.ndarray:
        """The masker's rendering, or the neutral frame when the face is lost; raises if unusable."""
        if not masked.state.tracked:
            return self._neutral((source.shape[1], source.shape[0]))
        image = masked.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape[2:] != (3,):
            raise ValueError("masker returned an image that is not (H, W, 3) uint8")
        if np.shares_memory(image, source):
            raise ValueError("masker returned a view of its input")
        return image

    def _neutral(self, size: tuple[int, int]) -> np.ndarray:
        if size not in self._neutral_cache:
            self._neutral_cache[size] = np.ascontiguousarray(self._neutral_frame(size), dtype=np.uint8)
        return self._neutral_cache[size]

    def _output_pts(self, pts: int) -> int:
        """The input pts, shifted only if it would run backwards (a new source restarts at 0)."""
        out = pts + self._pts_offset
        if self._last_pts is not None and out <= self._last_pts:
            self._pts_offset = self._last_pts + 3000 - pts
            out = pts + self._pts_offset
        self._last_pts, self._last_pts_at = out, time.monotonic()
        return out

    @staticmethod
    def _video_frame(image: np.ndarray, pts: int, time_base: fractions.Fraction) -> VideoFrame:
        out = rgb_to_frame(image)  # yuv420p once here, not once per consumer's encoder
        out.pts, out.time_base = pts, time_base
        return out

    def _send_metrics(self, metrics: OcularMetrics) -> None:
        now = time.monotonic()
        if self._on_metrics is None or now - self._last_metrics < self._metrics_interval:
            return
        self._last_metrics = now
        message = {"type": "metrics", "fps": round(self._fps.rate(), 1), **self.stats.as_dict(self.dropped)}
        message["metrics"] = metrics.to_dict()
        try:
            self._on_metrics(message)
        except Exception as exc:  # a vanished data channel must not stop the video
            logger.warning("%s: metrics not sent: %s", self.name, exc)

    def _log_counts(self) -> None:
        self._last_log = time.monotonic()
        logger.info("%s: %s", self.name, self.stats.as_dict(self.dropped))


_TIME_BASE = fractions.Fraction(1, 90000)
_STALL_INTERVALS = 1.5  # a frame this many intervals after the last one is late: the source stalled
_SOURCE_ENDED: Any = object()


@dataclass
class _Rendering:
    """A masked (or neutral) RGB image on its way to the output stage."""

    image: np.ndarray
    pts: int
    time_base: fractions.Fraction
    arrived: float | None = None  # when its source frame arrived (None: the "patient gone" frame)
    record: dict | None = None  # trace record
    # The masker's time for this frame: carried here, since masking the next frame overlaps this one's output.
    masker_s: float = 0.0


TRACE_STAGES = ("arrived", "picked", "rgb", "masked", "yuv", "encoded")


def _mark(record: dict | None, name: str, value: float | None = None) -> float:
    """Store ``value`` (default: now, monotonic) under ``name`` in a trace record; returns it."""
    value = time.monotonic() if value is None else value
    if record is not None:
        record[name] = value
    return value


class _RateMeter:
    """Frames per second over the last ~2 s."""

    def __init__(self, window_s: float = 2.0) -> None:
        self._window = window_s
        self._times: deque[float] = deque()

    def tick(self) -> None:
        now = time.monotonic()
        self._times.append(now)
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()

    def rate(self) -> float:
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])
