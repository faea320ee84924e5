"""One handler per TFLite op, emitting NCHW ONNX nodes (see :mod:`.onnx_builder` for layouts).

Some handlers choose, among exact formulations, the one onnxruntime runs fastest on one CPU thread
(its NCHWc kernels fuse Relu and a residual Add into a convolution, nothing else):

- PRELU: two per-channel passes (``op_prelu``); the first is a bare Relu where the producing
  convolution can emit the negated input (then the result stays negated for the reading convs);
- a channel PAD added to a convolution (residual blocks): the convolution is split instead of
  running an identity convolution (``_add_into_leading_channels``);
- parallel heads of identical structure are merged afterwards (:mod:`.twin_branches`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_builder import (
    CHANNEL_BLOCK,
    NATIVE,
    NCHW,
    NHWC_TO_NCHW,
    BuilderBase,
    UnsupportedOpError,
    same_pads,
    stored_channels,
)
from .tflite_reader import Graph, Op
from .twin_branches import merge_twin_branches

_PADDING_SAME = 0
_AXIS_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}  # NHWC axis -> NCHW axis


def build_onnx(graph: Graph, graph_name: str, doc: str = "") -> onnx.ModelProto:
    """Convert a parsed TFLite ``graph`` into an ONNX model (NCHW float32 input, dynamic batch)."""
    model = merge_twin_branches(Converter(graph).build(graph_name, doc))
    onnx.checker.check_model(model)
    return model


class Converter(BuilderBase):
    # ---- convolutions and pooling -------------------------------------------------------------
    def _spatial_pads(self, op: Op, kernel: tuple[int, int], dilation: tuple[int, int]) -> list[int]:
        if op.options["Padding"] != _PADDING_SAME:
            return [0, 0, 0, 0]
        _, height, width, _ = self.shape(op.inputs[0])
        top, bottom = same_pads(height, kernel[0], op.options["StrideH"], dilation[0])
        left, right = same_pads(width, kernel[1], op.options["StrideW"], dilation[1])
        return [top, left, bottom, right]

    def _conv(self, op: Op, weight: np.ndarray, bias: np.ndarray, group: int, source: str, out_stored: int):
        if op.inputs[0] in self.negated:  # the input arrives as -x (see op_prelu): w * x == -w * -x
            weight = -weight
        if self._feeds_negated_prelu(op):
            weight, bias = -weight, -bias
            self.negated.add(op.outputs[0])
        kernel = weight.shape[2], weight.shape[3]
        dilation = op.options["DilationHFactor"], op.options["DilationWFactor"]
        inputs = [
            source,
            self.const(self.tensor_name(op.inputs[1]), weight.astype(np.float32)),
            self.const(f"{self.tensor_name(op.outputs[0])}__bias", bias.astype(np.float32)),
        ]
        tmp = self.tmp(op)
        self.node(
            "Conv", inputs, [tmp],
            kernel_shape=list(kernel),
            strides=[op.options["StrideH"], op.options["StrideW"]],
            dilations=list(dilation),
            pads=self._spatial_pads(op, kernel, dilation),
            group=group,
        )
        self.finish(op, tmp, NCHW, op.options["FusedActivationFunction"], stored=out_stored)

    def _bias(self, op: Op, channels: int) -> np.ndarray:
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            return self.data(op.inputs[2]).astype(np.float32)
        return np.zeros(channels, np.float32)

    def op_conv_2d(self, op: Op) -> None:
        weight = self.data(op.inputs[1]).transpose(0, 3, 1, 2)  # OHWI -> OIHW
        in_channels = self.channels(op.inputs[0])
        if in_channels % weight.shape[1]:
            raise UnsupportedOpError(f"CONV_2D: {in_channels} input channels, filter depth {weight.shape[1]}")
        group = in_channels // weight.shape[1]
        bias = self._bias(op, weight.shape[0])
        if group != 1:  # grouped convolution: logical channels only
            self._conv(op, weight, bias, group, self.value(op.inputs[0], NCHW), weight.shape[0])
            return
        in_stored = self.stored_of(op.inputs[0]) if self.is_nchw(op.inputs[0]) else in_channels
        out_stored = stored_channels(weight.shape[0])
        weight = _pad_axis(_pad_axis(weight, 1, in_stored), 0, out_stored)  # extra channels: zero weights
        source = self.value(op.inputs[0], NCHW, padded=True)
        self._conv(op, weight, _pad_axis(bias, 0, out_stored), 1, source, out_stored)

    def op_depthwise_conv_2d(self, op: Op) -> None:
        weight = self.data(op.inputs[1]).transpose(3, 0, 1, 2)  # (1, KH, KW, C*M) -> (C*M, 1, KH, KW)
        in_channels = self.channels(op.inputs[0])
        if weight.shape[0] % in_channels:
            raise UnsupportedOpError("DEPTHWISE_CONV_2D: output channels not a multiple of input channels")
        bias = self._bias(op, weight.shape[0])
        if weight.shape[0] != in_channels:
            # depth multiplier M: output channel c*M + m reads input channel c, as in ONNX grouped conv
            self._conv(op, weight, bias, in_channels, self.value(op.inputs[0], NCHW), weight.shape[0])
            return
        stored = self.stored_of(op.inputs[0]) if self.is_nchw(op.inputs[0]) else in_channels
        source = self.value(op.inputs[0], NCHW, padded=True)
        self._conv(op, _pad_axis(weight, 0, stored), _pad_axis(bias, 0, stored), stored, source, stored)

    def op_max_pool_2d(self, op: Op) -> None:
        kernel = op.options["FilterHeight"], op.options["FilterWidth"]
        stored = self.stored_of(op.inputs[0]) if self.is_nchw(op.inputs[0]) else None
        tmp = self.tmp(op)
        self.node(
            "MaxPool", [self.value(op.inputs[0], NCHW, padded=True)], [tmp],
            kernel_shape=list(kernel),
            strides=[op.options["StrideH"], op.options["StrideW"]],
            pads=self._spatial_pads(op, kernel, (1, 1)),
        )
        self.finish(op, tmp, NCHW, op.options["FusedActivationFunction"], stored=stored)

    # ---- elementwise --------------------------------------------------------------------------
    def _elementwise(self, indices: list[int]) -> tuple[str, int | None]:
        """Common layout of an elementwise op's activations, and their stored channels if shared."""
        activations = [i for i in indices if not self.is_const(i)]
        if not activations or not all(self.is_nchw(i) for i in activations):
            return NATIVE, None
        stored = {self.stored_of(i) for i in activations}
        return NCHW, stored.pop() if len(stored) == 1 else None

    def _operands(self, indices: list[int], layout: str, stored: int | None, rank: int) -> list[str]:
        names = []
        for index in indices:
            if self.is_const(index):
                names.append(self.broadcast_const(index, layout, rank, stored))
            else:
                names.append(self.value(index, layout, padded=stored is not None))
        return names

    def op_add(self, op: Op) -> None:
        if any(index in self.deferred_pads for index in op.inputs):
            self._add_into_leading_channels(op)
            return
        layout, stored = self._elementwise(op.inputs)
        rank = len(self.shape(op.outputs[0]))
        tmp = self.tmp(op)
        self.node("Add", self._operands(op.inputs, layout, stored, rank), [tmp])
        self.finish(op, tmp, layout, op.options["FusedActivationFunction"], stored=stored)

    def op_relu(self, op: Op) -> None:
        layout, stored = self._elementwise(op.inputs[:1])
        self.bind(op.outputs[0], layout, stored)
        if op.inputs[0] in self.rectified and op.outputs[0] not in self.graph.outputs:
            self.names[op.outputs[0]] = self.name_of(op.inputs[0])  # already rectified: same tensor
            return
        self.node("Relu", [self.value(op.inputs[0], layout, padded=True)], [self.name_of(op.outputs[0])])

    def op_relu6(self, op: Op) -> None:
        layout, stored = self._elementwise(op.inputs[:1])
        tmp = self.tmp(op)
        self.node("Identity", [self.value(op.inputs[0], layout, padded=True)], [tmp])
        self.finish(op, tmp, layout, 3, stored=stored)

    def op_prelu(self, op: Op) -> None:
        layout, stored = self._elementwise(op.inputs[:1])
        rank = len(self.shape(op.outputs[0]))
        slope = self.data(op.inputs[1]).astype(np.float32)
        channels = self.channels(op.inputs[0])
        target = self.name_of(op.outputs[0])
        if layout != NCHW or rank != 4 or slope.size not in (1, channels):
            self.bind(op.outputs[0], layout)
            source = self.value(op.inputs[0], layout)
            self.node("PRelu", [source, self.broadcast_const(op.inputs[1], layout, rank)], [target])
            return
        # onnxruntime's PRelu kernel is slow (~25x a Relu) and leaves the NCHWc layout. Instead
        #   y = x + (1 - a) * relu(-x)
        # with both per-channel scalings as BatchNormalization, which onnxruntime turns into 1x1
        # depthwise NCHWc convolutions (the relu fused into the first, the add into the second).
        # When the producing convolution can emit -x instead (its only use is this PRELU, and only
        # convolutions read the result, see _feeds_negated_prelu), the first pass is a plain Relu
        # (cheaper) and the result stays negated, -y = (-x) - (1 - a) * relu(-x), which the reading
        # convolutions undo by negating their weights.
        self.bind(op.outputs[0], NCHW, stored)
        source = self.value(op.inputs[0], NCHW, padded=True)
        slope = _pad_axis(np.broadcast_to(slope.reshape(-1), (channels,)), 0, stored)
        base = self.tensor_name(op.outputs[0])
        rectified = self.unique(f"{base}__relu_neg")
        scaled = self.unique(f"{base}__scaled")
        if op.inputs[0] in self.negated:
            self.node("Relu", [source], [rectified])
            self._affine(base, rectified, slope - 1, scaled)
            self.negated.add(op.outputs[0])
        else:
            flipped = self.unique(f"{base}__neg")
            self._affine(base, source, -np.ones(stored, np.float32), flipped)
            self.node("Relu", [flipped], [rectified])
            self._affine(base, rectified, 1 - slope, scaled)
        self.node("Add", [scaled, source], [target])

    def _feeds_negated_prelu(self, conv: Op) -> bool:
        """Whether a convolution's output is better emitted negated: its only use is a PRELU whose
        result only convolutions read (as their input), so that -y never reaches anything else."""
        users = self.consumers.get(conv.outputs[0], [])
        if conv.options["FusedActivationFunction"] != 0 or len(users) != 1 or users[0].kind != "PRELU":
            return False
        prelu = users[0]
        readers = self.consumers.get(prelu.outputs[0], [])
        slope_size = self.data(prelu.inputs[1]).size
        return (
            len(self.shape(prelu.outputs[0])) == 4
            and slope_size in (1, self.channels(prelu.inputs[0]))
            and bool(readers)
            and all(r.kind in ("CONV_2D", "DEPTHWISE_CONV_2D") and r.inputs[0] == prelu.outputs[0]
                    and prelu.outputs[0] not in r.inputs[1:] for r in readers)
        )

    def _affine(self, base: str, source: str, scale: np.ndarray, target: str) -> None:
        """target = scale[c] * source per channel (a BatchNormalization with mean 0, var 1, eps 0)."""
        zeros = np.zeros(scale.shape[0], np.float32)
        ones = np.ones(scale.shape[0], np.float32)
        inputs = [
            source,
            self.const(f"{base}__scale", scale.astype(np.float32)),
            self.const(f"{base}__bias", zeros),
            self.const(f"{base}__mean", zeros),
            self.const(f"{base}__var", ones),
        ]
        self.node("BatchNormalization", inputs, [target], epsilon=0.0)

    # ---- shape ops ----------------------------------------------------------------------------
    def op_pad(self, op: Op) -> None:
        paddings = self.data(op.inputs[1]).astype(np.int64)  # (rank, 2) in TFLite axis order
        layout = NCHW if self.is_nchw(op.inputs[0]) else NATIVE
        if layout == NCHW:
            paddings = paddings[list(NHWC_TO_NCHW)]
            if not paddings[[0, 2, 3]].any():
                if self._pad_fits_in_add(op, int(paddings[1, 0])):
                    self.deferred_pads[op.outputs[0]] = op.inputs[0]
                else:
                    self._channel_pad_as_conv(op, int(paddings[1, 0]))
                return
        if paddings[0].any():
            raise UnsupportedOpError("PAD along the batch axis is not supported")
        pads = np.concatenate([paddings[:, 0], paddings[:, 1]])
        self.bind(op.outputs[0], layout)
        inputs = [self.value(op.inputs[0], layout), self.const("pads", pads)]
        self.node("Pad", inputs, [self.name_of(op.outputs[0])], mode="constant")

    def _channel_pad_as_conv(self, op: Op, before: int) -> None:
        """Zero channels added by a 1x1 convolution with identity weights.

        Exact (one product by 1.0 per output), and unlike Pad it keeps onnxruntime's blocked
        NCHWc layout, into which the residual ADD that always follows is then fused.
        """
        channels = self.channels(op.inputs[0])
        in_stored = self.stored_of(op.inputs[0])
        out_stored = stored_channels(self.channels(op.outputs[0]))
        weight = np.zeros((out_stored, in_stored, 1, 1), np.float32)
        weight[before + np.arange(channels), np.arange(channels)] = 1.0
        self.bind(op.outputs[0], NCHW, out_stored)
        identity = self.const(f"{self.tensor_name(op.outputs[0])}__identity", weight)
        inputs = [self.value(op.inputs[0], NCHW, padded=True), identity]
        self.node("Conv", inputs, [self.name_of(op.outputs[0])], kernel_shape=[1, 1])

    def _pad_fits_in_add(self, op: Op, before: int) -> bool:
        """A channel PAD (zeros after) whose only use is an ADD to a plain group-1 convolution.

        Such an ADD is done without the padded tensor: the convolution is split at the input's
        channel count, the input is added to the first part only, and the parts are concatenated
        (see :meth:`_add_into_leading_channels`). That saves a whole identity convolution.
        """
        channels = self.channels(op.inputs[0])
        users = self.consumers.get(op.outputs[0], [])
        if before or channels % CHANNEL_BLOCK or not self.is_nchw(op.inputs[0]):
            return False
        if self.stored_of(op.inputs[0]) != channels or len(users) != 1 or users[0].kind != "ADD":
            return False
        (other,) = [index for index in users[0].inputs if index != op.outputs[0]] or [None]
        conv = self.producer.get(other)
        return (
            conv is not None
            and conv.kind == "CONV_2D"
            and conv.options["FusedActivationFunction"] == 0
            and self.data(conv.inputs[1]).shape[-1] == self.channels(conv.inputs[0])  # not grouped
            and len(self.consumers.get(other, [])) == 1
            and self.shape(other) == self.shape(op.outputs[0])
        )

    def _add_into_leading_channels(self, op: Op) -> None:
        """ADD(conv, PAD(x)) as Concat(conv[:C] + x, conv[C:]), the convolution split in two."""
        (padded,) = [index for index in op.inputs if index in self.deferred_pads]
        (other,) = [index for index in op.inputs if index != padded]
        source = self.deferred_pads[padded]
        channels = self.channels(source)
        conv_output = self.name_of(other)
        (position,) = [i for i, node in enumerate(self.nodes) if conv_output in node.output]
        conv = self.nodes.pop(position)
        arrays = {init.name: init for init in self.initializers}
        weight, bias = (numpy_helper.to_array(arrays[name]) for name in conv.input[1:3])
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        base = self.tensor_name(op.outputs[0])
        parts = []
        for part, rows in (("lead", slice(0, channels)), ("rest", slice(channels, None))):
            inputs = [conv.input[0], self.const(f"{conv.input[1]}__{part}", weight[rows]),
                      self.const(f"{conv.input[2]}__{part}", bias[rows])]
            parts.append(self.unique(f"{base}__{part}"))
            self.node("Conv", inputs, [parts[-1]], **attrs)
        summed = self.unique(f"{base}__lead_sum")
        self.node("Add", [parts[0], self.value(source, NCHW)], [summed])
        parts[0] = summed
        activation = op.options["FusedActivationFunction"]
        if activation == 0 and [user.kind for user in self.consumers.get(op.outputs[0], [])] == ["RELU"]:
            activation = 1  # the RELU that follows is done here, and is then a no-op
            self.rectified.add(op.outputs[0])
        if activation == 1:  # per part, so that onnxruntime fuses it into both convolutions
            parts = [self._relu_of(part) for part in parts]
            activation = 0
        tmp = self.tmp(op)
        self.node("Concat", parts, [tmp], axis=1)
        self.finish(op, tmp, NCHW, activation, stored=self.stored_of(other))

    def _relu_of(self, name: str) -> str:
        rectified = self.unique(f"{name}__relu")
        self.node("Relu", [name], [rectified])
        return rectified

    def op_concatenation(self, op: Op) -> None:
        rank = len(self.shape(op.outputs[0]))
        axis = op.options["Axis"] % rank
        layout, _ = self._elementwise(op.inputs)
        if layout == NCHW:
            axis = _AXIS_TO_NCHW[axis]
        if axis == 0:
            raise UnsupportedOpError("CONCATENATION along the batch axis is not supported")
        tmp = self.tmp(op)
        self.node("Concat", self._operands(op.inputs, layout, None, rank), [tmp], axis=axis)
        self.finish(op, tmp, layout, op.options["FusedActivationFunction"])

    def op_reshape(self, op: Op) -> None:
        source = self.value(op.inputs[0], NATIVE)  # flattening must see TFLite's element order
        out_shape = self.shape(op.outputs[0])
        if not out_shape or out_shape[0] != 1 or self.shape(op.inputs[0])[0] != 1:
            raise UnsupportedOpError("RESHAPE must keep the batch as its leading axis")
        target = self.const("shape", np.array([-1, *out_shape[1:]], np.int64))
        self.bind(op.outputs[0], NATIVE)
        self.node("Reshape", [source, target], [self.name_of(op.outputs[0])])


def _pad_axis(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``array`` with zeros appended along ``axis`` up to ``size``."""
    extra = size - array.shape[axis]
    if extra <= 0:
        return np.asarray(array)
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, extra)
    return np.pad(array, widths)
