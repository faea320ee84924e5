"""The landmark stage: frame → :class:`~dmask_live.types.FaceLandmarks` (or None: no face).

Two landmark models, chosen with ``FaceLandmarker(model=...)``; with ``model=None`` the
environment variable ``DMASK_LANDMARK_MODEL`` names it (for benchmarking a candidate without code
edits), else ``"mesh_iris"``:

* ``"mesh_iris"`` (default): the 468-point mesh model, then the separate iris model on both eyes;
* ``"attention"``: what MediaPipe's FaceMesh runs with ``refine_landmarks=True`` — one network
  whose small heads refine lips, eyes and irises from crops of its own feature map
  (:mod:`dmask_live.attention_mesh`); a third of the arithmetic of mesh + two iris runs, and
  faster than MediaPipe's own FaceMesh (benchmarks/results/landmarks.md). Not the default: the
  face model and tracker are fitted to the iris model's eye contours, which the attention heads
  mark differently (mean gap 12 % of the eye width). Measured 2026-12-01 with bench_fidelity and
  bench_tracker (DMASK_LANDMARK_MODEL=attention): with the packaged face model a 15° esotropia
  reads 36.7°; with a face model rebuilt from attention landmarks 20.3°; with a fixed per-point
  contour offset to the iris model's (fitted leave-one-clip-out) 14.9°, but then the real-clip
  round-trip gaze error is 8.5° (mesh_iris 6.4°), the lid-aperture correlation 0.87 (0.93) and the
  eye residual 1.04 % (goal 1.0 %): the two networks' lids disagree person by person, which no
  fixed correction removes.

Per frame, as MediaPipe's FaceMesh (+ Iris) graphs do it:

1. detector (only when no face is tracked): BlazeFace short range → the largest face;
   its ROI is a square 1.5× the box, rotated so the detector's eye keypoints are level;
2. 468-point mesh on that ROI warped to 192×192 in [0, 1]; the sigmoid face-presence score
   decides whether a face is there;
3. eyes and irises. ``attention``: the heads read 16×16 crops of the mesh network's own 48×48
   feature map, boxed by the mesh's lip and eye points, and replace the lip (80) and eye-contour
   (71 per eye) points (x, y; mesh z kept) and give the 5 iris points per eye (at the mean depth
   of the eye's lid-margin points), as MediaPipe's ``refine_landmarks=True`` does.
   ``mesh_iris``: iris model on both eyes in one batched call: 64×64 crops 2.3× the eye-corner
   span (landmarks 33→133 and 362→263), the second eye mirrored because the model only knows
   one eye; its 71-point contour replaces the mesh's eye points (x, y; mesh z kept) and its 5
   iris points are appended (MediaPipe's ``refine_landmarks=True`` order).
4. tracking: the next frame's ROI comes from these landmarks (1.5× their box, rotated by
   33→263); the detector runs again only when presence drops below ``min_presence``.

Nothing here logs or keeps pixel data: crops are temporaries of one ``process`` call.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dmask_live import roi as roi_ops
from dmask_live.face_detector import Detection, FaceDetector
from dmask_live.types import (
    EYE_CONTOUR_MESH_INDICES,
    NUM_EYE_CONTOUR_POINTS,
    NUM_IRIS_POINTS,
    NUM_MESH_POINTS,
    FaceLandmarks,
)

MESH_SIZE = 192
IRIS_SIZE = 64
FACE_ROI_SCALE = 1.5
EYE_ROI_SCALE = 2.3
MIN_ROI_SIZE = 8.0  # pixels
# Eye-corner landmarks (start, end) for each eye; index 0 = patient's right eye (OD, image left).
EYE_CORNERS = ((33, 133), (362, 263))
# The iris model gives centre, then edges at +x, −y, −x, +y of its (unmirrored-eye) crop; the
# mirrored eye's ±x edges swap back so both eyes follow MediaPipe's image-space order.
IRIS_ORDER = (np.arange(NUM_IRIS_POINTS), np.array([0, 3, 2, 1, 4]))
EYELID_CONTOUR = slice(0, 16)  # the 16 lid-margin points (MediaPipe averages their z for the iris)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """The frame as C-contiguous uint8 (H, W, 3) RGB; grey and RGBA are converted."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8, got {image.dtype} (scale floats to 0..255 first)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"image shape must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    if image.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGBA2RGB)
    return np.ascontiguousarray(image)


def _sigmoid(x: float) -> float:
    if x != x:  # NaN stays NaN (and then fails the presence test)
        return x
    return 1.0 / (1.0 + math.exp(-min(max(x, -80.0), 80.0)))


