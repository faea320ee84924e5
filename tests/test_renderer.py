"""AvatarRenderer: pixels read back from the offscreen EGL context (moderngl's own test style)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dmask_live import face_model as fm
from dmask_live.renderer import BACKGROUND, AvatarRenderer, neutral_frame
from dmask_live.types import AvatarState

W, H = 640, 480


@pytest.fixture(scope="module")
def shared_renderer():
    renderer = AvatarRenderer(W, H)
    yield renderer
    renderer.release()


def gl_error(renderer: AvatarRenderer) -> str:
    """The GL error flag of the renderer's context (made current, as render() does)."""
    with renderer.ctx:
        return renderer.ctx.error


@pytest.fixture()
def renderer(shared_renderer):
    """The module's renderer, with the GL error flag checked before and after each test."""
    assert gl_error(shared_renderer) == "GL_NO_ERROR"
    yield shared_renderer
    assert gl_error(shared_renderer) == "GL_NO_ERROR"


def frontal(**changes) -> AvatarState:
    state = AvatarState(
        tracked=True,
        head_pose_deg=np.zeros(3, np.float32),
        translation=np.array([W / 2, H / 2], np.float32),
        scale=16.0,
        image_size=(W, H),
    )
    return dataclasses.replace(state, **{k: np.asarray(v, np.float32) for k, v in changes.items()})


def eye_box(state: AvatarState, eye: int, margin: float = 4.0) -> tuple[slice, slice]:
    model = fm.load_face_model()
    ring = fm.posed_vertices(model, dataclasses.replace(state, eyelids=np.ones((2, 2), np.float32)))
    ring = ring[model.eye_ring[eye]]
    x0, y0 = ring[:, :2].min(0) - margin
    x1, y1 = ring[:, :2].max(0) + margin
    return slice(int(y0), int(y1) + 1), slice(int(x0), int(x1) + 1)


def sclera_mask(pixels: np.ndarray) -> np.ndarray:
    p = pixels.astype(int)
    return (p.min(-1) > 170) & (p.max(-1) - p.min(-1) < 40)


def iris_mask(pixels: np.ndarray) -> np.ndarray:
    """The (blue-grey) iris; the pupil and the lash lines are dark and not part of it."""
    p = pixels.astype(int)
    return p[..., 2] > p[..., 0] + 25


def pupil_mask(pixels: np.ndarray) -> np.ndarray:
    """Near-black pixels inside the iris's bounding box (the lash line is dark too, but outside)."""
    iris = iris_mask(pixels)
    dark = pixels.astype(int).max(-1) < 40
    if not iris.any():
        return np.zeros_like(dark)
    ys, xs = np.nonzero(iris)
    box = np.zeros_like(dark)
    box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    return dark & box


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0, "no pixels of that kind"
    return np.array([xs.mean(), ys.mean()])


def test_background_at_corners(renderer):
    image = renderer.render(frontal())
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    for y, x in [(0, 0), (0, W - 1), (H - 1, 0), (H - 1, W - 1)]:
        assert tuple(image[y, x]) == BACKGROUND


def test_skin_at_face_centre(renderer):
    state = frontal()
    image = renderer.render(state)
    cheek = fm.posed_vertices(fm.load_face_model(), state)[[205, 425, 151]]  # both cheeks, forehead
    for x, y, _ in cheek:
        r, g, b = image[int(y), int(x)].astype(int)
        assert r > g > b, (r, g, b)
        assert r > 120 and r - b > 40


def test_eyes_have_sclera_iris_and_pupil(renderer):
    state = frontal()
    image = renderer.render(state)
    for eye in (0, 1):
        region = image[eye_box(state, eye)]
        assert sclera_mask(region).sum() > 40
        assert iris_mask(region).sum() > 40
        assert pupil_mask(region).sum() > 4


@pytest.mark.parametrize(
    ("gaze", "axis", "sign"),
    [((20.0, 0.0), 0, +1), ((-20.0, 0.0), 0, -1), ((0.0, 18.0), 1, -1), ((0.0, -18.0), 1, +1)],
)
def test_gaze_moves_the_iris(renderer, gaze, axis, sign):
    """Positive yaw looks toward image right, positive pitch looks up (smaller y)."""
    straight = frontal(eyelids=np.full((2, 2), 1.3))
    turned = dataclasses.replace(straight, gaze_deg=np.array([gaze, gaze], np.float32))
    base, moved = renderer.render(straight), renderer.render(turned)
    for eye in (0, 1):
        box = eye_box(straight, eye, margin=6.0)
        shift = centroid(iris_mask(moved[box])) - centroid(iris_mask(base[box]))
        assert sign * shift[axis] > 1.5, shift


