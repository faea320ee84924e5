"""Build the canonical face model asset (``dmask_live/assets/face_model.npz``) from real faces.

    python -m dmask_live.face_model_build --data ../shared/data

``--landmark-model attention --out /tmp/x.npz`` builds a candidate from the attention mesh's
landmarks instead (the packaged asset is built from ``mesh_iris``, pinned: the environment's
``DMASK_LANDMARK_MODEL`` is not consulted, so a rebuild stays byte-identical).

Steps (all shapes are 478 landmarks from :class:`dmask_live.landmarks.FaceLandmarker`, with the
iris model's eye contours written over the mesh's eye points, as the tracker sees them):

1. Each clip's frames are similarity-aligned to each other; the clip's neutral is the per-vertex
   median of its closed-mouth frames (smallest quarter of lip gaps). Each photographed person's
   neutral is the mean of that person's aligned photos.
2. The canonical face is the generalised-Procrustes mean of all neutrals (scale-normalised,
   so every person counts once), mirror-symmetrised, oriented by the mean camera view, in cm
   with an inter-pupillary distance of 6.3 cm. No single person's shape is stored. Photos are
   often posed (smiles), so a second pass averages them with their expression and lid motion
   (as explained by the first pass's bases) removed.
3. Eyeballs (radius 1.2 cm) behind the mean iris centres, with the mean iris radius; pushed back
   until the skin clears them with neutral and wide-open lids.
4. Eyelid basis: per eye and lid, the offset that moves the lid margin to the closed line (20 %
   of the neutral aperture above the lower lid, in front of the eyeball), fading over the
   neighbouring rows of the eye contour.
5. Expression basis (unit-variance coefficients, 0 = neutral): 12 face components, PCA of every
   frame's aligned offsets from its own clip's neutral with the eye region masked out; 4 eye-region
   components, PCA of the eye-region offsets left after removing the lid motion, made orthogonal
   to the lid basis (they reshape lids and brows but never open or close the eyes).

Topology: MediaPipe's FACEMESH_TESSELATION (Apache-2.0, mediapipe/python/solutions/
face_mesh_connections.py, grouped in triangles), which already leaves eyes and mouth open.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from dmask_live.face_model import (
    DEFAULT_MODEL_PATH,
    EYE_CONTOUR_MESH_INDICES,
    EYE_RING_INDICES,
    IRIS_POINT_ROWS,
    MOUTH_RING_INDICES,
    canonical_iris_order,
)

VERSION = "dmask-face-1"
INTER_PUPILLARY_CM = 6.3
EYEBALL_RADIUS_CM = 1.2
PUPIL_TO_IRIS = 0.35
NUM_EXPRESSIONS = 16
NEUTRAL_MOUTH_QUANTILE = 0.25  # a clip's neutral: median of its frames with the smallest lip gap
NUM_FACE_EXPRESSIONS = 12  # the rest are eye-region shape components (no lid opening)
# Where the lids meet when both are closed: this fraction of the neutral aperture above the lower lid.
CLOSED_LINE_FRACTION = 0.2
LID_THICKNESS_CM = 0.06
EYEBALL_CLEARANCE_CM = 0.02  # skin stays at least this far in front of the eyeball
# Fraction of the margin's closing motion carried by the eye-contour rows around it.
UPPER_LID_FALLOFF = (1.0, 0.55, 0.25)  # margin, halo x2, halo x3
LOWER_LID_FALLOFF = (1.0, 0.35, 0.1)


def similarity_align(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None):
    """Umeyama: scale, rotation, translation with ``scale * source @ R.T + t ≈ target``."""
    w = np.ones(len(source)) if weights is None else weights
    w = w / w.sum()
    mu_s, mu_t = w @ source, w @ target
    s0, t0 = source - mu_s, target - mu_t
    cov = (t0 * w[:, None]).T @ s0
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / (w @ (s0**2).sum(1))
    return scale, rot, mu_t - scale * mu_s @ rot.T


def apply_similarity(points: np.ndarray, transform) -> np.ndarray:
    scale, rot, shift = transform
    return scale * points @ rot.T + shift


def normalise(shape: np.ndarray) -> np.ndarray:
    centred = shape - shape[:468].mean(0)
    return centred / np.sqrt((centred[:468] ** 2).sum(1).mean())


def generalised_procrustes(shapes: list[np.ndarray], iterations: int = 10) -> tuple[np.ndarray, list]:
    mean = normalise(shapes[0])
    for _ in range(iterations):
        aligned = [apply_similarity(s, similarity_align(s[:468], mean[:468])) for s in shapes]
        mean = normalise(np.mean(aligned, axis=0))
    transforms = [similarity_align(s[:468], mean[:468]) for s in shapes]
    return mean, transforms


def tracker_view(points: np.ndarray, eye_contours: np.ndarray | None, iris: np.ndarray | None) -> np.ndarray:
    """478 points with the iris model's eye contours and iris written in (what the tracker fits)."""
    out = np.array(points, dtype=np.float64)
    if eye_contours is not None:
        for eye in range(2):
            out[EYE_CONTOUR_MESH_INDICES[eye]] = eye_contours[eye]
    if iris is None:
        iris = out[IRIS_POINT_ROWS]
    iris = canonical_iris_order(out, iris)
    for eye in range(2):
        out[IRIS_POINT_ROWS[eye]] = iris[eye]
    return out


