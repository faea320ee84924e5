"""Landmarks → AvatarState: a Numba Gauss–Newton fit of the canonical face model, frame by frame.

Per frame (warm-started from the previous frame, a few iterations, one thread):

1. Head pose (rotation 3, log-scale 1, translation 2), expression coefficients (ridge prior,
   unit variance) and per-eye upper/lower lid openness are fitted to the 468 mesh points, with
   the iris model's 71-point eye contours written over the mesh's eye points (robust weights; eye
   contours count double and lid margins four times: the eye region carries the clinical signal).
2. Per-eye gaze (yaw, pitch) is fitted to the 5 iris points with the head pose fixed.
3. A One Euro filter smooths the outputs without lagging fast motion (saccades, blinks).

The patient's own shape is a private offset added to the canonical face inside the fit only (plus
the person's iris size per axis and the eyeball positions that follow the orbits): it is learned from
residuals (image plane and the landmarks' relative depth) over the first ~2 s, then refined slowly.
The first frame alone settles it (a few passes of fit and absorb, jointly with pose and lids), so
even a single frame (a photo, the first frame of a call) shows the person's face shape nowhere in
the public state; that frame's own expression becomes the neutral face until later frames average
it out.
It never appears in the AvatarState, is never logged or saved and has no public accessor. It
cannot move the lid margins along their closing motion (lid position is a clinical sign, e.g.
ptosis, so it stays in the lid parameters) nor rotate, move or scale the face. A face absent for
more than 5 s is forgotten (the next one may be someone else).

Eye alignment is a clinical sign too (strabismus present from the first frame): each eyeball follows
only its orbit, the mean offset of the periorbital skin (the iris model's 3rd and 4th contour loops
around the eye), never the lid margins or canthi, which follow the iris (real lids do, and the landmark
networks' margin/corner points drift 0.07–0.09 px per degree of gaze); that offset is bounded. A
mirror-symmetric eyeball offset would not help: the eyes' spacing is the vergence mode itself.
The orbit is followed frame by frame too: the face expression components move each eyeball with its
orbit (face_model.eyeball_centres), as the landmark networks see real eyes move with their orbits; an
eyeball left in place read smiles and cheek raises as turns of the eyes.

Frames that fail (None, non-finite or implausible landmarks, high residual, extreme pose) return
an untracked state and do not touch the internal state; the next good frame re-initialises in
closed form if the warm start does not fit.
"""

from __future__ import annotations

import math

import numpy as np

from dmask_live.face_model import (
    EYE_CONTOUR_MESH_INDICES,
    EYE_ORBIT_INDICES,
    EYE_RING_INDICES,
    IRIS_BOUNDARY_DIRECTIONS,
    FaceModel,
    euler_from_rotation,
    eyeball_centres,
    load_face_model,
)
from dmask_live.filters import OneEuroFilter
from dmask_live.tracker_kernels import (
    build_targets,
    deform,
    fit_eyes,
    fit_face,
    iris_residual,
    update_shape,
)
from dmask_live.types import NUM_MESH_POINTS, AvatarState, FaceLandmarks

