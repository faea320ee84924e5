"""What the inference backend changes in the tracked signs: float32 onnxruntime vs the default.

    python benchmarks/bench_backends.py [--frames 90]

The default backend (OpenVINO in bfloat16 on CPUs with native bfloat16) computes the landmark
networks in lower precision than the float32 reference. This runs the whole tracking path
(landmarks → tracker) on the shared clips with each backend and reports, per clip:

* the per-frame difference between the two backends' tracked gaze (degrees) and lid openness;
* each backend's frame-to-frame gaze jitter: RMS of the second difference of the gaze over
  √6 (the standard deviation of white noise), which on a real clip is mostly the landmark
  networks' own noise and the eye's own small movements.

A precision loss that mattered clinically would show as more jitter, or as differences near
the signs' sizes (a few degrees of deviation, a tenth of lid openness). Writes
benchmarks/results/backends.json and backends.md; skips without ../shared/data/videos.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import av
import machine_info
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "onnxruntime"
WARM_UP_FRAMES = 15  # the tracker's first frames settle its fit; not scored (as bench_fidelity)


def track_clip(landmarker, path: Path, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaze (F, 2, 2) degrees, eyelids (F, 2, 2)) of the first ``frames`` frames, warm-up dropped."""
    from dmask_live.tracker import FaceTracker

    tracker = FaceTracker()
    landmarker.reset()
    gaze, lids = [], []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= frames:
                break
            state = tracker.update(landmarker.process(frame.to_ndarray(format="rgb24")), float(frame.time))
            gaze.append(np.array(state.gaze_deg, np.float64) if state.tracked else np.full((2, 2), np.nan))
            lids.append(np.array(state.eyelids, np.float64) if state.tracked else np.full((2, 2), np.nan))
    return np.array(gaze)[WARM_UP_FRAMES:], np.array(lids)[WARM_UP_FRAMES:]


def jitter(gaze: np.ndarray) -> float:
    """Frame-to-frame gaze noise (degrees): RMS second difference / √6."""
    second = np.diff(gaze, 2, axis=0)
    return float(np.sqrt(np.nanmean(second**2) / 6.0))


def compare(videos: list[Path], frames: int) -> tuple[str, dict]:
    from dmask_live.landmarks import FaceLandmarker

    default = FaceLandmarker()
    reference = FaceLandmarker(backend=REFERENCE)
    clips = {}
    for path in videos:
        gaze_ref, lids_ref = track_clip(reference, path, frames)
        gaze, lids = track_clip(default, path, frames)
        clips[path.name] = {
            "frames_scored": int(len(gaze)),
            "gaze_difference_median_deg": float(np.nanmedian(np.abs(gaze - gaze_ref))),
            "gaze_difference_p95_deg": float(np.nanpercentile(np.abs(gaze - gaze_ref), 95)),
            "lid_difference_median": float(np.nanmedian(np.abs(lids - lids_ref))),
            "jitter_reference_deg": jitter(gaze_ref),
            "jitter_default_deg": jitter(gaze),
        }
    return default.backend, clips


def summary(clips: dict) -> dict:
    keys = next(iter(clips.values())).keys() - {"frames_scored"}
    return {key: float(np.median([c[key] for c in clips.values()])) for key in sorted(keys)}


def render_markdown(result: dict) -> str:
    m, s = result["machine"], result["summary"]
    lines = [
        "# Inference backends: what the default's precision changes in the tracked signs",
        "",
        f"Run {result['date_utc']} UTC with `{result['command']}` ({result['seconds']} s).",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['os']}, Python {m['python']}; "
        f"onnxruntime {m['versions']['onnxruntime']}, OpenVINO {m['versions']['openvino']}; load average "
        f"at the start {m['load_average']}.",
        "",
        f"Default backend here: **{result['default_backend']}**; reference: {REFERENCE} (float32). "
        f"Landmarks → tracker on each clip's first {result['frames']} frames "
        f"(the first {WARM_UP_FRAMES} not scored).",
        "",
        "| clip | gaze difference median / p95 (deg) | lid difference median | gaze jitter reference / "
        "default (deg) |",
        "| --- | --- | --- | --- |",
    ]
    lines += [_row(name, c) for name, c in result["clips"].items()]
    lines += [
        _row("**median**", s),
        "",
        "Lid openness: 1 = the canonical neutral opening, 0 = shut. Jitter: RMS second difference / √6.",
    ]
    return "\n".join(lines) + "\n"


def _row(label: str, c: dict) -> str:
    return (
        f"| {label} | {c['gaze_difference_median_deg']:.2f} / {c['gaze_difference_p95_deg']:.2f} "
        f"| {c['lid_difference_median']:.3f} "
        f"| {c['jitter_reference_deg']:.2f} / {c['jitter_default_deg']:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90, help="frames per clip (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print only, keep results/ unchanged")
    args = parser.parse_args(argv)
    shared = Path(os.environ.get("DMASK_SHARED_DATA", ROOT.parent / "shared" / "data"))
    videos = sorted((shared / "videos").glob("*.mp4"))
    if not videos:
        print(f"skipped: needs the shared test videos in {shared / 'videos'} (absent on this machine)")
        return 0
    start = time.perf_counter()
    machine = machine_info.describe_machine(("numpy", "onnxruntime", "openvino"))
    default_backend, clips = compare(videos, args.frames)
    result = {
        "topic": "backends",
        "command": " ".join(["python benchmarks/bench_backends.py", *(argv or sys.argv[1:])]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": machine,
        "default_backend": default_backend,
        "reference_backend": REFERENCE,
        "frames": args.frames,
        "clips": clips,
        "summary": summary(clips),
        "seconds": round(time.perf_counter() - start, 1),
    }
    machine_info.publish("backends", result, render_markdown(result), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