ASSET_LANDMARK_MODEL = "mesh_iris"  # the packaged asset's landmark model


def _landmarker(model: str = ASSET_LANDMARK_MODEL):
    from dmask_live.landmarks import FaceLandmarker

    # Model and backend named explicitly (never the environment's or the CPU's choice) so a
    # rebuild stays byte-identical: float32 onnxruntime, the reference the conversion tests check.
    return FaceLandmarker(model=model, backend="onnxruntime")


def _detect(landmarker, rgb: np.ndarray) -> np.ndarray | None:
    result = landmarker.process(rgb)
    if result is None:
        return None
    return tracker_view(result.points, result.eye_contours, result.iris)


def read_video_landmarks(path: Path, landmarker) -> np.ndarray:
    import cv2

    landmarker.reset()
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        points = _detect(landmarker, np.ascontiguousarray(bgr[:, :, ::-1]))
        frames.append(np.full((478, 3), np.nan) if points is None else points)
    capture.release()
    return np.array(frames)


def collect_landmarks(
    data: Path, cache: Path | None, landmark_model: str = ASSET_LANDMARK_MODEL
) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Per clip (F,478,3) landmark arrays (NaN rows for misses) and per person photo landmarks."""
    clips: dict[str, np.ndarray] = {}
    people: dict[str, list] = {}
    identities = {}
    with open(data / "faces" / "identities.csv") as handle:
        for row in csv.DictReader(handle):
            identities[row["file"]] = row["identity"]
    if cache is not None:  # development only: arrays saved from an earlier landmark run
        for path in sorted(cache.glob("d*.npz")):
            clips[path.stem] = _cached_shapes(np.load(path))
        faces = np.load(cache / "faces.npz")
        for name, points in zip(faces["names"], _cached_shapes(faces), strict=True):
            people.setdefault(identities[str(name)], []).append(points)
        return clips, people
    import cv2

    landmarker = _landmarker(landmark_model)
    for path in sorted((data / "videos").glob("*.mp4")):
        clips[path.stem] = read_video_landmarks(path, landmarker)
        found = int(np.isfinite(clips[path.stem][:, 0, 0]).sum())
        print(f"{path.name}: {found} frames with a face", file=sys.stderr)
    for name, person in identities.items():
        bgr = cv2.imread(str(data / "faces" / name))
        if bgr is None:
            continue
        landmarker.reset()  # independent photos: detect afresh, no tracking from the previous one
        points = _detect(landmarker, np.ascontiguousarray(bgr[:, :, ::-1]))
        if points is not None:
            people.setdefault(person, []).append(points)
    return clips, people


def _cached_shapes(arrays) -> np.ndarray:
    points = arrays["points"].astype(np.float64)
    contours = arrays["eye_contours"] if "eye_contours" in arrays else [None] * len(points)
    iris = arrays["iris"] if "iris" in arrays else [None] * len(points)
    return np.array(
        [
            tracker_view(p, c, i) if np.isfinite(p[0, 0]) else p
            for p, c, i in zip(points, contours, iris, strict=True)
        ]
    )


def clip_neutral(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A clip's neutral shape (frames aligned, closed-mouth median) and its frames aligned to it."""
    valid = frames[np.isfinite(frames[:, 0, 0])]
    reference = normalise(np.median(valid, axis=0))
    for _ in range(3):
        aligned = np.array([apply_similarity(f, similarity_align(f[:468], reference[:468])) for f in valid])
        reference = normalise(np.median(aligned, axis=0))
    aligned = np.array([apply_similarity(f, similarity_align(f[:468], reference[:468])) for f in valid])
    # Neutral = a closed mouth: the median over the clip's frames with the smallest lip gap.
    gap = np.linalg.norm(aligned[:, 14] - aligned[:, 13], axis=1)
    closed = aligned[gap <= np.quantile(gap, NEUTRAL_MOUTH_QUANTILE)]
    reference = np.median(closed, axis=0)
    transform = similarity_align(reference[:468], normalise(reference)[:468])
    reference = apply_similarity(reference, transform)
    aligned = np.array([apply_similarity(f, transform) for f in aligned])
    return reference, aligned


