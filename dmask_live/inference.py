"""onnxruntime sessions for the landmark networks, with options chosen once.

Every network in the package runs through :class:`OnnxModel`. Session options are explicit:

* one intra-op thread by default — the real-time pipeline runs several stages (landmarks,
  tracker, renderer, encoder) in parallel on a 2-core machine, so each stage gets one core
  instead of fighting over a thread pool;
* one inter-op thread and sequential execution — these graphs are chains, nothing to overlap;
* no spinning of idle pool threads (spinning burns the cores the other stages need);
* ``ORT_ENABLE_ALL`` graph optimisations.

The execution provider is chosen once per process: CUDA when onnxruntime-gpu sees a GPU,
else CPU, and the choice is logged once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


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
