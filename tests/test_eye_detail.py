"""Eye-detail ribbons: laid on the model's own lid loops, never across the eye opening."""

from __future__ import annotations

import dataclasses

import numpy as np

from dmask_live import eye_detail
from dmask_live import face_model as fm
from dmask_live.types import AvatarState


def posed(upper_openness: float) -> np.ndarray:
    model = fm.load_face_model()
    state = AvatarState(
        tracked=True, head_pose_deg=np.zeros(3, np.float32), translation=np.array([320.0, 240.0], np.float32),
        scale=16.0, image_size=(640, 480),
        eyelids=np.array([[upper_openness, 1.0], [upper_openness, 1.0]], np.float32),
    )
    return fm.posed_vertices(model, state), np.asarray(model.eye_ring)


def rows_of(vertices: np.ndarray, styles, style_index: int, eye: int = 0) -> np.ndarray:
    """(rows, points, 7) vertices of one ribbon of one eye in ribbon_vertices' layout."""
    sizes = [len(s.rows) * eye_detail.LOOP_POINTS for s in styles]
    start = eye * sum(sizes) + sum(sizes[:style_index])
    block = vertices[start:start + sizes[style_index]]
    return block.reshape(len(styles[style_index].rows), eye_detail.LOOP_POINTS, 7)


def test_triangles_index_every_vertex_once_laid_out():
    verts, rings = posed(1.0)
    ribbons = eye_detail.ribbon_vertices(verts, rings, np.array([0.0, 0.0, -1.0]))
    tris = eye_detail.ribbon_triangles()
    assert tris.min() == 0 and tris.max() == len(ribbons) - 1
    assert ribbons.shape[1] == 7 and np.isfinite(ribbons).all()


def test_upper_lash_line_sits_on_the_margin_and_grows_upward():
    verts, rings = posed(1.0)
    styles = eye_detail.STYLES
    lash = next(i for i, s in enumerate(styles) if s.loop == "upper" and s.rows[-1][0] > 0)
    block = rows_of(eye_detail.ribbon_vertices(verts, rings, np.array([0.0, 0.0, -1.0])), styles, lash)
    margin = verts[rings[0][list(eye_detail.UPPER_MARGIN)]]
    solid = [k for k, (offset, _) in enumerate(styles[lash].rows) if offset == 0.0][0]
    assert np.allclose(block[solid, :, :2], margin[:, :2], atol=1e-3)  # the dark row is the margin
    middle = eye_detail.LOOP_POINTS // 2
    assert block[-1, middle, 1] < margin[middle, 1] - 1.0  # outer edge above the margin (image y down)


def test_rows_inside_the_eye_never_cross_the_lower_margin():
    verts, rings = posed(0.05)  # a nearly shut eye: a slit of about a pixel
    styles = eye_detail.STYLES
    ribbons = eye_detail.ribbon_vertices(verts, rings, np.array([0.0, 0.0, -1.0]))
    lower = verts[rings[0][list(eye_detail.LOWER_MARGIN)]]
    for k, style in enumerate(styles):
        if style.loop != "upper":
            continue
        block = rows_of(ribbons, styles, k)
        assert (block[:, 1:-1, 1] <= lower[1:-1, 1] + 1e-3).all(), style


def test_a_narrow_eye_is_shaded_more():
    styles = eye_detail.STYLES
    shadow = next(i for i, s in enumerate(styles) if s.slit_alpha is not None)
    alphas = []
    for openness in (1.0, 0.2):
        verts, rings = posed(openness)
        block = rows_of(eye_detail.ribbon_vertices(verts, rings, np.array([0.0, 0.0, -1.0])), styles, shadow)
        alphas.append(block[0, :, 6].max())
    assert alphas[1] > alphas[0] + 0.1


def test_the_crease_fades_as_the_eye_shuts():
    # Drawn on a shut eye, the networks read the crease as the margin of a half-open eye.
    styles = eye_detail.STYLES
    crease = next(i for i, s in enumerate(styles) if s.loop == "crease")
    alphas = []
    for openness in (1.0, 0.5, 0.0, -0.3):
        verts, rings = posed(openness)
        block = rows_of(eye_detail.ribbon_vertices(verts, rings, np.array([0.0, 0.0, -1.0])), styles, crease)
        alphas.append(float(block[..., 6].max()))
    assert alphas[0] > 0.3 and np.all(np.diff(alphas) < 0) and alphas[-1] < alphas[0] / 3, alphas


def test_socket_colours_are_pink_at_the_inner_corner():
    rgba = eye_detail.socket_colours(16)
    assert rgba.shape == (17, 4) and np.all(rgba[:, 3] == 1.0)
    inner, outer = rgba[8], rgba[0]
    assert inner[0] - inner[1] > outer[0] - outer[1] + 0.15


def test_styles_are_frozen():
    style = eye_detail.STYLES[0]
    assert dataclasses.is_dataclass(style)
