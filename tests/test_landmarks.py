"""The landmark stage: detector → mesh → eyes/iris, tracking, input boundary, faces to follow.

Behaviour tests run on both landmark models (the default attention mesh and mesh + iris model).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dmask_live.types import NUM_EYE_CONTOUR_POINTS, NUM_IRIS_POINTS, NUM_POINTS_WITH_IRIS, FaceLandmarks

# Where the astronaut's face is (pixels, generous margins), found by eye on the picture.
ASTRONAUT_FACE_BOX = (160, 50, 290, 200)  # xmin, ymin, xmax, ymax


def _landmarker(model: str | None):
    from dmask_live.landmarks import FaceLandmarker
    from dmask_live.models import ModelError

    try:
        return FaceLandmarker(model=model)
    except ModelError as error:
        pytest.skip(f"ONNX models not built (run `dmask-live models`): {error}")


@pytest.fixture(scope="module", params=["attention", "mesh_iris"])
def landmarker(request):
    return _landmarker(request.param)


@pytest.fixture(scope="module")
def both(landmarker):
    """One landmarker of each model (the parametrised one reused)."""
    other = "mesh_iris" if landmarker.model == "attention" else "attention"
    return {landmarker.model: landmarker, other: _landmarker(other)}


@pytest.fixture
def fresh(landmarker):
    landmarker.reset()
    return landmarker


def lid_polygon(contour: np.ndarray) -> np.ndarray:
    """The eye opening: lower lid (points 0–8, corner to corner) then upper lid back (15–9)."""
    return np.concatenate([contour[0:9, :2], contour[15:8:-1, :2]]).astype(np.float32)


def test_astronaut_face_points_and_eyes(fresh, astronaut):
    face = fresh.process(astronaut)
    assert isinstance(face, FaceLandmarks)
    assert face.points.shape == (NUM_POINTS_WITH_IRIS, 3) and face.points.dtype == np.float32
    assert face.eye_contours.shape == (2, NUM_EYE_CONTOUR_POINTS, 3)
    assert face.iris.shape == (2, NUM_IRIS_POINTS, 3)
    assert face.image_size == (512, 512)
    assert face.confidence > 0.9
    xmin, ymin, xmax, ymax = ASTRONAUT_FACE_BOX
    xy = face.points[:, :2]
    assert (xy[:, 0] > xmin).all() and (xy[:, 0] < xmax).all()
    assert (xy[:, 1] > ymin).all() and (xy[:, 1] < ymax).all()
    assert np.isfinite(face.points).all()
    # Eye 0 is the patient's right eye: on the image's left in this unmirrored photo.
    assert face.iris[0, 0, 0] < face.iris[1, 0, 0]
    for eye in range(2):
        centre = tuple(float(v) for v in face.iris[eye, 0, :2])
        assert cv2.pointPolygonTest(lid_polygon(face.eye_contours[eye]), centre, False) > 0
    # Iris edges in MediaPipe's image-space order for both eyes: centre, +x, −y, −x, +y.
    assert (face.iris[:, 1, 0] > face.iris[:, 3, 0]).all() and (face.iris[:, 2, 1] < face.iris[:, 4, 1]).all()
    # The appended iris points are the per-eye iris, OD first (MediaPipe's 468–472 then 473–477).
    np.testing.assert_array_equal(face.points[468:], face.iris.reshape(-1, 3))
    # Mesh eye points are refined by the eye contour (iris model's, or the attention heads').
    np.testing.assert_allclose(
        face.points[[33, 133, 263, 362], :2], face.eye_contours[[0, 0, 1, 1], [0, 8, 0, 8], :2]
    )
    cx, cy, size, _angle = face.roi
    assert xmin < cx < xmax and ymin < cy < ymax and 100 < size < 300


def test_mirrored_eye_crop_has_no_bias(fresh, astronaut):
    """The iris model sees eye 1 mirrored; mirroring the photo must mirror the iris centres.

    A crop that is not an exact mirror shifts eye 1 by about one pixel (≈3° of gaze). (The
    attention model's eye heads are two networks, one per eye: no mirrored crop to check.)
    """
    if fresh.model != "mesh_iris":
        pytest.skip("only the iris model works on a mirrored crop")
    face = fresh.process(astronaut)
    fresh.reset()
    mirrored = fresh.process(np.ascontiguousarray(astronaut[:, ::-1]))
    width = astronaut.shape[1]
    for eye in range(2):
        assert abs((width - mirrored.iris[1 - eye, 0, 0]) - face.iris[eye, 0, 0]) < 0.3


def test_tracking_reuses_landmarks_and_reset_runs_detector(fresh, astronaut):
    calls = fresh.detector_calls
    for _ in range(4):
        assert fresh.process(astronaut) is not None
    assert fresh.detector_calls == calls + 1
    fresh.reset()
    assert fresh.process(astronaut) is not None
    assert fresh.detector_calls == calls + 2


@pytest.mark.parametrize(
    "convert",
    [
        lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
        lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None],
        lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
        lambda rgb: rgb[:, ::-1][:, ::-1],  # non-contiguous view
    ],
    ids=["grey", "grey-1-channel", "rgba", "strided"],
)
def test_other_layouts_find_the_face(fresh, astronaut, convert):
    face = fresh.process(convert(astronaut))
    assert face is not None and face.image_size == (512, 512)
    assert face.iris[0, 0, 0] < face.iris[1, 0, 0]


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((64, 64, 3), np.float32), "dtype must be uint8"),
        (np.zeros((64, 64, 3), np.uint16), "dtype must be uint8"),
        (np.zeros((64, 64, 2), np.uint8), "shape must be"),
        (np.zeros((2, 64, 64, 3), np.uint8), "shape must be"),
        (np.zeros(64, np.uint8), "shape must be"),
        (np.zeros((0, 64, 3), np.uint8), "empty"),
        ([[0, 0, 0]], "numpy array"),
    ],
    ids=["float32", "uint16", "2-channel", "batch", "1-d", "empty", "list"],
)
def test_bad_input_raises_precise_error(landmarker, image, message):
    with pytest.raises(ValueError, match=message):
        landmarker.process(image)


def cartoon_face() -> np.ndarray:
    image = np.full((480, 640, 3), 230, np.uint8)
    cv2.circle(image, (320, 240), 150, (250, 210, 80), -1)
    cv2.circle(image, (270, 200), 25, (0, 0, 0), -1)
    cv2.circle(image, (370, 200), 25, (0, 0, 0), -1)
    cv2.ellipse(image, (320, 290), (70, 40), 0, 0, 180, (0, 0, 0), 8)
    return image


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.zeros((1, 1, 3), np.uint8),
        lambda: np.full((480, 640, 3), 128, np.uint8),
        lambda: np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8),
        lambda: np.random.default_rng(1).integers(0, 256, (3, 7), dtype=np.uint8),
        cartoon_face,
    ],
    ids=["1x1", "flat-grey", "noise", "tiny-noise-grey", "cartoon"],
)
def test_no_face_gives_none(fresh, make):
    if make is cartoon_face and fresh.model == "attention":
        pytest.skip("a drawn smiley is a face to the attention mesh (see the next test)")
    assert fresh.process(make()) is None
    assert not fresh.tracking


def test_attention_mesh_takes_a_drawn_smiley_for_a_face_like_mediapipe(both):
    """The attention mesh's face flag accepts the smiley (so does MediaPipe's FaceMesh with
    refine_landmarks=True, which runs that network; without refinement it does not). A drawing
    gets an avatar, never its pixels, so this is a difference in behaviour, not in privacy."""
    both["attention"].reset()
    both["mesh_iris"].reset()
    assert both["attention"].process(cartoon_face()) is not None
    assert both["mesh_iris"].process(cartoon_face()) is None


def test_both_models_agree_on_the_astronaut(both, astronaut):
    """Two different networks (one mesh + iris model, the attention mesh) find the same eyes."""
    faces = {}
    for model, landmarker in both.items():
        landmarker.reset()
        faces[model] = landmarker.process(astronaut)
    att, ref = faces["attention"], faces["mesh_iris"]
    iod = np.linalg.norm(ref.iris[0, 0, :2] - ref.iris[1, 0, :2])
    assert np.linalg.norm(att.iris[:, 0, :2] - ref.iris[:, 0, :2], axis=1).max() < 0.015 * iod
    assert np.median(np.linalg.norm(att.points[:, :2] - ref.points[:, :2], axis=1)) < 0.04 * iod
    contours = np.linalg.norm(att.eye_contours[..., :2] - ref.eye_contours[..., :2], axis=2)
    assert np.median(contours) < 0.03 * iod
    # The attention model's refinements are where MediaPipe puts them: lips and eyes moved, the
    # rest of the mesh untouched, the iris at the mean depth of its lid margin.
    assert att.confidence > 0.9
    np.testing.assert_array_equal(att.iris[:, :, 2], att.iris[:, :1, 2].repeat(5, axis=1))


def test_unknown_model_is_refused():
    from dmask_live.landmarks import FaceLandmarker

    with pytest.raises(ValueError, match="model must be one of attention, mesh_iris"):
        FaceLandmarker(model="iris")


def test_environment_names_the_model_when_none_is_given(monkeypatch):
    from dmask_live.landmarks import MODEL_ENV_VAR, default_model

    monkeypatch.delenv(MODEL_ENV_VAR, raising=False)
    assert default_model() == "mesh_iris"
    monkeypatch.setenv(MODEL_ENV_VAR, "attention")
    assert default_model() == "attention"
    assert _landmarker(None).model == "attention"
    assert _landmarker("mesh_iris").model == "mesh_iris"  # a named model wins over the environment
    monkeypatch.setenv(MODEL_ENV_VAR, "iris")
    with pytest.raises(ValueError, match="DMASK_LANDMARK_MODEL must be one of attention, mesh_iris"):
        default_model()


def test_8k_frame(fresh, astronaut):
    frame = np.zeros((4320, 7680, 3), np.uint8)
    frame[:, 1680:6000] = cv2.resize(astronaut, (4320, 4320), interpolation=cv2.INTER_LINEAR)
    face = fresh.process(frame)
    assert face is not None and face.image_size == (7680, 4320)
    scale = 4320 / 512
    nose = face.points[1, :2]
    assert 1680 + 160 * scale < nose[0] < 1680 + 290 * scale and 50 * scale < nose[1] < 200 * scale


SMALL, BIG, GAP = 240, 400, 20  # face copies' sizes and the gap between them (pixels)


def two_faces(astronaut: np.ndarray, with_big: bool = True) -> np.ndarray:
    """The astronaut's head large on the right and small on the left (x < SMALL)."""
    head = astronaut[20:260, 105:345]
    canvas = np.full((BIG, SMALL + GAP + BIG, 3), 40, np.uint8)
    if with_big:
        canvas[:, SMALL + GAP :] = cv2.resize(head, (BIG, BIG), interpolation=cv2.INTER_LINEAR)
    top = (BIG - SMALL) // 2
    canvas[top : top + SMALL, :SMALL] = cv2.resize(head, (SMALL, SMALL), interpolation=cv2.INTER_AREA)
    return canvas