# Fit quality gates, in model units (cm; the inter-pupillary distance is 6.3 cm).
MAX_RMS_CM = 0.45  # ~7 % of the inter-pupillary distance
ROBUST_SCALE_CM = 0.25  # Huber threshold of the point residuals
MAX_YAW_DEG, MAX_PITCH_DEG = 75.0, 60.0
EXPRESSION_PRIOR = 0.02  # ridge weight (model units²) pulling coefficients toward 0
LID_PRIOR = 0.002  # ridge weight pulling lid openness toward 1
GAZE_PRIOR = 0.002  # ridge weight (per rad²) pulling gaze toward straight ahead
LID_MIN, LID_MAX = -0.3, 3.0
DEPTH_WEIGHT = 0.5  # trust in the landmarks' relative depth when learning the private shape
CLOSED_EYE_OPENNESS = 0.25  # below this upper-lid openness the iris is hidden: gaze holds
# Private shape: running mean over the first frames, then an exponential refinement.
IDENTITY_FAST_FRAMES = 60
IDENTITY_SLOW_RATE = 0.003
IDENTITY_MAX_POSE_DEG = 30.0
IDENTITY_MAX_RMS_CM = 0.2  # only well-fitting frames teach the private shape
IDENTITY_FORGET_AFTER_S = 5.0  # face absent this long: it may be someone else, start over
FIRST_FRAME_PASSES = 4  # fit/absorb passes that settle the private shape on the first frame
# Each eyeball follows its orbit (face_model.EYE_ORBIT_INDICES): the periorbital loops of the iris model's
# eye contour, the skin rings outside the lid margins, which move with the face but not with the iris.
_ORBIT_INDICES = np.ascontiguousarray(EYE_ORBIT_INDICES, dtype=np.int64)
MIN_FACE_EXTENT_PX = 4.0  # a face a few pixels wide, or collapsed points, is not tracked
_CONTOUR_INDICES = np.ascontiguousarray(EYE_CONTOUR_MESH_INDICES, dtype=np.int64)
EYEBALL_SHIFT_MAX_CM = 0.4  # bound on the private eyeball offset per axis (~20° of eye rotation)


def _pose_weights() -> np.ndarray:
    weights = np.ones(NUM_MESH_POINTS)
    # The eye region carries the clinical signal: the iris model's eye contours (orbit skin, brows)
    # count double, the lid margins four times (held-out eye residual 1.01 → 0.95 % of the IPD,
    # all points 0.69 → 0.72 %).
    weights[EYE_CONTOUR_MESH_INDICES.ravel()] = 2.0
    weights[EYE_RING_INDICES.ravel()] = 4.0
    return weights


def _similarity_modes(vertices: np.ndarray) -> np.ndarray:
    """Orthonormal (3V, 7) basis of translations, rotations and scaling of the canonical face."""
    centred = vertices - vertices.mean(0)
    modes = []
    for axis in range(3):
        translation = np.zeros_like(vertices)
        translation[:, axis] = 1.0
        modes.append(translation)
        omega = np.zeros(3)
        omega[axis] = 1.0
        modes.append(np.cross(omega, centred))
    modes.append(centred)
    q, _ = np.linalg.qr(np.stack([m.ravel() for m in modes], axis=1))
    return q


class _PrivateShape:
    """The patient's shape offset from the canonical face; lives only inside the tracker."""

    def __init__(self, model: FaceModel) -> None:
        vertices = model.vertices[:NUM_MESH_POINTS].astype(np.float64)
        self._modes = np.ascontiguousarray(_similarity_modes(vertices))
        self._rings = np.ascontiguousarray(EYE_RING_INDICES, dtype=np.int64)
        self._x = np.ascontiguousarray(vertices[:, 0])
        # Vertical closing motion of each lid along its margin (upper lid on the upper half of the ring).
        self._lid_profiles = np.zeros(self._rings.shape)
        half = self._rings.shape[1] // 2
        for eye, ring in enumerate(self._rings):
            self._lid_profiles[eye, half + 1 :] = model.eyelid_basis[eye, 0, ring[half + 1 :], 1]
            self._lid_profiles[eye, 1:half] = model.eyelid_basis[eye, 1, ring[1:half], 1]
        self._orbit_mean = np.zeros((2, 3))
        self.reset()

    def reset(self) -> None:
        self.offset = np.zeros((NUM_MESH_POINTS, 3))
        self.frames = 0
        self.eyeball_shift = np.zeros((2, 3))
        # The person's iris size relative to the canonical one, per eye along the eye's x and y axes
        # (the landmark networks read the iris ~20 % wider than tall: a circle would bias gaze).
        self.iris_scale = np.ones((2, 2))

    @property
    def rate(self) -> float:
        """Running mean over the first frames (the first one counts fully), then slow refinement."""
        return 1.0 / (self.frames + 1) if self.learning else IDENTITY_SLOW_RATE

    def update_iris(self, eye: int, measured_scale: tuple[float, float], rate: float | None = None) -> None:
        rate = self.rate if rate is None else rate
        scale = self.iris_scale[eye]
        # Plain floats: NumPy calls on 2-element arrays cost ~10 µs of a ~160 µs frame.
        for axis, measured in enumerate(measured_scale):
            current = float(scale[axis])
            scale[axis] = min(max(current + rate * (measured - current), 0.8), 1.25)

    @property
    def learning(self) -> bool:
        """True during the first frames, when the shape also takes what expressions explained."""
        return self.frames < IDENTITY_FAST_FRAMES

    def update(self, correction: np.ndarray, rate: float | None = None) -> None:
        """Learn from one frame's correction; ``rate`` given: refine the same frame (no frame counted)."""
        update_shape(
            self.offset,
            correction,
            self.rate if rate is None else rate,
            self._modes,
            self._rings,
            self._lid_profiles,
            self._x,
            _ORBIT_INDICES,
            self._orbit_mean,
        )
        # Bounded: no large private offset can hide a sign.
        np.clip(self._orbit_mean, -EYEBALL_SHIFT_MAX_CM, EYEBALL_SHIFT_MAX_CM, out=self.eyeball_shift)
        if rate is None:
            self.frames += 1


