"""Maskers for the relay benchmark's server: the real pipeline's factory, or a sleeping stand-in."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


# --------------------------------------------------------------------------- maskers
class StandinMasker:
    """A worker thread that spends ``delay_ms`` per frame and returns a flat tracked rendering."""

    def __init__(self, delay_ms: float) -> None:
        self._delay = delay_ms / 1000.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="standin-mask")

    def _process(self, image: np.ndarray, timestamp: float):
        from dmask_live.relay import NEUTRAL_RGB
        from dmask_live.types import AvatarState, MaskedFrame, OcularMetrics

        time.sleep(self._delay)
        height, width = image.shape[:2]
        out = np.empty_like(image)
        out[:] = NEUTRAL_RGB
        out[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = (200, 170, 150)
        state = AvatarState(tracked=True, image_size=(width, height), timestamp=timestamp)
        return MaskedFrame(out, state, OcularMetrics(timestamp, True))

    async def process(self, image, timestamp):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._process, image, timestamp)

    async def close(self) -> None:
        self._executor.shutdown(wait=False)


def masker_factory(spec: dict):
    if spec["kind"] == "pipeline":
        from dmask_live.server import pipeline_masker_factory

        return pipeline_masker_factory(spec["mask_in"])
    return lambda: StandinMasker(spec["delay_ms"])


def pipeline_available() -> str:
    """'' when the real pipeline builds here, else the reason."""
    try:
        from dmask_live.pipeline import PipelineWorker

        async def probe():
            worker = PipelineWorker()
            try:
                await worker.start()
            finally:
                await worker.close()

        asyncio.run(probe())
        return ""
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        return f"{type(exc).__name__}: {exc}"
