"""Landmark stage vs MediaPipe FaceMesh: accuracy and single-core speed, in one run.

    python benchmarks/bench_landmarks.py [--frames-per-clip 75] [--rounds 2] [--model both]

Both landmark models by default (``FaceLandmarker(model="mesh_iris")``, the default, and
``model="attention"``), each against the same MediaPipe runs. The mesh_iris model runs on the
default inference backend (:func:`dmask_live.inference.open_network`: OpenVINO in bfloat16 on
CPUs with native bfloat16, else onnxruntime) and, when that is not onnxruntime, also on
onnxruntime in float32, the reference the conversion tests check against MediaPipe's TFLite.

MediaPipe 0.10.21 runs in its own venv (``benchmarks/.mpvenv``, created on first use; set
``DMASK_MP_VENV=/path/to/venv`` to reuse one) in a subprocess, never imported here. Frames go
to it through a pipe; only landmarks and timings come back, as .npy/.json in a temporary
directory outside the repository that is deleted afterwards.

Accuracy (native clip resolution, video/tracking mode on both sides):
  * our 468 mesh points vs the FaceMesh configuration that runs the same network as ours
    (``refine_landmarks=False`` for ``mesh_iris``, ``True`` for the attention mesh)
    — per frame the median point distance / inter-ocular distance (IOD = distance between the two
    eye centres, each the midpoint of its corners 33–133 / 362–263 in MediaPipe's points); median
    over frames; also vs the other configuration, for scale;
  * our 2 iris centres vs MediaPipe ``refine_landmarks=True`` (points 468 and 473), / IOD.
Speed: ms per frame of the whole landmark stage at 512×512 and 1280×720 (clip frames
letterboxed), ours with threads=1 vs FaceMesh ``refine_landmarks=True`` (iris), both pinned
to one CPU core, alternating rounds so that machine noise hits both alike.

Writes benchmarks/results/landmarks.json and landmarks.md.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import machine_info
import numpy as np
from machine_info import describe_machine

ROOT = Path(__file__).resolve().parents[1]
MP_VERSION = "0.10.21"
SPEED_SIZES = {"512x512": (512, 512), "1280x720": (1280, 720)}  # name -> (width, height)
GOALS = {"mesh_median_iod": 0.015, "iris_median_iod": 0.03, "speed_ratio": 1.0}

MP_WORKER = r"""
import json, sys, time
import numpy as np
import mediapipe as mp

spec = json.load(open(sys.argv[1]))
stdin = sys.stdin.buffer
def read_npy(stream):  # np.load would try to seek in the pipe
    version = np.lib.format.read_magic(stream)
    shape, fortran, dtype = np.lib.format._read_array_header(stream, version)
    data = stream.read(int(np.prod(shape)) * dtype.itemsize)
    return np.frombuffer(data, dtype).reshape(shape)
clips = [read_npy(stdin) for _ in spec["clips"]]
out = {"mediapipe": mp.__version__, "times_ms": []}
for name, frames in zip(spec["clips"], clips):
    height, width = frames.shape[1:3]
    points = np.full((len(frames), 478 if spec["refine"] else 468, 3), np.nan, np.float32)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                         refine_landmarks=spec["refine"]) as mesh:
        mesh.process(np.zeros_like(frames[0]))  # graph start-up, not timed; no face -> detector next
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            result = mesh.process(frame)
            out["times_ms"].append((time.perf_counter() - t0) * 1e3)
            if result.multi_face_landmarks:
                lm = result.multi_face_landmarks[0].landmark
                points[i] = [(p.x * width, p.y * height, p.z * width) for p in lm]
    np.save(f"{spec['out']}/{name}.npy", points)
