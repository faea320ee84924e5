"""Tracker benchmark on the shared clips: fit accuracy, fit time (one thread), second-process start.

    python benchmarks/bench_tracker.py [--data ../shared/data] [--clips d0 d3 ...] [--no-holdout]

Landmarks come from our FaceLandmarker (not timed here). Per clip a fresh FaceTracker tracks every
frame; accuracy is the distance of the fitted model's landmarks to the detected ones, as % of the
inter-pupillary distance (6.3 cm × fitted scale):

* all points: 468 mesh points (iris-model eye contours written in) + 10 iris points;
* eye: 2 × 71 eye-contour points + 10 iris points; also lid margins (2 × 16) and iris alone
  (the published digital mask reports eyeball 0.81–1.00 %, eyelid 1.24–1.61 %).
  Iris points count only for open eyes (a closed eye's gaze is held; its iris points are guesses).

"in-sample" uses the packaged model (its expression basis was learned from these clips); "held-out"
rebuilds the model without the clip being measured (leave-one-clip-out), the honest number.
Speed: ``FaceTracker.update`` per frame after warm-up, one thread, against an anchor measured in the
same run: OpenCV ``solvePnP`` (iterative, pose only) on the same 468 points.
Eye alignment (no clip shows strabismus, see ../shared/data/README.md): per clip the median and IQR of
the horizontal (yaw OD - OS, + = eso) and vertical (pitch OD - OS) deviation from OcularAnalyzer over
frames with both eyes open, and the same computed from the landmarks alone (each iris centre relative
to its own eye corners, against the canonical face's): the part of a deviation the landmarks themselves
carry, which the tracker cannot separate from a squint present from the first frame.
Expression (no ground truth on real clips): the norm of the coefficients on the first frame (a person's
face shape shown as expression would make it large) and their activity after the first 2 s (norm of the
per-coefficient standard deviation over time: expressions are still followed).
Writes benchmarks/results/tracker.json and tracker.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import machine_info  # noqa: E402
import numpy as np  # noqa: E402
from machine_info import describe_machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IRIS_ROWS = np.array([[468, 469, 470, 471, 472], [473, 474, 475, 476, 477]])

START_SNIPPET = """
import time
t0 = time.perf_counter()
import numpy as np
from dmask_live.face_model import load_face_model, landmarks_from_state
from dmask_live.tracker import FaceTracker
from dmask_live.types import AvatarState, FaceLandmarks
model = load_face_model()
state = AvatarState(tracked=True, translation=np.array([320.0, 240.0]), scale=20.0,
                    expression=np.zeros(model.num_expressions))
