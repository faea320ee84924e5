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
    xy = points[:, :2].T.copy()  # (2, N): numpy reduces contiguous rows far faster than columns
    (xmin, ymin), (xmax, ymax) = xy.min(axis=1).tolist(), xy.max(axis=1).tolist()
    return roi_from_box(xmin, ymin, xmax, ymax, xy[:, start], xy[:, end], scale)


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


# Source pixels per crop pixel above which :func:`warp` copies the rectangle instead of converting
# it to RGBA (measured on clip frames: no change at 512×512, 0.09 ms less per 1280×720 frame).
STREAMING_AREA_SCALE = 3.0**2


def warp(image: np.ndarray, affine: np.ndarray, out_size: int) -> np.ndarray:
    """The crop ``affine`` describes, with edge pixels replicated outside the image.

    ``affine`` maps continuous coordinates whose pixel ``i`` spans [i, i+1] (the networks' output
    convention, used by :func:`project`), while OpenCV samples at integer pixel centres: shift by
    half a pixel on both sides so crop pixel ``u`` shows the image around ``affine(u + 0.5)``.
    Without this the mirrored eye crop is off by about one image pixel (≈3° of gaze).

    Only the image rectangle the crop can read (clamped to the image, so replication at its edges
    is the image's) is touched. A crop of a few source pixels per crop pixel is warped as RGBA:
    OpenCV's 4-channel bilinear warp is about twice as fast as its 3-channel one. A crop that
    shrinks its rectangle more (a big face, a 720p frame) is memory-bound instead: the frame is
    usually not in cache, and a plain copy of the rectangle streams it in faster than the RGBA
    conversion or the warp's scattered reads (0.27 vs 0.37 ms for a 660 px face on 1280×720,
    same pixels out).
    """
    (a, b, c), (d, e, f) = affine.tolist()
    c += 0.5 * (a + b) - 0.5
    f += 0.5 * (d + e) - 0.5
    height, width = image.shape[:2]
    xs = (c, c + a * out_size, c + b * out_size, c + (a + b) * out_size)
    ys = (f, f + d * out_size, f + e * out_size, f + (d + e) * out_size)
    if math.isfinite(sum(xs) + sum(ys)):
        # The rectangle bilinear sampling can touch, with a margin, clamped into the image.
        x0 = min(max(math.floor(min(xs)) - 2, 0), width - 1)
        x1 = min(max(math.ceil(max(xs)) + 2, 0), width - 1)
        y0 = min(max(math.floor(min(ys)) - 2, 0), height - 1)
        y1 = min(max(math.ceil(max(ys)) + 2, 0), height - 1)
    else:  # a degenerate map: let OpenCV deal with it on the whole image, as it always did
        x0, y0, x1, y1 = 0, 0, width - 1, height - 1
    centred = np.array([[a, b, c - x0], [d, e, f - y0]])
    region = image[y0 : y1 + 1, x0 : x1 + 1]
    as_rgba = region.ndim == 3 and region.shape[2] == 3 and abs(a * e - b * d) <= STREAMING_AREA_SCALE
    if as_rgba:
        source = cv2.cvtColor(region, cv2.COLOR_RGB2RGBA)
    else:
        source = np.ascontiguousarray(region)
    crop = cv2.warpAffine(
        source,
        centred,
        (out_size, out_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return cv2.cvtColor(crop, cv2.COLOR_RGBA2RGB) if as_rgba else crop


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