def _to_tensor(crops: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 → (N, 3, S, S) float32 in [0, 1]."""
    tensor = crops.transpose(0, 3, 1, 2).astype(np.float32)
    tensor *= 1.0 / 255.0
    return tensor


MODELS = ("attention", "mesh_iris")
DEFAULT_MODEL = "mesh_iris"
MODEL_ENV_VAR = "DMASK_LANDMARK_MODEL"


def default_model() -> str:
    """The model used when none is named: ``$DMASK_LANDMARK_MODEL`` if set and not empty, else mesh_iris."""
    chosen = os.environ.get(MODEL_ENV_VAR, "").strip()
    if chosen and chosen not in MODELS:
        raise ValueError(f"{MODEL_ENV_VAR} must be one of {', '.join(MODELS)}, got {chosen!r}")
    return chosen or DEFAULT_MODEL


class FaceLandmarker:
    """Detects and tracks one face (the largest) and returns its 478 landmarks per frame.

    Not thread-safe: one instance per video stream. ``backend`` names what runs the mesh and
    iris networks (:func:`dmask_live.inference.open_network`; the attention model always runs on
    onnxruntime). ``detector_calls`` counts detector runs,
    ``last_timings_ms`` holds the last frame's per-stage milliseconds (detector, mesh, iris — the
    eye/iris refinement, whichever model does it — and total).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        threads: int = 1,
        providers: Sequence[str] | None = None,
        min_detection_confidence: float = 0.5,
        min_presence: float = 0.5,
        model: str | None = None,
        backend: str | None = None,
    ):
        if not 0.0 <= min_presence <= 1.0:
            raise ValueError(f"min_presence must be in [0, 1], got {min_presence}")
        model = default_model() if model is None else model
        if model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
        self.model = model
        self._load_models(model_dir, threads, providers, min_detection_confidence, backend)
        self.min_presence = float(min_presence)
        self._roi: roi_ops.Roi | None = None
        self._frame_shape: tuple[int, ...] = ()
        self.detector_calls = 0
        self.frames = 0
        self.last_timings_ms: dict[str, float] = {}

    def _load_models(self, model_dir, threads, providers, min_detection_confidence, backend) -> None:
        from dmask_live.inference import open_network
        from dmask_live.models import ATTENTION_PARTS, load_model_paths

        paths = load_model_paths(model_dir)

        def network(name: str):
            return open_network(paths[name], threads=threads, providers=providers, backend=backend)

        detector = network("face_detection_short_range")
        self._detector = FaceDetector(detector, min_confidence=min_detection_confidence)
        if self.model == "attention":
            from dmask_live.attention_mesh import AttentionMesh

            # onnxruntime only: the attention stage reads its heads' layout from the session.
            self._attention = AttentionMesh(*(paths[p] for p in ATTENTION_PARTS), threads, providers)
            self._refinements = _refinement_targets(self._attention)
            self.backend = self._attention.backbone.backend
            self._run_mesh, self._refine = self._attention.run_backbone, self._with_attention
        else:
            self._mesh = network("face_landmark")
            self._iris = network("iris_landmark")
            self.backend = self._mesh.backend
            self._run_mesh, self._refine = self._plain_mesh, self._with_iris

    def reset(self) -> None:
        """Forget the tracked face: the next frame starts with the detector."""
        self._roi = None

    @property
    def tracking(self) -> bool:
        return self._roi is not None

    def process(self, image: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the tracked (else the largest) face in an RGB frame, or None."""
        rgb = as_rgb(image)
        self.frames += 1
        if rgb.shape[:2] != self._frame_shape:  # a new stream or resolution: old ROI means nothing
            self._roi, self._frame_shape = None, rgb.shape[:2]
        timings = {"detector": 0.0, "mesh": 0.0, "iris": 0.0}
        t_start = time.perf_counter()
        result = None
        if self._roi is not None:
            result = self._mesh_on(rgb, self._roi, timings)
        if result is None:
            previous, self._roi = self._roi, None
            roi = self._detect(rgb, previous, timings)
            if roi is not None:
                result = self._mesh_on(rgb, roi, timings)
        if result is None:
            self.last_timings_ms = {**timings, "total": (time.perf_counter() - t_start) * 1e3}
            return None
        t0 = time.perf_counter()
        landmarks = self._refine(rgb, result)
        timings["iris"] = (time.perf_counter() - t0) * 1e3
        if landmarks is None:  # refinement went non-finite: nothing to report or track
            self._roi = None
            self.last_timings_ms = {**timings, "total": (time.perf_counter() - t_start) * 1e3}
            return None
        next_roi = roi_ops.roi_from_points(result.mesh, 33, 263, FACE_ROI_SCALE)
        # A face shrunk to a few pixels cannot be tracked: let the detector look again.
        self._roi = next_roi if next_roi[2] >= MIN_ROI_SIZE else None
        self.last_timings_ms = {**timings, "total": (time.perf_counter() - t_start) * 1e3}
        return landmarks

    def _detect(self, rgb: np.ndarray, previous: roi_ops.Roi | None, timings: dict) -> roi_ops.Roi | None:
        t0 = time.perf_counter()
        self.detector_calls += 1
        detections = self._detector.detect(rgb)
        timings["detector"] = (time.perf_counter() - t0) * 1e3
        if not detections:
            return None
        rois = [self._roi_of(d) for d in detections]
        if previous is not None:
            # Just lost the tracked face: prefer a detection where it was, so we stay on it.
            overlaps = [roi_ops.roi_area_overlap(previous, r) for r in rois]
            best = int(np.argmax(overlaps))
            if overlaps[best] > 0.3:
                return rois[best]
        return rois[int(np.argmax([d.area for d in detections]))]

    @staticmethod
    def _roi_of(detection: Detection) -> roi_ops.Roi:
        xmin, ymin, xmax, ymax = (float(v) for v in detection.box)
        kps = detection.keypoints
        return roi_ops.roi_from_box(xmin, ymin, xmax, ymax, kps[0], kps[1], FACE_ROI_SCALE)

    def _mesh_on(self, rgb: np.ndarray, roi: roi_ops.Roi, timings: dict) -> _MeshResult | None:
        """The 468-point mesh on ``roi``, or None when the face-presence score is low."""
        t0 = time.perf_counter()
        affine = roi_ops.crop_affine(roi, MESH_SIZE)
        tensor = _to_tensor(roi_ops.warp(rgb, affine, MESH_SIZE)[None])
        raw, logit, backbone = self._run_mesh(tensor)
        presence = _sigmoid(logit)
        timings["mesh"] += (time.perf_counter() - t0) * 1e3
        if not presence >= self.min_presence:  # also catches a NaN score
            return None
        mesh = roi_ops.project(affine, raw)
        if not np.isfinite(mesh).all():
            return None
        return _MeshResult(mesh, raw, presence, roi, affine, backbone)

    def _plain_mesh(self, tensor: np.ndarray) -> tuple[np.ndarray, float, list]:
        """(raw (468, 3) crop points, face-presence logit, no backbone outputs) of the mesh model."""
        outputs = self._mesh(tensor)
        raw = np.asarray(outputs[0], np.float32).reshape(NUM_MESH_POINTS, 3)
        return raw, float(np.asarray(outputs[1]).reshape(-1)[0]), []

    def _with_attention(self, rgb: np.ndarray, result: _MeshResult) -> FaceLandmarks | None:
        """MediaPipe's refinement: lips and eye points replaced (x, y), irises from the heads."""
        affine, mesh, table = result.affine, result.mesh, self._refinements
        xy = self._attention.refine(result.raw, result.backbone) @ affine[:, :2].T + affine[:, 2]
        points = np.empty((NUM_MESH_POINTS + 2 * NUM_IRIS_POINTS, 3), np.float32)
        points[:NUM_MESH_POINTS] = mesh
        points[table.mesh_targets, :2] = xy[table.mesh_rows]
        contours = np.empty((2, NUM_EYE_CONTOUR_POINTS, 3), np.float32)
        contours[:, :, :2] = xy[table.contour_rows]
        contours[:, :, 2] = mesh[EYE_CONTOUR_MESH_INDICES, 2]
        iris = np.empty((2, NUM_IRIS_POINTS, 3), np.float32)
        iris[:, :, :2] = xy[table.iris_rows]
        # MediaPipe gives the iris the mean depth of the eye's lid-margin mesh points.
        iris[:, :, 2] = mesh[EYE_CONTOUR_MESH_INDICES[:, EYELID_CONTOUR], 2].mean(axis=1, keepdims=True)
        points[NUM_MESH_POINTS:] = iris.reshape(-1, 3)
        return self._landmarks(rgb, points, contours, iris, result)

    @staticmethod
    def _landmarks(rgb, points, contours, iris, result: _MeshResult) -> FaceLandmarks | None:
        if not (np.isfinite(points).all() and np.isfinite(contours).all()):
            return None
        height, width = rgb.shape[:2]
        return FaceLandmarks(
            points=points,
            eye_contours=contours,
            iris=iris,
            confidence=result.presence,
            roi=tuple(float(v) for v in result.roi),
            image_size=(int(width), int(height)),
        )

    def _with_iris(self, rgb: np.ndarray, result: _MeshResult) -> FaceLandmarks | None:
        """The iris model on both eyes: eye-contour points replaced (x, y), irises appended."""
        mesh = result.mesh
        affines = [
            roi_ops.crop_affine(
                roi_ops.roi_from_points(mesh[list(corners)], 0, 1, EYE_ROI_SCALE), IRIS_SIZE, eye == 1
            )
            for eye, corners in enumerate(EYE_CORNERS)
        ]
        crops = np.stack([roi_ops.warp(rgb, a, IRIS_SIZE) for a in affines])
        contours_raw, iris_raw = self._iris(_to_tensor(crops))[:2]
        contours_raw = np.asarray(contours_raw, np.float32).reshape(2, NUM_EYE_CONTOUR_POINTS, 3)
        iris_raw = np.asarray(iris_raw, np.float32).reshape(2, NUM_IRIS_POINTS, 3)
        points = np.empty((NUM_MESH_POINTS + 2 * NUM_IRIS_POINTS, 3), np.float32)
        points[:NUM_MESH_POINTS] = mesh
        contours = np.empty((2, NUM_EYE_CONTOUR_POINTS, 3), np.float32)
        iris = np.empty((2, NUM_IRIS_POINTS, 3), np.float32)
        for eye in range(2):
            contour = roi_ops.project(affines[eye], contours_raw[eye])
            iris_eye = roi_ops.project(affines[eye], iris_raw[eye, IRIS_ORDER[eye]])
            index = EYE_CONTOUR_MESH_INDICES[eye]
            # Depth stays the mesh's (one face-centred frame); the iris keeps its depth relative
            # to its own lid contour, placed at the mean depth of the mesh's lid points.
            iris_eye[:, 2] += mesh[index[EYELID_CONTOUR], 2].mean() - contour[EYELID_CONTOUR, 2].mean()
            contour[:, 2] = mesh[index, 2]
            points[index, :2] = contour[:, :2]
            contours[eye] = contour
            iris[eye] = iris_eye
        points[NUM_MESH_POINTS:] = iris.reshape(-1, 3)
        return self._landmarks(rgb, points, contours, iris, result)


@dataclass(frozen=True)
class _MeshResult:
    mesh: np.ndarray  # (468, 3) image pixels
    raw: np.ndarray  # (468, 3) the network's crop pixels
    presence: float
    roi: roi_ops.Roi
    affine: np.ndarray  # crop -> image
    backbone: list  # attention model only: the backbone outputs its refinement reads


@dataclass(frozen=True)
class _Refinement:
    """Where the attention heads' points (rows of ``AttentionMesh.refine``) go in the landmarks."""

    mesh_rows: np.ndarray  # rows that replace mesh points (x, y) ...
    mesh_targets: np.ndarray  # ... at these mesh indices
    contour_rows: np.ndarray  # (2, 71) rows of each eye's contour, eye 0 = OD
    iris_rows: np.ndarray  # (2, 5) rows of each eye's iris


def _refinement_targets(attention) -> _Refinement:
    """The :class:`_Refinement` of an attention model, read from its spec.

    A head with one point per region point refines those mesh points (the eye regions are exactly
    the 71-point eye contours); a 5-point head of an eye region is that eye's iris. Anything else
    means a model this stage does not know.
    """
    mesh_rows, mesh_targets, contour_rows, iris_rows = [], [], {}, {}
    for region in attention.regions:
        eyes = [e for e in range(2) if np.array_equal(region.subset, EYE_CONTOUR_MESH_INDICES[e])]
        eye = eyes[0] if eyes else None
        for name in region.outputs:
            rows = np.arange(attention.output_rows[name].start, attention.output_rows[name].stop)
            if len(rows) == len(region.subset):
                mesh_rows.append(rows)
                mesh_targets.append(region.subset)
                if eye is not None:
                    contour_rows[eye] = rows
            elif len(rows) == NUM_IRIS_POINTS and eye is not None:
                iris_rows[eye] = rows
            else:
                raise ValueError(f"attention head {name!r} ({len(rows)} points) refines nothing known here")
    if sorted(contour_rows) != [0, 1] or sorted(iris_rows) != [0, 1]:
        raise ValueError("the attention model must refine both eyes' contours and irises")
    return _Refinement(
        mesh_rows=np.concatenate(mesh_rows),
        mesh_targets=np.concatenate(mesh_targets),
        contour_rows=np.stack([contour_rows[0], contour_rows[1]]),
        iris_rows=np.stack([iris_rows[0], iris_rows[1]]),
    )
