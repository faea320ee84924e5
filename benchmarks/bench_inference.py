"""Landmark network inference: our ONNX conversions in onnxruntime vs MediaPipe's TFLite originals.

Both run on one CPU thread in the same process and are measured interleaved (one call of each in
turn), so machine noise hits both alike; the ratio ONNX / TFLite is the result that matters.
onnxruntime: intra_op_num_threads=1, ORT_ENABLE_ALL, CPUExecutionProvider.
TFLite: ai-edge-litert Interpreter, num_threads=1 (XNNPACK delegate, its default).
Inputs are prepared in each runtime's own layout beforehand (NCHW for ONNX, NHWC for TFLite).

    python benchmarks/bench_inference.py [--repeats 400] [--model-dir DIR] [--wheel PATH]

Writes benchmarks/results/inference.json and inference.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import machine_info
import numpy as np
import onnxruntime as ort
from machine_info import describe_machine

from dmask_live import models
from dmask_live.convert import CONVERTER_VERSION


def machine() -> dict:
    info = describe_machine(("numpy", "onnxruntime", "onnx", "openvino", "ai-edge-litert", "tflite"))
    libraries, load = info.pop("versions"), info.pop("load_average")
    return {**info, "libraries": libraries, "load_average_at_start": load}


def command_line(argv: list[str] | None) -> str:
    return " ".join(["python benchmarks/bench_inference.py", *(sys.argv[1:] if argv is None else argv)])


def onnx_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def tflite_runner(model: bytes, nhwc: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]

    def run() -> None:
        interpreter.set_tensor(index, nhwc)
        interpreter.invoke()

    return run


def onnx_runner(session: ort.InferenceSession, nchw: np.ndarray):
    feed = {session.get_inputs()[0].name: nchw}

    def run() -> None:
        session.run(None, feed)

    return run


def openvino_runner(path: Path, nchw: np.ndarray):
    """The default backend on CPUs with native bfloat16 (dmask_live.inference.OpenVinoModel)."""
    from dmask_live.inference import OpenVinoModel, cpu_has_bf16

    model = OpenVinoModel(path, threads=1, precision="bf16" if cpu_has_bf16() else "f32")

    def run() -> None:
        model(nchw)

    return run


def measure(runners: dict, repeats: int, warmup: int = 30) -> dict:
    """Interleaved timing of several callables; per-call ms statistics for each."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    samples: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(repeats):
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            samples[key].append((time.perf_counter() - start) * 1e3)
    return {key: summarize(values) for key, values in samples.items()}


def summarize(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 4),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 4),
        "min_ms": round(ordered[0], 4),
        "n": len(ordered),
    }


def inputs_for(name: str, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    low, high = models.INPUT_RANGES[name]
    nhwc = rng.uniform(low, high, (batch, *models.INPUT_SIZES[name], 3)).astype(np.float32)
    return nhwc, np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))


