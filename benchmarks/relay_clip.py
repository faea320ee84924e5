"""The patient's source clip for the relay benchmark, and the pts that identify each of its frames."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FPS = 30
SLOT = 90000 // FPS  # pts ticks per frame at 90 kHz
SIZE = (640, 480)


# --------------------------------------------------------------------------- source clip
def clip_frames(count: int = 90) -> tuple[list[np.ndarray], str]:
    """640x480 RGB frames of a real face (shared clip if present, else scikit-image's astronaut)."""
    import cv2

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import shared_data_dir

    def letterbox(rgb):
        scale = min(SIZE[0] / rgb.shape[1], SIZE[1] / rgb.shape[0])
        small = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)))
        out = np.full((SIZE[1], SIZE[0], 3), 40, np.uint8)
        top, left = (SIZE[1] - small.shape[0]) // 2, (SIZE[0] - small.shape[1]) // 2
        out[top : top + small.shape[0], left : left + small.shape[1]] = small
        return out

    data = shared_data_dir()
    if data is not None:
        import av

        frames = []
        with av.open(str(data / "videos" / "d3.mp4")) as container:
            for frame in container.decode(video=0):
                frames.append(letterbox(frame.to_ndarray(format="rgb24")))
                if len(frames) == count:
                    return frames, "shared d3.mp4"
    from skimage import data as skdata

    face = letterbox(np.ascontiguousarray(skdata.astronaut()))
    frames = []
    for i in range(count):
        matrix = cv2.getRotationMatrix2D((SIZE[0] / 2, SIZE[1] / 2), 4 * np.sin(i / 8), 1.0)
        frames.append(cv2.warpAffine(face, matrix, SIZE, borderMode=cv2.BORDER_REPLICATE))
    return frames, "scikit-image astronaut"


# Pseudo-random, not linear in the index: with ``index * c % 1000`` a shift by some k frames gives a
# near-constant pts difference (k = 111 for c = 7919), which frame matching could mistake for an origin.
# One sequence per consult, so a server-side event can be told apart from another consult's.
_PTS_JITTER = np.random.default_rng(7919).integers(0, 1000, (16, 100_000))


def pts_of(index: int, consult: int = 0) -> int:
    """Frame ``index``'s pts: its 30 fps slot plus a known offset that makes it identifiable."""
    jitter = _PTS_JITTER[consult % len(_PTS_JITTER)]
    return index * SLOT + int(jitter[index % len(jitter)])