json.dump(out, open(f"{spec['out']}/result.json", "w"))
"""


# ---------------------------------------------------------------- MediaPipe's side
def mediapipe_python() -> Path:
    """Python of a venv with mediapipe==0.10.21, creating benchmarks/.mpvenv if needed."""
    venv = Path(os.environ.get("DMASK_MP_VENV", ROOT / "benchmarks" / ".mpvenv"))
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import mediapipe as m; assert m.__version__ == '{MP_VERSION}'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with mediapipe=={MP_VERSION} (one-off, a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"mediapipe=={MP_VERSION}"], check=True)
    subprocess.run(check, check=True)
    return python


def run_mediapipe(python: Path, clips: dict[str, np.ndarray], refine: bool, workdir: Path):
    """(landmarks per clip, per-frame ms, mediapipe version) from a FaceMesh subprocess."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    spec = out / "spec.json"
    spec.write_text(json.dumps({"clips": list(clips), "refine": refine, "out": str(out)}))
    script = workdir / "mp_worker.py"
    script.write_text(MP_WORKER)
    command = [str(python), str(script), str(spec)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", str(PINNED_CPU), *command]
    env = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    for frames in clips.values():
        buffer = io.BytesIO()  # np.save straight to a pipe would try to seek
        np.save(buffer, np.ascontiguousarray(frames))
        process.stdin.write(buffer.getbuffer())
    process.stdin.close()
    if process.wait() != 0:
        raise RuntimeError(f"MediaPipe worker failed (exit {process.returncode})")
    result = json.loads((out / "result.json").read_text())
    landmarks = {name: np.load(out / f"{name}.npy") for name in clips}
    shutil.rmtree(out)
    return landmarks, result["times_ms"], result["mediapipe"]


# ---------------------------------------------------------------- our side
def run_ours(landmarker, clips: dict[str, np.ndarray], stages: list | None = None):
    """(landmarks per clip, per-frame ms); per-frame stage timings appended to ``stages``."""
    landmarks, times = {}, []
    for name, frames in clips.items():
        landmarker.reset()
        points = np.full((len(frames), 478, 3), np.nan, np.float32)
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            face = landmarker.process(frame)
            times.append((time.perf_counter() - t0) * 1e3)
            if stages is not None:
                stages.append(dict(landmarker.last_timings_ms))
            if face is not None:
                points[i] = face.points
        landmarks[name] = points
    return landmarks, times


def network_anchor(landmarker, python: Path, repeats: int = 60) -> dict:
    """ms per call of the bare networks of our stage ("ours", on its backend), and LiteRT where it can.

    Shows how much of the gap to MediaPipe is the runtime rather than the pipeline around it. The
    attention mesh uses MediaPipe's custom ops, which LiteRT alone cannot run: onnxruntime only.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = None
    where = subprocess.run(
        [str(python), "-c", "import mediapipe, os; print(os.path.dirname(mediapipe.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    modules = Path(where) / "modules"
    rng = np.random.default_rng(0)
    detector = landmarker._detector.model
    networks = {"face_detection_short_range": (detector, "face_detection", (1, 3, 128, 128))}
    if landmarker.model == "attention":
        attention = landmarker._attention
        networks["attention backbone"] = (attention.backbone, None, (1, 3, 192, 192))
        networks["attention heads (3 crops)"] = (attention.heads, None, [(1, 32, 16, 16)] * 3)
    else:
        networks["face_landmark"] = (landmarker._mesh, "face_landmark", (1, 3, 192, 192))
        networks["iris_landmark (2 eyes)"] = (landmarker._iris, "iris_landmark", (2, 3, 64, 64))
    out = {}
    for label, (onnx_model, folder, shapes) in networks.items():
        shapes = shapes if isinstance(shapes, list) else [shapes]
        inputs = [rng.random(shape, dtype=np.float32) for shape in shapes]
        calls = {"ours": lambda model=onnx_model, inputs=inputs: model(*inputs)}
        if Interpreter is not None and folder is not None:
            tflite = modules / folder / f"{label.split()[0]}.tflite"
            calls["litert"] = _litert_call(Interpreter, tflite, inputs[0])
        times = {key: [] for key in calls}
        for i in range(repeats + 5):
            for key, call in calls.items():
                t0 = time.perf_counter()
                call()
                if i >= 5:
                    times[key].append((time.perf_counter() - t0) * 1e3)
        out[label] = {key: statistics.median(values) for key, values in times.items()}
    return out


def _litert_call(Interpreter, tflite: Path, x: np.ndarray):
    interpreter = Interpreter(model_path=str(tflite), num_threads=1)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [x.shape[0], x.shape[2], x.shape[3], x.shape[1]])
    interpreter.allocate_tensors()
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def run_litert():
        interpreter.set_tensor(index, x_nhwc)
        interpreter.invoke()

    return run_litert


# ---------------------------------------------------------------- frames and metrics
def read_clips(video_dir: Path, frames_per_clip: int) -> dict[str, np.ndarray]:
    import av

    clips = {}
    for path in sorted(video_dir.glob("*.mp4")):
        frames = []
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) >= frames_per_clip:
                    break
        clips[path.stem] = np.stack(frames)
    return clips


def letterbox(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    out = np.full((len(frames), height, width, 3), 114, np.uint8)
    h, w = frames.shape[1:3]
    scale = min(width / w, height / h)
    nw, nh = round(w * scale), round(h * scale)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    for i, frame in enumerate(frames):
        out[i, y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def eye_distance(points: np.ndarray) -> np.ndarray:
    """(F,) distance between eye centres (midpoints of corners 33–133 and 362–263)."""
    od = (points[:, 33, :2] + points[:, 133, :2]) / 2
    os_ = (points[:, 362, :2] + points[:, 263, :2]) / 2
    return np.linalg.norm(od - os_, axis=1)


def accuracy(ours: dict, mp_mesh: dict, mp_iris: dict, model: str) -> dict:
    """Errors / IOD vs MediaPipe. The mesh is compared with the FaceMesh configuration that runs the
    same network as ours (``refine_landmarks=True`` for the attention mesh, ``False`` for the plain
    mesh model), and, for scale, with the other one; the iris always with ``refine_landmarks=True``."""
    same, other = (mp_iris, mp_mesh) if model == "attention" else (mp_mesh, mp_iris)
    per_clip, pooled = {}, {"mesh": [], "mesh_other": [], "iris": [], "mediapipe_configs": []}
    for name in ours:
        mine = ours[name]
        both = ~np.isnan(mine[:, 0, 0]) & ~np.isnan(mp_mesh[name][:, 0, 0])
        both &= ~np.isnan(mp_iris[name][:, 0, 0])
        errors = {
            "mesh": _mesh_error(mine[both], same[name][both]),
            "mesh_other": _mesh_error(mine[both], other[name][both]),
            "mediapipe_configs": _mesh_error(mp_iris[name][both], mp_mesh[name][both]),
        }
        ref_iris = mp_iris[name][both]
        errors["iris"] = (
            np.linalg.norm(mine[both][:, [468, 473], :2] - ref_iris[:, [468, 473], :2], axis=2).mean(1)
            / eye_distance(ref_iris)
        )
        for key, value in errors.items():
            pooled[key].append(value)
        per_clip[name] = {
            "frames": int(len(mine)),
            "frames_face_ours": int((~np.isnan(mine[:, 0, 0])).sum()),
            "frames_face_mediapipe": int((~np.isnan(same[name][:, 0, 0])).sum()),
            "frames_compared": int(both.sum()),
            "mesh_median_iod": _median(errors["mesh"]),
            "mesh_other_config_median_iod": _median(errors["mesh_other"]),
            "iris_median_iod": _median(errors["iris"]),
            "iris_p95_iod": _p95(errors["iris"]),
        }
    mesh, iris = np.concatenate(pooled["mesh"]), np.concatenate(pooled["iris"])
    overall = {
        "mesh_reference": f"refine_landmarks={model == 'attention'}",
        "frames_compared": int(len(mesh)),
        "mesh_median_iod": _median(mesh),
        "mesh_p95_iod": _p95(mesh),
        "mesh_other_config_median_iod": _median(np.concatenate(pooled["mesh_other"])),
        "mediapipe_refine_true_vs_false_mesh_median_iod": _median(
            np.concatenate(pooled["mediapipe_configs"])
        ),
        "iris_median_iod": _median(iris),
        "iris_p95_iod": _p95(iris),
    }
    return {"overall": overall, "per_clip": per_clip}


def _mesh_error(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(F,) per-frame median distance of the 468 mesh points / the reference's IOD."""
    distances = np.linalg.norm(points[:, :468, :2] - reference[:, :468, :2], axis=2)
    return np.median(distances, axis=1) / eye_distance(reference)


def _median(values) -> float | None:
    return float(np.median(values)) if len(values) else None


def _p95(values) -> float | None:
    return float(np.percentile(values, 95)) if len(values) else None


def machine() -> dict:
    info = describe_machine(("numpy", "onnxruntime", "openvino", "opencv-python-headless"))
    versions = info.pop("versions")
    info.pop("load_average")  # the run records its own, before and after
    return {**info, "numpy": versions["numpy"], "onnxruntime": versions["onnxruntime"],
            "openvino": versions["openvino"], "opencv": cv2.__version__}


# ---------------------------------------------------------------- main
PINNED_CPU = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames-per-clip", type=int, default=75)
    parser.add_argument("--rounds", type=int, default=2, help="alternating speed rounds per size")
    parser.add_argument("--no-write", action="store_true", help="print only, keep results/ unchanged")
    parser.add_argument(
        "--model", choices=("both", "mesh_iris", "attention"), default="both", help="FaceLandmarker model(s)"
    )
    args = parser.parse_args(argv)

    shared = Path(os.environ.get("DMASK_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (shared / "videos").is_dir():
        print(f"skipped: needs the shared test videos in {shared / 'videos'} (absent on this machine)")
        return 0
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {PINNED_CPU})

    from dmask_live.landmarks import FaceLandmarker

    python = mediapipe_python()
    clips = read_clips(shared / "videos", args.frames_per_clip)
    landmarkers = configurations(FaceLandmarker, args.model)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dmask-bench-") as tmp:
        workdir = Path(tmp)
        mp_mesh, _, mp_version = run_mediapipe(python, clips, refine=False, workdir=workdir)
        mp_iris, _, _ = run_mediapipe(python, clips, refine=True, workdir=workdir)
        per_model = {
            name: {
                "model": lm.model,
                "backend": lm.backend,
                "accuracy": accuracy(run_ours(lm, clips)[0], mp_mesh, mp_iris, lm.model),
                "speed": {},
            }
            for name, lm in landmarkers.items()
        }
        for size_name, (width, height) in SPEED_SIZES.items():
            sized = {name: letterbox(frames, width, height) for name, frames in clips.items()}
            ours = {name: ([], []) for name in landmarkers}  # per-frame ms, per-frame stage timings
            mp_ms = []
            for lm in landmarkers.values():
                run_ours(lm, {k: v[:5] for k, v in sized.items()})  # warm-up
            for _ in range(args.rounds):
                for name, lm in landmarkers.items():
                    ours[name][0].extend(run_ours(lm, sized, ours[name][1])[1])
                mp_ms += run_mediapipe(python, sized, refine=True, workdir=workdir)[1]
            for name, (ours_ms, stages) in ours.items():
                per_model[name]["speed"][size_name] = _speed(ours_ms, stages, mp_ms)
        for name, lm in landmarkers.items():
            per_model[name]["networks_ms"] = network_anchor(lm, python)
    results = {
        "topic": "landmarks",
        "default_model": inspect.signature(FaceLandmarker).parameters["model"].default,
        "models": per_model,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": {**machine(), "mediapipe": mp_version, "pinned_cpu": PINNED_CPU},
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "clips": {name: list(frames.shape[1:3][::-1]) for name, frames in clips.items()},
        "frames_per_clip": args.frames_per_clip,
        "goals": GOALS,
        "command": " ".join(
            ([f"DMASK_MP_VENV={os.environ['DMASK_MP_VENV']}"] if "DMASK_MP_VENV" in os.environ else [])
            + ["python benchmarks/bench_landmarks.py", *(argv or sys.argv[1:])]
        ),
    }
    machine_info.publish("landmarks", results, render_markdown(results), write=not args.no_write)
    return 0


def configurations(FaceLandmarker, model: str) -> dict:
    """label -> FaceLandmarker: each model on the default backend, and mesh_iris also on float32
    onnxruntime when the default is another backend (the reference the conversion tests check)."""
    names = ("mesh_iris", "attention") if model == "both" else (model,)
    landmarkers = {name: FaceLandmarker(threads=1, model=name) for name in names}
    mesh_iris = landmarkers.get("mesh_iris")
    if mesh_iris is not None and mesh_iris.backend != "onnxruntime":
        reference = FaceLandmarker(threads=1, model="mesh_iris", backend="onnxruntime")
        landmarkers["mesh_iris (onnxruntime)"] = reference
    return landmarkers


def _speed(ours_ms: list[float], stages: list[dict], mp_ms: list[float]) -> dict:
    return {
        "ours_stage_median_ms": {
            key: statistics.median(t[key] for t in stages) for key in ("detector", "mesh", "iris")
        },
        "frames": len(ours_ms),
        "ours_median_ms": statistics.median(ours_ms),
        "ours_p95_ms": float(np.percentile(ours_ms, 95)),
        "mediapipe_median_ms": statistics.median(mp_ms),
        "mediapipe_p95_ms": float(np.percentile(mp_ms, 95)),
        "ratio_median": statistics.median(ours_ms) / statistics.median(mp_ms),
        "ratio_p95": float(np.percentile(ours_ms, 95) / np.percentile(mp_ms, 95)),
    }


MODEL_TEXT = {
    "mesh_iris": "mesh + iris model on both eyes (batched)",
    "attention": "attention mesh: backbone, region crops (numba), heads — the network FaceMesh runs with "
    "`refine_landmarks=True`",
}


def render_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Landmark stage vs MediaPipe FaceMesh",
        "",
        f"Run {r['date_utc']} UTC with `{r['command'].strip()}`.",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['os']}; Python {m['python']}, "
        f"numpy {m['numpy']}, onnxruntime {m['onnxruntime']}, OpenVINO {m.get('openvino')}, "
        f"OpenCV {m['opencv']}, "
        f"MediaPipe {m['mediapipe']} (reference, separate venv). Both sides pinned to CPU {m['pinned_cpu']}; "
        f"load average before/after: {r['load_average_before_after']}.",
        "",
        f"Goals: mesh median ≤ {GOALS['mesh_median_iod']:.1%} and iris centre median ≤ "
        f"{GOALS['iris_median_iod']:.0%} of the inter-ocular distance; speed ratio ours/MediaPipe ≤ "
        f"{GOALS['speed_ratio']} (median ms per frame, one core). `FaceLandmarker`'s default model: "
        f"`{r['default_model']}`.",
        "",
        "| configuration | inference backend | mesh median | iris median | "
        + " | ".join(f"ratio {size}" for size in SPEED_SIZES) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in SPEED_SIZES) + " |",
    ]
    for name, result in r["models"].items():
        o = result["accuracy"]["overall"]
        ratios = " | ".join(f"**{result['speed'][size]['ratio_median']:.2f}**" for size in SPEED_SIZES)
        lines.append(
            f"| `{name}` | {result.get('backend', 'onnxruntime')} | {_pct(o['mesh_median_iod'])} "
            f"| {_pct(o['iris_median_iod'])} | {ratios} |"
        )
    for name, result in r["models"].items():
        model = result.get("model", name)
        backend = result.get("backend", "onnxruntime")
        lines += ["", f"## `{name}`: {MODEL_TEXT.get(model, model)}, on {backend}", ""]
        lines += _accuracy_lines(result["accuracy"], r["clips"])
        lines += _speed_lines(result["speed"])
        lines += _network_lines(result.get("networks_ms") or {})
    return "\n".join(lines) + "\n"