def test_one_eye_gaze_moves_only_that_eye(renderer):
    """Strabismus must survive: each eye is rotated by its own gaze."""
    straight = frontal()
    squint = frontal(gaze_deg=[[-15.0, 0.0], [0.0, 0.0]])
    base, moved = renderer.render(straight), renderer.render(squint)
    od, os_ = eye_box(straight, 0), eye_box(straight, 1)
    assert centroid(iris_mask(moved[od]))[0] < centroid(iris_mask(base[od]))[0] - 1.5
    assert np.array_equal(moved[os_], base[os_])


def test_closed_lids_cover_the_eyeball(renderer):
    state = frontal()
    closed = frontal(eyelids=np.zeros((2, 2)))
    open_img, closed_img = renderer.render(state), renderer.render(closed)
    for eye in (0, 1):
        box = eye_box(state, eye)
        assert sclera_mask(open_img[box]).sum() > 40
        assert sclera_mask(closed_img[box]).sum() <= 2
        assert iris_mask(closed_img[box]).sum() <= 2
        # A closed eye still reads as an eye: the dark lash line where the lids meet.
        assert (closed_img[box].astype(int).max(-1) < 70).sum() > 20


@pytest.mark.parametrize("openness", [1.0, 0.45])
def test_upper_lid_covers_the_eye_down_to_its_margin(renderer, openness):
    """Above the model's upper margin no eyeball shows (a drooping lid reads as drooping), the dark
    lash line sits on the margin, and the eye starts right below it (no skin or socket gap)."""
    state = frontal(eyelids=[[openness, 1.0], [openness, 1.0]])
    image = renderer.render(state).astype(int)
    model = fm.load_face_model()
    verts = fm.posed_vertices(model, state)
    for eye in (0, 1):
        top = verts[model.eye_ring[eye][12]]  # the upper margin's middle
        x, margin_row = int(top[0]), int(np.floor(top[1]))
        column = image[margin_row - 8 : margin_row + 6, x]
        rows = np.arange(margin_row - 8, margin_row + 6)
        eyeball = iris_mask(column) | sclera_mask(column)
        assert not eyeball[rows < top[1] - 0.5].any()
        assert column[rows == margin_row].max() < 70  # the lash line on the margin
        assert eyeball[(rows > top[1]) & (rows <= top[1] + 3)].any()


def test_one_lid_closing_is_per_eye(renderer):
    """A wink (or unilateral ptosis) closes one eye only."""
    state = frontal(eyelids=[[0.0, 0.0], [1.0, 1.0]])
    image = renderer.render(state)
    assert sclera_mask(image[eye_box(state, 0)]).sum() <= 2
    assert sclera_mask(image[eye_box(state, 1)]).sum() > 40


def test_skull_continues_above_the_forehead(renderer):
    """The face mesh ends at the forehead; the canonical skull goes on above it (no background)."""
    state = frontal()
    image = renderer.render(state)
    top = fm.posed_vertices(fm.load_face_model(), state)[10]  # the mesh's topmost forehead point
    for dy in (5, 30, 60):
        r, g, b = image[int(top[1]) - dy, int(top[0])].astype(int)
        assert (r, g, b) != BACKGROUND and r > g > b, (dy, r, g, b)


def test_inner_eye_corner_is_pink_caruncle(renderer):
    """Where the eyeball does not reach the inner canthus, a pink caruncle shows (not skin, not white)."""
    state = frontal()
    image = renderer.render(state).astype(int)
    model = fm.load_face_model()
    ring = fm.posed_vertices(model, state)[model.eye_ring[0]]
    inner, centre = ring[8, :2], ring[:, :2].mean(0)
    x, y = (inner + 0.12 * (centre - inner)).astype(int)
    r, g, b = image[y, x]
    assert r - g > 45 and r > 150, (r, g, b)


def test_head_position_follows_translation(renderer):
    left = renderer.render(frontal(translation=[200.0, 240.0]))
    right = renderer.render(frontal(translation=[440.0, 240.0]))
    face_left = centroid(np.any(left != BACKGROUND, axis=-1))
    face_right = centroid(np.any(right != BACKGROUND, axis=-1))
    assert face_right[0] - face_left[0] == pytest.approx(240.0, abs=2.0)