p, c, i = landmarks_from_state(model, state)
FaceTracker(model).update(FaceLandmarks(p, c, i, 1.0, (0, 0, 0, 0), (640, 480)), 0.0)
print(time.perf_counter() - t0)
"""


def machine() -> tuple[dict, list[float] | None]:
    """The machine, and its load average now (the result records it beside the machine, not inside)."""
    info = describe_machine(("numpy", "numba", "scipy", "opencv-python-headless", "onnxruntime"))
    load_average = info.pop("load_average")
    return {**info, "threads": 1}, load_average


LANDMARK_STAGE = ("dmask_live/landmarks.py", "dmask_live/attention_mesh.py", "dmask_live/face_detector.py",
                  "dmask_live/roi.py", "dmask_live/models.py", "dmask_live/inference.py", "onnx")


def code_state() -> dict:
    """The commit measured and which landmark-stage files differ from it (the residuals depend on them)."""
    state = machine_info.code_state(LANDMARK_STAGE)
    return {"commit": state["commit"], "landmark_stage_uncommitted": list(state["uncommitted"])}


def read_clip(path: Path, landmarker) -> tuple[list, float]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(landmarker.process(np.ascontiguousarray(bgr[:, :, ::-1])))
    capture.release()
    return frames, float(fps)


def _quartiles(values: list) -> dict:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return {"median": None, "iqr": None}
    low, median, high = np.percentile(finite, [25, 50, 75])
    return {"median": float(median), "iqr": float(high - low)}


def landmark_alignment_deg(model, landmarks) -> tuple[float, float]:
    """(horizontal, vertical) deviation the landmarks alone show: each iris centre against its eye corners.

    In the face's image axes (outer corner of OD → outer corner of OS), as fractions of each eye's
    corner-to-corner width compared with the canonical face's, turned into degrees with the canonical
    eye's lever. No tracker: what any eyeball placement anchored on the eye opening would read.
    """
    from dmask_live.types import EYE_CONTOUR_MESH_INDICES

    outer, inner = 0, 8  # the corners in each eye's contour
    points = np.asarray(landmarks.points, np.float64)
    axis = points[263, :2] - points[33, :2]
    axis /= np.linalg.norm(axis)
    normal = np.array([-axis[1], axis[0]])
    vertices = model.vertices.astype(np.float64)
    shifts = []
    for eye in range(2):
        contour = np.asarray(landmarks.eye_contours[eye, :, :2], np.float64)
        width = abs((contour[inner] - contour[outer]) @ axis)
        middle = 0.5 * (contour[inner] + contour[outer])
        seen = (np.asarray(landmarks.iris[eye, 0, :2], np.float64) - middle) / width
        canon_contour = vertices[EYE_CONTOUR_MESH_INDICES[eye]]
        canon_width = abs(canon_contour[inner, 0] - canon_contour[outer, 0])
        canon = (model.eyeball_centers[eye, :2] - 0.5 * (canon_contour[inner, :2] + canon_contour[outer, :2]))
        shifts.append((np.array([seen @ axis, seen @ normal]) - canon / canon_width) * canon_width)
    lever = model.iris_depth
    horizontal = math.degrees(math.asin(np.clip((shifts[0][0] - shifts[1][0]) / lever, -1, 1)))
    vertical = -math.degrees(math.asin(np.clip((shifts[0][1] - shifts[1][1]) / lever, -1, 1)))
    return horizontal, vertical


def track_clip(model, frames: list, fps: float, timed: bool) -> dict:
    from dmask_live.ocular import OcularAnalyzer
    from dmask_live.tracker import FaceTracker

    tracker, analyzer = FaceTracker(model), OcularAnalyzer(model)
    groups = {"all": [], "eye": [], "lid_margin": [], "iris": []}
    times, tracked, expressions = [], 0, []
    deviations: dict[str, list] = {"horizontal": [], "vertical": [], "landmark_h": [], "landmark_v": []}
    for index, landmarks in enumerate(frames):
        t0 = time.perf_counter()
        state = tracker.update(landmarks, index / fps)
        times.append(time.perf_counter() - t0)
        metrics = analyzer.update(state)
        if not state.tracked or landmarks is None:
            continue
        tracked += 1
        if np.isfinite(metrics.horizontal_deviation_deg):  # both eyes open
            deviations["horizontal"].append(metrics.horizontal_deviation_deg)
            deviations["vertical"].append(metrics.vertical_deviation_deg)
            from_landmarks = landmark_alignment_deg(model, landmarks)
            deviations["landmark_h"].append(from_landmarks[0])
            deviations["landmark_v"].append(from_landmarks[1])
        expressions.append(state.expression)
        errors = tracker._fit_errors_px(landmarks)
        ipd = errors["ipd_px"]
        margins = errors["eye_contours"][:, :16]
        iris = errors["iris"][np.isfinite(errors["iris"][:, 0])].ravel()  # open eyes only
        groups["all"].append(np.concatenate([errors["mesh"], iris]).mean() / ipd)
        groups["eye"].append(np.concatenate([errors["eye_contours"].ravel(), iris]).mean() / ipd)
        groups["lid_margin"].append(margins.mean() / ipd)
        if iris.size:
            groups["iris"].append(iris.mean() / ipd)
    out = {key: 100.0 * float(np.mean(values)) if values else None for key, values in groups.items()}
    out.update(frames=len(frames), tracked=tracked)
    out["deviation_deg"] = {key: _quartiles(values) for key, values in deviations.items()}
    if expressions:
        out["expression_first_frame_norm"] = float(np.linalg.norm(expressions[0]))
        later = np.array(expressions[int(2 * fps) :])
        out["expression_activity_after_2s"] = float(np.linalg.norm(later.std(0))) if len(later) > 1 else None
    if timed:
        out["times_s"] = times[30:] if len(times) > 60 else times
    return out


def anchor_solvepnp(model, frames: list, repeats: int) -> float:
    """Median seconds of cv2.solvePnP (iterative) on the 468 points of a few real frames."""
    import cv2

    objects = model.vertices[:468].astype(np.float64)
    times = []
    usable = [f for f in frames if f is not None][:repeats]
    for landmarks in usable:
        width, height = landmarks.image_size
        camera = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float64)
        image = landmarks.points[:468, :2].astype(np.float64)
        t0 = time.perf_counter()
        cv2.solvePnP(objects, image, camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def process_start_times() -> dict:
    """Seconds to import, JIT-load and run one update in a fresh process: cache hit vs cold compile."""
    env = dict(os.environ)
    run = [sys.executable, "-c", START_SNIPPET]
    subprocess.run(run, check=True, capture_output=True, env=env, cwd=ROOT)  # make sure the cache exists
    hit = float(subprocess.run(run, check=True, capture_output=True, text=True, env=env, cwd=ROOT).stdout)
    with tempfile.TemporaryDirectory() as cache_dir:
        env_cold = {**env, "NUMBA_CACHE_DIR": cache_dir}
        cold = float(
            subprocess.run(run, check=True, capture_output=True, text=True, env=env_cold, cwd=ROOT).stdout
        )
    return {"second_process_start_s": hit, "cold_compile_start_s": cold}


def held_out_models(landmarks_per_clip: dict, people: dict, clips: list[str]) -> dict:
    from dmask_live import face_model_build as build
    from dmask_live.face_model import FaceModel, load_face_model

    arrays = {}
    for name, (frames, _) in landmarks_per_clip.items():
        arrays[name] = np.array(
            [
                np.full((478, 3), np.nan)
                if f is None
                else build.tracker_view(f.points, f.eye_contours, f.iris)
                for f in frames
            ]
        )
    models = {}
    base = load_face_model()
    for name in clips:
        others = {k: v for k, v in arrays.items() if k != name}
        data = build.build_from_landmarks(others, people)
        models[name] = FaceModel(
            vertices=data["vertices"],
            triangles=data["triangles"],
            expression_basis=data["expression_basis"],
            eyelid_basis=data["eyelid_basis"],
            eye_ring=data["eye_ring"],
            mouth_ring=data["mouth_ring"],
            eyeball_centers=data["eyeball_centers"],
            eyeball_radius=float(data["eyeball_radius"]),
            iris_radius=float(data["iris_radius"]),
            pupil_radius=float(data["pupil_radius"]),
            version=base.version + "-holdout",
            iris_depth=float(data["iris_depth"]),
        )
    return models


def photo_landmarks(data: Path, landmarker_factory) -> dict:
    import csv

    import cv2

    from dmask_live import face_model_build as build

    people: dict[str, list] = {}
    with open(data / "faces" / "identities.csv") as handle:
        for row in csv.DictReader(handle):
            bgr = cv2.imread(str(data / "faces" / row["file"]))
            if bgr is None:
                continue
            result = landmarker_factory().process(np.ascontiguousarray(bgr[:, :, ::-1]))
            if result is not None:
                people.setdefault(row["identity"], []).append(
                    build.tracker_view(result.points, result.eye_contours, result.iris)
                )
    return people


def summarise(rows: dict, key: str) -> float | None:
    values = [r[key] for r in rows.values() if r.get(key) is not None]
    weights = [r["tracked"] for r in rows.values() if r.get(key) is not None]
    return float(np.average(values, weights=weights)) if values else None


def _fmt_quartiles(value: dict | None) -> str:
    if not value or value.get("median") is None:
        return "–"
    return f"{value['median']:+.1f} ({value['iqr']:.1f})"


def write_markdown(result: dict, path: Path) -> None:
    m = result["machine"]
    s = result["speed"]
    lines = [
        "# Tracker benchmark",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['os']}, Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + "; one thread.",
        f"Command: `{result['command']}`; load average at the end "
        + ", ".join(str(v) for v in result["load_average"])
        + " (1, 5, 15 min).",
        f"Code: commit {result['code']['commit']}; landmark-stage files not committed: "
        + (", ".join(result["code"]["landmark_stage_uncommitted"]) or "none")
        + ". The packaged (in-sample) model was built from the landmark stage of its build time; "
        "the held-out models are rebuilt from this run's landmarks.",
        "",
        "## Fit residual, % of inter-pupillary distance (mean over tracked frames)",
        "",
        "| clip | frames | tracked | all (in-sample) | eye (in) | lid margin (in) | iris (in) "
        "| all (held-out) | eye (held-out) | lid margin (held-out) | iris (held-out) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(value):
        return "–" if value is None else f"{value:.2f}"

    for name, row in result["clips"].items():
        held = result["held_out"].get(name, {})
        lines.append(
            f"| {name} | {row['frames']} | {row['tracked']} | {fmt(row['all'])} | {fmt(row['eye'])} | "
            f"{fmt(row['lid_margin'])} | {fmt(row['iris'])} | {fmt(held.get('all'))} | "
            f"{fmt(held.get('eye'))} | {fmt(held.get('lid_margin'))} | {fmt(held.get('iris'))} |"
        )
    t = result["totals"]
    lines += [
        f"| **all clips** | | | **{fmt(t['all'])}** | **{fmt(t['eye'])}** | {fmt(t['lid_margin'])} | "
        f"{fmt(t['iris'])} | **{fmt(t['held_out_all'])}** | **{fmt(t['held_out_eye'])}** | "
        f"{fmt(t['held_out_lid_margin'])} | {fmt(t['held_out_iris'])} |",
        "",
        "Goals: all ≤ 1.5 %, eye ≤ 1.0 %. Published digital mask: eyeball 0.81–1.00 %, eyelid 1.24–1.61 %.",
        "",
        "## Eye alignment on the real clips (in-sample model; nobody here has strabismus)",
        "",
        "Median (IQR) over frames with both eyes open, degrees. Tracker: OcularAnalyzer's horizontal "
        "(yaw OD − OS, + = eso) and vertical (pitch OD − OS) deviation. Landmarks alone: each iris centre "
        "against its own eye corners compared with the canonical face (no tracker), the part of the "
        "deviation the landmark networks carry. Goals: median within ±5° horizontal, ±3° vertical.",
        "",
        "| clip | horizontal (tracker) | vertical (tracker) | horizontal (landmarks alone) | "
        "vertical (landmarks alone) |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {name} | " + " | ".join(
                _fmt_quartiles(row.get("deviation_deg", {}).get(key))
                for key in ("horizontal", "vertical", "landmark_h", "landmark_v")
            ) + " |"
            for name, row in result["clips"].items()
        ],
        "",
        "## Expression on the real clips (in-sample model)",
        "",
        "| clip | norm of the coefficients on the first frame | activity after 2 s |",
        "| --- | --- | --- |",
        *[
            f"| {name} | {fmt(row.get('expression_first_frame_norm'))} | "
            f"{fmt(row.get('expression_activity_after_2s'))} |"
            for name, row in result["clips"].items()
        ],
        "",
        "## Speed (FaceTracker.update per frame, after warm-up, one thread)",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| median ms | {s['median_ms']:.3f} |",
        f"| p95 ms | {s['p95_ms']:.3f} |",
        f"| anchor: cv2.solvePnP iterative, median ms | {s['anchor_solvepnp_ms']:.3f} |",
        f"| ratio median / anchor | {s['ratio_to_anchor']:.2f} |",
        f"| second process: import + load + first update, s (numba cache hit) | "
        f"{s['second_process_start_s']:.2f} |",
        f"| same with an empty numba cache (compile), s | {s['cold_compile_start_s']:.2f} |",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tracker benchmark")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--clips", nargs="*", default=None)
    parser.add_argument("--no-holdout", action="store_true")
    args = parser.parse_args(argv)
    if not (args.data / "videos").is_dir():
        print(f"needs the shared data folder ({args.data}/videos); absent", file=sys.stderr)
        return 2
    from dmask_live.face_model import load_face_model
    from dmask_live.landmarks import FaceLandmarker

    model = load_face_model()
    videos = sorted((args.data / "videos").glob("*.mp4"), key=lambda p: int(p.stem[1:]))
    if args.clips:
        videos = [v for v in videos if v.stem in args.clips]
    landmarks = {}
    for video in videos:
        landmarks[video.stem] = read_clip(video, FaceLandmarker())
        print(f"{video.name}: landmarks", file=sys.stderr)
    track_clip(model, landmarks[videos[0].stem][0][:40], 25.0, timed=False)  # JIT warm-up
    rows, times = {}, []
    for name, (frames, fps) in landmarks.items():
        row = track_clip(model, frames, fps, timed=True)
        times += row.pop("times_s")
        rows[name] = row
    held_out: dict = {}
    if not args.no_holdout:
        people = photo_landmarks(args.data, FaceLandmarker)
        for name, holdout_model in held_out_models(landmarks, people, list(landmarks)).items():
            frames, fps = landmarks[name]
            held_out[name] = track_clip(holdout_model, frames, fps, timed=False)
            print(f"{name}: held-out model", file=sys.stderr)
    first_frames = [f for frames, _ in landmarks.values() for f in frames[:50]]
    anchor = anchor_solvepnp(model, first_frames, 200)
    starts = process_start_times()
    median = float(np.median(times))
    machine_now, load_average = machine()
    result = {
        "command": "python benchmarks/bench_tracker.py" + (" --no-holdout" if args.no_holdout else ""),
        "machine": machine_now,
        "load_average": load_average,
        "code": code_state(),
        "model_version": model.version,
        "num_expressions": model.num_expressions,
        "clips": rows,
        "held_out": held_out,
        "totals": {
            "all": summarise(rows, "all"),
            "eye": summarise(rows, "eye"),
            "lid_margin": summarise(rows, "lid_margin"),
            "iris": summarise(rows, "iris"),
            "held_out_all": summarise(held_out, "all"),
            "held_out_eye": summarise(held_out, "eye"),
            "held_out_lid_margin": summarise(held_out, "lid_margin"),
            "held_out_iris": summarise(held_out, "iris"),
        },
        "speed": {
            "frames_timed": len(times),
            "median_ms": 1e3 * median,
            "p95_ms": 1e3 * float(np.percentile(times, 95)),
            "anchor_solvepnp_ms": 1e3 * anchor,
            "ratio_to_anchor": median / anchor,
            **starts,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tracker.json").write_text(json.dumps(result, indent=2))
    write_markdown(result, RESULTS / "tracker.md")
    print((RESULTS / "tracker.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
