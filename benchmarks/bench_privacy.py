"""Privacy of the mask against a face-recognition attacker (dlib ResNet, 128-d embeddings).

Data: ../shared/data/faces (61 photos of 13 people; identities.csv). The first photo of each
person is the gallery, the others are probes. The attacker embeds every image with dlib's face
recogniser (HOG detector, 5-point alignment, ResNet descriptor) and names each probe by its nearest
gallery embedding (rank-1). When its detector finds no face in a protected image the attacker is
given the face box found in the original (oracle localisation: a stronger attacker).

Protocols (probe vs. gallery):

* Orig2Orig: originals vs. originals (the attacker works);
* Mask2Face: masked probes vs. original gallery photos (can a masked patient be found among real photos?);
* Mask2Mask: masked vs. masked (does the avatar carry identity from one recording to another?);
  two diagnostics split what it can use: the same states rendered centred at a fixed size
  (no position/size in the frame), and centred with the expression set to neutral (head pose,
  gaze and lids only);
* baselines vs. original gallery: Gaussian blur and pixelation of the face box, a black eye band,
  and an eye-band crop (only the eye band visible, as in eye-only telemedicine views);
* chance: 1 / number of people;
* controls without images: nearest neighbour on the tracked state's numbers alone (head pose,
  gaze, lids; then with expression): how much the behaviour itself names people in this data set.

    pip install dlib-bin face-recognition-models      # the attacker (benchmark only)
    python benchmarks/bench_privacy.py

writes benchmarks/results/privacy.json, privacy.md and privacy.png.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_renderer import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LONG_SIDE = 640  # photos are resized to this long side before everything (speed, like a call)


class Attacker:
    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.shape68 = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.recogniser = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def detect(self, rgb: np.ndarray):
        for upsample in (0, 1):
            boxes = self.detector(rgb, upsample)
            if len(boxes):
                return max(boxes, key=lambda b: b.width() * b.height())
        return None

    def embed(self, rgb: np.ndarray, fallback_box=None) -> tuple[np.ndarray | None, bool]:
        box = self.detect(rgb)
        detected = box is not None
        box = box if detected else fallback_box
        if box is None:
            return None, False
        shape = self.shape(rgb, box)
        return np.array(self.recogniser.compute_face_descriptor(rgb, shape)), detected

    def eye_band(self, rgb: np.ndarray, box) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the band around both eyes (68-point landmarks 36..47)."""
        pts = np.array([(p.x, p.y) for p in self.shape68(rgb, box).parts()])[36:48]
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        pad_x, pad_y = 0.25 * (x1 - x0), 0.9 * (y1 - y0) + 4
        h, w = rgb.shape[:2]
        return (max(0, int(x0 - pad_x)), max(0, int(y0 - pad_y)),
                min(w, int(x1 + pad_x)), min(h, int(y1 + pad_y)))


# --------------------------------------------------------------------------- protections
def clip_box(box, shape) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    return max(0, box.left()), max(0, box.top()), min(w, box.right()), min(h, box.bottom())


def blur(rgb, box, band):
    x0, y0, x1, y1 = clip_box(box, rgb.shape)
    out = rgb.copy()
    sigma = max(2.0, (x1 - x0) / 12.0)
    out[y0:y1, x0:x1] = cv2.GaussianBlur(rgb[y0:y1, x0:x1], (0, 0), sigma)
    return out


def pixelate(rgb, box, band, blocks=12):
    x0, y0, x1, y1 = clip_box(box, rgb.shape)
    out = rgb.copy()
    face = rgb[y0:y1, x0:x1]
    small = cv2.resize(face, (blocks, max(1, round(blocks * face.shape[0] / face.shape[1]))),
                       interpolation=cv2.INTER_AREA)
    out[y0:y1, x0:x1] = cv2.resize(small, (face.shape[1], face.shape[0]), interpolation=cv2.INTER_NEAREST)
    return out


def black_eye_band(rgb, box, band):
    x0, y0, x1, y1 = band
    out = rgb.copy()
    out[y0:y1, x0:x1] = 0
    return out


def eye_band_crop(rgb, box, band):
    x0, y0, x1, y1 = band
    out = np.full_like(rgb, 128)
    out[y0:y1, x0:x1] = rgb[y0:y1, x0:x1]
    return out


