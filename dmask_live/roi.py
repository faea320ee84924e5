"""Rotated square regions of interest and the crops the landmark networks see.

An ROI is ``(centre_x, centre_y, size, angle_rad)`` in image pixels, MediaPipe's convention:
the angle turns the crop's x axis from the image's x axis toward +y (clockwise on screen),
so a face whose eye line descends to the right gets a positive angle and an upright crop.

Every crop is described by one 2×3 affine ``A`` mapping crop pixels to image pixels; it is
used for ``cv2.warpAffine(..., WARP_INVERSE_MAP)`` and, unchanged, to project the network's
output points (given in crop pixels) back to the image — so crop and projection cannot drift.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

Roi = tuple[float, float, float, float]


def roi_from_box(
    xmin: float, ymin: float, xmax: float, ymax: float, start: np.ndarray, end: np.ndarray, scale: float
) -> Roi:
    """Square ROI on a box's centre, ``scale`` × its long side, rotated so start→end is horizontal."""
    angle = -math.atan2(-(float(end[1]) - float(start[1])), float(end[0]) - float(start[0]))
    size = scale * max(xmax - xmin, ymax - ymin)
    return ((xmin + xmax) / 2.0, (ymin + ymax) / 2.0, size, angle)


def roi_from_points(points: np.ndarray, start: int, end: int, scale: float) -> Roi:
    """ROI around the bounding box of ``points`` (N, ≥2), aligned with points[start]→points[end]."""
    xy = points[:, :2]
    xmin, ymin = xy.min(axis=0)
    xmax, ymax = xy.max(axis=0)
    return roi_from_box(float(xmin), float(ymin), float(xmax), float(ymax), xy[start], xy[end], scale)


def crop_affine(roi: Roi, out_size: int, flip: bool = False) -> np.ndarray:
    """2×3 map from ``out_size``-pixel crop coordinates to image pixels (mirrored if ``flip``)."""
    cx, cy, size, angle = roi
    k = size / out_size
    c, s = math.cos(angle), math.sin(angle)
    sx = -k if flip else k
    half = size / 2.0
    u0 = half if flip else -half  # crop-space x offset of the crop's left edge
    return np.array(
        [[c * sx, -s * k, cx + c * u0 + s * half], [s * sx, c * k, cy + s * u0 - c * half]], np.float64
    )


def warp(image: np.ndarray, affine: np.ndarray, out_size: int) -> np.ndarray:
    """The crop ``affine`` describes, with edge pixels replicated outside the image.

    ``affine`` maps continuous coordinates whose pixel ``i`` spans [i, i+1] (the networks' output
    convention, used by :func:`project`), while OpenCV samples at integer pixel centres: shift by
    half a pixel on both sides so crop pixel ``u`` shows the image around ``affine(u + 0.5)``.
    Without this the mirrored eye crop is off by about one image pixel (≈3° of gaze).
    """
    centred = np.array(affine, np.float64)
    centred[:, 2] += 0.5 * (centred[:, 0] + centred[:, 1]) - 0.5
    return cv2.warpAffine(
        image,
        centred,
        (out_size, out_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def project(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) crop-space points (x, y, z) → image pixels; z scales with the crop like x."""
    out = np.empty_like(points)
    out[:, :2] = points[:, :2] @ affine[:, :2].T + affine[:, 2]
    out[:, 2] = points[:, 2] * math.hypot(affine[0, 0], affine[1, 0])
    return out


def roi_area_overlap(a: Roi, b: Roi) -> float:
    """IoU of the axis-aligned squares of two ROIs (rotation ignored; used to match faces)."""
    ha, hb = a[2] / 2.0, b[2] / 2.0
    ix = max(0.0, min(a[0] + ha, b[0] + hb) - max(a[0] - ha, b[0] - hb))
    iy = max(0.0, min(a[1] + ha, b[1] + hb) - max(a[1] - ha, b[1] - hb))
    inter = ix * iy
    union = a[2] ** 2 + b[2] ** 2 - inter
    return inter / union if union > 0 else 0.0
