"""Privacy of the mask against a face-recognition attacker (dlib ResNet, 128-d embeddings).

The attacker is independent of our models: dlib's HOG face detector, 5-point alignment and ResNet
face descriptor (PyPI dlib-bin + face-recognition-models). It names each probe by rank-1 nearest
neighbour (Euclidean distance between descriptors) in a gallery of known people. Where its detector
finds no face in an image, the attacker is told where the face is: the box its detector found in the
unprotected original, else a centred square crop (a stronger attacker than one that gives up).

Two data sets, one run:

* faces: ../shared/data/faces (61 photos of 13 people; identities.csv). The first photo of each
  person is the gallery, the others are probes. Each photo is masked on its own (a fresh tracker: one
  frame, the private shape not learnt), and again "held still" for 90 frames (the same landmarks fed
  90 times, so the tracker's private shape converges) to see what convergence changes.
* videos: ../shared/data/videos (8 clips, one person each). Each clip (its first 450 frames: 15 s
  at 30 fps) is masked frame by frame as a video through ``MaskPipeline`` (tracking, as in a call).
  10 gallery frames are sampled evenly from the first half and 10 probes from the second half.
  Rank-1 against the nearest single gallery frame (main number) and against each person's mean
  gallery descriptor (also reported).

Protocols (probe → gallery): Orig2Orig; Mask2Face (masked probes vs. original gallery); Mask2Mask
(masked vs. masked); diagnostics of Mask2Mask with the same states rendered centred at a fixed size
(no position or size in the frame), centred with the expression coefficients set to zero (head
pose, gaze, lids only), and that with the head turned frontal too (gaze and lids only); baselines
vs. original gallery: Gaussian blur and pixelation of the face box, and an eye-band crop (only the
eye band visible); chance = 1 / people.
Controls without images: nearest neighbour on the tracked state's numbers (behaviour; expression;
framing = position and size in the frame).

    pip install dlib-bin face-recognition-models      # the attacker (benchmark only)
    python benchmarks/bench_privacy.py [--faces-only]

writes benchmarks/results/privacy.json, privacy.md and privacy.png (with ``--faces-only``, about 4 of
the 11 minutes: privacy_faces.json, privacy_faces.md, privacy_faces.png). Frames and crops stay in memory;
nothing but these results is written.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine_info  # noqa: E402
from bench_renderer import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LONG_SIDE = 640  # photos and video frames are resized to at most this long side (speed, like a call)
HOLD_FRAMES = 90  # a photo held still this long: the tracker's private shape has converged (60 frames)
MAX_CLIP_FRAMES = 450  # video: the first 15 s at 30 fps (the private shape converges in 2 s)
SAMPLES_PER_HALF = 10  # video: gallery frames from the first half, probes from the second
CENTRED_CROP = 0.6  # fallback face box: a centred square of this fraction of the short side


MASK_CODE = ("dmask_live/tracker.py", "dmask_live/tracker_kernels.py", "dmask_live/renderer.py",
             "dmask_live/eye_detail.py", "dmask_live/landmarks.py", "dmask_live/attention_mesh.py",
             "dmask_live/face_model.py", "dmask_live/assets")


def code_state() -> dict:
    """The commit measured and which files of the masking path differ from it (results depend on them)."""
    state = machine_info.code_state(MASK_CODE)
    state["uncommitted"] = {name: digest for name, digest in state["uncommitted"].items() if digest}
    return state


class Attacker:
    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.shape68 = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.recogniser = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def detect(self, rgb: np.ndarray, upsample: tuple[int, ...] = (0, 1)):
        for level in upsample:
            boxes = self.detector(rgb, level)
            if len(boxes):
                return max(boxes, key=lambda b: b.width() * b.height())
        return None

    def centred_box(self, shape):
        h, w = shape[:2]
        half = CENTRED_CROP * min(h, w) / 2
        return self.dlib.rectangle(int(w / 2 - half), int(h / 2 - half), int(w / 2 + half), int(h / 2 + half))

    def embed(self, rgb: np.ndarray, fallback_box=None, upsample=(0, 1)) -> tuple[np.ndarray, bool]:
        """(descriptor, whether the detector found the face itself); never None (oracle fallback)."""
        box = self.detect(rgb, upsample)
        detected = box is not None
        if box is None:
            box = fallback_box if fallback_box is not None else self.centred_box(rgb.shape)
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
USED_BASELINES = ("blur", "pixelate", "eye_band_crop")  # black_eye_band: available, not run (time)
BEHAVIOUR = ("head_pose_deg", "gaze_deg", "eyelids")


# --------------------------------------------------------------------------- one sample
class Sampler:
    """Embeds one frame under every condition; holds the attacker and a centred renderer."""

    def __init__(self, attacker: Attacker, baselines) -> None:
        from dmask_live.renderer import AvatarRenderer

        self.attacker = attacker
        self.baselines = baselines
        self.centred = AvatarRenderer(LONG_SIDE, LONG_SIDE, placement="centre")

    def close(self) -> None:
        self.centred.release()

    def render_centred(self, state) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The avatar of ``state`` centred at a fixed size; with a neutral expression; and frontal too."""
        centred = self.centred.render(state)
        neutral_state = dataclasses.replace(state, expression=np.zeros_like(state.expression))
        neutral = self.centred.render(neutral_state)
        frontal_state = dataclasses.replace(neutral_state, head_pose_deg=np.zeros(3, np.float32))
        frontal = self.centred.render(frontal_state)
        return centred, neutral, frontal

    def original(self, rgb) -> dict:
        box = self.attacker.detect(rgb)
        out = {"original": self.attacker.embed(rgb)}
        if box is None:
            box = self.attacker.centred_box(rgb.shape)
        band = self.attacker.eye_band(rgb, box)
        for name in self.baselines:
            out[name] = self.attacker.embed(BASELINES[name](rgb, box, band), box, upsample=(0,))
        out["_box"] = box
        return out

    def masked(self, masked_image, state, box, prefix: str = "masked") -> dict:
        embed = self.attacker.embed
        out = {prefix: embed(masked_image, box, upsample=(0,))}
        out.update(self.centred_only(state, prefix))
        return out

    def centred_only(self, state, prefix: str) -> dict:
        centred, neutral, frontal = self.render_centred(state)
        centre_box = self.attacker.detect(centred, (0,))
        frontal_box = self.attacker.detect(frontal, (0,))
        if frontal_box is None:
            frontal_box = centre_box
        return {f"{prefix}_centre": self.attacker.embed(centred, centre_box, upsample=(0,)),
                f"{prefix}_centre_neutral": self.attacker.embed(neutral, centre_box, upsample=(0,)),
                f"{prefix}_centre_frontal": self.attacker.embed(frontal, frontal_box, upsample=(0,))}


