"""Crop geometry shared by the mesh and iris networks: what a crop shows must project back exactly."""

import numpy as np
import pytest

from dmask_live import roi as roi_ops


def _blob_image(x: float, y: float, size=(120, 160)) -> np.ndarray:
    """A smooth bright blob centred at continuous image coordinates (x, y), pixel i spanning [i, i+1]."""
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]] + 0.5  # pixel centres
    blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))
    return np.repeat((255 * blob).astype(np.uint8)[..., None], 3, axis=2)


def _centroid(crop: np.ndarray) -> np.ndarray:
    """Intensity centroid in crop coordinates, pixel i spanning [i, i+1] (the networks' convention)."""
    weight = crop[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]] + 0.5
    return np.array([(xx * weight).sum(), (yy * weight).sum()]) / weight.sum()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("angle", [0.0, 0.3])
@pytest.mark.parametrize("size", [40.0, 80.0])
def test_crop_then_project_returns_the_same_point(flip, angle, size):
    # The iris network sees the second eye mirrored: a feature found in the crop must project
    # back onto the same image point, or one eye's gaze is biased (was ~1 px at 64-px eye crops).
    x, y = 71.3, 58.6
    image = _blob_image(x, y)
    affine = roi_ops.crop_affine((74.0, 60.0, size, angle), 64, flip)
    crop = roi_ops.warp(image, affine, 64)
    found = roi_ops.project(affine, np.array([[*_centroid(crop), 0.0]]))[0, :2]
    assert found == pytest.approx([x, y], abs=0.08)
