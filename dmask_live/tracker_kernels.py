"""Numba kernels of the face tracker (one thread, no BLAS): Gauss–Newton fits, targets, shape update.

See :mod:`dmask_live.tracker` for the model and what each fit means. Kernels work in place on float64
arrays; nothing here keeps state.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True)
def rodrigues(wx: float, wy: float, wz: float) -> np.ndarray:
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
def deform(shape, expr_basis, lid_basis, expr, lids, out):
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
def fit_face(
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
        deform(shape, expr_basis, lid_basis, expr, lids, x)
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
        hess, grad = normal_equations(jac, res)
        for a in range(p_count):
            hess[a, a] += 1e-6
        for k in range(k_count):
            hess[6 + k, 6 + k] += expr_prior
            grad[6 + k] += expr_prior * expr[k]
        for j in range(4):
            hess[6 + k_count + j, 6 + k_count + j] += lid_prior
            grad[6 + k_count + j] += lid_prior * (lids[j] - 1.0)
        delta = np.linalg.solve(hess, -grad)
        rot[:, :] = rodrigues(delta[0], delta[1], delta[2]) @ rot
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
    return residuals(
        target, weights, shape, expr_basis, lid_basis, rot, pose, expr, lids, correction, depth_weight
    )


@njit(cache=True, fastmath=True)
def normal_equations(jac, res):
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
def residuals(target, weights, shape, expr_basis, lid_basis, rot, pose, expr, lids, out, depth_weight):
    """Weighted image-plane RMS (model units) of the fit; model-space corrections (target − model) in out.

    The corrections use the landmarks' relative depth (free offset) at ``depth_weight`` so the private
    shape also learns depth; the fit itself is two-dimensional.
    """
    n = shape.shape[0]
    x = np.empty_like(shape)
    deform(shape, expr_basis, lid_basis, expr, lids, x)
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
def iris_residual(target, centre, local, rot, pose, yaw, pitch, out):
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
def fit_gaze(target, centre, local, rot, pose, gaze, n_iter, prior):
    """Gauss–Newton on one eye's (yaw, pitch) in radians (gaze updated in place); returns RMS."""
    m = 2 * local.shape[0]
    r0 = np.empty(m)
    r1 = np.empty(m)
    r2 = np.empty(m)
    eps = 1e-4
    for _ in range(n_iter):
        iris_residual(target, centre, local, rot, pose, gaze[0], gaze[1], r0)
        iris_residual(target, centre, local, rot, pose, gaze[0] + eps, gaze[1], r1)
        iris_residual(target, centre, local, rot, pose, gaze[0], gaze[1] + eps, r2)
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
    iris_residual(target, centre, local, rot, pose, gaze[0], gaze[1], r0)
    total = 0.0
    for i in range(m):
        total += r0[i] * r0[i]
    return math.sqrt(total / local.shape[0])


@njit(cache=True, fastmath=True)
def update_shape(offset, correction, rate, modes, rings, lid_profiles, x_coords, orbits, orbit_mean):
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


@njit(cache=True)  # no fastmath: the finiteness checks must not be optimised away
def build_targets(points, contours, iris, contour_indices, mesh, iris_xy, min_extent):
    """Mesh targets (iris-model eye contours written over the mesh's eye points) and canonical iris.

    ``mesh`` (468, 3) and ``iris_xy`` (2, 5, 2) are filled in place; returns False if the landmarks are
    unusable (non-finite, or the face spans fewer than ``min_extent`` pixels). Iris boundary points are
    reordered to +x, -y, -x, +y in the face's own axes, as :func:`face_model.canonical_iris_order`.
    """
    n = mesh.shape[0]
    for e in range(iris.shape[0]):
        for j in range(iris.shape[1]):
            for c in range(iris.shape[2]):
                if not math.isfinite(iris[e, j, c]):
                    return False
    for i in range(n):
        for c in range(3):
            mesh[i, c] = points[i, c]
    for e in range(contour_indices.shape[0]):
        for j in range(contour_indices.shape[1]):
            mesh[contour_indices[e, j], 0] = contours[e, j, 0]
            mesh[contour_indices[e, j], 1] = contours[e, j, 1]
    low = np.full(2, np.inf)
    high = np.full(2, -np.inf)
    for i in range(n):
        for c in range(3):
            if not math.isfinite(mesh[i, c]):
                return False
        for c in range(2):
            low[c] = min(low[c], mesh[i, c])
            high[c] = max(high[c], mesh[i, c])
    if min(high[0] - low[0], high[1] - low[1]) < min_extent:
        return False
    ax, ay = mesh[263, 0] - mesh[33, 0], mesh[263, 1] - mesh[33, 1]
    norm = max(math.sqrt(ax * ax + ay * ay), 1e-9)
    ax, ay = ax / norm, ay / norm
    along_x = np.empty(4)
    along_y = np.empty(4)
    order = np.empty(4, np.int64)
    for e in range(2):
        for j in range(4):
            dx, dy = iris[e, j + 1, 0] - iris[e, 0, 0], iris[e, j + 1, 1] - iris[e, 0, 1]
            along_x[j] = dx * ax + dy * ay
            along_y[j] = -dx * ay + dy * ax
        order[0], order[1] = np.argmax(along_x), np.argmin(along_y)
        order[2], order[3] = np.argmin(along_x), np.argmax(along_y)
        distinct = True
        for a in range(4):
            for b in range(a + 1, 4):
                distinct = distinct and order[a] != order[b]
        for j in range(5):
            source = j if j == 0 or not distinct else 1 + order[j - 1]
            iris_xy[e, j, 0] = iris[e, source, 0]
            iris_xy[e, j, 1] = iris[e, source, 1]
    return True


@njit(cache=True, fastmath=True)
def fit_eyes(
    iris, centres, iris_local, iris_scale, rot, pose, gaze, lids, closed_openness, n_iter, prior, measured
):
    """Gaze (yaw, pitch) per open eye, in place in ``gaze`` (2, 2); a closed eye keeps its last gaze.

    ``iris_scale`` (2 eyes, [x, y]): the person's iris size along the eye's axes relative to the canonical
    one. ``measured`` (2, 2): the same as seen in this frame (boundary-point distances across the iris,
    detected / modelled), or -1 for a closed eye.
    """
    local = np.empty((5, 3))
    buffer = np.empty(10)
    scale = math.exp(pose[0])
    for eye in range(2):
        measured[eye, 0] = -1.0
        measured[eye, 1] = -1.0
        if lids[2 * eye] < closed_openness:
            continue
        for j in range(5):
            local[j, 0] = iris_local[j, 0] * iris_scale[eye, 0]
            local[j, 1] = iris_local[j, 1] * iris_scale[eye, 1]
            local[j, 2] = iris_local[j, 2]
        target = iris[eye]
        fit_gaze(target, centres[eye], local, rot, pose, gaze[eye], n_iter, prior)
        iris_residual(target, centres[eye], local, rot, pose, gaze[eye, 0], gaze[eye, 1], buffer)
        for axis in range(2):  # boundary points 1, 3 lie on the iris's x axis, 2, 4 on its y axis
            a, b = 1 + axis, 3 + axis
            tx, ty = target[a, 0] - target[b, 0], target[a, 1] - target[b, 1]
            mx = tx + scale * (buffer[2 * a] - buffer[2 * b])
            my = ty + scale * (buffer[2 * a + 1] - buffer[2 * b + 1])
            across_model = math.sqrt(mx * mx + my * my)
            if across_model > 0.0:
                measured[eye, axis] = iris_scale[eye, axis] * math.sqrt(tx * tx + ty * ty) / across_model
