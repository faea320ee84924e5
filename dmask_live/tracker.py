"""Landmarks → AvatarState: a Numba Gauss–Newton fit of the canonical face model, frame by frame.

Per frame (warm-started from the previous frame, a few iterations, one thread):

1. Head pose (rotation 3, log-scale 1, translation 2), expression coefficients (ridge prior,
   unit variance) and per-eye upper/lower lid openness are fitted to the 468 mesh points, with
   the iris model's 71-point eye contours written over the mesh's eye points (robust weights).
2. Per-eye gaze (yaw, pitch) is fitted to the 5 iris points with the head pose fixed.
3. A One Euro filter smooths the outputs without lagging fast motion (saccades, blinks).

The patient's own shape is a private offset added to the canonical face inside the fit only (plus
the person's iris size and the eyeball positions that follow the orbits): it is learned from
residuals (image plane and the landmarks' relative depth) over the first ~2 s, then refined slowly.
It never appears in the AvatarState, is never logged or saved and has no public accessor. It
cannot move the lid margins along their closing motion (lid position is a clinical sign, e.g.
ptosis, so it stays in the lid parameters) nor rotate, move or scale the face. A face absent for
more than 5 s is forgotten (the next one may be someone else).

Eye alignment is a clinical sign too (strabismus present from the first frame): each eyeball follows
only its orbit, the mean offset of the periorbital skin (the iris model's 3rd and 4th contour loops
around the eye), never the lid margins or canthi, which follow the iris (real lids do, and the landmark
networks' margin/corner points drift 0.07–0.09 px per degree of gaze); that offset is bounded. A
mirror-symmetric eyeball offset would not help: the eyes' spacing is the vergence mode itself.

Frames that fail (None, non-finite or implausible landmarks, high residual, extreme pose) return
an untracked state and do not touch the internal state; the next good frame re-initialises in
closed form if the warm start does not fit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from dmask_live.face_model import (
    EYE_CONTOUR_MESH_INDICES,
    EYE_RING_INDICES,
    IRIS_BOUNDARY_DIRECTIONS,
    FaceModel,
    canonical_iris_order,
    euler_from_rotation,
    load_face_model,
)
from dmask_live.filters import OneEuroFilter
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
# Each eyeball follows its orbit: the periorbital loops of the iris model's eye contour (points 32..62,
# the skin rings outside the lid margins), which move with the face but not with the iris.
EYE_ORBIT_INDICES = np.ascontiguousarray(EYE_CONTOUR_MESH_INDICES[:, 32:63], dtype=np.int64)
EYEBALL_SHIFT_MAX_CM = 0.4  # bound on the private eyeball offset per axis (~20° of eye rotation)


def _pose_weights() -> np.ndarray:
    weights = np.ones(NUM_MESH_POINTS)
    # The eye region carries the clinical signal: the iris model's eye contours (orbit skin, brows)
    # count double, the lid margins four times (held-out eye residual 1.01 → 0.95 % of the IPD,
    # all points 0.69 → 0.72 %).
    weights[EYE_CONTOUR_MESH_INDICES.ravel()] = 2.0
    weights[EYE_RING_INDICES.ravel()] = 4.0
    return weights


@njit(cache=True, fastmath=True)
def _rodrigues(wx: float, wy: float, wz: float) -> np.ndarray:
    theta = math.sqrt(wx * wx + wy * wy + wz * wz)
    out = np.eye(3)
    if theta < 1e-12:
        return out
    kx, ky, kz = wx / theta, wy / theta, wz / theta
    c, s = math.cos(theta), math.sin(theta)
    v = 1.0 - c
    out[0, 0] = c + kx * kx * v
    out[0, 1] = kx * ky * v - kz * s
    out[0, 2] = kx * kz * v + ky * s
    out[1, 0] = ky * kx * v + kz * s
    out[1, 1] = c + ky * ky * v
    out[1, 2] = ky * kz * v - kx * s
    out[2, 0] = kz * kx * v - ky * s
    out[2, 1] = kz * ky * v + kx * s
    out[2, 2] = c + kz * kz * v
    return out


@njit(cache=True, fastmath=True)
def _deform(shape, expr_basis, lid_basis, expr, lids, out):
    n = shape.shape[0]
    for i in range(n):
        for c in range(3):
            v = shape[i, c]
            for k in range(expr.shape[0]):
                v += expr[k] * expr_basis[k, i, c]
            for j in range(4):
                v += (1.0 - lids[j]) * lid_basis[j, i, c]
            out[i, c] = v


@njit(cache=True, fastmath=True)
def _fit_face(
    target,
    weights,
    shape,
    expr_basis,
    lid_basis,
    rot,
    pose,
    expr,
    lids,
    n_iter,
    robust,
    expr_prior,
    lid_prior,
    lid_min,
    lid_max,
    depth_weight,
    correction,
):
    """Gauss–Newton on pose (rot in place, pose = [log scale, tx, ty]), expression and lids, in place.

    Returns the weighted RMS residual (model units) and leaves the model-space corrections in ``correction``.
    """
    n = shape.shape[0]
    k_count = expr.shape[0]
    p_count = 6 + k_count + 4
    x = np.empty((n, 3))
    jac = np.empty((p_count, 2 * n))  # weighted Jacobian, transposed: hess = jac @ jac.T
    res = np.empty(2 * n)
    for _ in range(n_iter):
        _deform(shape, expr_basis, lid_basis, expr, lids, x)
        scale = math.exp(pose[0])
        for i in range(n):
            y0 = rot[0, 0] * x[i, 0] + rot[0, 1] * x[i, 1] + rot[0, 2] * x[i, 2]
            y1 = rot[1, 0] * x[i, 0] + rot[1, 1] * x[i, 1] + rot[1, 2] * x[i, 2]
            y2 = rot[2, 0] * x[i, 0] + rot[2, 1] * x[i, 1] + rot[2, 2] * x[i, 2]
            rx = y0 + (pose[1] - target[i, 0]) / scale
            ry = y1 + (pose[2] - target[i, 1]) / scale
            w = weights[i]
            r_norm = math.sqrt(rx * rx + ry * ry)
            if r_norm > robust:
                w *= robust / r_norm
            sw = math.sqrt(w)
            u, v = 2 * i, 2 * i + 1
            res[u] = sw * rx
            res[v] = sw * ry
            jac[0, u] = 0.0
            jac[1, u] = sw * y2
            jac[2, u] = -sw * y1
            jac[0, v] = -sw * y2
            jac[1, v] = 0.0
            jac[2, v] = sw * y0
            jac[3, u] = sw * y0
            jac[3, v] = sw * y1
            jac[4, u] = sw
            jac[4, v] = 0.0
            jac[5, u] = 0.0
            jac[5, v] = sw
            for k in range(k_count):
                b0, b1, b2 = expr_basis[k, i, 0], expr_basis[k, i, 1], expr_basis[k, i, 2]
                jac[6 + k, u] = sw * (rot[0, 0] * b0 + rot[0, 1] * b1 + rot[0, 2] * b2)
                jac[6 + k, v] = sw * (rot[1, 0] * b0 + rot[1, 1] * b1 + rot[1, 2] * b2)
            for j in range(4):
                b0, b1, b2 = lid_basis[j, i, 0], lid_basis[j, i, 1], lid_basis[j, i, 2]
                jac[6 + k_count + j, u] = -sw * (rot[0, 0] * b0 + rot[0, 1] * b1 + rot[0, 2] * b2)
                jac[6 + k_count + j, v] = -sw * (rot[1, 0] * b0 + rot[1, 1] * b1 + rot[1, 2] * b2)
        hess, grad = _normal_equations(jac, res)
        for a in range(p_count):
            hess[a, a] += 1e-6
        for k in range(k_count):
            hess[6 + k, 6 + k] += expr_prior
            grad[6 + k] += expr_prior * expr[k]
        for j in range(4):
            hess[6 + k_count + j, 6 + k_count + j] += lid_prior
            grad[6 + k_count + j] += lid_prior * (lids[j] - 1.0)
        delta = np.linalg.solve(hess, -grad)
        rot[:, :] = _rodrigues(delta[0], delta[1], delta[2]) @ rot
        pose[1] += scale * delta[4]
        pose[2] += scale * delta[5]
        pose[0] += delta[3]
        for k in range(k_count):
            expr[k] += delta[6 + k]
        for j in range(4):
            lids[j] = min(max(lids[j] + delta[6 + k_count + j], lid_min), lid_max)
        step = 0.0
        for a in range(6):
            step += delta[a] * delta[a]
        if step < 1e-10:
            break
    return _residuals(
        target, weights, shape, expr_basis, lid_basis, rot, pose, expr, lids, correction, depth_weight
    )


@njit(cache=True, fastmath=True)
def _normal_equations(jac, res):
    """jac @ jac.T and jac @ res with plain loops: one thread, no BLAS thread pool (real-time path)."""
    p_count, m = jac.shape
    hess = np.empty((p_count, p_count))
    grad = np.empty(p_count)
    for a in range(p_count):
        row_a = jac[a]
        total = 0.0
        for i in range(m):
            total += row_a[i] * res[i]
        grad[a] = total
        for b in range(a, p_count):
            row_b = jac[b]
            total = 0.0
            for i in range(m):
                total += row_a[i] * row_b[i]
            hess[a, b] = total
            hess[b, a] = total
    return hess, grad


@njit(cache=True, fastmath=True)
def _residuals(target, weights, shape, expr_basis, lid_basis, rot, pose, expr, lids, out, depth_weight):
    """Weighted image-plane RMS (model units) of the fit; model-space corrections (target − model) in out.

    The corrections use the landmarks' relative depth (free offset) at ``depth_weight`` so the private
    shape also learns depth; the fit itself is two-dimensional.
    """
    n = shape.shape[0]
    x = np.empty_like(shape)
    _deform(shape, expr_basis, lid_basis, expr, lids, x)
    scale = math.exp(pose[0])
    depth_offset = 0.0
    for i in range(n):
        depth_offset += target[i, 2] / scale - (
            rot[2, 0] * x[i, 0] + rot[2, 1] * x[i, 1] + rot[2, 2] * x[i, 2]
        )
    depth_offset /= n
    total = 0.0
    wsum = 0.0
    for i in range(n):
        ex = (target[i, 0] - pose[1]) / scale - (
            rot[0, 0] * x[i, 0] + rot[0, 1] * x[i, 1] + rot[0, 2] * x[i, 2]
        )
        ey = (target[i, 1] - pose[2]) / scale - (
            rot[1, 0] * x[i, 0] + rot[1, 1] * x[i, 1] + rot[1, 2] * x[i, 2]
        )
        ez = (
            target[i, 2] / scale
            - depth_offset
            - (rot[2, 0] * x[i, 0] + rot[2, 1] * x[i, 1] + rot[2, 2] * x[i, 2])
        )
        ez *= depth_weight
        for c in range(3):
            out[i, c] = rot[0, c] * ex + rot[1, c] * ey + rot[2, c] * ez  # R^T applied to the residual
        total += weights[i] * (ex * ex + ey * ey)
        wsum += weights[i]
    return math.sqrt(total / wsum)


@njit(cache=True, fastmath=True)
def _iris_residual(target, centre, local, rot, pose, yaw, pitch, out):
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    scale = math.exp(pose[0])
    for j in range(local.shape[0]):
        # gaze rotation Yaw @ Pitch (see face_model.gaze_rotation) applied to the iris point
        lx, ly, lz = local[j, 0], local[j, 1], local[j, 2]
        py = cp * ly + sp * lz
        pz = -sp * ly + cp * lz
        gx = cy * lx - sy * pz + centre[0]
        gy = py + centre[1]
        gz = sy * lx + cy * pz + centre[2]
        out[2 * j] = rot[0, 0] * gx + rot[0, 1] * gy + rot[0, 2] * gz + (pose[1] - target[j, 0]) / scale
        out[2 * j + 1] = rot[1, 0] * gx + rot[1, 1] * gy + rot[1, 2] * gz + (pose[2] - target[j, 1]) / scale


@njit(cache=True, fastmath=True)
def _fit_gaze(target, centre, local, rot, pose, gaze, n_iter, prior):
    """Gauss–Newton on one eye's (yaw, pitch) in radians (gaze updated in place); returns RMS."""
    m = 2 * local.shape[0]
    r0 = np.empty(m)
    r1 = np.empty(m)
    r2 = np.empty(m)
    eps = 1e-4
    for _ in range(n_iter):
        _iris_residual(target, centre, local, rot, pose, gaze[0], gaze[1], r0)
        _iris_residual(target, centre, local, rot, pose, gaze[0] + eps, gaze[1], r1)
        _iris_residual(target, centre, local, rot, pose, gaze[0], gaze[1] + eps, r2)
        h00 = prior
        h01 = 0.0
        h11 = prior
        g0 = prior * gaze[0]
        g1 = prior * gaze[1]
        for i in range(m):
            j0 = (r1[i] - r0[i]) / eps
            j1 = (r2[i] - r0[i]) / eps
            h00 += j0 * j0
            h01 += j0 * j1
            h11 += j1 * j1
            g0 += j0 * r0[i]
            g1 += j1 * r0[i]
        det = h00 * h11 - h01 * h01
        if det <= 1e-18:
            break
        gaze[0] -= (h11 * g0 - h01 * g1) / det
        gaze[1] -= (h00 * g1 - h01 * g0) / det
        gaze[0] = min(max(gaze[0], -1.2), 1.2)
        gaze[1] = min(max(gaze[1], -1.2), 1.2)
    _iris_residual(target, centre, local, rot, pose, gaze[0], gaze[1], r0)
    total = 0.0
    for i in range(m):
        total += r0[i] * r0[i]
    return math.sqrt(total / local.shape[0])


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


