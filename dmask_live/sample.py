"""A built-in sample clip: scikit-image's bundled ``astronaut()`` photo with small head motion.

The clip is generated in memory frame by frame (affine warps of one real face) so the mask can be
tried without any camera or download; raw frames are never written to disk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SAMPLE_FPS = 25
SAMPLE_SECONDS = 3.0
FACE_CENTRE = (226.0, 122.0)  # where the astronaut's face is in the 512x512 photo (x, y)


def sample_face() -> np.ndarray:
    """The astronaut photo, (512, 512, 3) uint8 RGB (a real face shipped with scikit-image)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def head_motion(t: float) -> tuple[float, float, float, float]:
    """(rotation deg, dx px, dy px, scale) at time t: slow sway, nod and a small zoom."""
    angle = 6.0 * np.sin(2.0 * np.pi * 0.5 * t)
    dx = 14.0 * np.sin(2.0 * np.pi * 0.33 * t)
    dy = 6.0 * np.sin(2.0 * np.pi * 0.7 * t + 0.5)
    scale = 1.0 + 0.04 * np.sin(2.0 * np.pi * 0.25 * t)
    return float(angle), float(dx), float(dy), float(scale)


def warp(image: np.ndarray, angle_deg: float, dx: float, dy: float, scale: float) -> np.ndarray:
    """Rotate/scale about the face centre, then shift; borders replicate the edge."""
    import cv2

    matrix = cv2.getRotationMatrix2D(FACE_CENTRE, angle_deg, scale)
    matrix[:, 2] += (dx, dy)
    height, width = image.shape[:2]
    return cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def sample_frames(seconds: float = SAMPLE_SECONDS, fps: int = SAMPLE_FPS) -> Iterator[np.ndarray]:
    """Yield the clip's frames, (512, 512, 3) uint8 RGB, generated on the fly."""
    face = sample_face()
    for index in range(sample_frame_count(seconds, fps)):
        yield warp(face, *head_motion(index / fps))


def sample_frame_count(seconds: float = SAMPLE_SECONDS, fps: int = SAMPLE_FPS) -> int:
    return int(round(seconds * fps))