def test_two_faces_follows_the_larger_one(fresh, astronaut):
    frame = two_faces(astronaut)
    assert len(fresh._detector.detect(frame)) == 2  # both faces are visible to the detector
    calls = fresh.detector_calls
    for _ in range(5):
        face = fresh.process(frame)
        assert face is not None
        assert face.points[1, 0] > SMALL + GAP, "should stay on the larger face (right)"
    assert fresh.detector_calls == calls + 1


def test_tracking_stays_on_the_tracked_face_when_a_larger_one_appears(fresh, astronaut):
    calls = fresh.detector_calls
    assert fresh.process(two_faces(astronaut, with_big=False)).points[1, 0] < SMALL
    for _ in range(3):
        assert fresh.process(two_faces(astronaut)).points[1, 0] < SMALL
    assert fresh.detector_calls == calls + 1
    fresh.reset()
    assert fresh.process(two_faces(astronaut)).points[1, 0] > SMALL + GAP


@pytest.mark.parametrize("model", ["attention", "mesh_iris"])
def test_shared_video_tracking_needs_few_detections(shared_data, model):
    av = pytest.importorskip("av")
    landmarker = _landmarker(model)
    faces = []
    with av.open(str(shared_data / "videos" / "d3.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= 40:
                break
            faces.append(landmarker.process(frame.to_ndarray(format="rgb24")))
    assert all(face is not None for face in faces)
    assert landmarker.detector_calls <= 2
    # Tracked landmarks move smoothly: the nose never jumps by more than a tenth of the face.
    noses = np.array([face.points[1, :2] for face in faces])
    sizes = np.array([face.roi[2] for face in faces])
    assert (np.linalg.norm(np.diff(noses, axis=0), axis=1) < 0.1 * sizes[1:]).all()


def test_sessions_are_single_threaded_cpu_with_dynamic_batch(landmarker):
    from dmask_live.inference import default_providers, session_options

    assert default_providers()[-1] == "CPUExecutionProvider"
    options = session_options(1)
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    with pytest.raises(ValueError, match="threads"):
        session_options(0)
    if landmarker.model == "mesh_iris":
        contours, iris = landmarker._iris(np.zeros((2, 3, 64, 64), np.float32))[:2]
        assert contours.shape[0] == 2 and iris.shape == (2, 15)
    else:
        backbone = landmarker._attention.backbone
        assert isinstance(backbone.session.get_inputs()[0].shape[0], str)
        options = backbone.session.get_session_options()
        assert options.intra_op_num_threads == 1


def test_non_finite_iris_output_is_no_face(astronaut):
    # A network can go non-finite on garbage input: the frame is "no face", never NaN landmarks.
    landmarker = _landmarker("mesh_iris")
    iris_model = landmarker._iris
    landmarker._iris = lambda x: [np.full_like(out, np.nan) for out in iris_model(x)]
    assert landmarker.process(astronaut) is None
    assert not landmarker.tracking  # the next frame starts again with the detector