def test_avatar_overlays_the_projected_model(renderer):
    """Orthographic projection matches posed_vertices (face) and project() (skull, neck): the
    drawn avatar spans exactly the projected geometry."""
    from dmask_live import avatar_head

    state = frontal(head_pose_deg=[20.0, -10.0, 8.0], translation=[300.0, 260.0])
    image = renderer.render(state)
    mask = np.any(image != BACKGROUND, axis=-1)
    head = fm.project(avatar_head.ellipsoid_meshes()[0], state)
    posed = np.vstack([fm.posed_vertices(fm.load_face_model(), state), head])
    posed[:, 1] = np.clip(posed[:, 1], 0, H - 1)  # the neck runs out of the frame
    x0, y0 = posed[:, :2].min(0)
    x1, y1 = posed[:, :2].max(0)
    ys, xs = np.nonzero(mask)
    assert xs.min() == pytest.approx(x0, abs=3) and xs.max() == pytest.approx(x1, abs=3)
    assert ys.min() == pytest.approx(y0, abs=3) and ys.max() == pytest.approx(y1, abs=3)


def test_untracked_renders_the_neutral_frame(renderer):
    image = renderer.render(AvatarState.untracked((W, H)))
    assert np.array_equal(image, neutral_frame(W, H))
    assert tuple(image[0, 0]) == BACKGROUND
    assert (np.any(image != BACKGROUND, axis=-1)).sum() > 500  # the head outline glyph
    image[:] = 0  # callers get a copy: the cached frame is unharmed
    assert np.array_equal(renderer.render(AvatarState.untracked((W, H))), neutral_frame(W, H))


def test_identical_states_render_identical_frames(renderer):
    state = frontal(head_pose_deg=[5.0, 3.0, -2.0], gaze_deg=[[4.0, 2.0], [3.0, 1.0]])
    first = renderer.render(state)
    renderer.render(frontal(head_pose_deg=[-30.0, 0.0, 0.0]))
    assert np.array_equal(first, renderer.render(state))


def test_output_size_scales_state_coordinates():
    state = dataclasses.replace(frontal(translation=[400.0, 300.0]), scale=32.0, image_size=(1280, 960))
    with AvatarRenderer(W, H) as small:
        image = small.render(state)
        assert gl_error(small) == "GL_NO_ERROR"
    reference = frontal(translation=[200.0, 150.0])
    with AvatarRenderer(W, H) as same:
        expected = same.render(reference)
    assert np.abs(image.astype(int) - expected.astype(int)).mean() < 1.0


def test_centre_placement_normalises_position_and_size():
    with AvatarRenderer(320, 240, placement="centre") as renderer:
        a = renderer.render(frontal(translation=[100.0, 100.0]))
        b = renderer.render(dataclasses.replace(frontal(translation=[500.0, 400.0]), scale=40.0))
    assert np.array_equal(a, b)
    head = np.any(a != BACKGROUND, axis=-1)
    rows, cols = np.nonzero(head)
    assert cols.mean() == pytest.approx(160.0, abs=6.0)
    assert 0.05 * 240 < rows.min() < 0.15 * 240  # the skull's top, with a margin
    assert a[120, 160].astype(int)[0] > 120  # skin at the frame centre


def test_release_is_idempotent_and_final():
    renderer = AvatarRenderer(64, 48)
    renderer.release()
    renderer.release()
    with pytest.raises(RuntimeError):
        renderer.render(frontal())


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="placement"):
        AvatarRenderer(64, 48, placement="middle")
    with pytest.raises(ValueError, match="positive"):
        AvatarRenderer(0, 48)


def test_two_renderers_on_one_thread_do_not_interfere(renderer):
    """Each render makes its own context current (a pipeline and a preview may coexist)."""
    state = frontal(gaze_deg=[[5.0, 0.0], [5.0, 0.0]])
    before = renderer.render(state)
    with AvatarRenderer(200, 100) as other:
        other.render(frontal(head_pose_deg=[30.0, 0.0, 0.0]))
        assert np.array_equal(renderer.render(state), before)
    assert np.array_equal(renderer.render(state), before)


def test_shared_context_is_left_usable():
    import moderngl

    ctx = moderngl.create_standalone_context(backend="egl")
    try:
        with AvatarRenderer(64, 48, ctx=ctx) as avatar:
            avatar.render(frontal())
        with ctx:
            assert ctx.error == "GL_NO_ERROR"
    finally:
        ctx.release()


@pytest.mark.parametrize(
    "change",
    [{"head_pose_deg": np.array([np.nan, 0, 0], np.float32)}, {"scale": 0.0}, {"scale": float("inf")},
     {"gaze_deg": np.full((2, 2), np.inf, np.float32)}, {"image_size": (0, 480)}],
    ids=["nan-pose", "zero-scale", "inf-scale", "inf-gaze", "no-size"],
)
def test_broken_states_are_refused(renderer, change):
    """A tracker bug must not draw garbage: the pipeline turns this error into the neutral frame."""
    with pytest.raises(ValueError, match="AvatarState"):
        renderer.render(dataclasses.replace(frontal(), **change))