def mirror_permutation(shape: np.ndarray) -> np.ndarray:
    """Index of each mesh vertex's mirror partner (nearest neighbour of the reflected shape)."""
    mesh = shape[:468] - shape[:468].mean(0)
    reflected = mesh * np.array([-1.0, 1.0, 1.0])
    moved = reflected
    for _ in range(4):
        partner = np.argmin(((moved[:, None, :] - mesh[None, :, :]) ** 2).sum(-1), axis=1)
        moved = apply_similarity(reflected, similarity_align(reflected, mesh[partner]))
    return partner


def symmetrise(shape: np.ndarray, partner: np.ndarray, iris_partner: np.ndarray) -> np.ndarray:
    """Average the shape with its relabelled mirror image, then put the symmetry plane at x = 0."""
    full_partner = np.concatenate([partner, iris_partner])
    reflected = shape[full_partner] * np.array([-1.0, 1.0, 1.0])
    transform = similarity_align(reflected[:468], shape[:468])
    sym = 0.5 * (shape + apply_similarity(reflected, transform))
    # Symmetry plane normal: mean direction between each vertex and its partner on the +x side.
    delta = sym[:468] - sym[partner]
    side = delta[:, 0] > 0
    normal = delta[side].sum(0)
    normal /= np.linalg.norm(normal)
    rot = _rotation_between(normal, np.array([1.0, 0.0, 0.0]))
    sym = sym @ rot.T
    sym[:, 0] -= sym[:468, 0].mean()
    return sym


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    v = np.cross(a, b)
    c = float(a @ b)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def canonical_shape(neutrals: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """Mean neutral face in the mean camera orientation, symmetric, centimetres."""
    mean, _ = generalised_procrustes(neutrals)
    # Orientation: the rotation that best maps the mean onto the average camera-view neutral.
    camera_view = np.mean([normalise(s) for s in neutrals], axis=0)
    _, rot, _ = similarity_align(mean[:468], camera_view[:468])
    mean = mean @ rot.T
    partner = mirror_permutation(mean)
    shape = symmetrise(mean, partner, np.array([473, 476, 475, 474, 477, 468, 471, 470, 469, 472]))
    ipd = np.linalg.norm(shape[473] - shape[468])
    shape = shape * (INTER_PUPILLARY_CM / ipd)
    shape = shape - shape[:468].mean(0)
    transforms = [similarity_align(normalise(s)[:468], shape[:468]) for s in neutrals]
    return shape, transforms


def eye_mask(shape: np.ndarray) -> np.ndarray:
    """Per-vertex weight in [0, 1]: 0 in the eye region (explicit lids), 1 away from it."""
    weight = np.ones(len(shape))
    for eye in range(2):
        ring = shape[EYE_RING_INDICES[eye]]
        centre = ring.mean(0)
        half_width = 0.5 * np.linalg.norm(shape[EYE_RING_INDICES[eye, 0]] - shape[EYE_RING_INDICES[eye, 8]])
        q = np.hypot((shape[:, 0] - centre[0]) / half_width, (shape[:, 1] - centre[1]) / (0.6 * half_width))
        t = np.clip((q - 1.15) / (2.0 - 1.15), 0.0, 1.0)
        weight = np.minimum(weight, t * t * (3 - 2 * t))
    return weight


def expression_basis(
    clips: dict, neutrals: dict, aligned: dict, shape: np.ndarray, transforms: dict, lid_basis: np.ndarray
):
    """Identity-free expression basis from per-frame offsets to each clip's own neutral (model space).

    Face components: PCA with the eye region masked out. Eye-region components: PCA of what is
    left around the eyes once the explicit lid motion is removed, made orthogonal to the lid basis,
    so they reshape lids and brows (e.g. with gaze) but never open or close the eyes.
    Coefficients of every component have unit variance over the training frames.
    """
    mask = eye_mask(shape[:468])[:, None]
    offsets = []
    for name in clips:
        scale, rot, _ = transforms[name]
        delta = (aligned[name][:, :468] - neutrals[name][None, :468]) * scale
        offsets.append(delta @ rot.T)
    data = np.concatenate(offsets)
    # Not centred: coefficients 0 must mean the neutral face, not the clips' average expression.
    face, face_sigma, explained = _pca((data * mask[None]).reshape(len(data), -1), NUM_FACE_EXPRESSIONS)
    lids = lid_basis.reshape(4, -1)
    eye = (data * (1.0 - mask)[None]).reshape(len(data), -1)
    eye = eye - np.linalg.lstsq(lids.T, eye.T, rcond=None)[0].T @ lids
    eye_components, eye_sigma, _ = _pca(eye, NUM_EXPRESSIONS - NUM_FACE_EXPRESSIONS)
    projector = lids.T @ np.linalg.solve(lids @ lids.T, lids)
    eye_components = eye_components - eye_components @ projector
    basis = np.concatenate([face, eye_components]).reshape(NUM_EXPRESSIONS, 468, 3)
    return basis, np.concatenate([face_sigma, eye_sigma]), explained


def _pca(data: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Top ``count`` principal directions scaled by their standard deviations."""
    _, sing, vt = np.linalg.svd(data, full_matrices=False)
    # SVD signs are arbitrary: make each direction's largest entry positive (reproducible builds).
    vt = vt * np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])[:, None]
    sigma = sing / np.sqrt(len(data))
    explained = float((sigma[:count] ** 2).sum() / (sigma**2).sum())
    return vt[:count] * sigma[:count, None], sigma[:count], explained


def _margin_curves(shape: np.ndarray, eye: int):
    contour = EYE_CONTOUR_MESH_INDICES[eye]
    lower = contour[0:9]  # corner, 7 lower margin points, corner
    upper = np.concatenate([[contour[0]], contour[9:16], [contour[8]]])
    return lower, upper


def _interp_curve(x_query: np.ndarray, points: np.ndarray) -> np.ndarray:
    order = np.argsort(points[:, 0])
    xs = points[order, 0]
    return np.stack([np.interp(x_query, xs, points[order, k]) for k in range(3)], axis=1)


def eyelid_basis(shape: np.ndarray, centers: np.ndarray, radius: float) -> np.ndarray:
    """(2, 2, V, 3) offsets that take each lid margin to the closed line (openness 0)."""
    basis = np.zeros((2, 2, len(shape), 3))
    for eye in range(2):
        contour = EYE_CONTOUR_MESH_INDICES[eye]
        lower, upper = _margin_curves(shape, eye)
        rows_upper = [contour[9:16], contour[25:32], contour[41:48]]
        rows_lower = [contour[1:8], contour[17:24], contour[33:40]]
        for lid, (rows, falloff) in enumerate(
            ((rows_upper, UPPER_LID_FALLOFF), (rows_lower, LOWER_LID_FALLOFF))
        ):
            margin = rows[0]
            xs = shape[margin, 0]
            low = _interp_curve(xs, shape[lower])
            up = _interp_curve(xs, shape[upper])
            closed = low + CLOSED_LINE_FRACTION * (up - low)
            # The closed lid lies over the eyeball, not through it.
            dxy = closed[:, :2] - centers[eye, :2]
            inside = np.clip(radius**2 - (dxy**2).sum(1), 0.0, None)
            surface_z = centers[eye, 2] - np.sqrt(inside) - LID_THICKNESS_CM
            closed[:, 2] = np.minimum(closed[:, 2], surface_z)
            margin_offset = closed - shape[margin]
            for row, fraction in zip(rows, falloff, strict=True):
                curve = np.concatenate([shape[margin][:, :1], margin_offset], axis=1)
                order = np.argsort(curve[:, 0])
                for k in range(3):
                    basis[eye, lid, row, k] = fraction * np.interp(
                        shape[row, 0], curve[order, 0], curve[order, k + 1]
                    )
    return basis


def eyeballs(shape: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Eyeball centres behind the neutral iris centres, iris radius and iris-plane depth."""
    iris_radius = 0.0
    for eye in range(2):
        rows = IRIS_POINT_ROWS[eye]
        iris_radius += np.linalg.norm(shape[rows[1:], :2] - shape[rows[0], :2], axis=1).mean() / 2
    depth = float(np.sqrt(EYEBALL_RADIUS_CM**2 - iris_radius**2))
    centers = np.stack([shape[IRIS_POINT_ROWS[eye, 0]] + np.array([0.0, 0.0, depth]) for eye in range(2)])
    return centers, float(iris_radius), depth


def triangles(shape: np.ndarray) -> np.ndarray:
    tris = np.array(_MEDIAPIPE_TRIANGLES.split(), dtype=np.int32).reshape(-1, 3)
    # Wind every triangle so its normal points toward the camera (-z), judged on the neutral face.
    a, b, c = shape[tris[:, 0]], shape[tris[:, 1]], shape[tris[:, 2]]
    flip = np.cross(b - a, c - a)[:, 2] > 0
    tris[flip] = tris[flip][:, [0, 2, 1]]
    return tris


def build(data: Path, cache: Path | None = None, landmark_model: str = ASSET_LANDMARK_MODEL) -> dict:
    clips, people = collect_landmarks(data, cache, landmark_model)
    return build_from_landmarks(clips, people)


def _model_pass(all_neutrals: list, clips: dict, neutrals: dict, aligned: dict) -> tuple:
    shape, transforms = canonical_shape(all_neutrals)
    clip_transforms = dict(zip(neutrals, transforms[: len(neutrals)], strict=True))
    centers, iris_radius, depth = eyeballs(shape)
    lids = eyelid_basis(shape[:468], centers, EYEBALL_RADIUS_CM)
    for _ in range(3):  # seat the eyeballs behind the skin (neutral and wide-open lids)
        depth_needed = eyeball_penetration(shape[:468], centers, lids)
        if depth_needed <= 0.0:
            break
        centers[:, 2] += depth_needed + EYEBALL_CLEARANCE_CM
        lids = eyelid_basis(shape[:468], centers, EYEBALL_RADIUS_CM)
    basis, sigma, explained = expression_basis(clips, neutrals, aligned, shape, clip_transforms, lids)
    return shape, centers, iris_radius, depth, lids, basis, sigma, explained


def eyeball_penetration(vertices: np.ndarray, centers: np.ndarray, lids: np.ndarray) -> float:
    """How deep (cm) the skin surface cuts into an eyeball, lids neutral or wide (1.5); <= 0: clear."""
    tris = triangles(vertices)
    grid = np.linspace(0.0, 1.0, 7)
    bary = np.array([(a, b, 1 - a - b) for a in grid for b in grid if a + b <= 1])
    worst = -np.inf
    for openness in (1.0, 1.5):
        moved = vertices + (1.0 - openness) * lids.sum(axis=(0, 1))
        samples = np.einsum("sk,tkd->tsd", bary, moved[tris])
        for centre in centers:
            worst = max(worst, EYEBALL_RADIUS_CM - float(np.linalg.norm(samples - centre, axis=2).min()))
    return worst


def neutralise(person: np.ndarray, model: tuple) -> np.ndarray:
    """A photographed person's shape without the expression and lid motion it shows."""
    shape, _, _, _, lids, basis, _, _ = model
    moved = apply_similarity(normalise(person), similarity_align(normalise(person)[:468], shape[:468]))
    offset = (moved[:468] - shape[:468]).ravel()
    motions = np.concatenate([basis.reshape(len(basis), -1), lids.reshape(4, -1)])
    coef = np.linalg.solve(motions @ motions.T + 1e-3 * np.eye(len(motions)), motions @ offset)
    out = moved.copy()
    out[:468] -= (coef @ motions).reshape(468, 3)
    return out


def build_from_landmarks(clips: dict[str, np.ndarray], people: dict[str, list]) -> dict:
    """The asset's arrays from per-clip (F,478,3) landmark arrays and per-person photo landmarks."""
    neutrals, aligned = {}, {}
    for name, frames in clips.items():
        neutrals[name], aligned[name] = clip_neutral(frames)
    person_neutrals = []
    for shapes in people.values():
        mean, _ = generalised_procrustes(shapes, iterations=3)
        person_neutrals.append(mean)
    model = _model_pass(list(neutrals.values()) + person_neutrals, clips, neutrals, aligned)
    if person_neutrals:
        # Photos are often posed (smiles): keep only their shape by removing what the expression
        # and lid bases explain relative to a first mean, then average again.
        person_neutrals = [neutralise(p, model) for p in person_neutrals]
        model = _model_pass(list(neutrals.values()) + person_neutrals, clips, neutrals, aligned)
    shape, centers, iris_radius, depth, lids, basis, sigma, explained = model
    all_neutrals = list(neutrals.values()) + person_neutrals
    print(
        f"{len(neutrals)} clips, {len(person_neutrals)} photographed people; "
        f"{NUM_FACE_EXPRESSIONS} face components explain {explained:.1%} of masked offsets; "
        f"{NUM_EXPRESSIONS - NUM_FACE_EXPRESSIONS} eye-region components",
        file=sys.stderr,
    )
    return {
        "vertices": shape[:468].astype(np.float32),
        "triangles": triangles(shape[:468]),
        "expression_basis": basis.astype(np.float32),
        "expression_sigma": sigma.astype(np.float32),
        "eyelid_basis": lids.astype(np.float32),
        "eye_ring": EYE_RING_INDICES.copy(),
        "mouth_ring": MOUTH_RING_INDICES.copy(),
        "eyeball_centers": centers.astype(np.float32),
        "eyeball_radius": np.float32(EYEBALL_RADIUS_CM),
        "iris_radius": np.float32(iris_radius),
        "pupil_radius": np.float32(PUPIL_TO_IRIS * iris_radius),
        "iris_depth": np.float32(depth),
        "version": np.str_(VERSION),
        "units": np.str_("cm"),
        "num_people": np.int32(len(all_neutrals)),
    }


def main(argv: list[str] | None = None) -> int:
    # Imported here, as FaceLandmarker is above: importing this module loads no cv2.
    from dmask_live.landmarks import MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="shared data folder (videos/, faces/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument(
        "--landmark-model",
        choices=MODELS,
        default=ASSET_LANDMARK_MODEL,
        help="landmark model whose points the face model is fitted to (default: %(default)s, the asset's)",
    )
    parser.add_argument("--landmark-cache", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    arrays = build(args.data, args.landmark_cache, args.landmark_model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)", file=sys.stderr)
    return 0


# Triangle list (852 triangles) of MediaPipe's FACEMESH_TESSELATION, Apache-2.0, Google LLC.
_MEDIAPIPE_TRIANGLES = """
127 34 139 11 0 37 232 231 120 72 37 39 128 121 47 232 121 128 104 69 67 175 171 148 118 50 101 73
39 40 9 151 108 48 115 131 194 204 211 74 40 185 80 42 183 40 92 186 230 229 118 202 212 214 83 18
17 76 61 146 160 29 30 56 157 173 106 204 194 135 214 192 203 165 98 21 71 68 51 45 4 144 24 23 77
146 91 205 50 187 201 200 18 91 106 182 90 91 181 85 84 17 206 203 36 148 171 140 92 40 39 193 189
244 159 158 28 247 246 161 236 3 196 54 68 104 193 168 8 117 228 31 189 193 55 98 97 99 126 47 100
166 79 218 155 154 26 209 49 131 135 136 150 47 126 217 223 52 53 45 51 134 211 170 140 67 69 108 43
106 91 230 119 120 226 130 247 63 53 52 238 20 242 46 70 156 78 62 96 46 53 63 143 34 227 123 117
111 44 125 19 236 134 51 216 206 205 154 153 22 39 37 167 200 201 208 36 142 100 57 212 202 20 60 99
28 158 157 35 226 113 160 159 27 204 202 210 113 225 46 43 202 204 62 76 77 137 123 116 41 38 72 203
129 142 64 98 240 49 102 64 41 73 74 212 216 207 42 74 184 169 170 211 170 149 176 105 66 69 122 6
168 123 147 187 96 77 90 65 55 107 89 90 180 101 100 120 63 105 104 93 137 227 15 86 85 129 102 49
14 87 86 55 8 9 100 47 121 145 23 22 88 89 179 6 122 196 88 95 96 138 172 136 215 58 172 115 48 219
42 80 81 195 3 51 43 146 61 171 175 199 81 82 38 53 46 225 144 163 110 52 65 66 229 228 117 34 127
234 107 108 69 109 108 151 48 64 235 62 78 191 129 209 126 111 35 143 117 123 50 222 65 52 19 125
141 221 55 65 3 195 197 25 7 33 220 237 44 70 71 139 122 193 245 247 130 33 71 21 162 170 169 150
188 174 196 216 186 92 2 97 167 141 125 241 164 167 37 72 38 12 38 82 13 63 68 71 226 35 111 101 50
205 206 92 165 209 198 217 165 167 97 220 115 218 133 112 243 239 238 241 214 135 169 190 173 133
171 208 32 125 44 237 86 87 178 85 86 179 84 85 180 83 84 181 201 83 182 137 93 132 76 62 183 61 76
184 57 61 185 212 57 186 214 207 187 34 143 156 79 239 237 123 137 177 44 1 4 201 194 32 64 102 129
213 215 138 59 166 219 242 99 97 2 94 141 75 59 235 24 110 228 25 130 226 23 24 229 22 23 230 26 22
231 112 26 232 189 190 243 221 56 190 28 56 221 27 28 222 29 27 223 30 29 224 247 30 225 238 79 20
166 59 75 60 75 240 147 177 215 20 79 166 187 147 213 112 233 244 233 128 245 128 114 188 114 217
174 131 115 220 217 198 236 198 131 134 177 132 58 143 35 124 110 163 7 228 110 25 356 389 368 11
302 267 452 350 349 302 303 269 357 343 277 452 453 357 333 332 297 175 152 377 347 348 330 303 304
270 9 336 337 278 279 360 418 262 431 304 408 409 310 415 407 270 409 410 450 348 347 422 430 434
313 314 17 306 307 375 387 388 260 286 414 398 335 406 418 364 367 416 423 358 327 251 284 298 281 5
4 373 374 253 307 320 321 425 427 411 421 313 18 321 405 406 320 404 405 315 16 17 426 425 266 377
400 369 322 391 269 417 465 464 386 257 258 466 260 388 456 399 419 284 332 333 417 285 8 346 340
261 413 441 285 327 460 328 355 371 329 392 439 438 382 341 256 429 420 360 364 394 379 277 343 437
443 444 283 275 440 363 431 262 369 297 338 337 273 375 321 450 451 349 446 342 467 293 334 282 458
461 462 276 353 383 308 324 325 276 300 293 372 345 447 352 345 340 274 1 19 456 248 281 436 427 425
381 256 252 269 391 393 200 199 428 266 330 329 287 273 422 250 462 328 258 286 384 265 353 342 387
259 257 424 431 430 342 353 276 273 335 424 292 325 307 366 447 345 271 303 302 423 266 371 294 455
460 279 278 294 271 272 304 432 434 427 272 407 408 394 430 431 395 369 400 334 333 299 351 417 168
352 280 411 325 319 320 295 296 336 319 403 404 330 348 349 293 298 333 323 454 447 15 16 315 358
429 279 14 15 316 285 336 9 329 349 350 374 380 252 318 402 403 6 197 419 318 319 325 367 364 365
435 367 397 344 438 439 272 271 311 195 5 281 273 287 291 396 428 199 311 271 268 283 444 445 373
254 339 282 334 296 449 347 346 264 447 454 336 296 299 338 10 151 278 439 455 292 407 415 358 371
355 340 345 372 346 347 280 442 443 282 19 94 370 441 442 295 248 419 197 263 255 359 440 275 274
300 383 368 351 412 465 263 467 466 301 368 389 395 378 379 412 351 419 436 426 322 2 164 393 370
462 461 164 0 267 302 11 12 268 12 13 293 300 301 446 261 340 330 266 425 426 423 391 429 355 437
391 327 326 440 457 438 341 382 362 459 457 461 434 430 394 414 463 362 396 369 262 354 461 457 316
403 402 315 404 403 314 405 404 313 406 405 421 418 406 366 401 361 306 408 407 291 409 408 287 410
409 432 436 410 434 416 411 264 368 383 309 438 457 352 376 401 274 275 4 421 428 262 294 327 358
433 416 367 289 455 439 462 370 326 2 326 370 305 460 455 254 449 448 255 261 446 253 450 449 252
451 450 256 452 451 341 453 452 413 464 463 441 413 414 258 442 441 257 443 442 259 444 443 260 445
444 467 342 445 459 458 250 289 392 290 290 328 460 376 433 435 250 290 392 411 416 433 341 463 464
453 464 465 357 465 412 343 412 399 360 363 440 437 399 456 420 456 363 401 435 288 372 383 353 339
255 249 448 261 255 133 243 190 133 155 112 33 246 247 33 130 25 398 384 286 362 398 414 362 463 341
263 359 467 263 249 255 466 467 260 75 60 166 238 239 79 162 127 139 72 11 37 121 232 120 73 72 39
114 128 47 233 232 128 103 104 67 152 175 148 119 118 101 74 73 40 107 9 108 49 48 131 32 194 211
184 74 185 191 80 183 185 40 186 119 230 118 210 202 214 84 83 17 77 76 146 161 160 30 190 56 173
182 106 194 138 135 192 129 203 98 54 21 68 5 51 4 145 144 23 90 77 91 207 205 187 83 201 18 181 91
182 180 90 181 16 85 17 205 206 36 176 148 140 165 92 39 245 193 244 27 159 28 30 247 161 174 236
196 103 54 104 55 193 8 111 117 31 221 189 55 240 98 99 142 126 100 219 166 218 112 155 26 198 209
131 169 135 150 114 47 217 224 223 53 220 45 134 32 211 140 109 67 108 146 43 91 231 230 120 113 226
247 105 63 52 241 238 242 124 46 156 95 78 96 70 46 63 116 143 227 116 123 111 1 44 19 3 236 51 207
216 205 26 154 22 165 39 167 199 200 208 101 36 100 43 57 202 242 20 99 56 28 157 124 35 113 29 160
27 211 204 210 124 113 46 106 43 204 96 62 77 227 137 116 73 41 72 36 203 142 235 64 240 48 49 64 42
41 74 214 212 207 183 42 184 210 169 211 140 170 176 104 105 69 193 122 168 50 123 187 89 96 90 66
65 107 179 89 180 119 101 120 68 63 104 234 93 227 16 15 85 209 129 49 15 14 86 107 55 9 120 100 121
153 145 22 178 88 179 197 6 196 89 88 96 135 138 136 138 215 172 218 115 219 41 42 81 5 195 51 57 43
61 208 171 199 41 81 38 224 53 225 24 144 110 105 52 66 118 229 117 227 34 234 66 107 69 10 109 151
219 48 235 183 62 191 142 129 126 116 111 143 118 117 50 223 222 52 94 19 141 222 221 65 196 3 197
45 220 44 156 70 139 188 122 245 139 71 162 149 170 150 122 188 196 206 216 92 164 2 167 242 141 241
0 164 37 11 72 12 12 38 13 70 63 71 31 226 111 36 101 205 203 206 165 126 209 217 98 165 97 237 220
218 237 239 241 210 214 169 140 171 32 241 125 237 179 86 178 180 85 179 181 84 180 182 83 181 194
201 182 177 137 132 184 76 183 185 61 184 186 57 185 216 212 186 192 214 187 139 34 156 218 79 237
147 123 177 45 44 4 208 201 32 98 64 129 192 213 138 235 59 219 141 242 97 97 2 141 240 75 235 229
24 228 31 25 226 230 23 229 231 22 230 232 26 231 233 112 232 244 189 243 189 221 190 222 28 221 223
27 222 224 29 223 225 30 224 113 247 225 99 60 240 213 147 215 60 20 166 192 187 213 243 112 244 244
233 245 245 128 188 188 114 174 134 131 220 174 217 236 236 198 134 215 177 58 156 143 124 25 110 7
31 228 25 264 356 368 0 11 267 451 452 349 267 302 269 350 357 277 350 452 357 299 333 297 396 175
377 280 347 330 269 303 270 151 9 337 344 278 360 424 418 431 270 304 409 272 310 407 322 270 410
449 450 347 432 422 434 18 313 17 291 306 375 259 387 260 424 335 418 434 364 416 391 423 327 301
251 298 275 281 4 254 373 253 375 307 321 280 425 411 200 421 18 335 321 406 321 320 405 314 315 17
423 426 266 396 377 369 270 322 269 413 417 464 385 386 258 248 456 419 298 284 333 168 417 8 448
346 261 417 413 285 326 327 328 277 355 329 309 392 438 381 382 256 279 429 360 365 364 379 355 277
437 282 443 283 281 275 363 395 431 369 299 297 337 335 273 321 348 450 349 359 446 467 283 293 282
250 458 462 300 276 383 292 308 325 283 276 293 264 372 447 346 352 340 354 274 19 363 456 281 426
436 425 380 381 252 267 269 393 421 200 428 371 266 329 432 287 422 290 250 328 385 258 384 446 265
342 386 387 257 422 424 430 445 342 276 422 273 424 306 292 307 352 366 345 268 271 302 358 423 371
327 294 460 331 279 294 303 271 304 436 432 427 304 272 408 395 394 431 378 395 400 296 334 299 6
351 168 376 352 411 307 325 320 285 295 336 320 319 404 329 330 349 334 293 333 366 323 447 316 15
315 331 358 279 317 14 316 8 285 9 277 329 350 253 374 252 319 318 403 351 6 419 324 318 325 397 367
365 288 435 397 278 344 439 310 272 311 248 195 281 375 273 291 175 396 199 312 311 268 276 283 445
390 373 339 295 282 296 448 449 346 356 264 454 337 336 299 337 338 151 294 278 455 308 292 415 429
358 355 265 340 372 352 346 280 295 442 282 354 19 370 285 441 295 195 248 197 457 440 274 301 300
368 417 351 465 251 301 389 394 395 379 399 412 419 410 436 322 326 2 393 354 370 461 393 164 267
268 302 12 312 268 13 298 293 301 265 446 340 280 330 425 322 426 391 420 429 437 393 391 326 344
440 438 458 459 461 364 434 394 428 396 262 274 354 457 317 316 402 316 315 403 315 314 404 314 313
405 313 421 406 323 366 361 292 306 407 306 291 408 291 287 409 287 432 410 427 434 411 372 264 383
459 309 457 366 352 401 1 274 4 418 421 262 331 294 358 435 433 367 392 289 439 328 462 326 94 2 370
289 305 455 339 254 448 359 255 446 254 253 449 253 252 450 252 256 451 256 341 452 414 413 463 286
441 414 286 258 441 258 257 442 257 259 443 259 260 444 260 467 445 309 459 250 305 289 290 305 290
460 401 376 435 309 250 392 376 411 433 453 341 464 357 453 465 343 357 412 437 343 399 344 360 440
420 437 456 360 420 363 361 401 288 265 372 353 390 339 249 339 448 255
"""

if __name__ == "__main__":
    raise SystemExit(main())