def _accuracy_lines(acc: dict, clips: dict) -> list[str]:
    o = acc["overall"]
    lines = [
        "### Accuracy (native resolution, tracking mode; error / inter-ocular distance)",
        "",
        "Mesh: our 468 points vs the MediaPipe FaceMesh configuration that runs the same network "
        f"(`{o['mesh_reference']}`; per-frame median over points); for scale, also vs the other "
        "configuration (MediaPipe's two configurations differ from each other by "
        f"{_pct(o['mediapipe_refine_true_vs_false_mesh_median_iod'])} median). "
        "Iris: our iris centres vs MediaPipe `refine_landmarks=True` points 468/473 (mean of both eyes). "
        "Our crops sample at pixel centres (exact geometry); MediaPipe's ImageToTensor samples crop pixel "
        "u at the image point of its corner, (k − 1)/2 px away for a crop k image px per crop px, which "
        "is most of the mesh difference on large faces (with MediaPipe's convention the mesh matched to "
        "0.04% median).",
        "",
        "| clip | size | frames (ours / MP / compared) | mesh median | mesh vs other config | iris median "
        "| iris p95 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, c in acc["per_clip"].items():
        w, h = clips[name]
        lines.append(
            f"| {name} | {w}x{h} | {c['frames_face_ours']} / {c['frames_face_mediapipe']} / "
            f"{c['frames_compared']} "
            f"| {_pct(c['mesh_median_iod'])} | {_pct(c['mesh_other_config_median_iod'])} "
            f"| {_pct(c['iris_median_iod'])} | {_pct(c['iris_p95_iod'])} |"
        )
    lines.append(
        f"| **all** | | {o['frames_compared']} compared | **{_pct(o['mesh_median_iod'])}** "
        f"(p95 {_pct(o['mesh_p95_iod'])}) | {_pct(o['mesh_other_config_median_iod'])} "
        f"| **{_pct(o['iris_median_iod'])}** | {_pct(o['iris_p95_iod'])} |"
    )
    return lines


def _speed_lines(speed: dict) -> list[str]:
    lines = [
        "",
        "### Speed (ms per frame, whole landmark stage, one core)",
        "",
        "Ours: `FaceLandmarker(threads=1, model=..., backend=...)`, detector when needed. MediaPipe: "
        "`FaceMesh(refine_landmarks=True)` in video mode. Same letterboxed clip frames, rounds alternating "
        "between our models and MediaPipe.",
        "",
        "| frame size | frames | ours median | ours p95 | MediaPipe median | MediaPipe p95 "
        "| ratio (median) | ratio (p95) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, s in speed.items():
        lines.append(
            f"| {size} | {s['frames']} | {s['ours_median_ms']:.2f} | {s['ours_p95_ms']:.2f} | "
            f"{s['mediapipe_median_ms']:.2f} | {s['mediapipe_p95_ms']:.2f} | **{s['ratio_median']:.2f}** | "
            f"{s['ratio_p95']:.2f} |"
        )
    lines += [
        "",
        "Our per-stage medians (ms; mesh and iris include their crops; for the attention mesh, iris = "
        "region crops + heads): "
        + "; ".join(
            f"{size}: " + ", ".join(f"{k} {v:.2f}" for k, v in s["ours_stage_median_ms"].items())
            for size, s in speed.items()
        )
        + ".",
    ]
    return lines


def _network_lines(networks: dict) -> list[str]:
    if not networks:
        return []
    lines = [
        "",
        "### Bare networks, one thread (ms per call, median)",
        "",
        "Ours converted to ONNX, on this configuration's backend, vs MediaPipe's TFLite files in LiteRT "
        "(XNNPACK, float32), interleaved calls on random input (LiteRT cannot run the attention mesh's "
        "MediaPipe custom ops).",
        "",
        "| network | ours | LiteRT | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for name, t in networks.items():
        ours = t.get("ours", t.get("onnxruntime"))
        if "litert" in t:
            lines.append(f"| {name} | {ours:.2f} | {t['litert']:.2f} | {ours / t['litert']:.2f} |")
        else:
            lines.append(f"| {name} | {ours:.2f} | n/a | |")
    return lines


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


if __name__ == "__main__":
    sys.exit(main())
