"""Data that flows one way through the mask: frame → FaceLandmarks → AvatarState → rendered frame.

Conventions used everywhere in the package:

* Images are ``numpy.uint8`` arrays of shape ``(H, W, 3)`` in RGB order, C-contiguous.
* Image space: x to the right, y down, in pixels; ``z`` is depth toward the scene
  (away from the camera) in the same pixel scale as x (MediaPipe's convention).
* Eye index 0 is the patient's **right** eye (OD; on the image's left in an
  unmirrored camera image), eye index 1 is the patient's **left** eye (OS).
* Angles in public results are degrees. Gaze and head yaw are positive when turning
  toward the patient's left (image right, unmirrored), pitch positive upward, roll
  positive when the top of the head tilts toward the patient's left shoulder.
* Horizontal deviation = yaw(OD) − yaw(OS): positive means convergent (eso),
  negative divergent (exo). Vertical deviation = pitch(OD) − pitch(OS): positive means
  the right eye is higher.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NUM_MESH_POINTS = 468
NUM_POINTS_WITH_IRIS = 478
NUM_EYE_CONTOUR_POINTS = 71
NUM_IRIS_POINTS = 5

# The iris model's 71 eye-contour points as MediaPipe mesh indices (MediaPipe's
# update_face_landmarks_calculator), per eye, eye 0 = OD.
EYE_CONTOUR_MESH_INDICES = np.array(
    [
        [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
         130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
         226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
         35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245,
         156, 70, 63, 105, 66, 107, 55, 193],
        [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
         359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
         446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
         265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
         383, 300, 293, 334, 296, 336, 285, 417],
    ],
    dtype=np.int32,
)  # fmt: skip


@dataclass(frozen=True)
class FaceLandmarks:
    """One face's landmarks in image space, the landmark stage's only output.

    points:        (478, 3) float32, MediaPipe FaceMesh ``refine_landmarks=True`` order
                   (468 mesh points, then 5 iris points of MediaPipe's "left" eye,
                   then 5 of its "right" eye).
    eye_contours:  (2, 71, 3) float32, iris-model eye contour per eye, index 0 = OD.
    iris:          (2, 5, 3) float32, iris centre then 4 boundary points per eye, index 0 = OD.
    confidence:    face presence score of the mesh model in [0, 1].
    roi:           (centre_x, centre_y, size, angle_rad) of the face crop used.
    image_size:    (width, height) of the frame the points refer to.
    """

    points: np.ndarray
    eye_contours: np.ndarray
    iris: np.ndarray
    confidence: float
    roi: tuple[float, float, float, float]
    image_size: tuple[int, int]


@dataclass(frozen=True)
class AvatarState:
    """Everything the renderer needs, and nothing about who the patient is.

    The avatar's shape is always the canonical face; this state only moves it.
    Weak-perspective camera: image_xy = scale * (R @ X)[:2] + translation, where R is
    built from ``head_pose_deg`` and X is a canonical-model vertex (model units).

    tracked:         False when no face is followed; the renderer then draws the
                     neutral "face not found" frame.
    head_pose_deg:   (3,) yaw, pitch, roll in degrees.
    translation:     (2,) image position in pixels of the model origin.
    scale:           pixels per model unit.
    expression:      (K,) coefficients of the face model's identity-free expression basis.
    eyelids:         (2, 2) per eye [upper, lower] lid openness: 1.0 = canonical neutral
                     opening, 0.0 = that lid margin at the eye's closed line, > 1 wider;
                     an upper lid below 0 (down to -0.3) passes the resting lower lid: shut.
    gaze_deg:        (2, 2) per eye [yaw, pitch] of the eyeball relative to the head.
    image_size:      (width, height) of the frame the state was fitted on.
    timestamp:       seconds (media time of the source frame).
    """

    tracked: bool
    head_pose_deg: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    scale: float = 1.0
    expression: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    eyelids: np.ndarray = field(default_factory=lambda: np.ones((2, 2), np.float32))
    gaze_deg: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), np.float32))
    image_size: tuple[int, int] = (640, 480)
    timestamp: float = 0.0

    @classmethod
    def untracked(cls, image_size: tuple[int, int], timestamp: float = 0.0) -> AvatarState:
        return cls(tracked=False, image_size=image_size, timestamp=timestamp)


@dataclass(frozen=True)
class OcularMetrics:
    """Clinical eye measurements for one frame (and a sliding window ending at it).

    Values are NaN when not measurable (no face, eye closed for gaze, too short a window).
    """

    timestamp: float
    tracked: bool
    gaze_yaw_deg: tuple[float, float] = (float("nan"), float("nan"))
    gaze_pitch_deg: tuple[float, float] = (float("nan"), float("nan"))
    horizontal_deviation_deg: float = float("nan")
    vertical_deviation_deg: float = float("nan")
    lid_aperture: tuple[float, float] = (float("nan"), float("nan"))  # / iris diameter
    upper_lid_to_iris_centre: tuple[float, float] = (float("nan"), float("nan"))  # / iris diameter
    blink: bool = False  # a blink ended at this frame
    blink_count: int = 0
    blink_rate_per_min: float = float("nan")
    oscillation_frequency_hz: float = float("nan")
    oscillation_amplitude_deg: float = float("nan")
    head_pose_deg: tuple[float, float, float] = (float("nan"), float("nan"), float("nan"))

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes None)."""
        out: dict = {}
        for key, value in self.__dict__.items():
            out[key] = _json_value(value)
        return out


def _json_value(value):
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


@dataclass(frozen=True)
class MaskedFrame:
    """What the pipeline hands to an output: a rendered image and the measurements.

    ``image`` is always a rendering (avatar or neutral frame), never derived from input pixels.
    """

    image: np.ndarray
    state: AvatarState
    metrics: OcularMetrics
    timings_ms: dict = field(default_factory=dict)
