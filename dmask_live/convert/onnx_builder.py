"""Build an NCHW ONNX graph from a parsed TFLite graph: tensors, layouts, naming.

TFLite computes in NHWC; onnxruntime's fast CPU kernels want NCHW. Every 4-D activation is
therefore kept in NCHW from the input on (weights are transposed once, at conversion, and axes
of CONCATENATION/PAD/PRELU are remapped). A tensor only goes back to TFLite's NHWC element order
where a RESHAPE flattens a feature map and at 4-D graph outputs, so results have exactly TFLite's
element order and shapes (with a dynamic batch dimension).

Feature maps whose channel count is not a multiple of 8 are *stored* with extra channels up to
the next multiple of 8 (onnxruntime's NCHWc block on AVX2 CPUs; its blocked kernels refuse other
counts and fall back to slow reorders). The extra channels are ignored by every consumer: their
weights are zero, and they are sliced off before anything that sees channels as data (concat,
reshape, outputs). The op handlers are in :mod:`.onnx_ops`.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .tflite_reader import Graph, Op, TfliteFormatError

OPSET = 17
BATCH_DIM = "N"
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
CHANNEL_BLOCK = 8

NCHW = "nchw"  # a 4-D activation stored as NCHW (possibly with padded channels)
NATIVE = "native"  # stored exactly as TFLite lays it out


class UnsupportedOpError(TfliteFormatError):
    """The TFLite graph contains an op (or op option) the converter does not handle."""


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite's SAME padding for one spatial axis: (before, after); the extra pixel goes after."""
    out = math.ceil(size / stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def stored_channels(channels: int) -> int:
    """Channels a feature map with ``channels`` is stored with (a multiple of the NCHWc block)."""
    if channels < CHANNEL_BLOCK or channels % CHANNEL_BLOCK == 0:
        return channels
    return -(-channels // CHANNEL_BLOCK) * CHANNEL_BLOCK


class BuilderBase:
    """Graph state and tensor bookkeeping; op handlers (``op_<kind>``) come from a subclass."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.layout: dict[int, str] = {}
        self.stored: dict[int, int] = {}  # stored channel count of NCHW activations, when padded
        self.names: dict[int, str] = {}
        self._used: set[str] = set()
        self._variants: dict[tuple[int, str], str] = {}
        self._counter = 0
        self.deferred_pads: dict[int, int] = {}  # channel-PAD output -> its input, added in the ADD
        self.rectified: set[int] = set()  # outputs whose following RELU was already applied
        self.negated: set[int] = set()  # activations stored as their negative (see Converter.op_prelu)
        self.producer: dict[int, Op] = {out: op for op in graph.ops for out in op.outputs}
        self.consumers: dict[int, list[Op]] = {}
        for op in graph.ops:
            for index in op.inputs:
                self.consumers.setdefault(index, []).append(op)
        for index in graph.outputs:
            self.consumers.setdefault(index, []).append(Op("OUTPUT", [index], []))

    # ---- naming -------------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        name = base or "t"
        while name in self._used:
            self._counter += 1
            name = f"{base}_{self._counter}"
        self._used.add(name)
        return name

    def name_of(self, index: int) -> str:
        if index not in self.names:
            self.names[index] = self.unique(self.graph.tensors[index].name)
        return self.names[index]

    def tensor_name(self, index: int) -> str:
        """The TFLite name of tensor ``index`` (a base for derived names)."""
        return self.graph.tensors[index].name

    def const(self, base: str, array: np.ndarray) -> str:
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.unique(op_type), **attrs))

    def tmp(self, op: Op) -> str:
        return self.unique(f"{self.tensor_name(op.outputs[0])}__pre")

    # ---- tensors ------------------------------------------------------------------------------
    def shape(self, index: int) -> tuple[int, ...]:
        return self.graph.tensors[index].shape

    def channels(self, index: int) -> int:
        """Logical channel count (TFLite's last axis)."""
        return self.shape(index)[-1]

    def stored_of(self, index: int) -> int:
        return self.stored.get(index, self.channels(index))

    def is_const(self, index: int) -> bool:
        return self.graph.tensors[index].data is not None

    def data(self, index: int) -> np.ndarray:
        data = self.graph.tensors[index].data
        if data is None:
            raise TfliteFormatError(f"tensor {self.tensor_name(index)!r} must be a constant")
        return data

    def is_nchw(self, index: int) -> bool:
        return self.layout.get(index) == NCHW and len(self.shape(index)) == 4

    def bind(self, index: int, layout: str, stored: int | None = None) -> None:
        """Record the layout (and stored channels) of an op's output."""
        self.layout[index] = layout
        if layout == NCHW and stored is not None and stored != self.channels(index):
            self.stored[index] = stored

    def value(self, index: int, layout: str, padded: bool = False) -> str:
        """ONNX name of activation ``index`` in ``layout``; derived variants are made once.

        ``padded`` accepts the stored (channel-padded) NCHW tensor; otherwise extra channels
        are sliced off first.
        """
        if len(self.shape(index)) != 4:
            return self.name_of(index)
        if self.layout[index] == NCHW:
            exact = self.stored_of(index) == self.channels(index)
            if layout == NCHW:
                return self.name_of(index) if padded or exact else self._sliced(index)
            source = self.name_of(index) if exact else self._sliced(index)
            return self._variant(index, NATIVE, "Transpose", [source], perm=list(NCHW_TO_NHWC))
        if layout == NCHW:
            return self._variant(index, NCHW, "Transpose", [self.name_of(index)], perm=list(NHWC_TO_NCHW))
        return self.name_of(index)

    def _sliced(self, index: int) -> str:
        bounds = [
            self.const("zero", np.array([0], np.int64)),
            self.const("channels", np.array([self.channels(index)], np.int64)),
            self.const("axis", np.array([1], np.int64)),
        ]
        return self._variant(index, "logical", "Slice", [self.name_of(index), *bounds])

    def _variant(self, index: int, kind: str, op_type: str, inputs: list[str], **attrs) -> str:
        key = (index, kind)
        if key not in self._variants:
            out = self.unique(f"{self.name_of(index)}__{kind}")
            self.node(op_type, inputs, [out], **attrs)
            self._variants[key] = out
        return self._variants[key]

    def broadcast_const(self, index: int, layout: str, rank: int, stored: int | None = None) -> str:
        """A constant operand of an elementwise op, rearranged to broadcast like TFLite's."""
        array = self.data(index).astype(np.float32)
        if layout == NCHW and rank == 4:
            array = array.reshape((1,) * (4 - array.ndim) + array.shape).transpose(NHWC_TO_NCHW)
            if stored is not None and array.shape[1] not in (1, stored):
                array = np.pad(array, ((0, 0), (0, stored - array.shape[1]), (0, 0), (0, 0)))
        return self.const(self.tensor_name(index), array)

    # ---- graph ------------------------------------------------------------------------------
    def build(self, graph_name: str, doc: str) -> onnx.ModelProto:
        inputs = []
        for index in self.graph.inputs:
            shape = self.shape(index)
            self.layout[index] = NCHW if len(shape) == 4 else NATIVE
            dims = [BATCH_DIM, shape[3], shape[1], shape[2]] if len(shape) == 4 else [BATCH_DIM, *shape[1:]]
            inputs.append(helper.make_tensor_value_info(self.name_of(index), TensorProto.FLOAT, dims))
        for op in self.graph.ops:
            handler = getattr(self, f"op_{op.kind.lower()}", None)
            if handler is None:
                raise UnsupportedOpError(f"TFLite op {op.kind} is not supported by the converter")
            handler(op)
        outputs = [self._graph_output(index) for index in self.graph.outputs]
        used = {name for node in self.nodes for name in node.input}
        self.initializers = [init for init in self.initializers if init.name in used]  # e.g. split convs
        onnx_graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.initializers)
        model = helper.make_model(
            onnx_graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="dmask-live",
            doc_string=doc,
        )
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model

    def _graph_output(self, index: int) -> onnx.ValueInfoProto:
        name = self.name_of(index)
        shape = self.shape(index)
        if self.is_nchw(index):
            # the graph output keeps TFLite's name and NHWC order: rename the NCHW tensor inside
            internal = self.unique(f"{name}__nchw")
            for node in self.nodes:
                node.output[:] = [internal if o == name else o for o in node.output]
                node.input[:] = [internal if i == name else i for i in node.input]
            self.names[index] = internal
            self.node("Transpose", [self.value(index, NCHW)], [name], perm=list(NCHW_TO_NHWC))
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH_DIM, *shape[1:]])

    # ---- fused activations --------------------------------------------------------------------
    def finish(self, op: Op, produced: str, layout: str, activation: int, stored: int | None = None) -> None:
        """Apply a fused activation to ``produced`` and bind the result to the op's output."""
        out_index = op.outputs[0]
        self.bind(out_index, layout, stored)
        target = self.name_of(out_index)
        if activation == 0:
            last = self.nodes[-1]
            last.output[:] = [target if o == produced else o for o in last.output]
        elif activation == 1:
            self.node("Relu", [produced], [target])
        elif activation in (2, 3):  # RELU_N1_TO_1, RELU6
            low, high = (-1.0, 1.0) if activation == 2 else (0.0, 6.0)
            bounds = [self.const("low", np.float32(low)), self.const("high", np.float32(high))]
            self.node("Clip", [produced, *bounds], [target])
        elif activation == 4:
            self.node("Tanh", [produced], [target])
        else:
            raise UnsupportedOpError(f"{op.kind}: fused activation {activation} not supported")
