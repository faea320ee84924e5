"""Fixtures shared by every test module: real faces (bundled and shared) and paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dmask_live import models

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the project root (CI has it; a user's machine may not)."""
    candidate = Path(os.environ.get("DMASK_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
    return candidate if (candidate / "videos").is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("needs ../shared/data (real test faces); absent on this machine")
    return path


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real face that ships inside scikit-image's wheel: (512, 512, 3) uint8 RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def mediapipe_wheel(request, tmp_path_factory) -> Path:
    # pytest's cache dir keeps the 35 MB wheel between sessions (pip's own cache helps too)
    cache = getattr(request.config, "cache", None)
    cache = cache.mkdir("mediapipe-wheel") if cache else tmp_path_factory.mktemp("mediapipe-wheel")
    try:
        return models.download_wheel(cache)
    except models.ModelError as exc:
        pytest.skip(f"mediapipe wheel unavailable: {exc}")