BASELINES = {
    "blur": blur, "pixelate": pixelate, "black_eye_band": black_eye_band, "eye_band_crop": eye_band_crop,
}


# --------------------------------------------------------------------------- evaluation
def load_faces() -> list[tuple[str, str, np.ndarray]]:
    from PIL import Image, ImageOps

    out = []
    with open(SHARED / "faces" / "identities.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            with Image.open(SHARED / "faces" / row["file"]) as image:
                image = ImageOps.exif_transpose(image).convert("RGB")
                scale = LONG_SIDE / max(image.size)
                if scale < 1:
                    image = image.resize((round(image.width * scale), round(image.height * scale)))
                out.append((row["file"], row["identity"], np.ascontiguousarray(np.asarray(image))))
    return out


def rank1(gallery: dict[str, np.ndarray | None], probes: list[tuple[str, np.ndarray | None]]) -> float:
    names = [n for n, v in gallery.items() if v is not None]
    matrix = np.stack([gallery[n] for n in names])
    correct = 0
    for identity, vector in probes:
        if vector is None:
            continue
        guess = names[int(np.argmin(np.linalg.norm(matrix - vector, axis=1)))]
        correct += guess == identity
    return correct / len(probes)


def main() -> int:
    if not (SHARED / "faces").is_dir():
        print(f"needs {SHARED / 'faces'} (real test faces); absent on this machine", file=sys.stderr)
        return 2
    from dmask_live.pipeline import MaskPipeline

    start = time.perf_counter()
    attacker = Attacker()
    faces = load_faces()
    people = sorted({p for _, p, _ in faces})
    gallery_files = {p: next(f for f, q, _ in faces if q == p) for p in people}
    conditions = ["original", "masked", "masked_centre", "masked_centre_neutral", *BASELINES]
    embeddings: dict[str, dict[str, tuple]] = {c: {} for c in conditions}
    tracked = 0
    states = {}
    with MaskPipeline(**_stages()) as pipeline:
        for file, _person, rgb in faces:
            box = attacker.detect(rgb)
            embeddings["original"][file] = attacker.embed(rgb)
            pipeline.reset()
            masked = pipeline.process(rgb, 0.0)
            tracked += masked.state.tracked
            states[file] = masked.state
            embeddings["masked"][file] = attacker.embed(masked.image, box)
            centred, neutral = render_centred(masked.state, rgb.shape)
            centre_box = attacker.detect(centred)
            embeddings["masked_centre"][file] = attacker.embed(centred, centre_box)
            embeddings["masked_centre_neutral"][file] = attacker.embed(neutral, centre_box)
            if box is None:
                for name in BASELINES:
                    embeddings[name][file] = (None, False)
                continue
            band = attacker.eye_band(rgb, box)
            for name, protect in BASELINES.items():
                embeddings[name][file] = attacker.embed(protect(rgb, box, band), box)
            print(f"{file}: tracked={masked.state.tracked}", file=sys.stderr)

    def gallery(condition):
        return {p: embeddings[condition][gallery_files[p]][0] for p in people}

    def probes(condition):
        return [(p, embeddings[condition][f][0]) for f, p, _ in faces if f != gallery_files[p]]

    def detection(condition):
        files = [f for f, p, _ in faces if f != gallery_files[p]]
        return round(float(np.mean([embeddings[condition][f][1] for f in files])), 3)

    protocols = {
        "Orig2Orig": (gallery("original"), probes("original"), detection("original")),
        "Mask2Face": (gallery("original"), probes("masked"), detection("masked")),
        "Mask2Mask": (gallery("masked"), probes("masked"), detection("masked")),
        "Mask2Mask centred": (gallery("masked_centre"), probes("masked_centre"), detection("masked_centre")),
        "Mask2Mask centred, neutral expression": (
            gallery("masked_centre_neutral"), probes("masked_centre_neutral"),
            detection("masked_centre_neutral")),
    }
    for name in BASELINES:
        protocols[f"{name}2Face"] = (gallery("original"), probes(name), detection(name))
    rows = {}
    for name, (g, p, det) in protocols.items():
        rows[name] = {"rank1_accuracy": round(rank1(g, p), 3), "probes": len(p), "detector_found_face": det}
    # Controls without any image: how well the behaviour alone (the state's numbers) names people
    # in this data set, i.e. what any faithful avatar necessarily carries.
    for name, fields in [("State2State: pose, gaze, lids", BEHAVIOUR), ("State2State: + expression",
                                                                        BEHAVIOUR + ("expression",))]:
        vectors = {f: state_vector(states[f], fields) for f in states}
        matrix = np.stack(list(vectors.values()))
        scale = matrix.std(0) + 1e-9
        g = {p: vectors[gallery_files[p]] / scale for p in people}
        pr = [(p, vectors[f] / scale) for f, p, _ in faces if f != gallery_files[p]]
        rows[name] = {"rank1_accuracy": round(rank1(g, pr), 3), "probes": len(pr),
                      "detector_found_face": None}
    chance = 1.0 / len(people)
    result = {
        "topic": "privacy",
        "command": "python benchmarks/bench_privacy.py",
        "machine": machine(_gl_renderer()),
        "attacker": "dlib 20 HOG detector + 5-point alignment + ResNet face descriptor "
                    "(face_recognition_models 0.3.0)",
        "people": len(people),
        "photos": len(faces),
        "masked_photos_tracked": tracked,
        "chance": round(chance, 3),
        "protocols": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "privacy.json").write_text(json.dumps(result, indent=2) + "\n")
    result["plot"] = plot(rows, chance, RESULTS / "privacy.png")
    write_markdown(RESULTS / "privacy.md", result)
    print((RESULTS / "privacy.md").read_text())
    return 0


BEHAVIOUR = ("head_pose_deg", "gaze_deg", "eyelids")


def state_vector(state, fields) -> np.ndarray:
    return np.concatenate([np.asarray(getattr(state, f), np.float64).ravel() for f in fields])


def render_centred(state, shape) -> tuple[np.ndarray, np.ndarray]:
    """The avatar of ``state`` centred at a fixed size, and the same with a neutral expression."""
    import dataclasses

    from dmask_live.renderer import AvatarRenderer

    with AvatarRenderer(LONG_SIDE, LONG_SIDE, placement="centre") as renderer:
        centred = renderer.render(state)
        neutral = renderer.render(dataclasses.replace(state, expression=np.zeros_like(state.expression)))
    return centred, neutral


def _stages() -> dict:
    """Ocular metrics play no part in privacy; without the ocular stage, skip it."""
    try:
        import dmask_live.ocular  # noqa: F401
    except ImportError:
        from dmask_live.types import OcularMetrics

        class NoMetrics:
            def update(self, state):
                return OcularMetrics(state.timestamp, state.tracked)

        return {"analyzer": NoMetrics()}
    return {}


def _gl_renderer() -> str:
    from dmask_live.renderer import AvatarRenderer

    with AvatarRenderer(16, 16) as probe:
        with probe.ctx:
            return probe.ctx.info["GL_RENDERER"]


def plot(rows: dict, chance: float, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(rows)
    values = [rows[n]["rank1_accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(names, values, color=["#777" if "Mask" not in n else "#3b6ea5" for n in names])
    ax.axhline(chance, color="red", ls="--", lw=1, label=f"chance {chance:.2f}")
    ax.set_ylabel("rank-1 accuracy")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_markdown(path: Path, result: dict) -> None:
    m = result["machine"]
    lines = [
        "# Privacy benchmark: face recognition against the mask", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, GL: {m['gl_renderer']}.",
        f"Command: `{result['command']}` ({result['seconds']} s). Attacker: {result['attacker']}.",
        f"Data: {result['photos']} photos of {result['people']} people (../shared/data/faces); "
        f"first photo per person = gallery, the rest = probes. Masked photos with a tracked face: "
        f"{result['masked_photos_tracked']}/{result['photos']}.", "",
        "| protocol (probe → gallery) | rank-1 accuracy | probes | attacker's detector found a face |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in result["protocols"].items():
        found = "n/a (no image)" if row["detector_found_face"] is None else row["detector_found_face"]
        lines.append(f"| {name} | {row['rank1_accuracy']} | {row['probes']} | {found} |")
    lines += [f"| chance | {result['chance']} | | |", "",
              "Where the detector found no face, the attacker used the face box found in the original "
              "(oracle localisation).", ""]
    if result.get("plot"):
        lines += ["![rank-1 accuracy per protocol](privacy.png)", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
