"""The canonical, identity-free face model: one mean face, expression and eyelid deformations, eyeballs.

Model space (units: centimetres; the neutral inter-pupillary distance is 6.3 cm):

* x toward the patient's left (image right when frontal), y down, z away from the camera
  (the nose tip has the smallest z). Origin: centroid of the 468 neutral mesh vertices.
* The first 468 vertices are MediaPipe FaceMesh points in MediaPipe order; no other vertices
  exist in this version, so ``V == 468``.
* Triangles are wound so that ``cross(v1 - v0, v2 - v0)`` points toward the camera (-z) on the
  front of the face. Eye openings and the mouth are holes bounded by ``eye_ring`` / ``mouth_ring``.

Expressions are identity-free (learned from offsets of each clip's frames to that clip's own
neutral): the first components are face motion with the eye region masked out, the last 4 are
eye-region shape (lid and brow shape, e.g. with gaze) made orthogonal to the lid motion, so
opening and closing the eyes is only ever done by ``eyelids``. Coefficients have unit variance.

Deformation (``model_vertices``)::

    X = vertices + sum_k expression[k] * expression_basis[k]
                 + sum_{eye, lid} (1 - eyelids[eye, lid]) * eyelid_basis[eye, lid]

Camera (``posed_vertices``), weak perspective as in :mod:`dmask_live.types`::

    image_xy = scale * (R @ X)[:2] + translation,   image_z = scale * (R @ X)[2]

with ``R = rotation_matrix(head_pose_deg)``. Eyeballs are spheres of ``eyeball_radius`` around
``eyeball_centers``; in the eyeball's own frame (before gaze rotation) the pupil looks along -z,
the iris is the disc of ``iris_radius`` at depth ``-iris_depth`` from the centre. Each eyeball rides
with its orbit under the face expression components (``eyeball_centres``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmask_live.types import EYE_CONTOUR_MESH_INDICES, AvatarState

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "assets" / "face_model.npz"

# MediaPipe mesh indices of the lid margin loops (iris-model eye contour points 0..15):
# lower margin from the outer to the inner corner, then the upper margin back (eye 0 = OD).
EYE_RING_INDICES = np.array(
    [
        [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246],
        [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466],
    ],
    dtype=np.int32,
)
# Inner lip loop (the mouth opening), MediaPipe mesh indices.
MOUTH_RING_INDICES = np.array(
    [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191],
    dtype=np.int32,
)
  # fmt: skip
# In FaceLandmarks.points: rows 468..472 are OD's iris (centre, then 4 boundary points),
# rows 473..477 OS's iris. Boundary order in the image: +x, -y, -x, +y around the centre.
IRIS_POINT_ROWS = np.array([[468, 469, 470, 471, 472], [473, 474, 475, 476, 477]], dtype=np.int32)
IRIS_BOUNDARY_DIRECTIONS = np.array([[1.0, 0.0], [0.0, -1.0], [-1.0, 0.0], [0.0, 1.0]])
# Each eye's orbit: the periorbital skin loops of the iris model's eye contour (points 32..62, outside
# the lid margins), MediaPipe mesh indices, eye 0 = OD.
EYE_ORBIT_INDICES = np.ascontiguousarray(EYE_CONTOUR_MESH_INDICES[:, 32:63])
# The last expression components are eye-region shape (lids, brows; see face_model_build): they
# reshape the skin around an eyeball that stays where it is.
NUM_EYE_REGION_EXPRESSIONS = 4


def canonical_iris_order(mesh_xy: np.ndarray, iris: np.ndarray) -> np.ndarray:
    """Iris points (2,5,C) reordered to centre, +x, -y, -x, +y in the face's own axes.

    Landmark sources disagree on the boundary order of the mirrored eye; the face's x axis
    (OD outer corner → OS outer corner) makes the order unambiguous up to ±90° of roll.
    """
    axis_x = np.asarray(mesh_xy[263, :2], np.float64) - np.asarray(mesh_xy[33, :2], np.float64)
    axis_x /= max(float(np.linalg.norm(axis_x)), 1e-9)
    axis_y = np.array([-axis_x[1], axis_x[0]])
    out = np.array(iris, copy=True)
    for eye in range(2):
        offsets = np.asarray(iris[eye, 1:, :2], np.float64) - np.asarray(iris[eye, 0, :2], np.float64)
        along_x, along_y = offsets @ axis_x, offsets @ axis_y
        order = [
            int(np.argmax(along_x)),
            int(np.argmin(along_y)),
            int(np.argmin(along_x)),
            int(np.argmax(along_y)),
        ]
        if len(set(order)) == 4:
            out[eye, 1:] = iris[eye, 1:][order]
    return out


@dataclass(frozen=True)
class FaceModel:
    vertices: np.ndarray  # (V,3) float32 canonical neutral, model units; first 468 = MediaPipe mesh points
    triangles: np.ndarray  # (T,3) int32 skin triangles (eyes and mouth open)
    expression_basis: np.ndarray  # (K,V,3); coefficients have unit variance over the training clips
    eyelid_basis: np.ndarray  # (2 eyes, 2 lids [upper, lower], V, 3): applied as (1 - openness) * basis
    eye_ring: np.ndarray  # (2, n) vertex indices of the lid margin loop per eye (to close/cap openings)
    mouth_ring: np.ndarray  # (m,) vertex indices of the inner lip loop (renderer fills the mouth interior)
    eyeball_centers: np.ndarray  # (2,3) model units
    eyeball_radius: float
    iris_radius: float
    pupil_radius: float
    version: str
    iris_depth: float = 1.0  # distance from the eyeball centre to the iris plane, model units
    units: str = "cm"

    @property
    def num_expressions(self) -> int:
        return int(self.expression_basis.shape[0])

    @functools.cached_property
    def _eyeball_follow(self) -> np.ndarray:
        """Computed once per model (the renderer and the ocular analyser ask every frame, per eye)."""
        follow = self.expression_basis[:, EYE_ORBIT_INDICES].mean(axis=2).astype(np.float64)
        follow[:, :, 2] = 0.0
        follow[self.num_expressions - NUM_EYE_REGION_EXPRESSIONS :] = 0.0
        follow.setflags(write=False)
        return follow

    @functools.cached_property
    def _eyeball_follow_matrix(self) -> np.ndarray:
        """``_eyeball_follow`` as a contiguous (K, 6) matrix: one vector-matrix product per frame."""
        matrix = np.ascontiguousarray(self._eyeball_follow.reshape(self.num_expressions, 6))
        matrix.setflags(write=False)
        return matrix


def load_face_model(path: str | Path | None = None) -> FaceModel:
    """Load (and cache) the face model; default: the asset packaged with dmask_live."""
    return _load_cached(str(Path(path).resolve()) if path is not None else str(DEFAULT_MODEL_PATH))


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> FaceModel:
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    model = FaceModel(
        vertices=arrays["vertices"].astype(np.float32),
        triangles=arrays["triangles"].astype(np.int32),
        expression_basis=arrays["expression_basis"].astype(np.float32),
        eyelid_basis=arrays["eyelid_basis"].astype(np.float32),
        eye_ring=arrays["eye_ring"].astype(np.int32),
        mouth_ring=arrays["mouth_ring"].astype(np.int32),
        eyeball_centers=arrays["eyeball_centers"].astype(np.float32),
        eyeball_radius=float(arrays["eyeball_radius"]),
        iris_radius=float(arrays["iris_radius"]),
        pupil_radius=float(arrays["pupil_radius"]),
        version=str(arrays["version"]),
        iris_depth=float(arrays["iris_depth"]),
        units=str(arrays["units"]),
    )
    for array in (model.vertices, model.triangles, model.expression_basis, model.eyelid_basis):
        array.setflags(write=False)
    return model


def _yaw_pitch_roll_matrices(yaw: float, pitch: float, roll: float) -> tuple[np.ndarray, ...]:
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    # Yaw turns the face's forward direction (-z) toward +x, pitch toward -y (up),
    # roll turns the head's up direction (-y) toward +x.
    yaw_m = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    pitch_m = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    roll_m = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return yaw_m, pitch_m, roll_m


def rotation_matrix(head_pose_deg) -> np.ndarray:
    """(3,3) model→camera rotation ``R = Yaw @ Pitch @ Roll`` from (yaw, pitch, roll) in degrees."""
    yaw, pitch, roll = np.radians(np.asarray(head_pose_deg, dtype=np.float64).reshape(3))
    yaw_m, pitch_m, roll_m = _yaw_pitch_roll_matrices(yaw, pitch, roll)
    return yaw_m @ pitch_m @ roll_m


def euler_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotation_matrix`: (yaw, pitch, roll) in degrees."""
    r = np.asarray(rotation, dtype=np.float64)
    pitch = np.arcsin(np.clip(r[1, 2], -1.0, 1.0))
    roll = np.arctan2(r[1, 0], r[1, 1])
    yaw = np.arctan2(-r[0, 2], r[2, 2])
    return np.degrees(np.array([yaw, pitch, roll]))