# --------------------------------------------------------------------------- scoring
def rank1(gallery: list[tuple[str, np.ndarray]], probes: list[tuple[str, np.ndarray]],
          mean_gallery: bool = False) -> float:
    if mean_gallery:
        people = sorted({p for p, _ in gallery})
        gallery = [(p, np.mean([v for q, v in gallery if q == p], axis=0)) for p in people]
    names = [p for p, _ in gallery]
    matrix = np.stack([v for _, v in gallery])
    correct = sum(names[int(np.argmin(np.linalg.norm(matrix - v, axis=1)))] == p for p, v in probes)
    return correct / len(probes)


def wilson(p: float, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson interval of a proportion (probes are not fully independent: indicative only)."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(centre - half), 3), round(float(centre + half), 3)]


def state_vector(state, fields) -> np.ndarray:
    parts = []
    for f in fields:
        if f == "framing":  # position and size of the head in the frame, relative to the frame
            w, h = state.image_size
            parts.append(np.array([state.translation[0] / w, state.translation[1] / h, state.scale / h]))
        else:
            parts.append(np.asarray(getattr(state, f), np.float64).ravel())
    return np.concatenate(parts)


STATE_CONTROLS = {
    "State2State: pose, gaze, lids": BEHAVIOUR,
    "State2State: gaze, lids": ("gaze_deg", "eyelids"),
    "State2State: expression only": ("expression",),
    "State2State: pose, gaze, lids + expression": BEHAVIOUR + ("expression",),
    "State2State: framing (position, size)": ("framing",),
}


def state_rows(gallery_states, probe_states) -> dict:
    """Nearest neighbour on standardised state numbers, no images: what the behaviour itself names."""
    rows = {}
    for name, fields in STATE_CONTROLS.items():
        gal = [(p, state_vector(s, fields)) for p, s in gallery_states]
        pro = [(p, state_vector(s, fields)) for p, s in probe_states]
        scale = np.stack([v for _, v in gal + pro]).std(0) + 1e-9
        acc = rank1([(p, v / scale) for p, v in gal], [(p, v / scale) for p, v in pro])
        rows[name] = {"rank1_accuracy": round(acc, 3), "ci95": wilson(acc, len(pro)), "probes": len(pro),
                      "detector_found_face": None}
    return rows


def score(protocols: dict, samples: list[dict], with_mean: bool) -> dict:
    """protocols: name → (gallery condition, probe condition); samples: {person, role, <cond>: (v, det)}."""
    rows = {}
    for name, (gcond, pcond) in protocols.items():
        gal = [(s["person"], s[gcond][0]) for s in samples if s["role"] == "gallery"]
        pro = [(s["person"], s[pcond][0]) for s in samples if s["role"] == "probe"]
        found = float(np.mean([s[pcond][1] for s in samples if s["role"] == "probe"]))
        acc = rank1(gal, pro)
        row = {"rank1_accuracy": round(acc, 3), "ci95": wilson(acc, len(pro)), "probes": len(pro),
               "detector_found_face": round(found, 3)}
        if with_mean:
            row["rank1_mean_gallery"] = round(rank1(gal, pro, mean_gallery=True), 3)
        rows[name] = row
    return rows


def protocol_table(prefixes: list[tuple[str, str]], baselines) -> dict:
    table = {"Orig2Orig": ("original", "original")}
    for label, prefix in prefixes:
        table[f"Mask2Face{label}"] = ("original", prefix)
        table[f"Mask2Mask{label}"] = (prefix, prefix)
        table[f"Mask2Mask{label} centred"] = (f"{prefix}_centre", f"{prefix}_centre")
        table[f"Mask2Mask{label} centred, neutral expression"] = (
            f"{prefix}_centre_neutral", f"{prefix}_centre_neutral")
        table[f"Mask2Mask{label} centred, neutral expression, frontal head"] = (
            f"{prefix}_centre_frontal", f"{prefix}_centre_frontal")
    for name in baselines:
        table[f"{name}2Face"] = ("original", name)
    return table


# --------------------------------------------------------------------------- faces
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


class HeldLandmarks:
    """A landmark stage that sees one photo held still: the first result, repeated (a static video)."""

    def __init__(self, landmarker) -> None:
        self._landmarker = landmarker
        self._held = None

    def process(self, image):
        if self._held is None:
            self._held = self._landmarker.process(image)
        return self._held

    def reset(self) -> None:
        self._held = None
        self._landmarker.reset()


def faces_protocol(attacker: Attacker) -> dict:
    from dmask_live.landmarks import FaceLandmarker
    from dmask_live.pipeline import MaskPipeline

    faces = load_faces()
    seen: set[str] = set()
    samples, tracked, held_tracked = [], 0, 0
    sampler = Sampler(attacker, USED_BASELINES)
    held = HeldLandmarks(FaceLandmarker())
    try:
        with MaskPipeline(**_stages()) as pipeline, \
                MaskPipeline(output_size=(32, 32), landmarker=held, **_stages()) as holder:
            for file, person, rgb in faces:
                sample = {"file": file, "person": person, "role": "probe" if person in seen else "gallery"}
                seen.add(person)
                sample.update(sampler.original(rgb))
                pipeline.reset()
                masked = pipeline.process(rgb, 0.0)
                tracked += masked.state.tracked
                sample["state"] = masked.state
                sample.update(sampler.masked(masked.image, masked.state, sample["_box"]))
                holder.reset()
                for k in range(HOLD_FRAMES):
                    state = holder.process(rgb, k / 30.0).state
                held_tracked += state.tracked
                sample["held_state"] = state
                sample.update(sampler.centred_only(state, "held"))
                samples.append(sample)
                print(f"faces {file}: tracked={masked.state.tracked}", file=sys.stderr)
    finally:
        sampler.close()
    people = sorted({s["person"] for s in samples})
    table = protocol_table([("", "masked")], USED_BASELINES)
    table["Mask2Mask held 3 s centred"] = ("held_centre", "held_centre")
    table["Mask2Mask held 3 s centred, neutral expression"] = ("held_centre_neutral", "held_centre_neutral")
    rows = score(table, samples, with_mean=False)
    rows.update(state_rows([(s["person"], s["state"]) for s in samples if s["role"] == "gallery"],
                           [(s["person"], s["state"]) for s in samples if s["role"] == "probe"]))
    held_rows = state_rows([(s["person"], s["held_state"]) for s in samples if s["role"] == "gallery"],
                           [(s["person"], s["held_state"]) for s in samples if s["role"] == "probe"])
    rows.update({f"{k} (held 3 s)": v for k, v in held_rows.items() if "expression" in k})
    rows["_paired"] = paired_expression(samples)
    expr = {kind: float(np.mean([np.linalg.norm(s[kind].expression) for s in samples]))
            for kind in ("state", "held_state")}
    return {"people": len(people), "photos": len(samples), "tracked": tracked, "held_tracked": held_tracked,
            "chance": round(1.0 / len(people), 3), "protocols": rows,
            "mean_expression_norm": {"single frame": round(expr["state"], 3),
                                     "held 3 s": round(expr["held_state"], 3)}}


def paired_expression(samples) -> dict:
    """Per probe: right with full expression vs. right with neutral expression (centred renders)."""
    out = {}
    for label, prefix in (("single frame", "masked"), ("held 3 s", "held")):
        right = {}
        for cond in (f"{prefix}_centre", f"{prefix}_centre_neutral"):
            gal = [(s["person"], s[cond][0]) for s in samples if s["role"] == "gallery"]
            names = [p for p, _ in gal]
            matrix = np.stack([v for _, v in gal])
            right[cond] = [names[int(np.argmin(np.linalg.norm(matrix - s[cond][0], axis=1)))] == s["person"]
                           for s in samples if s["role"] == "probe"]
        full, neutral = np.array(right[f"{prefix}_centre"]), np.array(right[f"{prefix}_centre_neutral"])
        out[label] = {"right_only_with_expression": int((full & ~neutral).sum()),
                      "right_only_neutral": int((~full & neutral).sum()),
                      "right_both": int((full & neutral).sum()), "probes": len(full)}
    return out


# --------------------------------------------------------------------------- videos
def read_frames(path: Path):
    """RGB frames of a clip, resized to at most LONG_SIDE, one at a time (never stored)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            if index >= MAX_CLIP_FRAMES:
                return
            rgb = frame.to_ndarray(format="rgb24")
            scale = LONG_SIDE / max(rgb.shape[:2])
            if scale < 1:
                rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                                 interpolation=cv2.INTER_AREA)
            yield np.ascontiguousarray(rgb), float(frame.time if frame.time is not None else 0.0)


def frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        count = container.streams.video[0].frames or sum(1 for _ in container.decode(video=0))
    return min(count, MAX_CLIP_FRAMES)


def sample_indices(count: int) -> dict[int, str]:
    """Centres of SAMPLES_PER_HALF equal segments of each half: gallery first half, probes second."""
    half = count // 2
    out = {}
    for start, stop, role in ((0, half, "gallery"), (half, count, "probe")):
        step = (stop - start) / SAMPLES_PER_HALF
        for k in range(SAMPLES_PER_HALF):
            out[int(start + (k + 0.5) * step)] = role
    return out


def videos_protocol(attacker: Attacker) -> dict:
    from dmask_live.pipeline import MaskPipeline

    clips = sorted((SHARED / "videos").glob("*.mp4"), key=lambda p: int(p.stem.lstrip("d") or 0))
    samples, per_clip = [], {}
    sampler = Sampler(attacker, USED_BASELINES)
    try:
        with MaskPipeline(**_stages()) as pipeline:
            for clip in clips:
                person = clip.stem
                wanted = sample_indices(frame_count(clip))
                pipeline.reset()  # a new patient: forget the private shape
                frames = tracked = 0
                for index, (rgb, timestamp) in enumerate(read_frames(clip)):
                    masked = pipeline.process(rgb, timestamp)
                    frames += 1
                    tracked += masked.state.tracked
                    if index not in wanted:
                        continue
                    sample = {"person": person, "role": wanted[index], "state": masked.state}
                    sample.update(sampler.original(rgb))
                    sample.update(sampler.masked(masked.image, masked.state, sample["_box"]))
                    samples.append(sample)
                per_clip[person] = {"frames": frames, "tracked": tracked}
                print(f"video {clip.name}: {frames} frames, tracked {tracked}", file=sys.stderr)
    finally:
        sampler.close()
    rows = score(protocol_table([("", "masked")], USED_BASELINES), samples, with_mean=True)
    rows.update(state_rows([(s["person"], s["state"]) for s in samples if s["role"] == "gallery"],
                           [(s["person"], s["state"]) for s in samples if s["role"] == "probe"]))
    sampled_tracked = sum(s["state"].tracked for s in samples)
    return {"people": len(clips), "clips": per_clip, "sampled_frames": len(samples),
            "sampled_tracked": sampled_tracked, "chance": round(1.0 / len(clips), 3), "protocols": rows}


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="privacy benchmark (dlib attacker)")
    parser.add_argument("--faces-only", action="store_true", help="only the photos (about 4 minutes)")
    args = parser.parse_args(argv)
    needed = ("faces",) if args.faces_only else ("faces", "videos")
    missing = [d for d in needed if not (SHARED / d).is_dir()]
    if missing:
        print(f"needs {', '.join(str(SHARED / d) for d in missing)} (real test media); absent here",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    attacker = Attacker()
    faces = faces_protocol(attacker)
    t_faces = time.perf_counter() - start
    videos = None if args.faces_only else videos_protocol(attacker)
    from importlib.metadata import version

    result = {
        "topic": "privacy",
        "command": "python benchmarks/bench_privacy.py" + (" --faces-only" if args.faces_only else ""),
        "machine": machine(_gl_renderer()),
        "load_average": machine_info.load_average(),
        "code": code_state(),
        "attacker": f"dlib {version('dlib-bin')} HOG detector + 5-point alignment + ResNet face descriptor "
                    f"(face_recognition_models {version('face-recognition-models')})",
        "goal": "Mask2Face and Mask2Mask rank-1 ≤ chance + 0.05",
        "faces": faces,
        "videos": videos,
        "seconds": {"faces": round(t_faces, 1), "total": round(time.perf_counter() - start, 1)},
    }
    for data in (faces, videos):
        if data is None:
            continue
        limit = data["chance"] + 0.05
        data["goal_met"] = {k: data["protocols"][k]["rank1_accuracy"] <= limit + 1e-9
                            for k in ("Mask2Face", "Mask2Mask")}
    stem = "privacy_faces" if args.faces_only else "privacy"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    result["plot"] = plot(result, RESULTS / f"{stem}.png")
    write_markdown(RESULTS / f"{stem}.md", result, f"{stem}.png")
    print((RESULTS / f"{stem}.md").read_text())
    return 0


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


def _image_rows(rows: dict) -> dict:
    return {k: v for k, v in rows.items() if not k.startswith("_")}


def plot(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = [key for key in ("faces", "videos") if result.get(key) is not None]
    fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        data = result[key]
        rows = _image_rows(data["protocols"])
        names = list(rows)
        values = [rows[n]["rank1_accuracy"] for n in names]
        colours = ["#3b6ea5" if "Mask" in n else "#9a9a9a" if "State" in n else "#555" for n in names]
        ax.bar(names, values, color=colours)
        ax.axhline(data["chance"], color="red", ls="--", lw=1, label=f"chance {data['chance']:.3f}")
        ax.axhline(data["chance"] + 0.05, color="orange", ls=":", lw=1, label="goal: chance + 0.05")
        ax.set_title(f"{key}: {data['people']} people")
        ax.set_ylabel("rank-1 accuracy")
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", labelrotation=35, labelsize=7)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _table(rows: dict, with_mean: bool) -> list[str]:
    head = "| protocol (probe → gallery) | rank-1 | 95% CI |"
    rule = "| --- | --- | --- |"
    if with_mean:
        head += " rank-1, mean gallery |"
        rule += " --- |"
    lines = [head + " probes | attacker's detector found a face |", rule + " --- | --- |"]
    for name, row in _image_rows(rows).items():
        found = "n/a (no image)" if row["detector_found_face"] is None else row["detector_found_face"]
        mean = f" {row.get('rank1_mean_gallery', '')} |" if with_mean else ""
        lines.append(f"| {name} | {row['rank1_accuracy']} | {row['ci95'][0]}–{row['ci95'][1]} |{mean}"
                     f" {row['probes']} | {found} |")
    return lines


def write_markdown(path: Path, result: dict, plot_name: str = "privacy.png") -> None:
    m = result["machine"]
    load = result.get("load_average")
    lines = [
        "# Privacy benchmark: face recognition against the mask", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, numpy {m['numpy']}, "
        f"moderngl {m['moderngl']}, GL: {m['gl_renderer']}"
        + (f"; load average at the end {load[0]}, {load[1]}, {load[2]} (1, 5, 15 min)." if load else "."),
        f"Command: `{result['command']}` ({result['seconds']['total']} s, "
        f"faces {result['seconds']['faces']} s). "
        f"Attacker: {result['attacker']}; rank-1 by nearest gallery descriptor (Euclidean).",
        _code_line(result.get("code", {})),
        f"Goal: {result['goal']}. Where the attacker's detector found no face it was given the box found "
        "in the original, else a centred square crop (it knows where the face is). 95% CI: Wilson "
        "interval (probes of one person are not independent: indicative only).", "",
        *_faces_lines(result["faces"]),
    ]
    if result.get("videos") is not None:
        lines += _videos_lines(result["videos"])
    if result.get("plot"):
        lines += [f"![rank-1 accuracy per protocol]({plot_name})", ""]
    path.write_text("\n".join(lines))


def _code_line(code: dict) -> str:
    changed = ", ".join(f"{name} {digest}" for name, digest in code.get("uncommitted", {}).items())
    return (f"Code: commit {code.get('commit')}; masking-path files not committed (sha256 prefix): "
            f"{changed or 'none'}.")


def _faces_lines(f: dict) -> list[str]:
    verdict = {k: "met" if ok else "NOT met" for k, ok in f["goal_met"].items()}
    lines = [
        "## Faces: ../shared/data/faces", "",
        f"{f['photos']} photos of {f['people']} people; first photo per person = gallery, the rest = probes. "
        f"Each photo masked alone (fresh tracker, one frame): tracked {f['tracked']}/{f['photos']}. "
        f"\"held 3 s\": the same photo fed {HOLD_FRAMES} times so the tracker's private shape converges "
        f"(tracked {f['held_tracked']}/{f['photos']}). "
        f"Chance {f['chance']}; goal ≤ {f['chance'] + 0.05:.3f}: "
        f"Mask2Face {verdict['Mask2Face']}, Mask2Mask {verdict['Mask2Mask']}.", "",
        *_table(f["protocols"], with_mean=False), f"| chance | {f['chance']} | | | | |", "",
        "Expression's contribution, paired per probe (centred renders, full vs. neutral expression):", "",
        "| states | right only with expression | right only with neutral | right with both | probes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, row in f["protocols"]["_paired"].items():
        lines.append(f"| {label} | {row['right_only_with_expression']} | {row['right_only_neutral']} | "
                     f"{row['right_both']} | {row['probes']} |")
    norms = f["mean_expression_norm"]
    lines += ["", f"Mean norm of the expression coefficients: single frame {norms['single frame']}, "
              f"held 3 s {norms['held 3 s']}.", ""]
    return lines


def _videos_lines(v: dict) -> list[str]:
    vverdict = {k: "met" if ok else "NOT met" for k, ok in v["goal_met"].items()}
    lines = ["## Videos: ../shared/data/videos", "",
             f"{v['people']} clips, one person each, masked frame by frame as a video through MaskPipeline "
             f"(tracking; follow placement; frames ≤ {LONG_SIDE} px long side; the first "
             f"{MAX_CLIP_FRAMES} frames of a clip). {SAMPLES_PER_HALF} gallery "
             f"frames evenly from each clip's first half, {SAMPLES_PER_HALF} probes from its second half "
             f"({v['sampled_frames']} sampled, tracked {v['sampled_tracked']}). Rank-1 against the nearest "
             "gallery frame; also against each person's mean gallery descriptor. "
             f"Chance {v['chance']}; goal ≤ {v['chance'] + 0.05:.3f}: Mask2Face {vverdict['Mask2Face']}, "
             f"Mask2Mask {vverdict['Mask2Mask']}.", "",
             "| clip | frames | tracked |", "| --- | --- | --- |"]
    lines += [f"| {c} | {r['frames']} | {r['tracked']} |" for c, r in v["clips"].items()]
    lines += ["", *_table(v["protocols"], with_mean=True), f"| chance | {v['chance']} | | | | | |", ""]
    return lines


if __name__ == "__main__":
    sys.exit(main())
