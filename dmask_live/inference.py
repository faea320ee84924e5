"""Inference backends for the landmark networks, chosen once per process.

Two backends run the same converted ONNX files (:func:`open_network` picks one):

* ``onnxruntime`` — :class:`OnnxModel`, float32, CUDA with the ``gpu`` extra and a GPU, else CPU.
  The reference: the conversion tests check its outputs against MediaPipe's TFLite models.
* ``openvino`` — :class:`OpenVinoModel`, OpenVINO's CPU plugin (bfloat16 where the CPU has it,
  else float32). Chosen by default on CPUs with
  native bfloat16 arithmetic (AVX-512 BF16 or AMX, e.g. this project's AMD EPYC benchmark
  machine), where OpenVINO runs the convolutions in bfloat16 with float32 accumulation and
  the landmark stage gets ~1.4x faster than float32 onnxruntime. The price is precision:
  landmark points differ from float32 by ~0.5 % (mesh) and ~0.2 % (iris centres) of the
  inter-ocular distance, median (benchmarks/results/landmarks.md gives the agreement with
  MediaPipe for both backends). ``openvino-f32`` keeps OpenVINO in float32.

``DMASK_INFERENCE=onnxruntime|openvino|openvino-f32`` overrides the choice (``auto`` or unset:
the default above). A named backend that cannot load is an error that says why; the automatic
choice falls back to onnxruntime and logs why. OpenVINO's Python package also ships a model
converter with opt-in telemetry; dmask-live only reads and compiles ONNX files, which sends
nothing (a test runs the backend with network connections forbidden).

onnxruntime session options are explicit:

* one intra-op thread by default — the real-time pipeline runs several stages (landmarks,
  tracker, renderer, encoder) in parallel on a 2-core machine, so each stage gets one core
  instead of fighting over a thread pool;
* one inter-op thread and sequential execution — these graphs are chains, nothing to overlap;
* no spinning of idle pool threads (spinning burns the cores the other stages need);
* ``ORT_ENABLE_ALL`` graph optimisations.

The execution provider is chosen once per process: CUDA when onnxruntime-gpu sees a GPU,
else CPU, and the choice is logged once. OpenVINO gets the same thread count, one stream, the
latency hint and no CPU pinning (the other stages share the cores).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
BACKENDS = ("onnxruntime", "openvino", "openvino-f32")
BACKEND_ENV_VAR = "DMASK_INFERENCE"


@functools.lru_cache(maxsize=1)
def default_providers() -> tuple[str, ...]:
    """CUDA (then CPU as fallback) when a GPU build and a GPU are present, else CPU only."""
    available = ort.get_available_providers()
    if CUDA in available and ort.get_device().upper() == "GPU":
        chosen: tuple[str, ...] = (CUDA, CPU)
    else:
        chosen = (CPU,)
    log.info("onnxruntime %s: using %s (available: %s)", ort.__version__, chosen[0], ", ".join(available))
    return chosen


def session_options(threads: int = 1) -> ort.SessionOptions:
    """The one place where session options are set (see the module docstring for why)."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not ours to show
    return options


def create_session(
    path: str | Path, threads: int = 1, providers: Sequence[str] | None = None
) -> ort.InferenceSession:
    """An inference session for the ONNX file at ``path``."""
    chosen = list(providers) if providers is not None else list(default_providers())
    return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=chosen)


