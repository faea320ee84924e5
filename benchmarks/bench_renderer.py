"""Benchmark of the avatar renderer: time per frame including read-back, against anchors.

For each output size the renderer draws a sequence of varied states (head pose, gaze, lids,
expression: every frame's vertices differ, as when tracking a real face) and reads each frame back
as a (H, W, 3) uint8 array. Two anchors measured in the same run make the numbers comparable
across machines:

* ``gl_floor``: clear + read-back of the same framebuffer (the least any GL frame can cost here);
* ``cpu_anchor``: a fixed NumPy workload (copy + sum of a 640x480x3 frame, 20 times).

    python benchmarks/bench_renderer.py [--frames 300] [--sizes 640x480,1280x720]

writes benchmarks/results/renderer.json and renderer.md. The target is <= 5 ms per 640x480 frame
on Mesa llvmpipe (CPU rendering).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from machine_info import describe_machine

from dmask_live import face_model as fm
from dmask_live.renderer import AvatarRenderer
from dmask_live.types import AvatarState

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS_640 = 5.0


def machine(gl_renderer: str) -> dict:
    info = describe_machine(("numpy", "moderngl"))
    return {"cpu": info["cpu"], "cores": info["logical_cores"], "os": info["os"], "python": info["python"],
            **info["versions"], "gl_renderer": gl_renderer, "load_average_1_5_15": info["load_average"]}


def states(count: int, size: tuple[int, int], seed: int = 0) -> list[AvatarState]:
    """Varied tracked states with the face about 45% of the frame height."""
    rng = np.random.default_rng(seed)
    model = fm.load_face_model()
    width, height = size
    height_units = float(np.ptp(model.vertices[:, 1]))
    out = []
    for i in range(count):
        t = i / 30.0
        out.append(AvatarState(
            tracked=True,
            head_pose_deg=np.array([20 * np.sin(t), 10 * np.sin(0.7 * t), 5 * np.sin(0.3 * t)], np.float32),
            translation=np.array([width / 2 + 20 * np.sin(t), height / 2], np.float32),
            scale=0.45 * height / height_units,
            expression=rng.normal(0, 0.5, model.num_expressions).astype(np.float32),
            eyelids=np.full((2, 2), 0.5 + 0.5 * abs(np.sin(2 * t)), np.float32),
            gaze_deg=np.tile(np.array([15 * np.sin(3 * t), 8 * np.cos(3 * t)], np.float32), (2, 1)),
            image_size=size,
            timestamp=t,
        ))
    return out


def timed(fn, repeats: int) -> np.ndarray:
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times[i] = (time.perf_counter() - start) * 1000.0
    return times


def summary(times: np.ndarray) -> dict:
    return {
        "median_ms": round(float(np.median(times)), 3),
        "p90_ms": round(float(np.percentile(times, 90)), 3),
        "mean_ms": round(float(times.mean()), 3),
        "frames": int(times.size),
    }


def cpu_anchor(repeats: int) -> np.ndarray:
    frame = np.random.default_rng(1).integers(0, 255, (480, 640, 3), np.uint8)

    def work(_):
        for _ in range(20):
            frame.copy().sum()

    return timed(work, repeats)


def bench_size(size: tuple[int, int], frames: int) -> dict:
    sequence = states(frames, size)
    with AvatarRenderer(*size) as renderer:
        for state in sequence[:10]:  # warm-up: shader compilation, first allocations
            renderer.render(state)
        render = timed(lambda i: renderer.render(sequence[i]), frames)
        untracked = AvatarState.untracked(size)
        neutral = timed(lambda i: renderer.render(untracked), frames)
        fbo = renderer._fbo
        frame = np.empty((size[1], size[0], 3), np.uint8)

        def floor(_):
            with renderer.ctx:  # as render() does: make the renderer's context current
                fbo.use()
                fbo.clear(0.5, 0.5, 0.5, 1.0, depth=1.0)
                fbo.read_into(frame, components=3, alignment=1)

        gl_floor = timed(floor, frames)
        with renderer.ctx:
            gl_renderer = renderer.ctx.info["GL_RENDERER"]
        static = timed(lambda i: renderer.render(sequence[0]), frames)
    return {
        "size": f"{size[0]}x{size[1]}",
        "render": summary(render),
        "render_same_state": summary(static),
        "untracked_neutral": summary(neutral),
        "gl_floor": summary(gl_floor),
        "ratio_render_to_gl_floor": round(float(np.median(render) / np.median(gl_floor)), 2),
        "gl_renderer": gl_renderer,
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }


def write_markdown(path: Path, result: dict) -> None:
    m = result["machine"]
    lines = [
        "# Renderer benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, numpy {m['numpy']}, "
        f"moderngl {m['moderngl']}, GL: {m['gl_renderer']}; load average (1/5/15 min) at the end "
        f"{m['load_average_1_5_15']}.",
        "",
        f"Command: `{result['command']}`. CPU anchor (NumPy copy+sum of a 640x480 frame x20): "
        f"{result['cpu_anchor']['median_ms']} ms median.",
        "",
        "| size | render median (ms) | p90 | / GL floor | / CPU anchor | GL floor (clear+read) "
        "| neutral frame |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["sizes"]:
        lines.append(
            f"| {row['size']} | {row['render']['median_ms']} | {row['render']['p90_ms']} | "
            f"{row['ratio_render_to_gl_floor']} | {row['ratio_render_to_cpu_anchor']} | "
            f"{row['gl_floor']['median_ms']} | {row['untracked_neutral']['median_ms']} |"
        )
    verdict = "meets" if result["meets_target_640x480"] else "misses"
    lines += ["", f"Target: <= {TARGET_MS_640} ms per 640x480 frame incl. read-back on llvmpipe: {verdict} "
              f"(median {result['render_640x480_median_ms']} ms).",
              "Timings on a shared 2-core machine are noisy; compare the ratios across runs.", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--sizes", default="640x480,1280x720")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    anchor = summary(cpu_anchor(max(30, args.frames // 5)))
    rows = []
    for size in sizes:
        row = bench_size(size, args.frames)
        row["ratio_render_to_cpu_anchor"] = round(row["render"]["median_ms"] / anchor["median_ms"], 2)
        rows.append(row)
        print(f"{row['size']}: render {row['render']['median_ms']} ms median "
              f"(GL floor {row['gl_floor']['median_ms']} ms)", file=sys.stderr)
    gl = rows[0]["gl_renderer"] if rows else "n/a"
    vga = next((r for r in rows if r["size"] == "640x480"), None)
    result = {
        "topic": "renderer",
        "command": "python benchmarks/bench_renderer.py " + " ".join(sys.argv[1:]),
        "machine": machine(gl),
        "cpu_anchor": anchor,
        "sizes": [{k: v for k, v in r.items() if k != "gl_renderer"} for r in rows],
        "render_640x480_median_ms": vga["render"]["median_ms"] if vga else None,
        "target_ms_640x480": TARGET_MS_640,
        "meets_target_640x480": bool(vga and vga["render"]["median_ms"] <= TARGET_MS_640),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "renderer.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(RESULTS / "renderer.md", result)
    print((RESULTS / "renderer.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
