"""Soft eye-region detail of the avatar: lash lines, lid shadow and the upper-lid crease.

Landmark networks were trained on real eyes: they find a lid margin where a dark lash line runs
along it, an eye corner where the lash line and the white of the eye end, and they expect the
upper lid to shade the top of the eyeball. Without these cues they read a drooping lid as higher
than it is and the outer corner as nearer the nose. Every detail here is a ribbon laid along the
model's own lid loops (posed mesh vertices), so it goes where the state puts the lids: canonical,
identical for every patient, nothing taken from an input image.

A ribbon is rows of vertices offset from its loop along the loop's outward normal (away from the
eye), in eye widths, each row with its own RGBA; the renderer blends them over the drawn face.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

Rgba = tuple[float, float, float, float]

# Lid loops of one eye as positions in the model's eye_ring (lower margin outer→inner corner at
# 0..8, upper margin back at 9..15), ordered from the inner corner to the outer one.
UPPER_MARGIN = (8, 9, 10, 11, 12, 13, 14, 15, 0)
LOWER_MARGIN = (8, 7, 6, 5, 4, 3, 2, 1, 0)
# The upper-lid crease: MediaPipe mesh points of the skin loop above the upper margin, inner→outer.
CREASE_MESH = ((243, 190, 56, 28, 27, 29, 30, 247, 130), (463, 414, 286, 258, 257, 259, 260, 467, 359))


@dataclass(frozen=True)
class RibbonStyle:
    """One ribbon: which loop, its rows (offset in eye widths, + = away from the eye; colour)."""

    loop: str  # "upper", "lower" (lid margins) or "crease"
    rows: tuple[tuple[float, Rgba], ...]
    corner_width: float  # width at the eye corners relative to the widest point
    widest_at: float  # where the ribbon is widest, 0 = inner corner .. 1 = outer corner
    lift: float  # toward the camera, eye widths: wins the depth test against the lid skin
    inside_limit: float = 0.9  # rows inside the eye reach at most this fraction of the aperture
    # Opacity of the rows as the eye narrows to a slit: the lids shade a narrow opening more (what
    # little eyeball shows in a slit is in the lids' shadow). None: constant.
    slit_alpha: float | None = None


LASH = (0.16, 0.11, 0.10)
LOWER_LASH = (0.45, 0.32, 0.29)
LID_SHADOW = (0.28, 0.2, 0.18)
CREASE = (0.52, 0.38, 0.33)

STYLES = (
    # Upper lid's shadow on the eyeball, fading down from the margin.
    RibbonStyle("upper", ((0.0, (*LID_SHADOW, 0.55)), (-0.07, (*LID_SHADOW, 0.0))), 0.5, 0.5, 0.06,
                slit_alpha=0.95),
    # Upper lash line: dark on the margin, soft edges, widest toward the outer corner.
    RibbonStyle("upper", ((-0.012, (*LASH, 0.0)), (0.0, (*LASH, 1.0)), (0.035, (*LASH, 1.0)),
                          (0.06, (*LASH, 0.0))), 0.3, 0.65, 0.06),
    RibbonStyle("lower", ((-0.008, (*LOWER_LASH, 0.0)), (0.0, (*LOWER_LASH, 0.9)),
                          (0.02, (*LOWER_LASH, 0.9)), (0.035, (*LOWER_LASH, 0.0))), 0.4, 0.55, 0.03),
    # The crease flattens out as the lid closes (slit_alpha 0), as a real shut lid's does. With the
    # earlier uniform brows the networks read a drawn crease as the upper margin of a half-open eye
    # (a shut eye read 0.13 of its open aperture, 0.04 with the fade); with renderer._BROW_SHADES a
    # shut eye reads 0.11-0.12 either way, and the fade keeps the real-clip lid-aperture correlation
    # at 0.925 (0.917 without).
    RibbonStyle("crease", ((-0.035, (*CREASE, 0.0)), (0.0, (*CREASE, 0.45)), (0.05, (*CREASE, 0.0))),
                0.2, 0.5, 0.08, slit_alpha=0.0),
)
# What shows where the eyeball does not reach the lid margins: the pink caruncle in the inner
# corner, conjunctiva in the lids' shadow elsewhere, darker deep in the socket.
CARUNCLE = (0.80, 0.50, 0.50)
CONJUNCTIVA = (0.74, 0.66, 0.64)
SOCKET_DEPTH = (0.55, 0.45, 0.44)
LOOP_POINTS = 9
OPEN_APERTURE = 0.28  # a neutral eye's lid-to-lid height over its width (the canonical model's)


def taper(count: int, corner_width: float, widest_at: float) -> np.ndarray:
    """(count,) width profile along a loop: ``corner_width`` at both ends, 1 at ``widest_at``."""
    s = np.linspace(0.0, 1.0, count)
    power = np.log(0.5) / np.log(min(max(widest_at, 0.05), 0.95))
    return corner_width + (1.0 - corner_width) * np.sin(np.pi * s ** power)


def socket_colours(ring_length: int, inner_corner: int = 8) -> np.ndarray:
    """(ring_length + 1, 4) RGBA of an eye socket fan: ring vertices, then the fan's centre."""
    steps = np.abs(np.arange(ring_length) - inner_corner)
    steps = np.minimum(steps, ring_length - steps)  # around the loop
    weight = np.exp(-0.5 * (steps / 1.2) ** 2)[:, None]
    ring = (1.0 - weight) * np.asarray(CONJUNCTIVA) + weight * np.asarray(CARUNCLE)
    rgb = np.vstack([ring, SOCKET_DEPTH])
    return np.hstack([rgb, np.ones((len(rgb), 1))]).astype(np.float32)