def gaze_rotation(gaze_deg) -> np.ndarray:
    """(3,3) eyeball rotation relative to the head from (yaw, pitch) in degrees (same signs as head)."""
    yaw, pitch = np.radians(np.asarray(gaze_deg, dtype=np.float64).reshape(2))
    yaw_m, pitch_m, _ = _yaw_pitch_roll_matrices(yaw, pitch, 0.0)
    return yaw_m @ pitch_m


# How a shut eye's upper lid is drawn: on the resting lower lid, the tracker's lower bound.
SHUT_UPPER_LID = -0.3


def drawn_eyelids(eyelids) -> np.ndarray:
    """(2, 2) per eye [upper, lower] lid openness as the avatar shows and the analyser measures it.

    An upper lid below 0 has passed the closed line: its eye is shut (see :class:`AvatarState`), and
    it is drawn and measured as the model's shut eye, the upper margin at :data:`SHUT_UPPER_LID` on
    the resting lower margin, with the lower lid no lower than at rest, so that the lids meet. In a
    blink the tracker often reads the upper lid just past the closed line while the lower lid reads
    1.5-3x lower than at rest (the networks see one closed line below where the lids rest; d9, d10
    of the shared clips). Drawn as tracked, the eye kept a slit of eyeball that the landmark networks
    read as a third open, and the avatar's blinks did not show as blinks (bench_fidelity on the
    whole shared clips: blink F1 0.5 before this rule).
    """
    lids = np.array(eyelids, dtype=np.float64).reshape(2, 2)
    shut = lids[:, 0] < 0.0
    lids[shut, 0] = np.minimum(lids[shut, 0], SHUT_UPPER_LID)
    lids[shut, 1] = np.minimum(lids[shut, 1], 1.0)
    return lids