class FaceTracker:
    """Fits the canonical face model to landmarks, frame by frame; see the module docstring."""

    def __init__(
        self,
        model: FaceModel | None = None,
        iterations: int = 2,
        cold_iterations: int = 10,
        smoothing: bool = True,
    ) -> None:
        self.model = load_face_model() if model is None else model
        self.iterations = int(iterations)
        self.cold_iterations = int(cold_iterations)
        self.smoothing = bool(smoothing)
        m = self.model
        self._vertices = m.vertices[:NUM_MESH_POINTS].astype(np.float64)
        self._expr_basis = np.ascontiguousarray(m.expression_basis[:, :NUM_MESH_POINTS], dtype=np.float64)
        self._lid_basis = np.ascontiguousarray(
            m.eyelid_basis[:, :, :NUM_MESH_POINTS].reshape(4, NUM_MESH_POINTS, 3), dtype=np.float64
        )
        self._weights = _pose_weights()
        local = np.zeros((5, 3))
        local[:, 2] = -m.iris_depth
        local[1:, :2] = m.iris_radius * IRIS_BOUNDARY_DIRECTIONS
        self._iris_local = local
        self._measured_iris = np.empty((2, 2))
        self._shape = _PrivateShape(m)
        self._correction = np.zeros((NUM_MESH_POINTS, 3))
        self.last_rms = float("nan")  # fit RMS of the last frame, in model units (cm)
        self.reset()

    def reset(self) -> None:
        """Forget everything, including the private shape."""
        self._shape.reset()
        self._rot = np.eye(3)
        self._pose = np.zeros(3)
        self._expr = np.zeros(self.model.num_expressions)
        self._lids = np.ones(4)
        self._gaze = np.zeros((2, 2))
        self._has_fit = False
        self._last_good_time: float | None = None
        self._filters_live = False
        self._filter = _output_filter(self.model.num_expressions)

    # -- public ---------------------------------------------------------------------------------
    def update(self, landmarks: FaceLandmarks | None, timestamp: float) -> AvatarState:
        image_size = (640, 480) if landmarks is None else tuple(int(v) for v in landmarks.image_size)
        targets = None if landmarks is None else _targets(landmarks)
        if targets is None:
            return self._lost(image_size, timestamp)
        mesh, iris = targets
        if self._last_good_time is not None and timestamp - self._last_good_time > IDENTITY_FORGET_AFTER_S:
            self.reset()
        if not self._fit(mesh):
            return self._lost(image_size, timestamp)
        iris_scales = self._fit_eyes(iris)
        head_pose = euler_from_rotation(self._rot)
        yaw, pitch = head_pose[0], head_pose[1]
        if abs(yaw) > MAX_YAW_DEG or abs(pitch) > MAX_PITCH_DEG:
            return self._lost(image_size, timestamp)
        steady = abs(yaw) < IDENTITY_MAX_POSE_DEG and abs(pitch) < IDENTITY_MAX_POSE_DEG
        # The first frame learned settles the shape, and the pose moves a little with it.
        if steady and self.last_rms < IDENTITY_MAX_RMS_CM and self._learn_shape(mesh, iris, iris_scales):
            head_pose = euler_from_rotation(self._rot)
        self._last_good_time = float(timestamp)
        return self._publish(head_pose, image_size, timestamp)

    # -- private shape --------------------------------------------------------------------------
    def _learn_shape(self, mesh: np.ndarray, iris: np.ndarray, iris_scales: np.ndarray) -> bool:
        """Learns from this frame; True if it was the first one, which settled the shape (and the pose)."""
        self._learn_iris(iris_scales)
        self._shape.update(self._shape_correction())
        if self._shape.frames != 1:
            return False
        self._settle_first_frame(mesh, iris)
        return True

    def _learn_iris(self, iris_scales: np.ndarray, rate: float | None = None) -> None:
        for eye, (along_x, along_y) in enumerate(iris_scales.tolist()):
            if along_x > 0.0 and along_y > 0.0 and self._lids[2 * eye] > 0.7:
                self._shape.update_iris(eye, (along_x, along_y), rate)

    def _shape_correction(self) -> np.ndarray:
        if not self._shape.learning:
            return self._correction
        # The first seconds define "neutral": the face's shape takes its mean expression too,
        # so a person's shape does not show up as a constant expression on the avatar.
        return self._correction + np.tensordot(self._expr, self._expr_basis, axes=1)

    def _settle_first_frame(self, mesh: np.ndarray, iris: np.ndarray) -> None:
        """The first frame alone defines the person's neutral shape, fitted jointly with pose and lids.

        Without this a single frame (a photo, the first frame of a call) shows the person's own face
        shape as expression coefficients (mean norm 4.75 on the shared photos), identity in public.
        A few passes of (fit, absorb the residual and the expression into the shape) converge to what
        holding still for seconds gives; lid margins, pose and eyeball bounds keep their constraints.
        Cost: the first frame's real expression becomes the neutral face until later frames average it
        out (as for the first ~2 s before).
        """
        for _ in range(FIRST_FRAME_PASSES):
            self._run(mesh, self._vertices + self._shape.offset, self.iterations)
            self._shape.update(self._shape_correction(), rate=1.0)
        self._run(mesh, self._vertices + self._shape.offset, self.iterations)
        self._learn_iris(self._fit_eyes(iris), rate=1.0)

    # -- fitting --------------------------------------------------------------------------------
    def _fit(self, mesh: np.ndarray) -> bool:
        shape = self._vertices + self._shape.offset
        if self._has_fit:
            saved = (self._rot.copy(), self._pose.copy(), self._expr.copy(), self._lids.copy())
            rms = self._run(mesh, shape, self.iterations)
            if rms <= MAX_RMS_CM:
                return True
            self._rot, self._pose, self._expr, self._lids = saved
        self._cold_start(mesh, shape)
        rms = self._run(mesh, shape, self.cold_iterations)
        if rms <= MAX_RMS_CM and np.all(np.isfinite(self._pose)):
            self._has_fit = True
            return True
        self._has_fit = False
        return False

    def _run(self, mesh: np.ndarray, shape: np.ndarray, iterations: int) -> float:
        rms = fit_face(
            mesh,
            self._weights,
            shape,
            self._expr_basis,
            self._lid_basis,
            self._rot,
            self._pose,
            self._expr,
            self._lids,
            iterations,
            ROBUST_SCALE_CM,
            EXPRESSION_PRIOR,
            LID_PRIOR,
            LID_MIN,
            LID_MAX,
            DEPTH_WEIGHT,
            self._correction,
        )
        self.last_rms = float(rms)
        return float(rms)

    def _cold_start(self, mesh: np.ndarray, shape: np.ndarray) -> None:
        """Closed-form weak-perspective pose from an affine fit; neutral expression and lids."""
        design = np.concatenate([shape, np.ones((len(shape), 1))], axis=1)
        solution, *_ = np.linalg.lstsq(design, mesh[:, :2], rcond=None)
        affine = solution[:3].T  # (2, 3)
        norms = np.linalg.norm(affine, axis=1)
        row0 = affine[0] / norms[0]
        row1 = affine[1] - (affine[1] @ row0) * row0
        row1 /= np.linalg.norm(row1)
        self._rot = np.stack([row0, row1, np.cross(row0, row1)])
        scale = float(norms.mean())
        centre = shape.mean(0)
        projected = scale * (self._rot @ centre)[:2]
        self._pose = np.array([math.log(max(scale, 1e-6)), *(mesh[:, :2].mean(0) - projected)])
        self._expr = np.zeros(self.model.num_expressions)
        self._lids = np.ones(4)

    def _centres(self) -> np.ndarray:
        """(2, 3) this person's eyeball centres this frame, with the orbits as the expression moved them."""
        return eyeball_centres(self.model, self._expr) + self._shape.eyeball_shift

    def _eye_frame(self, eye: int) -> tuple[np.ndarray, np.ndarray]:
        """Eyeball centre and iris points (eyeball frame) of this person's eye, model units."""
        local = self._iris_local.copy()
        local[1:, :2] *= self._shape.iris_scale[eye]  # per axis
        return self._centres()[eye], local

    def _fit_eyes(self, iris: np.ndarray) -> np.ndarray:
        """Fits gaze per eye; returns each eye's measured iris size (relative to canonical), -1 if closed."""
        fit_eyes(
            iris,
            self._centres(),
            self._iris_local,
            self._shape.iris_scale,
            self._rot,
            self._pose,
            self._gaze,
            self._lids,
            CLOSED_EYE_OPENNESS,
            3,
            GAZE_PRIOR,
            self._measured_iris,
        )
        return self._measured_iris

    def _fit_errors_px(self, landmarks: FaceLandmarks) -> dict[str, np.ndarray | float]:
        """Diagnostics for benchmarks: distances (px) of the last fit to the landmarks it was fitted to.

        Returns only error magnitudes (mesh (468,), eye_contours (2,71), iris (2,5), NaN for a closed
        eye) and the
        inter-pupillary distance in pixels (6.3 cm × scale); no shape leaves the tracker.
        """
        mesh, iris = _targets(landmarks)
        scale = math.exp(self._pose[0])
        x = np.empty((NUM_MESH_POINTS, 3))
        deform(
            self._vertices + self._shape.offset, self._expr_basis, self._lid_basis, self._expr, self._lids, x
        )
        fitted = scale * (x @ self._rot.T)[:, :2] + self._pose[1:]
        mesh_err = np.linalg.norm(fitted - mesh[:, :2], axis=1)
        iris_err = np.zeros((2, 5))
        buffer = np.empty(10)
        for eye in range(2):
            centre, local = self._eye_frame(eye)
            yaw, pitch = self._gaze[eye]
            iris_residual(iris[eye], centre, local, self._rot, self._pose, yaw, pitch, buffer)
            iris_err[eye] = scale * np.hypot(buffer[0::2], buffer[1::2])
            if self._lids[2 * eye] < CLOSED_EYE_OPENNESS:
                iris_err[eye] = np.nan  # eye closed: gaze is held, the iris points are guesses
        return {
            "mesh": mesh_err,
            "eye_contours": mesh_err[EYE_CONTOUR_MESH_INDICES],
            "iris": iris_err,
            "ipd_px": 6.3 * scale,
        }

    # -- output ---------------------------------------------------------------------------------
    def _lost(self, image_size: tuple[int, int], timestamp: float) -> AvatarState:
        self._filters_live = False
        return AvatarState.untracked(image_size, float(timestamp))

    def _publish(self, pose: np.ndarray, image_size: tuple[int, int], timestamp: float) -> AvatarState:
        place = np.array([self._pose[0], self._pose[1], self._pose[2]])
        expr = self._expr.copy()
        lids = self._lids.copy()
        gaze = np.degrees(self._gaze).ravel()
        if self.smoothing:
            if not self._filters_live:
                self._filter.reset()
                self._filters_live = True
            smooth = self._filter(np.concatenate([pose, place, expr, lids, gaze]), timestamp)
            k = len(expr)
            pose, place, expr = smooth[:3], smooth[3:6], smooth[6 : 6 + k]
            lids, gaze = smooth[6 + k : 10 + k], smooth[10 + k :]
        return AvatarState(
            tracked=True,
            head_pose_deg=pose.astype(np.float32),
            translation=place[1:].astype(np.float32),
            scale=float(math.exp(place[0])),
            expression=expr.astype(np.float32),
            # Below 0 the upper lid passes the resting lower lid: a shut eye (a blink) must render
            # shut, not as the slit left at openness 0 while the lower lid has not risen.
            eyelids=np.clip(lids, LID_MIN, LID_MAX).reshape(2, 2).astype(np.float32),
            gaze_deg=gaze.reshape(2, 2).astype(np.float32),
            image_size=image_size,
            timestamp=float(timestamp),
        )