def bench_model(name: str, tflite: bytes, onnx_path: Path, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    session = onnx_session(onnx_path)
    nhwc, nchw = inputs_for(name, 1, rng)
    runners = {
        "tflite": tflite_runner(tflite, nhwc),
        "onnx": onnx_runner(session, nchw),
        "openvino": openvino_runner(onnx_path, nchw),
    }
    if name == "iris_landmark":  # both eyes: one batch-2 call vs two batch-1 calls
        nhwc2, nchw2 = inputs_for(name, 2, rng)
        onnx_single = runners["onnx"]
        tflite_single = runners["tflite"]
        runners = {
            **runners,
            "tflite_2x_batch1": lambda: (tflite_single(), tflite_single()),
            "onnx_2x_batch1": lambda: (onnx_single(), onnx_single()),
            "onnx_batch2": onnx_runner(session, nchw2),
            "openvino_batch2": openvino_runner(onnx_path, nchw2),
        }
        del nhwc2
    result = measure(runners, repeats)
    result["onnx_over_tflite_median"] = round(result["onnx"]["median_ms"] / result["tflite"]["median_ms"], 3)
    result["openvino_over_tflite_median"] = round(
        result["openvino"]["median_ms"] / result["tflite"]["median_ms"], 3
    )
    if name == "iris_landmark":
        result["onnx_batch2_over_tflite_2x_batch1_median"] = round(
            result["onnx_batch2"]["median_ms"] / result["tflite_2x_batch1"]["median_ms"], 3
        )
        result["openvino_batch2_over_tflite_2x_batch1_median"] = round(
            result["openvino_batch2"]["median_ms"] / result["tflite_2x_batch1"]["median_ms"], 3
        )
        result["onnx_batch2_over_onnx_2x_batch1_median"] = round(  # what batching both eyes gains
            result["onnx_batch2"]["median_ms"] / result["onnx_2x_batch1"]["median_ms"], 3
        )
    return result


def bench_attention(paths: dict[str, Path], repeats: int) -> dict:
    """The attention mesh's two graphs in onnxruntime (LiteRT cannot run its MediaPipe custom ops)."""
    rng = np.random.default_rng(0)
    runners = {}
    for name in models.ATTENTION_PARTS:
        session = onnx_session(paths[name])
        feeds = {
            i.name: rng.random([1 if isinstance(d, str) else d for d in i.shape], dtype=np.float32)
            for i in session.get_inputs()
        }
        runners[name] = lambda session=session, feeds=feeds: session.run(None, feeds)
    return measure(runners, repeats)


def markdown(report: dict) -> str:
    info = report["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    lines = [
        "# Landmark network inference: ONNX (onnxruntime, OpenVINO) vs TFLite (ai-edge-litert)",
        "",
        f"Machine: {info['cpu']}, {info['logical_cores']} logical cores, {info['os']}, "
        f"Python {info['python']}.",
        f"Libraries: {libs}. Load average at start: {info['load_average_at_start']}.",
        f"ONNX files: dmask-live converter {report['converter_version']}.",
        "",
        "One thread each (onnxruntime ORT_ENABLE_ALL, intra_op 1, float32; OpenVINO, the same ONNX files, "
        "in bfloat16 where the CPU has it natively, the landmark stage's default there; "
        "TFLite num_threads=1, XNNPACK, float32), "
        f"interleaved calls, {report['repeats']} repeats after warm-up. Times in ms per call.",
        "",
        "| model | case | median | p95 | min |",
        "|---|---|---:|---:|---:|",
    ]
    for name, result in report["models"].items():
        for case, stats in result.items():
            if isinstance(stats, dict):
                cells = [f"{stats[k]:.3f}" for k in ("median_ms", "p95_ms", "min_ms")]
                lines.append(f"| {name} | {case} | {' | '.join(cells)} |")
    lines += ["", "Ratios (median, lower is better for ours):", ""]
    for name, result in report["models"].items():
        lines.append(f"- {name}: ONNX / TFLite = {result['onnx_over_tflite_median']}")
        lines.append(f"- {name}: OpenVINO / TFLite = {result['openvino_over_tflite_median']}")
        if "onnx_batch2_over_tflite_2x_batch1_median" in result:
            ratio = result["onnx_batch2_over_tflite_2x_batch1_median"]
            lines.append(f"- {name}: ONNX batch 2 / TFLite 2 x batch 1 = {ratio}")
            ratio = result["openvino_batch2_over_tflite_2x_batch1_median"]
            lines.append(f"- {name}: OpenVINO batch 2 / TFLite 2 x batch 1 = {ratio}")
            gain = result["onnx_batch2_over_onnx_2x_batch1_median"]
            lines.append(f"- {name}: ONNX batch 2 / ONNX 2 x batch 1 = {gain} (the gain of batching)")
    if report.get("attention_onnx_only"):
        lines += ["", "Attention mesh (onnxruntime only: LiteRT lacks its MediaPipe custom ops):", ""]
        for name, stats in report["attention_onnx_only"].items():
            lines.append(f"- {name}: median {stats['median_ms']:.3f} ms, p95 {stats['p95_ms']:.3f} ms")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--model-dir", type=Path, default=None, help="built ONNX models (default: the usual)")
    parser.add_argument("--wheel", type=Path, default=None, help="mediapipe wheel with the TFLite originals")
    parser.add_argument("--no-write", action="store_true", help="print only, do not write results/")
    args = parser.parse_args(argv)

    paths = models.load_model_paths(args.model_dir)
    wheel = args.wheel or models.download_wheel(Path(tempfile.gettempdir()) / "dmask-live-wheel")
    tflite = models._read_wheel(wheel)
    report = {
        "machine": machine(),
        "repeats": args.repeats,
        "command": command_line(argv),
        "converter_version": CONVERTER_VERSION,
        "models": {},
    }
    for name in models.WHOLE_NETWORKS:
        report["models"][name] = bench_model(name, tflite[name], paths[name], args.repeats)
        print(name, json.dumps(report["models"][name]), flush=True)
    report["attention_onnx_only"] = bench_attention(paths, args.repeats)
    print("attention", json.dumps(report["attention_onnx_only"]), flush=True)
    machine_info.publish("inference", report, markdown(report), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
