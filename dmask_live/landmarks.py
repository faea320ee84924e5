"""The landmark stage: frame → :class:`~dmask_live.types.FaceLandmarks` (or None: no face).

Per frame, as MediaPipe's FaceMesh + Iris graphs do it:

1. detector (only when no face is tracked): BlazeFace short range → the largest face;
   its ROI is a square 1.5× the box, rotated so the detector's eye keypoints are level;
2. 468-point mesh on that ROI warped to 192×192 in [0, 1]; the sigmoid face-presence score
   decides whether a face is there;
3. iris model on both eyes in one batched call: 64×64 crops 2.3× the eye-corner span
   (landmarks 33→133 and 362→263), the second eye mirrored because the model only knows
   one eye; its 71-point contour replaces the mesh's eye points (x, y; mesh z kept) and
   its 5 iris points are appended (MediaPipe's ``refine_landmarks=True`` order).
4. tracking: the next frame's ROI comes from these landmarks (1.5× their box, rotated by
   33→263); the detector runs again only when presence drops below ``min_presence``.

Nothing here logs or keeps pixel data: crops are temporaries of one ``process`` call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
    return float(1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0))))


def _to_tensor(crops: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 → (N, 3, S, S) float32 in [0, 1]."""
    tensor = crops.transpose(0, 3, 1, 2).astype(np.float32)
    tensor *= 1.0 / 255.0
    return tensor


class FaceLandmarker:
    """Detects and tracks one face (the largest) and returns its 478 landmarks per frame.

    Not thread-safe: one instance per video stream. ``detector_calls`` counts detector runs,
    ``last_timings_ms`` holds the last frame's per-stage milliseconds (detector, mesh, iris, total).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        threads: int = 1,
        providers: Sequence[str] | None = None,
        min_detection_confidence: float = 0.5,
        min_presence: float = 0.5,
    ):
        if not 0.0 <= min_presence <= 1.0:
            raise ValueError(f"min_presence must be in [0, 1], got {min_presence}")
        detector, self._mesh, self._iris = self._load_models(model_dir, threads, providers)
        self._detector = FaceDetector(detector, min_confidence=min_detection_confidence)
        self.min_presence = float(min_presence)
        self._roi: roi_ops.Roi | None = None
        self._frame_shape: tuple[int, ...] = ()
        self.detector_calls = 0
        self.frames = 0
        self.last_timings_ms: dict[str, float] = {}

    @staticmethod
    def _load_models(model_dir, threads, providers):
        from dmask_live.inference import OnnxModel
        from dmask_live.models import load_model_paths

        paths = load_model_paths(model_dir)
        return tuple(
            OnnxModel(paths[name], threads=threads, providers=providers)
            for name in ("face_detection_short_range", "face_landmark", "iris_landmark")
        )

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
        mesh, presence, roi = result
        t0 = time.perf_counter()
        landmarks = self._with_iris(rgb, mesh, presence, roi)
        timings["iris"] = (time.perf_counter() - t0) * 1e3
        next_roi = roi_ops.roi_from_points(mesh, 33, 263, FACE_ROI_SCALE)
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

    def _mesh_on(self, rgb: np.ndarray, roi: roi_ops.Roi, timings: dict):
        """(468×3 image-space mesh, presence, roi), or None when the face-presence score is low."""
        t0 = time.perf_counter()
        affine = roi_ops.crop_affine(roi, MESH_SIZE)
        crop = roi_ops.warp(rgb, affine, MESH_SIZE)
        raw, presence_logit = self._mesh(_to_tensor(crop[None]))[:2]
        presence = _sigmoid(float(np.asarray(presence_logit).reshape(-1)[0]))
        timings["mesh"] += (time.perf_counter() - t0) * 1e3
        if not presence >= self.min_presence:  # also catches a NaN score
            return None
        mesh = roi_ops.project(affine, np.asarray(raw, np.float32).reshape(NUM_MESH_POINTS, 3))
        if not np.isfinite(mesh).all():
            return None
        return mesh, presence, roi

    def _with_iris(self, rgb: np.ndarray, mesh: np.ndarray, presence: float, roi) -> FaceLandmarks:
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
        height, width = rgb.shape[:2]
        return FaceLandmarks(
            points=points,
            eye_contours=contours,
            iris=iris,
            confidence=presence,
            roi=tuple(float(v) for v in roi),
            image_size=(int(width), int(height)),
        )