class OnnxModel:
    """A network: ``model(x, ...) -> list of outputs`` in the graph's output order.

    Inputs are given positionally, in the graph's input order (most networks have one).
    """

    def __init__(self, path: str | Path, threads: int = 1, providers: Sequence[str] | None = None):
        self.path = Path(path)
        self.backend = "onnxruntime"
        self.session = create_session(self.path, threads=threads, providers=providers)
        inputs = self.session.get_inputs()
        if not inputs:
            raise ValueError(f"{self.path.name}: the graph has no inputs")
        self.input_names = [i.name for i in inputs]
        self.input_name = self.input_names[0]
        self.input_shape = tuple(inputs[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *xs: np.ndarray) -> list[np.ndarray]:
        if len(xs) != len(self.input_names):
            raise ValueError(f"{self.path.name}: expected {len(self.input_names)} inputs, got {len(xs)}")
        return self.session.run(self.output_names, dict(zip(self.input_names, xs, strict=True)))


class OpenVinoModel:
    """The same call as :class:`OnnxModel`, run by OpenVINO's CPU plugin.

    ``precision`` is OpenVINO's inference precision: ``"bf16"`` (needs native bfloat16, see
    :func:`cpu_has_bf16`) or ``"f32"``. Each input shape is compiled once, on first use, as a
    static graph (OpenVINO's static graphs are the fast ones; the pipeline's shapes are fixed).
    """

    def __init__(self, path: str | Path, threads: int = 1, precision: str = "bf16"):
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        if precision not in ("bf16", "f32"):
            raise ValueError(f"precision must be 'bf16' or 'f32', got {precision!r}")
        self.path = Path(path)
        self.precision = precision
        self.backend = f"openvino-{precision}"
        self._config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
            "ENABLE_CPU_PINNING": False,
        }
        self._model = _openvino_core().read_model(str(self.path))
        if not self._model.inputs:
            raise ValueError(f"{self.path.name}: the graph has no inputs")
        self.input_names = [i.get_any_name() for i in self._model.inputs]
        self.input_name = self.input_names[0]
        self.output_names = [o.get_any_name() for o in self._model.outputs]
        self._compiled: dict[tuple, _CompiledShape] = {}

    def __call__(self, *xs: np.ndarray) -> list[np.ndarray]:
        if len(xs) != len(self.input_names):
            raise ValueError(f"{self.path.name}: expected {len(self.input_names)} inputs, got {len(xs)}")
        for name, x in zip(self.input_names, xs, strict=True):
            if not isinstance(x, np.ndarray) or x.dtype != np.float32:
                raise ValueError(f"{self.path.name}: input {name!r} must be a float32 array")
        shapes = tuple(x.shape for x in xs)
        compiled = self._compiled.get(shapes) or self._compile(shapes)
        for buffer, x in zip(compiled.inputs, xs, strict=True):
            np.copyto(buffer, x)
        compiled.request.infer()  # inputs already in place: skips OpenVINO's per-call input wrapping
        # The request reuses its output memory on the next call: hand out copies.
        return [output.copy() for output in compiled.outputs]

    def _compile(self, shapes: tuple) -> _CompiledShape:
        if len(self._compiled) >= 8:  # a stream of ever-new shapes must not grow memory forever
            self._compiled.clear()
        self._model.reshape({i: list(shape) for i, shape in enumerate(shapes)})
        request = _openvino_core().compile_model(self._model, "CPU", self._config).create_infer_request()
        compiled = _CompiledShape(
            request=request,
            inputs=[request.get_input_tensor(i).data for i in range(len(self.input_names))],
            outputs=[request.get_output_tensor(i).data for i in range(len(self.output_names))],
        )
        self._compiled[shapes] = compiled
        return compiled


@dataclass(frozen=True)
class _CompiledShape:
    """One input shape compiled: its request and numpy views of the request's own tensors."""

    request: object
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]


@functools.lru_cache(maxsize=1)
def _openvino_core():
    import openvino

    return openvino.Core()


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can compute in bfloat16 natively here (False without OpenVINO)."""
    try:
        capabilities = _openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # not installed, or no usable CPU plugin: onnxruntime it is
        log.info("OpenVINO unavailable (%s): %s", type(exc).__name__, exc)
        return False
    return "BF16" in capabilities


def requested_backend() -> str | None:
    """``$DMASK_INFERENCE`` when it names a backend, None for unset or ``auto``."""
    chosen = os.environ.get(BACKEND_ENV_VAR, "").strip().lower()
    if chosen in ("", "auto"):
        return None
    if chosen not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV_VAR} must be auto or one of {', '.join(BACKENDS)}, got {chosen!r}")
    return chosen


@functools.lru_cache(maxsize=1)
def default_backend() -> str:
    """onnxruntime on a GPU or without native bfloat16, else openvino (see the module docstring)."""
    if default_providers()[0] == CUDA or not cpu_has_bf16():
        chosen = "onnxruntime"
    else:
        chosen = "openvino"
    log.info("inference backend: %s", chosen)
    return chosen


Network = OnnxModel | OpenVinoModel


def open_network(
    path: str | Path, threads: int = 1, providers: Sequence[str] | None = None, backend: str | None = None
) -> Network:
    """The network at ``path`` on ``backend`` (None: ``$DMASK_INFERENCE``, else the default).

    Explicit onnxruntime ``providers`` mean onnxruntime. A backend that was asked for and fails
    raises; the default one falls back to onnxruntime, and if that fails too the error lists both.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    asked = backend or requested_backend() or ("onnxruntime" if providers is not None else None)
    chosen = asked or default_backend()
    if chosen == "onnxruntime":
        return OnnxModel(path, threads=threads, providers=providers)
    precision = "bf16" if chosen == "openvino" and cpu_has_bf16() else "f32"
    try:
        return OpenVinoModel(path, threads=threads, precision=precision)
    except Exception as exc:
        if asked:
            reason = f"{type(exc).__name__}: {exc}"
            raise RuntimeError(f"{Path(path).name}: backend {chosen} failed: {reason}") from exc
        failure = f"{chosen}: {type(exc).__name__}: {exc}"
    log.warning("inference backend %s; falling back to onnxruntime", failure)
    try:
        return OnnxModel(path, threads=threads, providers=providers)
    except Exception as exc:
        raise RuntimeError(
            f"{Path(path).name}: no inference backend could load it: {failure}; "
            f"onnxruntime: {type(exc).__name__}: {exc}"
        ) from exc