def model_vertices(model: FaceModel, state: AvatarState) -> np.ndarray:
    """(V,3) deformed vertices in model space (expression and eyelids applied, no pose)."""
    out = model.vertices.astype(np.float64)
    expression = np.asarray(state.expression, dtype=np.float64).reshape(-1)
    count = min(expression.size, model.num_expressions)
    if count:
        out = out + np.tensordot(expression[:count], model.expression_basis[:count], axes=1)
    closing = 1.0 - drawn_eyelids(state.eyelids)
    out = out + np.tensordot(closing, model.eyelid_basis, axes=([0, 1], [0, 1]))
    return out


def project(points_model: np.ndarray, state: AvatarState, head: np.ndarray | None = None) -> np.ndarray:
    """Weak-perspective projection of model-space points (N,3) to image space (N,3).

    ``head``: the state's head rotation, when the caller already has it.
    """
    if head is None:
        head = rotation_matrix(state.head_pose_deg)
    rotated = np.asarray(points_model, dtype=np.float64) @ head.T
    out = float(state.scale) * rotated
    out[:, :2] += np.asarray(state.translation, dtype=np.float64).reshape(2)
    return out


def posed_vertices(model: FaceModel, state: AvatarState) -> np.ndarray:
    """(V,3) vertices in image space: x, y in pixels, z in the same pixel scale."""
    return project(model_vertices(model, state), state)