@njit(cache=True, fastmath=True)
def _update_shape(offset, correction, rate, modes, rings, lid_profiles, x_coords, orbits, orbit_mean):
    """offset += rate * correction, then keep it free of pose/scale and of lid heights (in place).

    ``orbit_mean`` (out, (2, 3)): mean offset of each eye's orbit points, where the eyeball goes; never
    the lid margins: a constant squint moves the margins with the iris and must stay a gaze difference.
    """
    n = offset.shape[0]
    for i in range(n):
        for c in range(3):
            offset[i, c] += rate * correction[i, c]
    flat = offset.reshape(3 * n)
    for j in range(modes.shape[1]):  # remove translation, rotation and scale (plain loops, no BLAS)
        coefficient = 0.0
        for i in range(3 * n):
            coefficient += modes[i, j] * flat[i]
        for i in range(3 * n):
            flat[i] -= coefficient * modes[i, j]
    for eye in range(rings.shape[0]):
        ring = rings[eye]
        half = ring.shape[0] // 2
        a, b = ring[0], ring[half]
        xa, xb = x_coords[a], x_coords[b]
        span = offset[b, 1] - offset[a, 1]
        line = np.empty(ring.shape[0])
        for j in range(ring.shape[0]):
            t = min(max((x_coords[ring[j]] - xa) / (xb - xa), 0.0), 1.0)
            line[j] = offset[a, 1] + t * span
        # Lid positions are clinical (ptosis, retraction): a margin may take the person's curve,
        # but nothing along its lid's closing motion, relative to the line through the corners.
        for first, last in ((1, half), (half + 1, ring.shape[0])):
            dot = 0.0
            norm = 1e-12
            for j in range(first, last):
                dot += (offset[ring[j], 1] - line[j]) * lid_profiles[eye, j]
                norm += lid_profiles[eye, j] * lid_profiles[eye, j]
            for j in range(first, last):
                offset[ring[j], 1] -= dot / norm * lid_profiles[eye, j]
    for eye in range(orbits.shape[0]):
        orbit = orbits[eye]
        for c in range(3):
            total = 0.0
            for j in range(orbit.shape[0]):
                total += offset[orbit[j], c]
            orbit_mean[eye, c] = total / orbit.shape[0]


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
        self.iris_scale = np.ones(2)  # the person's iris size relative to the canonical one

    @property
    def rate(self) -> float:
        """Running mean over the first frames (the first one counts fully), then slow refinement."""
        return 1.0 / (self.frames + 1) if self.learning else IDENTITY_SLOW_RATE

    def update_iris(self, eye: int, measured_scale: float, rate: float | None = None) -> None:
        rate = self.rate if rate is None else rate
        value = self.iris_scale[eye] + rate * (measured_scale - self.iris_scale[eye])
        self.iris_scale[eye] = min(max(value, 0.8), 1.25)

    @property
    def learning(self) -> bool:
        """True during the first frames, when the shape also takes what expressions explained."""
        return self.frames < IDENTITY_FAST_FRAMES

    def update(self, correction: np.ndarray, rate: float | None = None) -> None:
        """Learn from one frame's correction; ``rate`` given: refine the same frame (no frame counted)."""
        _update_shape(
            self.offset,
            correction,
            self.rate if rate is None else rate,
            self._modes,
            self._rings,
            self._lid_profiles,
            self._x,
            EYE_ORBIT_INDICES,
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
        iterations: int = 3,
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
        yaw, pitch, _ = euler_from_rotation(self._rot)
        if abs(yaw) > MAX_YAW_DEG or abs(pitch) > MAX_PITCH_DEG:
            return self._lost(image_size, timestamp)
        steady = abs(yaw) < IDENTITY_MAX_POSE_DEG and abs(pitch) < IDENTITY_MAX_POSE_DEG
        if steady and self.last_rms < IDENTITY_MAX_RMS_CM:
            self._learn_shape(mesh, iris, iris_scales)
        self._last_good_time = float(timestamp)
        return self._publish(image_size, timestamp)

    # -- private shape --------------------------------------------------------------------------
    def _learn_shape(self, mesh: np.ndarray, iris: np.ndarray, iris_scales: list[float | None]) -> None:
        self._learn_iris(iris_scales)
        self._shape.update(self._shape_correction())
        if self._shape.frames == 1:
            self._settle_first_frame(mesh, iris)

    def _learn_iris(self, iris_scales: list[float | None], rate: float | None = None) -> None:
        for eye, measured in enumerate(iris_scales):
            if measured is not None and self._lids[2 * eye] > 0.7:
                self._shape.update_iris(eye, measured, rate)

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
        rms = _fit_face(
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

    def _eye_frame(self, eye: int) -> tuple[np.ndarray, np.ndarray]:
        """Eyeball centre and iris points (eyeball frame) of this person's eye, model units."""
        centre = self.model.eyeball_centers[eye].astype(np.float64) + self._shape.eyeball_shift[eye]
        local = self._iris_local.copy()
        local[1:, :2] *= self._shape.iris_scale[eye]
        return centre, local

    def _fit_eyes(self, iris: np.ndarray) -> list[float | None]:
        """Fits gaze per eye; returns each eye's measured iris size (relative to canonical) or None."""
        measured: list[float | None] = [None, None]
        buffer = np.empty(10)
        for eye in range(2):
            if self._lids[2 * eye] < CLOSED_EYE_OPENNESS:
                continue  # lid covers the iris: keep the last gaze
            centre, local = self._eye_frame(eye)
            gaze = self._gaze[eye].copy()
            _fit_gaze(iris[eye], centre, local, self._rot, self._pose, gaze, 3, GAZE_PRIOR)
            self._gaze[eye] = gaze
            _iris_residual(iris[eye], centre, local, self._rot, self._pose, gaze[0], gaze[1], buffer)
            predicted = iris[eye] + math.exp(self._pose[0]) * buffer.reshape(5, 2)
            spread_target = np.linalg.norm(iris[eye, 1:] - iris[eye, 0], axis=1).mean()
            spread_model = np.linalg.norm(predicted[1:] - predicted[0], axis=1).mean()
            if spread_model > 0:
                measured[eye] = float(self._shape.iris_scale[eye] * spread_target / spread_model)
        return measured

    def _fit_errors_px(self, landmarks: FaceLandmarks) -> dict[str, np.ndarray | float]:
        """Diagnostics for benchmarks: distances (px) of the last fit to the landmarks it was fitted to.

        Returns only error magnitudes (mesh (468,), eye_contours (2,71), iris (2,5), NaN for a closed
        eye) and the
        inter-pupillary distance in pixels (6.3 cm × scale); no shape leaves the tracker.
        """
        mesh, iris = _targets(landmarks)
        scale = math.exp(self._pose[0])
        x = np.empty((NUM_MESH_POINTS, 3))
        _deform(
            self._vertices + self._shape.offset, self._expr_basis, self._lid_basis, self._expr, self._lids, x
        )
        fitted = scale * (x @ self._rot.T)[:, :2] + self._pose[1:]
        mesh_err = np.linalg.norm(fitted - mesh[:, :2], axis=1)
        iris_err = np.zeros((2, 5))
        buffer = np.empty(10)
        for eye in range(2):
            centre, local = self._eye_frame(eye)
            yaw, pitch = self._gaze[eye]
            _iris_residual(iris[eye], centre, local, self._rot, self._pose, yaw, pitch, buffer)
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

    def _publish(self, image_size: tuple[int, int], timestamp: float) -> AvatarState:
        pose = euler_from_rotation(self._rot)
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
            eyelids=np.clip(lids, 0.0, LID_MAX).reshape(2, 2).astype(np.float32),
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
    mesh = points[:NUM_MESH_POINTS].astype(np.float64)
    for eye in range(2):
        mesh[EYE_CONTOUR_MESH_INDICES[eye], :2] = contours[eye, :, :2]
    if not np.all(np.isfinite(iris)):
        return None
    iris_xy = np.ascontiguousarray(canonical_iris_order(mesh, iris)[:, :, :2], dtype=np.float64)
    if not (np.all(np.isfinite(mesh)) and np.all(np.isfinite(iris_xy))):
        return None
    extent = np.ptp(mesh[:, :2], axis=0)
    if extent.min() < 4.0:  # a face a few pixels wide, or collapsed points
        return None
    return np.ascontiguousarray(mesh), iris_xy
