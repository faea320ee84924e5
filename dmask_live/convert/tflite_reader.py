"""Read a TFLite flatbuffer into plain Python objects (one subgraph, float inference graphs).

Constant DEQUANTIZE ops (float16 or int8 weights) are folded here into float32 constants, so
the ONNX builder only sees float32 weights and the ops that compute on activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite
from flatbuffers import flexbuffers
from tflite.BuiltinOperator import BuiltinOperator

_OPCODE_NAMES = {value: name for name, value in vars(BuiltinOperator).items() if not name.startswith("_")}

_NUMPY_DTYPES = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32,
    tflite.TensorType.UINT8: np.uint8,
    tflite.TensorType.INT64: np.int64,
    tflite.TensorType.INT16: np.int16,
    tflite.TensorType.INT8: np.int8,
    tflite.TensorType.FLOAT64: np.float64,
}

# builtin op name -> (options class, fields read from it)
_OPTION_FIELDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "CONV_2D": (
        tflite.Conv2DOptions,
        ("Padding", "StrideH", "StrideW", "DilationHFactor", "DilationWFactor", "FusedActivationFunction"),
    ),
    "DEPTHWISE_CONV_2D": (
        tflite.DepthwiseConv2DOptions,
        (
            "Padding", "StrideH", "StrideW", "DilationHFactor", "DilationWFactor", "DepthMultiplier",
            "FusedActivationFunction",
        ),
    ),
    "MAX_POOL_2D": (
        tflite.Pool2DOptions,
        ("Padding", "StrideH", "StrideW", "FilterHeight", "FilterWidth", "FusedActivationFunction"),
    ),
    "AVERAGE_POOL_2D": (
        tflite.Pool2DOptions,
        ("Padding", "StrideH", "StrideW", "FilterHeight", "FilterWidth", "FusedActivationFunction"),
    ),
    "ADD": (tflite.AddOptions, ("FusedActivationFunction",)),
    "CONCATENATION": (tflite.ConcatenationOptions, ("Axis", "FusedActivationFunction")),
}


class TfliteFormatError(ValueError):
    """The flatbuffer uses something this reader does not support."""


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: type
    data: np.ndarray | None = None  # constant value (float32 after folding), None for activations


@dataclass
class Op:
    kind: str  # TFLite builtin name, e.g. "CONV_2D"; "CUSTOM" with options code/version/attributes
    inputs: list[int]  # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]


def read_tflite(source: bytes | str | Path) -> Graph:
    """Parse a TFLite model (bytes or path) into a :class:`Graph` with DEQUANTIZE folded."""
    buf = source if isinstance(source, bytes) else Path(source).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise TfliteFormatError(f"expected 1 subgraph, found {model.SubgraphsLength()}")
    sub = model.Subgraphs(0)
    tensors = [_read_tensor(model, sub.Tensors(i), buf) for i in range(sub.TensorsLength())]
    ops = [_read_op(model, sub.Operators(i)) for i in range(sub.OperatorsLength())]
    graph = Graph(
        tensors=tensors,
        ops=ops,
        inputs=[int(i) for i in sub.InputsAsNumpy()],
        outputs=[int(i) for i in sub.OutputsAsNumpy()],
    )
    _fold_dequantize(graph)
    return graph


def _read_tensor(model, tensor, buf: bytes) -> Tensor:
    dtype = _NUMPY_DTYPES.get(tensor.Type())
    if dtype is None:
        raise TfliteFormatError(f"tensor {tensor.Name()!r}: unsupported type {tensor.Type()}")
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if not tensor.ShapeIsNone() else ()
    data = _buffer_data(model.Buffers(tensor.Buffer()), buf)
    array = None
    if data is not None:
        array = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
        array = _dequantize_int(tensor, array)
    return Tensor(name=tensor.Name().decode(), shape=shape, dtype=dtype, data=array)


def _buffer_data(buffer, buf: bytes) -> bytes | None:
    if buffer is None:
        return None
    if buffer.Offset() > 1:  # large models keep buffers after the flatbuffer
        return buf[buffer.Offset() : buffer.Offset() + buffer.Size()]
    if buffer.DataLength() == 0:
        return None
    return buffer.DataAsNumpy().tobytes()


def _dequantize_int(tensor, array: np.ndarray) -> np.ndarray:
    """Integer constants with quantisation parameters become float32 (weight-only quantisation)."""
    quant = tensor.Quantization()
    if quant is None or quant.ScaleLength() == 0 or array.dtype.kind not in "iu":
        return array
    scale = quant.ScaleAsNumpy().astype(np.float32)
    zero = quant.ZeroPointAsNumpy().astype(np.float32) if quant.ZeroPointLength() else np.float32(0)
    if scale.size > 1:
        axis = quant.QuantizedDimension()
        view = [1] * array.ndim
        view[axis] = scale.size
        scale = scale.reshape(view)
        zero = np.broadcast_to(zero, scale.shape).reshape(view) if np.ndim(zero) else zero
    return ((array.astype(np.float32) - zero) * scale).astype(np.float32)


def _read_op(model, op) -> Op:
    code = model.OperatorCodes(op.OpcodeIndex())
    kind = _OPCODE_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")
    options: dict = {}
    spec = _OPTION_FIELDS.get(kind)
    table = op.BuiltinOptions()
    if spec is not None and table is not None:
        opts = spec[0]()
        opts.Init(table.Bytes, table.Pos)
        options = {name: getattr(opts, name)() for name in spec[1]}
    if kind == "CUSTOM":  # MediaPipe's own kernels: name, version and flexbuffer attributes
        raw = op.CustomOptionsAsNumpy().tobytes() if not op.CustomOptionsIsNone() else b""
        options = {
            "code": (code.CustomCode() or b"").decode(),
            "version": int(code.Version()),
            "attributes": flexbuffers.Loads(raw) if raw else {},
        }
    return Op(
        kind=kind,
        inputs=[int(i) for i in op.InputsAsNumpy()] if not op.InputsIsNone() else [],
        outputs=[int(i) for i in op.OutputsAsNumpy()] if not op.OutputsIsNone() else [],
        options=options,
    )


def _fold_dequantize(graph: Graph) -> None:
    """Replace DEQUANTIZE of a constant by its float32 value; drop the op."""
    kept = []
    for op in graph.ops:
        if op.kind == "DEQUANTIZE":
            source = graph.tensors[op.inputs[0]]
            if source.data is None:
                raise TfliteFormatError(f"DEQUANTIZE of non-constant tensor {source.name!r}")
            target = graph.tensors[op.outputs[0]]
            target.data = source.data.astype(np.float32)
            target.dtype = np.float32
            continue
        kept.append(op)
    graph.ops = kept
    for tensor in graph.tensors:
        if tensor.data is not None and tensor.data.dtype == np.float16:
            tensor.data = tensor.data.astype(np.float32)
            tensor.dtype = np.float32