def eyeball_expression_basis(model: FaceModel) -> np.ndarray:
    """(K, 2, 3) how far each expression coefficient moves each eyeball: with its orbit, in the image plane.

    The face components (learned from real faces: smiles, brows, cheeks) move a whole orbit, and on
    real faces the landmark networks see the eye move with it: an eyeball left in place read such
    expressions as a turn of the eye (on the shared clips a median vertical deviation of -12° on d6 instead
    of -5°, a horizontal one 7° larger on d6 and d11, and the deviations' IQR up to twice as wide; see
    benchmarks/results/tracker.md). The eye-region components (lid and brow shape, the lids following
    the iris) do not move it.
    """
    return model._eyeball_follow


def eyeball_centres(model: FaceModel, expression) -> np.ndarray:
    """(2, 3) eyeball centres in model space for an expression (see :func:`eyeball_expression_basis`)."""
    expression = np.asarray(expression, dtype=np.float64).reshape(-1)
    count = min(expression.size, model.num_expressions)
    centres = model.eyeball_centers.astype(np.float64)
    if count:
        centres = centres + (expression[:count] @ model._eyeball_follow_matrix[:count]).reshape(2, 3)
    return centres


def eyeball_pose(
    model: FaceModel, state: AvatarState, eye: int, centres: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre (3,) in image space, rotation (3,3) eyeball-local→image (head and gaze), scale px/unit.

    ``centres``: this state's :func:`eyeball_centres`, when the caller already has them (both eyes).
    """
    head = rotation_matrix(state.head_pose_deg)
    if centres is None:
        centres = eyeball_centres(model, state.expression)
    centre = project(centres[eye][None, :], state, head)[0]
    rotation = head @ gaze_rotation(np.asarray(state.gaze_deg, dtype=np.float64).reshape(2, 2)[eye])
    return centre, rotation, float(state.scale)


def iris_points_model(model: FaceModel, gaze_deg, eye: int, centre: np.ndarray | None = None) -> np.ndarray:
    """(5,3) iris centre and 4 boundary points (+x, -y, -x, +y order) in model space for one eye."""
    local = np.zeros((5, 3))
    local[:, 2] = -model.iris_depth
    local[1:, :2] = model.iris_radius * IRIS_BOUNDARY_DIRECTIONS
    base = model.eyeball_centers[eye] if centre is None else centre
    return base + local @ gaze_rotation(gaze_deg).T


def landmarks_from_state(model: FaceModel, state: AvatarState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic landmarks of the avatar: (478,3) points, (2,71,3) eye contours, (2,5,3) iris.

    Used by tests and by re-tracking checks: what a perfect landmark detector would report
    on the rendered avatar.
    """
    mesh = posed_vertices(model, state)[:468]
    gaze = np.asarray(state.gaze_deg, dtype=np.float64).reshape(2, 2)
    centres = eyeball_centres(model, state.expression)
    iris = np.stack(
        [project(iris_points_model(model, gaze[eye], eye, centres[eye]), state) for eye in range(2)]
    )
    points = np.concatenate([mesh, iris[0], iris[1]], axis=0)
    contours = mesh[EYE_CONTOUR_MESH_INDICES]
    return points.astype(np.float32), contours.astype(np.float32), iris.astype(np.float32)
