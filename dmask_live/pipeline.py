"""The masking pipeline every output uses: frame → landmarks → tracker → avatar + ocular metrics.

Fail-closed: when no face is found, or anything inside :meth:`MaskPipeline.process` fails, the
result is the neutral "face not found" frame. The input image is never returned, copied into the
output, logged or stored.

Threads: the renderer's OpenGL context is bound to the thread that created it, so a
``MaskPipeline`` must be created, used and closed on one thread. Asyncio code (relay, vcam) should
use :class:`PipelineWorker`, which owns one worker thread that builds and runs the pipeline::

    worker = PipelineWorker(output_size=(640, 480))
    masked = await worker.process(image, timestamp)
    await worker.close()
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from dmask_live.types import AvatarState, MaskedFrame, OcularMetrics

log = logging.getLogger(__name__)

DEFAULT_SIZE = (640, 480)
_LOG_REPEAT_S = 5.0  # the same failure is logged at most this often (with a count)


class MaskPipeline:
    """One face, one thread: ``process(image, timestamp) -> MaskedFrame``.

    output_size: (width, height) of rendered frames; ``None`` renders at each input's size.
    placement:   ``"follow"`` (avatar where the patient's head is) or ``"centre"``.
    model_dir:   directory of the ONNX landmark networks (``None``: the package default).
    threads:     intra-op threads for the landmark networks.
    landmarker, tracker, analyzer: stage objects to use instead of the defaults (tests, wiring).
    """

    def __init__(
        self,
        output_size: tuple[int, int] | None = None,
        placement: str = "follow",
        model_dir=None,
        threads: int = 1,
        *,
        landmarker=None,
        tracker=None,
        analyzer=None,
    ) -> None:
        if output_size is not None:
            output_size = (int(output_size[0]), int(output_size[1]))
            if output_size[0] <= 0 or output_size[1] <= 0:
                raise ValueError(f"output_size must be positive (width, height), got {output_size}")
        from dmask_live.renderer import PLACEMENTS

        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        self.output_size = output_size
        self.placement = placement
        self._thread = threading.get_ident()
        self._closed = False
        self._renderer = None
        self._last_size = output_size or DEFAULT_SIZE
        self._last_error: tuple[str, float, int] | None = None  # (signature, time logged, repeats)
        if landmarker is None:
            from dmask_live.landmarks import FaceLandmarker

            landmarker = FaceLandmarker(model_dir=model_dir, threads=threads)
        if tracker is None:
            from dmask_live.tracker import FaceTracker

            tracker = FaceTracker()
        if analyzer is None:
            from dmask_live.ocular import OcularAnalyzer

            analyzer = OcularAnalyzer()
        self._landmarker, self._tracker, self._analyzer = landmarker, tracker, analyzer
        if output_size is not None:
            self._renderer_for(output_size)  # fail early (e.g. no EGL) rather than on the first frame

    # ----------------------------------------------------------------- public
    def process(self, image: np.ndarray, timestamp: float) -> MaskedFrame:
        """Mask one RGB frame. Never raises for bad frames or stage failures; never returns input."""
        self._check_usable()
        timings: dict[str, float] = {}
        start = time.perf_counter()
        size = self._output_size_for(image)
        try:
            _check_image(image)
            landmarks = self._landmarker.process(image)
            mark = _lap(timings, "landmarks", start)
            state = self._tracker.update(landmarks, float(timestamp))
            mark = _lap(timings, "tracker", mark)
            rendered = self._renderer_for(size).render(state)
            mark = _lap(timings, "render", mark)
            metrics = self._analyzer.update(state)
            _lap(timings, "ocular", mark)
        except Exception as exc:  # noqa: BLE001 - fail closed: any failure yields the neutral frame
            self._log_failure(exc)
            self._reset_stages()
            timings["total"] = (time.perf_counter() - start) * 1000.0
            state = AvatarState.untracked(size, float(timestamp))
            metrics = OcularMetrics(float(timestamp), False)
            return MaskedFrame(self.neutral_frame(size), state, metrics, timings)
        timings["total"] = (time.perf_counter() - start) * 1000.0
        return MaskedFrame(rendered, state, metrics, timings)

    def neutral_frame(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The "face not found" frame at ``size`` (default: the output size / last frame's size)."""
        from dmask_live import renderer as rendering

        size = tuple(size) if size is not None else (self.output_size or self._last_size)
        if self._renderer is not None and (self._renderer.width, self._renderer.height) == size:
            return self._renderer.neutral_frame()
        return rendering.neutral_frame(int(size[0]), int(size[1]))

    def reset(self) -> None:
        """Forget the tracked face (new patient, new stream)."""
        self._check_usable()
        self._reset_stages()

    def close(self) -> None:
        """Release the renderer and the networks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._renderer is not None:
            self._renderer.release()
            self._renderer = None
        close = getattr(self._landmarker, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> MaskPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- helpers
    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("MaskPipeline used after close()")
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "MaskPipeline must be used on the thread that created it (its OpenGL context is "
                "thread-bound); use PipelineWorker from asyncio code"
            )

    def _output_size_for(self, image) -> tuple[int, int]:
        if self.output_size is not None:
            return self.output_size
        shape = getattr(image, "shape", ())
        if len(shape) == 3 and shape[0] > 0 and shape[1] > 0:
            self._last_size = (int(shape[1]), int(shape[0]))
        return self._last_size

    def _renderer_for(self, size: tuple[int, int]):
        renderer = self._renderer
        if renderer is None or (renderer.width, renderer.height) != size:
            from dmask_live.renderer import AvatarRenderer

            if renderer is not None:
                renderer.release()
                self._renderer = None
            self._renderer = AvatarRenderer(size[0], size[1], placement=self.placement)
        return self._renderer

    def _reset_stages(self) -> None:
        for stage in (self._landmarker, self._tracker, self._analyzer):
            reset = getattr(stage, "reset", None)
            try:
                if callable(reset):
                    reset()
            except Exception as exc:  # noqa: BLE001 - resetting after a failure must not fail
                self._log_failure(exc)
        if not callable(getattr(self._analyzer, "reset", None)):
            try:
                self._analyzer = type(self._analyzer)()
            except Exception:  # noqa: BLE001 - keep the old analyzer
                pass

    def _log_failure(self, exc: BaseException) -> None:
        """One error line: exception type and (truncated) message, never pixel data or shape."""
        signature = f"{type(exc).__name__}: {str(exc)[:200]}"
        now = time.monotonic()
        last = self._last_error
        if last is not None and last[0] == signature and now - last[1] < _LOG_REPEAT_S:
            self._last_error = (last[0], last[1], last[2] + 1)
            return
        repeats = f" (repeated {last[2]} more times)" if last is not None and last[2] else ""
        log.error("masking failed, sent the neutral frame: %s%s", signature, repeats)
        self._last_error = (signature, now, 0)


def _lap(timings: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    timings[name] = (now - since) * 1000.0
    return now


def _check_image(image) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] < 16 or image.shape[1] < 16:
        raise ValueError(f"image too small to mask: {image.shape[1]}x{image.shape[0]}")


class PipelineWorker:
    """A :class:`MaskPipeline` living on its own single worker thread, for asyncio callers.

    The pipeline is constructed inside the worker thread (its GL context is bound there). Calls are
    serialised; ``busy`` tells a real-time caller that a frame is in flight so it can drop the next
    one instead of queueing (newest frame wins).
    """

    def __init__(self, **pipeline_kwargs) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dmask-pipeline")
        self._pipeline: Future = self._executor.submit(MaskPipeline, **pipeline_kwargs)
        self._in_flight = 0
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._in_flight > 0

    async def start(self) -> None:
        """Wait until the pipeline is built; raises its construction error (e.g. no EGL)."""
        await asyncio.wrap_future(self._pipeline)

    async def process(self, image: np.ndarray, timestamp: float) -> MaskedFrame:
        return await self._call(lambda p: p.process(image, timestamp))

    async def neutral_frame(self, size: tuple[int, int] | None = None) -> np.ndarray:
        return await self._call(lambda p: p.neutral_frame(size))

    async def reset(self) -> None:
        await self._call(lambda p: p.reset())

    async def close(self) -> None:
        """Close the pipeline on its thread and stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_on_thread)
        finally:
            self._executor.shutdown(wait=False)

    def close_sync(self) -> None:
        """Blocking close for non-async shutdown paths. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._executor.submit(self._close_on_thread).result()
        finally:
            self._executor.shutdown(wait=False)

    def _close_on_thread(self) -> None:
        if self._pipeline.exception() is None:
            self._pipeline.result().close()

    async def _call(self, fn):
        if self._closed:
            raise RuntimeError("PipelineWorker used after close()")
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(self._pipeline.result()))
        finally:
            self._in_flight -= 1
