"""Numba kernels for MediaPipe's attention-mesh custom ops (see :mod:`dmask_live.attention_mesh`).

Straight transcriptions of the TFLite reference kernels (version 2), loop for loop: a few thousand
multiply-adds per frame, where numpy's per-call overhead would cost more than the arithmetic. No
fastmath, so the order of operations is the kernels' own.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def transform_matrix(landmarks, scale, subset, count, left, right, target_rotation, out_w, out_h,
                     scale_x, scale_y, out):  # fmt: skip
    """Landmarks2TransformMatrix v2 of ``landmarks[:, :2] * scale``, over ``subset[:count]``, into ``out``."""
    lx, ly = landmarks[left, 0] * scale, landmarks[left, 1] * scale
    rx, ry = landmarks[right, 0] * scale, landmarks[right, 1] * scale
    rotation = target_rotation - math.atan2(ry - ly, rx - lx)
    c, s = math.cos(rotation), math.sin(rotation)
    min_x = min_y = np.inf
    max_x = max_y = -np.inf
    for i in range(count):
        x, y = landmarks[subset[i], 0] * scale, landmarks[subset[i], 1] * scale
        turned_x, turned_y = c * x - s * y, s * x + c * y
        min_x, max_x = min(min_x, turned_x), max(max_x, turned_x)
        min_y, max_y = min(min_y, turned_y), max(max_y, turned_y)
    mid_x, mid_y = (min_x + max_x) / 2.0, (min_y + max_y) / 2.0
    ci, si = math.cos(-rotation), math.sin(-rotation)
    centre_x, centre_y = ci * mid_x - si * mid_y, si * mid_x + ci * mid_y
    # shift(centre) · rotate(-rotation) · scale · shift(-output / 2)
    sx = scale_x * (max_x - min_x) / out_w
    sy = scale_y * (max_y - min_y) / out_h
    cr, sr = math.cos(-rotation), math.sin(-rotation)
    out[:, :] = 0.0
    out[0, 0], out[0, 1] = cr * sx, -sr * sy
    out[1, 0], out[1, 1] = sr * sx, cr * sy
    out[0, 3] = centre_x - (out[0, 0] * out_w / 2.0 + out[0, 1] * out_h / 2.0)
    out[1, 3] = centre_y - (out[1, 0] * out_w / 2.0 + out[1, 1] * out_h / 2.0)
    out[2, 2] = 1.0
    out[3, 3] = 1.0


@njit(cache=True)
def transform_tensor_bilinear(features, matrix, out):
    """TransformTensorBilinear v2: (H, W, C) ``features`` sampled by ``matrix`` into ``out`` (C, h, w).

    Crop pixel (x, y) reads the features at the matrix image of its centre (the kernel's
    align-corners correction), bilinearly; samples outside [0, W-1] × [0, H-1] are zero, and so
    is a corner beyond the last row or column.
    """
    height, width, channels = features.shape
    out_h, out_w = out.shape[1], out.shape[2]
    x_shift = matrix[0, 3] + matrix[0, 0] * 0.5 + matrix[0, 1] * 0.5 - 0.5
    y_shift = matrix[1, 3] + matrix[1, 0] * 0.5 + matrix[1, 1] * 0.5 - 0.5
    for oy in range(out_h):
        for ox in range(out_w):
            tx = matrix[0, 0] * ox + matrix[0, 1] * oy + x_shift
            ty = matrix[1, 0] * ox + matrix[1, 1] * oy + y_shift
            if tx < 0.0 or tx > width - 1 or ty < 0.0 or ty > height - 1:
                for ch in range(channels):
                    out[ch, oy, ox] = 0.0
                continue
            x0, y0 = int(math.floor(tx)), int(math.floor(ty))
            right, lower = tx - x0, ty - y0
            x1, y1 = x0 + 1, y0 + 1
            for ch in range(channels):
                q11 = features[y0, x0, ch]
                q21 = features[y0, x1, ch] if x1 < width else 0.0
                q12 = features[y1, x0, ch] if y1 < height else 0.0
                q22 = features[y1, x1, ch] if x1 < width and y1 < height else 0.0
                upper_row = (1.0 - right) * q11 + right * q21
                lower_row = (1.0 - right) * q12 + right * q22
                out[ch, oy, ox] = lower * lower_row + (1.0 - lower) * upper_row


@njit(cache=True)
def crop_regions(landmarks, scales, subsets, counts, rotation_indices, target_rotations, crop_sizes,
                 crop_scales, features, matrices, crops):  # fmt: skip
    """Every region's transform matrix (``matrices`` (R, 4, 4)) and feature crop (``crops`` (R, C, h, w))."""
    for r in range(len(counts)):
        transform_matrix(landmarks, scales[r], subsets[r], counts[r], rotation_indices[r, 0],
                         rotation_indices[r, 1], target_rotations[r], crop_sizes[r, 0], crop_sizes[r, 1],
                         crop_scales[r, 0], crop_scales[r, 1], matrices[r])  # fmt: skip
        transform_tensor_bilinear(features, matrices[r], crops[r])
