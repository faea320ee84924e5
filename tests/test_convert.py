"""The TFLite → ONNX converter: every converted network computes what MediaPipe's TFLite does."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from dmask_live import models
from dmask_live.convert import build_onnx, convert_tflite, same_pads
from dmask_live.convert.tflite_reader import Graph, Op, Tensor

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="needs ai-edge-litert (dev extra)")

TOLERANCE = 1e-4  # max abs difference relative to the reference output's range

# Boxes (y0, y1, x0, x1) in skimage's astronaut image: the face, and each eye.
FACE_BOX = (35, 185, 151, 301)
EYE_BOXES = ((80, 124, 183, 227), (82, 126, 224, 268))


@pytest.fixture(scope="session")
def tflite_models(mediapipe_wheel) -> dict[str, bytes]:
    return models._read_wheel(mediapipe_wheel)


@pytest.fixture(scope="session")
def converted(tflite_models) -> dict[str, ort.InferenceSession]:
    sessions = {}
    for name in models.WHOLE_NETWORKS:
        onnx_model = convert_tflite(tflite_models[name], name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sessions[name] = ort.InferenceSession(
            onnx_model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    return sessions


def _tflite_run(model: bytes, nhwc: np.ndarray) -> dict[str, np.ndarray]:
    interpreter = litert.Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    (detail,) = interpreter.get_input_details()
    interpreter.set_tensor(detail["index"], nhwc.astype(np.float32))
    interpreter.invoke()
    return {out["name"]: interpreter.get_tensor(out["index"]) for out in interpreter.get_output_details()}


def _onnx_run(session: ort.InferenceSession, nhwc: np.ndarray) -> dict[str, np.ndarray]:
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2), dtype=np.float32)
    names = [out.name for out in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: nchw}), strict=True))


def _relative_error(reference: np.ndarray, value: np.ndarray) -> float:
    span = float(reference.max() - reference.min())
    scale = span if reference.size > 1 and span > 0 else max(1.0, float(np.abs(reference).max()))
    return float(np.abs(reference - value).max()) / scale


def _assert_same(tflite_model: bytes, session: ort.InferenceSession, nhwc: np.ndarray) -> None:
    expected = _tflite_run(tflite_model, nhwc)
    actual = _onnx_run(session, nhwc)
    assert list(actual) == list(expected)
    for name, reference in expected.items():
        assert actual[name].shape == reference.shape, name
        assert _relative_error(reference, actual[name]) < TOLERANCE, name


def _model_input(image: np.ndarray, name: str) -> np.ndarray:
    """uint8 RGB crop → NHWC float32 batch of one, resized and scaled as MediaPipe feeds the model."""
    height, width = models.INPUT_SIZES[name]
    low, high = models.INPUT_RANGES[name]
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (resized / 255.0 * (high - low) + low)[None]


@pytest.mark.parametrize("name", models.WHOLE_NETWORKS)
def test_random_inputs_match_tflite(name, tflite_models, converted):
    low, high = models.INPUT_RANGES[name]
    rng = np.random.default_rng(7)
    nhwc = rng.uniform(low, high, (1, *models.INPUT_SIZES[name], 3)).astype(np.float32)
    _assert_same(tflite_models[name], converted[name], nhwc)


def test_detector_on_real_face_matches_tflite(astronaut, tflite_models, converted):
    name = "face_detection_short_range"
    nhwc = _model_input(astronaut, name)
    _assert_same(tflite_models[name], converted[name], nhwc)
    scores = _onnx_run(converted[name], nhwc)["classificators"]
    assert 1 / (1 + np.exp(-scores.max())) > 0.5  # it does find the face


def test_mesh_on_real_face_matches_tflite(astronaut, tflite_models, converted):
    name = "face_landmark"
    y0, y1, x0, x1 = FACE_BOX
    nhwc = _model_input(astronaut[y0:y1, x0:x1], name)
    _assert_same(tflite_models[name], converted[name], nhwc)
    presence_logit = _onnx_run(converted[name], nhwc)["conv2d_31"]
    assert presence_logit.item() > 0  # face present


@pytest.mark.parametrize("eye", [0, 1])
def test_iris_on_real_eye_matches_tflite(astronaut, tflite_models, converted, eye):
    name = "iris_landmark"
    y0, y1, x0, x1 = EYE_BOXES[eye]
    _assert_same(tflite_models[name], converted[name], _model_input(astronaut[y0:y1, x0:x1], name))


def test_iris_batch_of_two_equals_two_single_runs(astronaut, converted):
    session = converted["iris_landmark"]
    eyes = [_model_input(astronaut[y0:y1, x0:x1], "iris_landmark") for y0, y1, x0, x1 in EYE_BOXES]
    eyes[1] = eyes[1][:, :, ::-1]  # MediaPipe flips one eye: the model only knows left eyes
    batch = _onnx_run(session, np.concatenate(eyes))
    singles = [_onnx_run(session, eye) for eye in eyes]
    for name, value in batch.items():
        assert value.shape[0] == 2
        for index, single in enumerate(singles):
            np.testing.assert_allclose(value[index], single[name][0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", models.WHOLE_NETWORKS)
def test_batch_rows_equal_single_runs(name, converted):
    low, high = models.INPUT_RANGES[name]
    batch = np.random.default_rng(11).uniform(low, high, (3, *models.INPUT_SIZES[name], 3)).astype(np.float32)
    together = _onnx_run(converted[name], batch)
    for index in range(3):
        alone = _onnx_run(converted[name], batch[index : index + 1])
        for output, value in together.items():
            np.testing.assert_allclose(value[index], alone[output][0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", models.WHOLE_NETWORKS)
def test_graph_interface(name, tflite_models, converted):
    session = converted[name]
    (graph_input,) = session.get_inputs()
    assert graph_input.type == "tensor(float)"
    assert graph_input.shape[1:] == [3, *models.INPUT_SIZES[name]]
    assert isinstance(graph_input.shape[0], str)  # dynamic batch
    interpreter = litert.Interpreter(model_content=tflite_models[name])
    expected = {d["name"]: list(d["shape"][1:]) for d in interpreter.get_output_details()}
    assert {o.name: o.shape[1:] for o in session.get_outputs()} == expected


def test_iris_heads_are_merged_and_channel_pads_split(tflite_models):
    """The speed-ups are in place (their exactness is what the tests above check)."""
    model = convert_tflite(tflite_models["iris_landmark"], "iris_landmark")
    names = [node.name for node in model.graph.node]
    assert sum("_twins" in name for name in names) > 40  # eye-contour and iris heads as one
    assert not any("__identity" in name for node in model.graph.node for name in node.input)


def test_conversion_is_deterministic(tflite_models):
    name = "iris_landmark"
    first = convert_tflite(tflite_models[name], name).SerializeToString()
    assert convert_tflite(tflite_models[name], name).SerializeToString() == first


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (4, 3, 2, (0, 1)), (5, 3, 2, (1, 1)), (64, 3, 1, (1, 1)), (32, 2, 2, (0, 0)), (7, 5, 3, (2, 2)),
        (5, 4, 1, (1, 2)),
    ],
)
def test_same_padding_matches_tflite_rule(size, kernel, stride, expected):
    assert same_pads(size, kernel, stride) == expected


# ---- ops the MediaPipe networks do not exercise: depth multiplier, odd SAME input, RELU6 ----------
def _reference_depthwise(x, weight, bias, stride, multiplier):
    """TFLite DEPTHWISE_CONV_2D (SAME) in plain numpy, NHWC."""
    _, height, width, channels = x.shape
    kernel = weight.shape[1]
    top, bottom = same_pads(height, kernel, stride)
    left, right = same_pads(width, kernel, stride)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h, out_w = -(-height // stride), -(-width // stride)
    out = np.zeros((1, out_h, out_w, channels * multiplier), np.float64)
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[0, i * stride : i * stride + kernel, j * stride : j * stride + kernel, :]
            for c in range(channels):
                for m in range(multiplier):
                    k = c * multiplier + m
                    out[0, i, j, k] = (patch[:, :, c] * weight[0, :, :, k]).sum()
    return np.minimum(np.maximum(out + bias, 0), 6).astype(np.float32)


def test_depthwise_multiplier_and_asymmetric_same_padding():
    rng = np.random.default_rng(3)
    channels, multiplier, stride = 3, 2, 2
    x = rng.standard_normal((1, 7, 6, channels)).astype(np.float32)
    weight = rng.standard_normal((1, 3, 3, channels * multiplier)).astype(np.float32)
    bias = rng.standard_normal(channels * multiplier).astype(np.float32)
    graph = Graph(
        tensors=[
            Tensor("x", x.shape, np.float32),
            Tensor("w", weight.shape, np.float32, weight),
            Tensor("b", bias.shape, np.float32, bias),
            Tensor("y", (1, 4, 3, channels * multiplier), np.float32),
        ],
        ops=[
            Op("DEPTHWISE_CONV_2D", [0, 1, 2], [3], {
                "Padding": 0, "StrideH": stride, "StrideW": stride, "DilationHFactor": 1,
                "DilationWFactor": 1, "DepthMultiplier": multiplier, "FusedActivationFunction": 3,
            }),
        ],
        inputs=[0],
        outputs=[3],
    )
    model = build_onnx(graph, "dw").SerializeToString()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"x": x.transpose(0, 3, 1, 2).copy()})
    expected = _reference_depthwise(x, weight, bias, stride, multiplier)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_padded_channels_are_sliced_before_concat_and_outputs():
    """12-channel maps are stored as 16 inside the graph; concat and outputs must see only 12."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 5, 5, 8)).astype(np.float32)
    weights = [rng.standard_normal((12, 1, 1, 8)).astype(np.float32) for _ in range(2)]
    slope = rng.uniform(-0.5, 1.5, (1, 1, 12)).astype(np.float32)
    conv = {"Padding": 1, "StrideH": 1, "StrideW": 1, "DilationHFactor": 1, "DilationWFactor": 1,
            "FusedActivationFunction": 0}
    graph = Graph(
        tensors=[
            Tensor("x", x.shape, np.float32),
            Tensor("w0", weights[0].shape, np.float32, weights[0]),
            Tensor("w1", weights[1].shape, np.float32, weights[1]),
            Tensor("a", (1, 5, 5, 12), np.float32),
            Tensor("b", (1, 5, 5, 12), np.float32),
            Tensor("slope", slope.shape, np.float32, slope),
            Tensor("p", (1, 5, 5, 12), np.float32),
            Tensor("y", (1, 5, 5, 24), np.float32),
        ],
        ops=[
            Op("CONV_2D", [0, 1, -1], [3], conv),
            Op("CONV_2D", [0, 2, -1], [4], conv),
            Op("PRELU", [3, 5], [6]),
            Op("CONCATENATION", [6, 4], [7], {"Axis": 3, "FusedActivationFunction": 0}),
        ],
        inputs=[0],
        outputs=[7, 6],
    )
    model = build_onnx(graph, "pad")
    assert "Slice" in {node.op_type for node in model.graph.node}  # the padding did happen
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    concat, prelu = session.run(["y", "p"], {"x": x.transpose(0, 3, 1, 2).copy()})
    a, b = (np.einsum("nhwc,oc->nhwo", x, w[:, 0, 0, :]) for w in weights)
    expected_prelu = np.where(a > 0, a, a * slope)
    np.testing.assert_allclose(prelu, expected_prelu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(concat, np.concatenate([expected_prelu, b], axis=3), rtol=1e-5, atol=1e-5)
