"""Benchmark of ``dmask-live vcam``: source-to-sink latency and the frame rate held.

For each size (640x480, 1280x720) a clip of the astronaut (scikit-image) moving a little is
played like a camera (file source paced at its 30 fps clock) through the real vcam loop into
the ``null`` sink, twice in the same run:

* anchor: a passthrough masker that returns the neutral frame (decode, hand-over, sink cost);
* pipeline: the real ``MaskPipeline`` (landmarks, tracker, avatar rendering, ocular metrics).

Latency is per frame from its arrival at the reader thread (its camera time) to the return of
``sink.send``; frames the loop never took (newest frame wins) are counted as dropped, not timed.

    python benchmarks/bench_vcam.py [--seconds 4] [--sizes 640x480,1280x720]

writes benchmarks/results/vcam.json and vcam.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from machine_info import describe_machine

from dmask_live import vcam
from dmask_live.sinks import NullSink
from dmask_live.sources import open_file

RESULTS = Path(__file__).resolve().parent / "results"
SOURCE_FPS = 30


def make_clip(path: Path, size: tuple[int, int], frames: int) -> Path:
    """The astronaut's head filling about half the frame height, with small head motions."""
    from skimage import data

    width, height = size
    face = np.ascontiguousarray(data.astronaut()[0:320, 60:420])  # head and shoulders
    scale = 0.9 * height / face.shape[0]
    face = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(SOURCE_FPS, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for i in range(frames):
            canvas = np.full((height, width, 3), 40, np.uint8)
            dx = int(width / 2 - face.shape[1] / 2 + 0.03 * width * np.sin(i / 6))
            dy = int(height / 2 - face.shape[0] / 2 + 0.02 * height * np.cos(i / 9))
            canvas[dy:dy + face.shape[0], dx:dx + face.shape[1]] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def run_once(clip: Path, size: tuple[int, int], make_masker) -> dict:
    source = open_file(clip)
    sink = NullSink(width=size[0], height=size[1], fps=source.fps)
    config = vcam.LoopConfig(output_size=size, fps=source.fps)
    stats = vcam.run_loop(lambda: open_file(clip), sink, make_masker, config,
                          first_source=source, retry=False)
    out = stats.summary()
    out["fps_held_ratio"] = round(out["fps_sent"] / SOURCE_FPS, 3) if out["fps_sent"] else None
    out["drop_fraction"] = round(stats.dropped / max(1, stats.received), 3)
    return out


class TimedMasker:
    """Wraps a masker to collect its own ``timings_ms['total']`` (the mask cost inside the latency)."""

    def __init__(self, masker) -> None:
        self.masker, self.totals, self.cpu = masker, [], []

    def process(self, rgb, timestamp):
        start, start_cpu = time.perf_counter(), time.thread_time()
        masked = self.masker.process(rgb, timestamp)
        self.totals.append((time.perf_counter() - start) * 1000.0)
        # CPU time of this thread: less sensitive to other processes than wall time
        # (llvmpipe's render threads are not in it)
        self.cpu.append((time.thread_time() - start_cpu) * 1000.0)
        return masked

    def neutral_frame(self, size):
        return self.masker.neutral_frame(size)

    def close(self):
        self.masker.close()


def warm_pipeline(size: tuple[int, int], clip: Path):
    """Build the pipeline and run it on a few frames (Numba compiles, ONNX warms up) before timing."""
    masker = vcam.pipeline_masker_factory(size)()
    source = open_file(clip, realtime=False)
    for _ in range(10):
        frame = source.read()
        masker.process(frame.rgb, frame.timestamp)
    source.close()
    if hasattr(masker, "reset"):
        masker.reset()
    return masker


def bench_size(size: tuple[int, int], seconds: float, workdir: Path) -> dict:
    clip = make_clip(workdir / f"clip_{size[0]}x{size[1]}.mp4", size, int(seconds * SOURCE_FPS))
    anchor = TimedMasker(vcam.NeutralMasker(size))
    result = {"size": f"{size[0]}x{size[1]}", "source_fps": SOURCE_FPS,
              "anchor_neutral_masker": run_once(clip, size, lambda: anchor)}
    result["anchor_neutral_masker"]["mask_ms_p50"] = round(float(np.median(anchor.totals)), 3)
    try:
        pipeline = TimedMasker(warm_pipeline(size, clip))
    except vcam.MaskerUnavailableError as exc:
        result["pipeline"] = {"available": False, "reason": str(exc).splitlines()[0]}
        return result
    tracked = []
    original = pipeline.process

    def process(rgb, timestamp):
        masked = original(rgb, timestamp)
        tracked.append(bool(masked.state.tracked))
        return masked

    pipeline.process = process
    run = run_once(clip, size, lambda: pipeline)
    run["mask_ms_p50"] = round(float(np.median(pipeline.totals)), 2)
    run["mask_ms_p95"] = round(float(np.percentile(pipeline.totals, 95)), 2)
    run["mask_thread_cpu_ms_p50"] = round(float(np.median(pipeline.cpu)), 2)
    run["tracked_fraction"] = round(float(np.mean(tracked)), 3) if tracked else None
    run["available"] = True
    anchor_p50 = result["anchor_neutral_masker"]["latency_ms_p50"]
    run["latency_p50_ratio_to_anchor"] = round(run["latency_ms_p50"] / anchor_p50, 1) if anchor_p50 else None
    run["added_latency_ms_p50"] = round(run["latency_ms_p50"] - anchor_p50, 2)  # the mask's share
    result["pipeline"] = run
    return result


def machine() -> dict:
    info = describe_machine(("numpy", "av", "opencv-python-headless", "onnxruntime", "moderngl", "numba",
                             "pyvirtualcam"))
    # other users of a shared machine skew timings: the load at the end of the run says how much
    return {"cpu": info["cpu"], "cores": info["logical_cores"], "os": info["os"],
            "versions": {"python": info["python"], **info["versions"]},
            "load_average_1_5_15_min_at_end": info["load_average"]}


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# vcam benchmark: source-to-sink latency and frame rate held",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, "
        f"load average at end {m['load_average_1_5_15_min_at_end']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        "",
        f"Command: `{report['command']}` ({report['seconds']} s per run, file source paced at "
        f"{SOURCE_FPS} fps, null sink). Latency = frame arrival at the reader → `sink.send` returned. "
        "Anchor = the same loop with a passthrough masker that returns the neutral frame.",
        "",
        "| size | masker | latency p50 ms | latency p95 ms | mask p50 ms | fps sent | held / source | "
        "dropped | tracked | p50 / anchor | p50 − anchor ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        a = r["anchor_neutral_masker"]
        lines.append(f"| {r['size']} | anchor (neutral) | {a['latency_ms_p50']} | {a['latency_ms_p95']} | "
                     f"{a['mask_ms_p50']} | {a['fps_sent']} | {a['fps_held_ratio']} | {a['dropped']} "
                     "| - | 1.0 | 0 |")
        p = r["pipeline"]
        if not p.get("available"):
            lines.append(f"| {r['size']} | pipeline | not available here: {p['reason']} | | | | | | | | |")
            continue
        lines.append(f"| {r['size']} | pipeline | {p['latency_ms_p50']} | {p['latency_ms_p95']} | "
                     f"{p['mask_ms_p50']} | {p['fps_sent']} | {p['fps_held_ratio']} | {p['dropped']} | "
                     f"{p['tracked_fraction']} | {p['latency_p50_ratio_to_anchor']} | "
                     f"{p['added_latency_ms_p50']} |")
    cpu = ", ".join(f"{r['size']} {r['pipeline'].get('mask_thread_cpu_ms_p50')}" for r in report["results"])
    lines += ["", f"Mask-thread CPU ms p50 (less sensitive to other load than wall time): {cpu}",
              "", "Timings on a shared 2-core machine are noisy (see the load average); compare the ratios "
              "to the anchor.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length per run")
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_vcam_") as tmp:
        results = [bench_size(size, args.seconds, Path(tmp)) for size in sizes]
    command = " ".join(["python benchmarks/bench_vcam.py", *(sys.argv[1:] if argv is None else argv)])
    report = {"topic": "vcam", "machine": machine(), "seconds": args.seconds, "command": command,
              "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vcam.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "vcam.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
