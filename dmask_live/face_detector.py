"""BlazeFace short-range face detector: letterboxed 128×128 input, SSD anchors, weighted NMS.

Decoding follows MediaPipe's ``face_detection_short_range`` graph: 896 fixed-size anchors
(16×16×2 at stride 8, 8×8×6 at stride 16), box and 6 keypoints as offsets from the anchor
centre in 128-pixel units, sigmoid scores (raw logits clipped to ±100), weighted non-maximum
suppression at IoU 0.3. Keypoints: 0 and 1 the eyes (image left, image right of an upright
face), 2 nose tip, 3 mouth centre, 4 and 5 the ear tragions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

INPUT_SIZE = 128
NUM_KEYPOINTS = 6
SCORE_CLIP = 100.0
NMS_IOU = 0.3


@dataclass(frozen=True)
class Detection:
    """One detected face in image pixels."""

    box: np.ndarray  # (4,) xmin, ymin, xmax, ymax
    keypoints: np.ndarray  # (6, 2) x, y
    score: float

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def ssd_anchor_centres() -> np.ndarray:
    """(896, 2) anchor centres in [0, 1], in the order of the model's outputs."""
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        y, x = np.mgrid[0:grid, 0:grid].astype(np.float32)
        cells = np.stack([(x + 0.5) / grid, (y + 0.5) / grid], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


ANCHORS = ssd_anchor_centres()


def letterbox_affine(width: int, height: int) -> np.ndarray:
    """2×3 map from 128-pixel detector input coordinates to image pixels (square letterbox)."""
    side = float(max(width, height))
    k = side / INPUT_SIZE
    return np.array([[k, 0.0, (width - side) / 2.0], [0.0, k, (height - side) / 2.0]], np.float64)


def box_iou(a: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with each of ``boxes`` (N, 4), all xmin, ymin, xmax, ymax."""
    ix = np.clip(np.minimum(a[2], boxes[:, 2]) - np.maximum(a[0], boxes[:, 0]), 0.0, None)
    iy = np.clip(np.minimum(a[3], boxes[:, 3]) - np.maximum(a[1], boxes[:, 1]), 0.0, None)
    inter = ix * iy
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area_a + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU):
    """MediaPipe's weighted NMS: each cluster becomes the score-weighted mean of its members."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), bool)
    kept = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        members = remaining & (box_iou(boxes[i], boxes) > iou)
        members[i] = True
        remaining &= ~members
        weights = scores[members] / scores[members].sum()
        kept.append(
            (
                (boxes[members] * weights[:, None]).sum(0),
                (keypoints[members] * weights[:, None, None]).sum(0),
                float(scores[i]),
            )
        )
    return kept


class FaceDetector:
    """Runs the detector network on a whole RGB frame and returns faces in image pixels."""

    def __init__(self, model: Callable[[np.ndarray], list], min_confidence: float = 0.5):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.model = model
        # Threshold on logits: sigmoid(x) >= p  <=>  x >= logit(p); avoids a sigmoid over 896 scores.
        p = min(max(min_confidence, 1e-6), 1 - 1e-6)
        self._min_logit = float(np.log(p / (1.0 - p)))

    def input_tensor(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1, 3, 128, 128) float32 in [-1, 1] and the 2×3 input→image affine."""
        height, width = image.shape[:2]
        to_image = letterbox_affine(width, height)
        crop = cv2.warpAffine(
            image,
            to_image,
            (INPUT_SIZE, INPUT_SIZE),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        tensor = crop.astype(np.float32).transpose(2, 0, 1)[None]
        tensor *= 2.0 / 255.0
        tensor -= 1.0
        return np.ascontiguousarray(tensor), to_image

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces above the confidence threshold, highest score first."""
        tensor, to_image = self.input_tensor(image)
        regressors, logits = self.model(tensor)[:2]
        regressors = regressors.reshape(-1, 16)
        logits = np.clip(logits.reshape(-1), -SCORE_CLIP, SCORE_CLIP)
        hits = np.nonzero(logits >= self._min_logit)[0]
        if hits.size == 0:
            return []
        raw = regressors[hits].astype(np.float64) / INPUT_SIZE
        anchors = ANCHORS[hits].astype(np.float64)
        centre = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1) * INPUT_SIZE
        keypoints = (raw[:, 4:16].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :]) * INPUT_SIZE
        scores = 1.0 / (1.0 + np.exp(-logits[hits].astype(np.float64)))
        linear, offset = to_image[:, :2], to_image[:, 2]
        out = []
        for box, kps, score in weighted_nms(boxes, keypoints, scores):
            corners = box.reshape(2, 2) @ linear.T + offset
            out.append(Detection(corners.reshape(4), kps @ linear.T + offset, score))
        return out
