"""The rest of the avatar's head: a canonical skull and neck around the face mesh.

The face mesh ends at the forehead and the jaw. Landmark networks were trained on whole heads, so
a face that stops at the mesh edge is read as ending there: measured with our networks, the
forehead point came out ~7 px low on a 264 px face, the jaw ~4 px high, and the tracker saw the
head pitched by ~3°. A skull behind the forehead and a neck under the jaw, both fixed ellipsoids
in model space (cm, same axes as the face model), give the networks the outline they expect.
They are identical for every patient and move only with the head pose.
"""

from __future__ import annotations

import numpy as np

# (centre, semi-axes, colour) in model space. The skull's front meets the forehead's top edge
# (mesh point 10 at y -9.0, z -1.1) a little behind it and bulges past the temples by ~0.4 cm
# (the face mesh's sides are at x ±7.0); its top is ~11.5 cm above the eyes. The neck sits behind
# the chin (z 0.8) and the jaw (z ~4.9 at x ±5.5), so the face hides its top.
HEAD_PARTS = (  # where they overlap the first one shows: the neck over the skull's back
    ((0.0, 11.0, 5.2), (5.0, 9.0, 4.6), (0.78, 0.62, 0.53)),
    ((0.0, -4.5, 7.8), (7.6, 10.5, 9.6), (0.95, 0.77, 0.66)),
)


def sphere_grid(rings: int, segments: int, start: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polar angles θ (from ``start`` to π) and azimuths φ of a (rings+1, segments+1) vertex grid,
    and its triangles (M, 3) in row-major vertex order (the winding both sphere meshes draw with)."""
    theta = np.linspace(start, np.pi, rings + 1)
    phi = np.linspace(0.0, 2.0 * np.pi, segments + 1)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    idx = np.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return t, p, np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])


def ellipsoid_meshes(rings: int = 16, segments: int = 28):
    """Model-space vertices (N, 3), normals (N, 3), colours (N, 3) and triangles (M, 3) of all parts."""
    t, p, grid = sphere_grid(rings, segments)
    unit = np.stack([np.sin(t) * np.cos(p), -np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    verts, normals, colours, tris = [], [], [], []
    for centre, axes, colour in HEAD_PARTS:
        axes = np.asarray(axes)
        tris.append(grid + sum(len(v) for v in verts))
        verts.append(np.asarray(centre) + unit * axes)
        n = unit / axes  # ellipsoid normal: gradient of sum((x/a)^2)
        normals.append(n / np.linalg.norm(n, axis=1, keepdims=True))
        colours.append(np.tile(colour, (len(unit), 1)))
    return (np.concatenate(verts), np.concatenate(normals), np.concatenate(colours).astype(np.float32),
            np.concatenate(tris).astype(np.int32))
