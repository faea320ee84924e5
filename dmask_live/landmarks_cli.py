"""``dmask-live landmarks [IMAGE] [-o OUT]``: run the landmark stage on one picture.

A developer's check that the networks work on this machine. The landmarks are drawn on a
neutral grey canvas of the picture's size — never over the picture itself, so no input pixel
reaches the output file. Without IMAGE, scikit-image's bundled astronaut photo is used.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path

import cv2
import numpy as np

from dmask_live.inference import BACKENDS
from dmask_live.landmarks import DEFAULT_MODEL, MODELS
from dmask_live.types import FaceLandmarks

log = logging.getLogger(__name__)

BACKGROUND = (96, 96, 96)
MESH_COLOUR = (235, 235, 235)
EYE_COLOURS = ((255, 140, 60), (60, 200, 255))  # RGB per eye: OD orange, OS blue
TIMED_FRAMES = 20


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", nargs="?", help="picture to read (default: scikit-image's astronaut)")
    parser.add_argument(
        "-o", "--out", default="out/landmarks.png", help="annotated PNG to write (default: %(default)s)"
    )
    parser.add_argument("--model-dir", default=None, help="folder with the ONNX models")
    parser.add_argument(
        "--threads", type=int, default=1, help="inference threads per network (default: %(default)s)"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", *BACKENDS),
        default="auto",
        help="inference backend (auto: $DMASK_INFERENCE, else OpenVINO on CPUs with native bfloat16, "
        "else onnxruntime)",
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default=DEFAULT_MODEL,
        help="attention mesh (MediaPipe's refine_landmarks=True network) or mesh + iris model "
        "(default: %(default)s)",
    )


def load_image(path: str | None) -> np.ndarray:
    """RGB uint8 picture from ``path``, or the bundled astronaut when ``path`` is None."""
    if path is None:
        from skimage import data

        return np.ascontiguousarray(data.astronaut())
    if not Path(path).is_file():
        raise ValueError(f"no such file: {path!r}")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read an image from {path!r}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def draw(face: FaceLandmarks | None, width: int, height: int) -> np.ndarray:
    """Landmarks on a neutral canvas (RGB); nothing of the input picture is used."""
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    if face is None:
        return canvas
    radius = max(1, round(min(width, height) / 400))
    for x, y in face.points[:468, :2]:
        cv2.circle(canvas, (round(float(x)), round(float(y))), radius, MESH_COLOUR, -1, cv2.LINE_AA)
    for eye, colour in enumerate(EYE_COLOURS):
        for x, y in face.eye_contours[eye, :16, :2]:
            cv2.circle(canvas, (round(float(x)), round(float(y))), radius, colour, -1, cv2.LINE_AA)
        centre, edge = face.iris[eye, 0, :2], face.iris[eye, 1:, :2]
        iris_radius = float(np.linalg.norm(edge - centre, axis=1).mean())
        cv2.circle(
            canvas, (round(float(centre[0])), round(float(centre[1]))), max(1, round(iris_radius)), colour, 1
        )
        cv2.drawMarker(
            canvas, (round(float(centre[0])), round(float(centre[1]))), colour, cv2.MARKER_CROSS, 6
        )
    return canvas


def run(args: argparse.Namespace) -> int:
    from dmask_live.landmarks import FaceLandmarker
    from dmask_live.models import ModelError

    try:
        image = load_image(args.image)
        backend = None if args.backend == "auto" else args.backend
        landmarker = FaceLandmarker(
            model_dir=args.model_dir, threads=args.threads, model=args.model, backend=backend
        )
    except (ValueError, ModelError) as error:
        print(f"dmask-live landmarks: {error}")
        return 2
    height, width = image.shape[:2]
    face = landmarker.process(image)
    first = dict(landmarker.last_timings_ms)
    tracked = []
    if face is not None:
        for _ in range(TIMED_FRAMES):
            landmarker.process(image)
            tracked.append(dict(landmarker.last_timings_ms))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(draw(face, width, height), cv2.COLOR_RGB2BGR)):
        print(f"dmask-live landmarks: cannot write {out}")
        return 2

    source = args.image or "scikit-image astronaut"
    print(f"image: {source} ({width}x{height})")
    if face is None:
        print("no face found")
        print(f"wrote {out} (neutral canvas)")
        return 1
    print(f"face confidence: {face.confidence:.3f}")
    print(f"points: {len(face.points)} (468 mesh + 10 iris), eye contours 2x{face.eye_contours.shape[1]}")
    print("first frame ms: " + ", ".join(f"{k} {v:.2f}" for k, v in first.items()))
    medians = {k: statistics.median(t[k] for t in tracked) for k in tracked[0]}
    print(
        f"tracked frames ms (median of {TIMED_FRAMES}): "
        + ", ".join(f"{k} {v:.2f}" for k, v in medians.items())
    )
    print(f"wrote {out} (landmarks on a neutral canvas)")
    return 0