def ribbon_triangles(styles=STYLES, count: int = LOOP_POINTS, eyes: int = 2) -> np.ndarray:
    """Triangles (M, 3) int32 of all ribbons, vertices laid out as :func:`ribbon_vertices` does."""
    tris, base = [], 0
    for _ in range(eyes):
        for style in styles:
            rows = len(style.rows)
            grid = base + np.arange(rows * count).reshape(rows, count)
            a, b = grid[:-1, :-1].ravel(), grid[:-1, 1:].ravel()
            c, d = grid[1:, :-1].ravel(), grid[1:, 1:].ravel()
            tris.append(np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)]))
            base += rows * count
    return np.concatenate(tris).astype(np.int32)


LOOPS = ("upper", "lower", "crease")


@functools.lru_cache(maxsize=8)
def _layout(styles: tuple[RibbonStyle, ...]) -> dict[str, np.ndarray]:
    """Per-row constants of all ribbons (rows of every style in order), for vectorised posing."""
    rows = [(style, offset, rgba) for style in styles for offset, rgba in style.rows]
    alpha = np.array([rgba[3] for _, _, rgba in rows])
    slit = np.array([0.0 if s.slit_alpha is None or a <= 0 else s.slit_alpha / a - 1.0
                     for (s, _, _), a in zip(rows, alpha, strict=True)])
    return {
        "loop": np.array([LOOPS.index(s.loop) for s, _, _ in rows]),
        "offset": np.array([offset for _, offset, _ in rows]),
        "rgba": np.array([rgba for _, _, rgba in rows], np.float64),
        "profile": np.stack([taper(LOOP_POINTS, s.corner_width, s.widest_at) for s, _, _ in rows]),
        "lift": np.array([s.lift for s, _, _ in rows]),
        "clamped": np.array([offset < 0.0 and s.loop != "crease" for s, offset, _ in rows]),
        "limit": np.array([s.inside_limit for s, _, _ in rows]),
        "slit_gain": slit,
    }


def _outward_normals(loops: np.ndarray, eye_centre: np.ndarray) -> np.ndarray:
    """(L, n, 2) unit normals of L 2-D polylines (L, n, 2), each on the side away from ``eye_centre``."""
    tangent = np.gradient(loops, axis=1)
    normal = np.stack([-tangent[..., 1], tangent[..., 0]], -1)
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-9)
    middle = loops.shape[1] // 2
    side = np.sign(np.sum(normal[:, middle] * (loops[:, middle] - eye_centre), axis=-1))
    return normal * np.where(side == 0, 1.0, side)[:, None, None]


def ribbon_vertices(verts: np.ndarray, eye_rings: np.ndarray, towards_camera: np.ndarray,
                    styles=STYLES) -> np.ndarray:
    """(N, 7) float32 vertices (x, y, z, r, g, b, a) of every ribbon of both eyes.

    ``verts``: posed vertices (V, 3) in image pixels; ``eye_rings``: (2, 16) vertex indices of the
    lid margin loops; ``towards_camera``: unit vector (3,) from the face toward the camera.
    Layout: eye, then style, then row, then the loop's points from the inner corner outward.
    """
    layout = _layout(tuple(styles))
    loop_index = layout["loop"]
    out = []
    for eye in range(2):
        ring = verts[eye_rings[eye]]
        loops = np.stack([ring[list(UPPER_MARGIN)], ring[list(LOWER_MARGIN)], verts[list(CREASE_MESH[eye])]])
        width = float(np.linalg.norm(ring[0, :2] - ring[8, :2]))
        normals = _outward_normals(loops[..., :2], ring[:, :2].mean(0))
        # The gap from each margin to the other along its own normal (rows inside the eye stop
        # short of the other lid); the crease has none.
        across = loops[[1, 0], :, :2] - loops[:2, :, :2]
        gaps = np.full(loops.shape[:2], np.inf)
        gaps[:2] = np.maximum(-np.sum(across * normals[:2], axis=-1), 0.0)
        aperture = np.linalg.norm(loops[0, :, :2] - loops[1, :, :2], axis=1)
        narrowness = np.clip(1.0 - aperture.max() / (OPEN_APERTURE * max(width, 1e-9)), 0.0, 1.0)
        distance = layout["offset"][:, None] * layout["profile"] * width
        clamped = layout["clamped"]
        floor = -layout["limit"][clamped, None] * gaps[loop_index[clamped]]
        distance[clamped] = np.maximum(distance[clamped], floor)
        rows = np.empty(distance.shape + (7,))
        rows[..., :3] = loops[loop_index] + towards_camera * (layout["lift"] * width)[:, None, None]
        rows[..., :2] += normals[loop_index] * distance[..., None]
        rows[..., 3:] = layout["rgba"][:, None, :]
        rows[..., 6] *= (1.0 + layout["slit_gain"] * narrowness)[:, None]
        out.append(rows.reshape(-1, 7))
    return np.concatenate(out).astype(np.float32)