# One Euro settings per output group: (min_cutoff Hz, beta, d_cutoff Hz). Lids and gaze react within
# a frame to blinks and saccades; pose and expression are smoothed more while still.
_FILTER_SETTINGS = {
    "pose": (1.5, 0.15, 1.0),
    "place": (1.5, 0.02, 1.0),
    "expression": (2.0, 0.5, 1.0),
    "lids": (3.0, 2.0, 5.0),
    "gaze": (3.0, 0.3, 5.0),
}


def _output_filter(num_expressions: int) -> OneEuroFilter:
    sizes = {"pose": 3, "place": 3, "expression": num_expressions, "lids": 4, "gaze": 4}
    settings = np.concatenate([np.tile(_FILTER_SETTINGS[name], (n, 1)) for name, n in sizes.items()])
    return OneEuroFilter(min_cutoff=settings[:, 0], beta=settings[:, 1], d_cutoff=settings[:, 2])


def _targets(landmarks: FaceLandmarks) -> tuple[np.ndarray, np.ndarray] | None:
    """(468,3) mesh targets (iris-model eye contours written in) and (2,5,2) iris, or None if unusable."""
    points = np.asarray(landmarks.points)
    contours = np.asarray(landmarks.eye_contours)
    iris = np.asarray(landmarks.iris)
    if points.shape != (478, 3) or contours.shape != (2, 71, 3) or iris.shape != (2, 5, 3):
        raise ValueError(
            f"FaceLandmarks shapes must be points (478,3), eye_contours (2,71,3), iris (2,5,3); got "
            f"{points.shape}, {contours.shape}, {iris.shape}"
        )
    mesh = np.empty((NUM_MESH_POINTS, 3))
    iris_xy = np.empty((2, 5, 2))
    usable = build_targets(
        np.ascontiguousarray(points, dtype=np.float64),
        np.ascontiguousarray(contours, dtype=np.float64),
        np.ascontiguousarray(iris, dtype=np.float64),
        _CONTOUR_INDICES,
        mesh,
        iris_xy,
        MIN_FACE_EXTENT_PX,
    )
    return (mesh, iris_xy) if usable else None
