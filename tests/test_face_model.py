"""The packaged canonical face model: asset, topology, deformations and camera conventions."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dmask_live.face_model import (
    DEFAULT_MODEL_PATH,
    EYE_RING_INDICES,
    MOUTH_RING_INDICES,
    NUM_EYE_REGION_EXPRESSIONS,
    SHUT_UPPER_LID,
    drawn_eyelids,
    euler_from_rotation,
    eyeball_pose,
    landmarks_from_state,
    load_face_model,
    model_vertices,
    posed_vertices,
    rotation_matrix,
)
from dmask_live.types import AvatarState


@pytest.fixture(scope="module")
def model():
    return load_face_model()


def _state(**kwargs) -> AvatarState:
    base = dict(tracked=True, translation=np.array([320.0, 240.0]), scale=20.0, expression=np.zeros(12))
    base.update(kwargs)
    return AvatarState(**base)


def test_asset_small_and_loads(model):
    assert DEFAULT_MODEL_PATH.stat().st_size < 2 * 1024 * 1024
    assert model.vertices.shape == (468, 3) and model.vertices.dtype == np.float32
    assert model.expression_basis.shape[1:] == (468, 3)
    assert 10 <= model.num_expressions <= 16
    assert model.eyelid_basis.shape == (2, 2, 468, 3)
    assert model.units == "cm" and model.version
    assert load_face_model() is model  # cached


def test_model_units_and_axes(model):
    v = model.vertices
    ipd = np.linalg.norm(np.diff(model.eyeball_centers[:, :2], axis=0))
    assert ipd == pytest.approx(6.3, abs=0.01)
    assert v[33, 0] < 0 < v[263, 0]  # OD on -x (image left when frontal)
    assert v[10, 1] < v[1, 1] < v[152, 1]  # forehead above nose above chin (y down)
    assert np.argmin(v[:, 2]) in (1, 4, 5, 19, 44, 274)  # nose region closest to the camera
    assert model.iris_radius == pytest.approx(0.59, abs=0.06)  # ~11.7 mm iris
    assert model.pupil_radius < model.iris_radius < model.eyeball_radius


def test_symmetric_mean_face(model):
    v = model.vertices
    for a, b in ((33, 263), (133, 362), (61, 291), (234, 454)):
        assert v[a] * np.array([-1, 1, 1]) == pytest.approx(v[b], abs=1e-3)


def test_triangles_valid_and_openings_open(model):
    tris = model.triangles
    assert tris.dtype == np.int32 and tris.min() >= 0 and tris.max() < len(model.vertices)
    assert all(len(set(t)) == 3 for t in tris.tolist())
    edges = Counter(
        tuple(sorted(e)) for t in tris.tolist() for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))
    )
    assert max(edges.values()) <= 2  # manifold
    boundary = {e for e, count in edges.items() if count == 1}
    for ring in [*EYE_RING_INDICES, MOUTH_RING_INDICES]:
        loop = {tuple(sorted((int(ring[i]), int(ring[(i + 1) % len(ring)])))) for i in range(len(ring))}
        assert loop <= boundary  # each opening is a hole bounded by its ring
        ring_set = set(ring.tolist())
        assert not [t for t in tris.tolist() if set(t) <= ring_set]  # nothing spans the opening
    # Front-facing triangles point toward the camera (-z).
    v = model.vertices.astype(np.float64)
    normals = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    assert (normals[:, 2] < 0).mean() > 0.9


def test_rotation_conventions():
    forward = np.array([0.0, 0.0, -1.0])
    assert (rotation_matrix([30, 0, 0]) @ forward)[0] > 0  # yaw toward patient's left = image right
    assert (rotation_matrix([0, 30, 0]) @ forward)[1] < 0  # pitch up = image up
    assert (rotation_matrix([0, 0, 30]) @ np.array([0.0, -1.0, 0.0]))[0] > 0  # roll: top toward +x
    for pose in ([20, -10, 5], [-40, 25, -15]):
        assert euler_from_rotation(rotation_matrix(pose)) == pytest.approx(pose, abs=1e-9)
        r = rotation_matrix(pose)
        assert r @ r.T == pytest.approx(np.eye(3), abs=1e-12)


def test_lids_close_and_eye_region_not_in_expressions(model):
    closed = model_vertices(model, _state(eyelids=np.zeros((2, 2))))
    for eye in range(2):
        ring = EYE_RING_INDICES[eye]
        upper, lower = closed[ring[[13, 12, 11]]], closed[ring[[3, 4, 5]]]
        neutral_gap = model.vertices[ring[12], 1] - model.vertices[ring[4], 1]
        assert abs(neutral_gap) > 0.5
        assert np.abs(upper[:, 1] - lower[:, 1]).max() < 0.15 * abs(neutral_gap)
    # Expressions never open or close the eyes: every component is orthogonal to the lid motion,
    # and the face components (all but the last 4, eye-region shape) leave the lid margins alone.
    basis = model.expression_basis.reshape(model.num_expressions, -1).astype(np.float64)
    lids = model.eyelid_basis.reshape(4, -1).astype(np.float64)
    cosine = (basis @ lids.T) / np.linalg.norm(basis, axis=1)[:, None] / np.linalg.norm(lids, axis=1)[None]
    assert np.abs(cosine[-4:]).max() < 1e-4
    margins = EYE_RING_INDICES.ravel()
    assert np.abs(model.expression_basis[:-4, margins]).max() < 1e-6


@pytest.mark.parametrize("lower", [0.4, 1.0, 2.5])
def test_a_shut_upper_lid_meets_its_lower_lid(model, lower):
    # Past the closed line (upper < 0) the eye is shut however low the tracker reads the lower lid:
    # drawn as the model's shut eye, never with a slit of eyeball between the margins.
    lids = np.array([[-0.05, lower], [0.5, lower]])
    drawn = drawn_eyelids(lids)
    assert drawn[0, 0] == SHUT_UPPER_LID and drawn[0, 1] == min(lower, 1.0)
    assert np.array_equal(drawn[1], lids[1])  # an open eye is drawn as tracked
    ring = EYE_RING_INDICES[0]
    vertices = model_vertices(model, _state(eyelids=lids))
    upper, lower_margin = vertices[ring[[13, 12, 11]]], vertices[ring[[3, 4, 5]]]  # middle of both margins
    open_gap = model.vertices[ring[4], 1] - model.vertices[ring[12], 1]
    assert (lower_margin[:, 1] - upper[:, 1] < 0.05 * open_gap).all()  # no slit between the margins


def test_posed_vertices_weak_perspective(model):
    state = _state(head_pose_deg=np.array([15.0, -5.0, 3.0]))
    posed = posed_vertices(model, state)
    expected = 20.0 * model.vertices.astype(np.float64) @ rotation_matrix([15.0, -5.0, 3.0]).T
    assert posed[:, :2] == pytest.approx(expected[:, :2] + [320.0, 240.0], abs=1e-3)
    assert posed[:, 2] == pytest.approx(expected[:, 2], abs=1e-3)


def test_eyeball_pose_and_gaze(model):
    state = _state(gaze_deg=np.array([[20.0, 0.0], [0.0, 10.0]]))
    centre, rotation, scale = eyeball_pose(model, state, 0)
    assert scale == 20.0 and centre[:2] == pytest.approx(20 * model.eyeball_centers[0, :2] + [320, 240])
    assert (rotation @ [0.0, 0.0, -1.0])[0] > 0.3  # OD looks toward image right
    _, rotation_os, _ = eyeball_pose(model, state, 1)
    assert (rotation_os @ [0.0, 0.0, -1.0])[1] < -0.15  # OS looks up
    points, contours, iris = landmarks_from_state(model, state)
    assert points.shape == (478, 3) and contours.shape == (2, 71, 3) and iris.shape == (2, 5, 3)
    assert iris[0, 0, 0] > 20 * model.eyeball_centers[0, 0] + 320  # OD iris moved right


@pytest.mark.parametrize("openness", [0.0, 1.0, 1.5])
def test_eyeballs_stay_behind_the_skin(model, openness):
    """No skin triangle cuts into an eyeball, with lids closed, neutral or wide open."""
    vertices = model_vertices(model, _state(eyelids=np.full((2, 2), openness)))
    grid = np.linspace(0.0, 1.0, 7)
    bary = np.array([(a, b, 1 - a - b) for a in grid for b in grid if a + b <= 1])
    samples = np.einsum("sk,tkd->tsd", bary, vertices[model.triangles])
    for centre in model.eyeball_centers:
        assert np.linalg.norm(samples - centre, axis=2).min() >= model.eyeball_radius


def test_eyeballs_ride_with_their_orbits(model):
    """Face expressions move each eyeball with its orbit's mean (image plane); eye-region ones do not."""
    from dmask_live.face_model import EYE_ORBIT_INDICES, eyeball_centres

    assert eyeball_centres(model, np.zeros(model.num_expressions)) == pytest.approx(model.eyeball_centers)
    expression = np.zeros(model.num_expressions)
    expression[0] = 1.5
    moved = model_vertices(model, _state(expression=expression))
    orbit_shift = [(moved - model.vertices)[orbit, :2].mean(0) for orbit in EYE_ORBIT_INDICES]
    centres = eyeball_centres(model, expression)
    assert centres[:, :2] - model.eyeball_centers[:, :2] == pytest.approx(np.array(orbit_shift), abs=1e-6)
    assert centres[:, 2] == pytest.approx(model.eyeball_centers[:, 2])
    eye_region = np.zeros(model.num_expressions)
    eye_region[-NUM_EYE_REGION_EXPRESSIONS:] = 1.0
    assert eyeball_centres(model, eye_region) == pytest.approx(model.eyeball_centers)
    # The synthetic landmarks (and the renderer, through eyeball_pose) put the iris there too.
    state = _state(expression=expression)  # straight gaze, frontal: the iris centre is over the eyeball's
    iris = landmarks_from_state(model, state)[2]
    for eye in range(2):
        centre, _, _ = eyeball_pose(model, state, eye)
        assert centre[:2] == pytest.approx(20 * centres[eye, :2] + [320, 240], abs=1e-4)
        assert iris[eye, 0, :2] == pytest.approx(centre[:2], abs=1e-3)
