"""Converter rewrites that only change speed: the graphs must compute exactly the same values."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dmask_live.convert import build_onnx
from dmask_live.convert.tflite_reader import Graph, Op, Tensor
from dmask_live.convert.twin_branches import merge_twin_branches

_CONV_1X1 = {"Padding": 0, "StrideH": 1, "StrideW": 1, "DilationHFactor": 1, "DilationWFactor": 1,
             "FusedActivationFunction": 0}


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


# ---- channel PAD + ADD: the convolution is split instead of padding through an identity conv ----
def _residual_pad_graph(pad_also_output: bool) -> tuple[Graph, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 6, 6, 8)).astype(np.float32)
    weight = rng.standard_normal((16, 1, 1, 8)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    paddings = np.array([[0, 0], [0, 0], [0, 0], [0, 8]], np.int32)
    graph = Graph(
        tensors=[
            Tensor("x", x.shape, np.float32),
            Tensor("w", weight.shape, np.float32, weight),
            Tensor("b", bias.shape, np.float32, bias),
            Tensor("conv", (1, 6, 6, 16), np.float32),
            Tensor("paddings", paddings.shape, np.int32, paddings),
            Tensor("padded", (1, 6, 6, 16), np.float32),
            Tensor("sum", (1, 6, 6, 16), np.float32),
            Tensor("y", (1, 6, 6, 16), np.float32),
        ],
        ops=[
            Op("CONV_2D", [0, 1, 2], [3], _CONV_1X1),
            Op("PAD", [0, 4], [5]),
            Op("ADD", [3, 5], [6], {"FusedActivationFunction": 0}),
            Op("RELU", [6], [7]),
        ],
        inputs=[0],
        outputs=[7, 5] if pad_also_output else [7],
    )
    conv = np.einsum("nhwc,oc->nhwo", x, weight[:, 0, 0, :]) + bias
    padded = np.pad(x, ((0, 0), (0, 0), (0, 0), (0, 8)))
    expected = {"y": np.maximum(conv + padded, 0), "padded": padded}
    return graph, {"x": x, **expected}


@pytest.mark.parametrize("pad_also_output", [False, True])
def test_residual_channel_pad_is_exact(pad_also_output):
    graph, data = _residual_pad_graph(pad_also_output)
    model = build_onnx(graph, "pad_add")
    names = [out.name for out in model.graph.output]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    results = dict(zip(names, session.run(names, {"x": data["x"].transpose(0, 3, 1, 2).copy()}), strict=True))
    for name, value in results.items():
        np.testing.assert_allclose(value, data[name], rtol=1e-5, atol=1e-5)
    kinds = [node.op_type for node in model.graph.node]
    if pad_also_output:  # the padded tensor is needed itself: the identity convolution stays
        assert "Concat" not in kinds
    else:  # split convolution, input added to its leading channels, RELU applied per part
        assert kinds.count("Conv") == 2 and "Concat" in kinds
        concat = next(node for node in model.graph.node if node.op_type == "Concat")
        producers = {out: node for node in model.graph.node for out in node.output}
        assert all(producers[name].op_type == "Relu" for name in concat.input)


# ---- twin branches ------------------------------------------------------------------------------
def _twin_heads_model(blocks: int, side_by_side: bool = False) -> onnx.ModelProto:
    """Two heads of identical structure (different weights) on one 16-channel feature map.

    ``side_by_side``: the second head starts from another tensor of the same shape instead.
    """
    rng = np.random.default_rng(2)
    channels = 16
    nodes = [helper.make_node("Relu", ["x"], ["x_relu"])] if side_by_side else []
    inits = []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def block(p: str, prev: str) -> list[onnx.NodeProto]:
        zeros, ones = np.zeros(channels), np.ones(channels)
        pointwise = [const(f"{p}_w1", rng.standard_normal((channels, channels, 1, 1)) / 4),
                     const(f"{p}_b1", rng.standard_normal(channels))]
        norm = [const(f"{p}_s", rng.uniform(-1, 1, channels)), const(f"{p}_z", zeros),
                const(f"{p}_m", zeros), const(f"{p}_v", ones)]
        depthwise = const(f"{p}_dw", rng.standard_normal((channels, 1, 3, 3)) / 3)
        return [
            helper.make_node("Conv", [prev, *pointwise], [f"{p}_c1"], kernel_shape=[1, 1]),
            helper.make_node("BatchNormalization", [f"{p}_c1", *norm], [f"{p}_bn"], epsilon=0.0),
            helper.make_node("Relu", [f"{p}_bn"], [f"{p}_r"]),
            helper.make_node("Conv", [f"{p}_r", depthwise], [f"{p}_d"], kernel_shape=[3, 3],
                             pads=[1, 1, 1, 1], group=channels),
            helper.make_node("Add", [f"{p}_d", "x"], [f"{p}_sum"]),  # residual from the shared input
            helper.make_node("Add", [f"{p}_sum", prev], [f"{p}_out"]),
        ]

    outputs = []
    for head in "ab":
        prev = "x_relu" if side_by_side and head == "b" else "x"
        for i in range(blocks):
            nodes += block(f"{head}{i}", prev)
            prev = f"{head}{i}_out"
        pool = helper.make_node("MaxPool", [prev], [f"{head}_pool"], kernel_shape=[2, 2], strides=[2, 2])
        nodes += [pool, helper.make_node("Flatten", [f"{head}_pool"], [f"{head}_y"])]  # no twin: sliced back
        outputs.append(helper.make_tensor_value_info(f"{head}_y", TensorProto.FLOAT, ["N", channels * 4]))
    graph_input = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 4, 4])
    graph = helper.make_graph(nodes, "twins", [graph_input], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("side_by_side", [False, True])
def test_twin_branches_merge_and_compute_the_same(side_by_side):
    model = _twin_heads_model(blocks=2, side_by_side=side_by_side)
    merged = merge_twin_branches(model)
    onnx.checker.check_model(merged)
    assert len(merged.graph.node) < len(model.graph.node) * 0.7  # 13 pairs -> 13 nodes, + Concat, Slices
    groups = {helper.get_attribute_value(a) for node in merged.graph.node if node.op_type == "Conv"
              for a in node.attribute if a.name == "group"}
    assert {2, 32} <= groups  # 1x1 convs on merged twins, and the merged depthwise conv
    x = np.random.default_rng(3).standard_normal((3, 16, 4, 4)).astype(np.float32)
    for before, after in zip(_run(model, {"x": x}), _run(merged, {"x": x}), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_short_twins_are_left_alone():
    """Two convolutions reading one tensor (e.g. the halves of a split convolution) stay apart."""
    model = _twin_heads_model(blocks=1)
    keep = {"Conv", "MaxPool", "Flatten"}
    nodes = [node for node in model.graph.node if node.op_type in keep and node.op_type != "Conv"
             or node.op_type == "Conv" and _attr_group(node) == 1]
    nodes[1].input[0], nodes[4].input[0] = nodes[0].output[0], nodes[3].output[0]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    assert [node.op_type for node in nodes] == ["Conv", "MaxPool", "Flatten"] * 2
    assert merge_twin_branches(model).graph.node == model.graph.node


def _attr_group(node: onnx.NodeProto) -> int:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)


def test_consecutive_blocks_are_not_twins():
    """Identical blocks one after the other depend on each other: nothing to merge."""
    model = _twin_heads_model(blocks=3)
    head_a = [node for node in model.graph.node if not node.output[0].startswith("b")]
    del model.graph.node[:]
    model.graph.node.extend(head_a)
    del model.graph.output[1:]
    onnx.checker.check_model(model)
    assert merge_twin_branches(model).graph.node == model.graph.node


# ---- PRELU between convolutions: computed on the negated input -----------------------------------
def _conv_prelu_depthwise_graph(prelu_also_output: bool) -> tuple[Graph, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 5, 5, 8)).astype(np.float32)
    weight = rng.standard_normal((16, 1, 1, 8)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    slope = rng.uniform(-1.0, 1.5, (1, 1, 16)).astype(np.float32)  # negative and > 1 too
    depthwise = rng.standard_normal((1, 3, 3, 16)).astype(np.float32)
    dw_bias = rng.standard_normal(16).astype(np.float32)
    graph = Graph(
        tensors=[
            Tensor("x", x.shape, np.float32),
            Tensor("w", weight.shape, np.float32, weight),
            Tensor("b", bias.shape, np.float32, bias),
            Tensor("conv", (1, 5, 5, 16), np.float32),
            Tensor("slope", slope.shape, np.float32, slope),
            Tensor("prelu", (1, 5, 5, 16), np.float32),
            Tensor("dw", depthwise.shape, np.float32, depthwise),
            Tensor("dw_b", dw_bias.shape, np.float32, dw_bias),
            Tensor("y", (1, 5, 5, 16), np.float32),
        ],
        ops=[
            Op("CONV_2D", [0, 1, 2], [3], _CONV_1X1),
            Op("PRELU", [3, 4], [5]),
            Op("DEPTHWISE_CONV_2D", [5, 6, 7], [8], {**_CONV_1X1, "DepthMultiplier": 1}),
        ],
        inputs=[0],
        outputs=[8, 5] if prelu_also_output else [8],
    )
    conv = np.einsum("nhwc,oc->nhwo", x, weight[:, 0, 0, :]) + bias
    prelu = np.where(conv > 0, conv, conv * slope)
    padded = np.pad(prelu, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = sum(padded[:, i:i + 5, j:j + 5, :] * depthwise[0, i, j] for i in range(3) for j in range(3)) + dw_bias
    return graph, x, y


@pytest.mark.parametrize("prelu_also_output", [False, True])
def test_prelu_between_convolutions_is_exact(prelu_also_output):
    graph, x, expected = _conv_prelu_depthwise_graph(prelu_also_output)
    model = build_onnx(graph, "prelu")
    (actual, *_) = _run(model, {"x": x.transpose(0, 3, 1, 2).copy()})
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    norms = sum(node.op_type == "BatchNormalization" for node in model.graph.node)
    assert norms == (2 if prelu_also_output else 1)  # negated input: the first pass is a plain Relu
