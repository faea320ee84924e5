"""The attention mesh cut around MediaPipe's custom ops, and the numba kernels that replace them.

The kernels are checked against direct transcriptions of MediaPipe's TFLite reference kernels
(version 2: the matrix products and loops as written there); the cut graphs by their interface and
spec. That the whole works is checked on a real face in test_landmarks.py (against the separate
mesh and iris networks) and against MediaPipe itself by benchmarks/bench_landmarks.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dmask_live import attention_kernels, models
from dmask_live.convert import SPEC_KEY, UnsupportedOpError, convert_attention
from dmask_live.convert.attention import attention_spec
from dmask_live.convert.tflite_reader import read_tflite
from dmask_live.types import EYE_CONTOUR_MESH_INDICES


# ---------------------------------------------------------------- reference transcriptions
def reference_transform_matrix(landmarks, subset, left, right, target, out_w, out_h, scale_x, scale_y):
    dx, dy = landmarks[right, 0] - landmarks[left, 0], landmarks[right, 1] - landmarks[left, 1]
    rotation = target - math.atan2(dy, dx)

    def rot3(r):
        return np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])

    points = [rot3(rotation) @ np.array([landmarks[i, 0], landmarks[i, 1], 1.0]) for i in subset]
    xy_max, xy_min = np.max(points, axis=0), np.min(points, axis=0)
    width, height = xy_max[0] - xy_min[0], xy_max[1] - xy_min[1]
    centre = rot3(-rotation) @ np.array([(xy_min[0] + xy_max[0]) / 2, (xy_min[1] + xy_max[1]) / 2, 1.0])

    def mat4(linear=None, shift=(0.0, 0.0)):
        m = np.eye(4)
        m[:2, :2] = np.eye(2) if linear is None else linear
        m[:2, 3] = shift
        return m

    r = -rotation
    t = mat4(shift=centre[:2])
    t = t @ mat4(np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]]))
    t = t @ mat4(np.diag([scale_x * width / out_w, scale_y * height / out_h]))
    return t @ mat4(shift=(-out_w / 2.0, -out_h / 2.0))


def reference_bilinear(features, matrix, out_h, out_w):
    height, width, channels = features.shape
    x_t, y_t = matrix[0].copy(), matrix[1].copy()
    x_t[3] += x_t[0] * 0.5 + x_t[1] * 0.5 - 0.5
    y_t[3] += y_t[0] * 0.5 + y_t[1] * 0.5 - 0.5
    out = np.zeros((out_h, out_w, channels), np.float32)

    def read(h, w):
        return 0.0 if h < 0 or w < 0 or h >= height or w >= width else features[h, w]

    for oy in range(out_h):
        for ox in range(out_w):
            coord = np.array([ox, oy, 0.0, 1.0])
            tx, ty = x_t @ coord, y_t @ coord
            if tx < 0.0 or tx > width - 1 or ty < 0.0 or ty > height - 1:
                continue
            fx, fy = math.floor(tx), math.floor(ty)
            q11, q21, q12, q22 = read(fy, fx), read(fy, fx + 1), read(fy + 1, fx), read(fy + 1, fx + 1)
            right, lower = tx - fx, ty - fy
            upper = (1.0 - right) * q11 + right * q21
            below = (1.0 - right) * q12 + right * q22
            out[oy, ox] = lower * below + (1.0 - lower) * upper
    return out


# ---------------------------------------------------------------- kernels
@pytest.mark.parametrize("seed", range(5))
def test_transform_matrix_matches_mediapipe_kernel(seed):
    rng = np.random.default_rng(seed)
    landmarks = rng.uniform(0, 48, (468, 3)).astype(np.float32)
    subset = rng.choice(468, 40, replace=False)
    args = (int(subset[0]), int(subset[5]), float(rng.uniform(-1, 1)), 16.0, 16.0, 1.5, 1.5)
    expected = reference_transform_matrix(landmarks.astype(np.float64), subset, *args)
    out = np.zeros((4, 4))
    padded = np.concatenate([subset, np.zeros(10, np.int64)])  # kernel reads only the first `count`
    attention_kernels.transform_matrix(landmarks, 1.0, padded, len(subset), *args, out)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)


def test_transform_matrix_scales_the_landmarks_first():
    rng = np.random.default_rng(3)
    landmarks = rng.uniform(0, 192, (468, 3)).astype(np.float32)
    subset = np.arange(30, 90)
    args = (30, 40, 0.0, 16.0, 16.0, 1.5, 1.5)
    scaled, direct = np.zeros((4, 4)), np.zeros((4, 4))
    attention_kernels.transform_matrix(landmarks, 0.25, subset, len(subset), *args, scaled)
    attention_kernels.transform_matrix(landmarks * np.float32(0.25), 1.0, subset, len(subset), *args, direct)
    np.testing.assert_allclose(scaled, direct, atol=1e-5)


def _matrix(angle: float, scale: float, x: float, y: float) -> np.ndarray:
    m = np.eye(4)
    c, s = math.cos(angle), math.sin(angle)
    m[:2, :2] = [[c * scale, -s * scale], [s * scale, c * scale]]
    m[:2, 3] = [x - 8 * scale, y - 8 * scale]
    return m


@pytest.mark.parametrize(
    "matrix",
    [
        _matrix(0.3, 1.1, 20, 24), _matrix(-0.2, 0.9, 40, 44), _matrix(0.0, 1.0, 0, 0),
        _matrix(1.0, 3.0, 47, 10), _matrix(0.0, 1.0, 39.5, 39.5), _matrix(0.0, 0.5, 47.0, 47.0),
    ],
    ids=["inside", "inside-turned", "corner", "mostly-outside", "last-row-and-column", "at-the-edge"],
)
def test_bilinear_crop_matches_mediapipe_kernel(matrix):
    features = np.random.default_rng(1).standard_normal((48, 48, 32)).astype(np.float32)
    out = np.full((32, 16, 16), np.nan, np.float32)
    attention_kernels.transform_tensor_bilinear(features, matrix, out)
    expected = reference_bilinear(features, matrix, 16, 16)
    np.testing.assert_allclose(out.transpose(1, 2, 0), expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the cut
@pytest.fixture(scope="module")
def attention_tflite(mediapipe_wheel) -> bytes:
    return models._read_wheel(mediapipe_wheel)["face_landmark_attention_backbone"]


@pytest.fixture(scope="module")
def cut(attention_tflite):
    return convert_attention(attention_tflite, "face_landmark_with_attention")


def test_cut_interfaces_and_spec(cut):
    import json

    backbone, heads = cut
    def shape_of(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    dims = {o.name: shape_of(o) for o in backbone.graph.output}
    assert dims == {
        "output_mesh": ["N", 1, 1, 1404],
        "conv_faceflag": ["N", 1, 1, 1],
        "p_re_lu_3": ["N", 48, 48, 32],
    }
    crops = [f"transform_tensor_bilinear_v2{suffix}" for suffix in ("", "_1", "_2")]
    assert [i.name for i in heads.graph.input] == crops
    spec = json.loads({p.key: p.value for p in heads.metadata_props}[SPEC_KEY])
    regions = spec["regions"]
    assert [r["rotation_indices"] for r in regions] == [[61, 291], [33, 133], [362, 263]]
    assert regions[1]["subset"] == EYE_CONTOUR_MESH_INDICES[0].tolist()  # MediaPipe's "left" eye = OD
    assert regions[2]["subset"] == EYE_CONTOUR_MESH_INDICES[1].tolist()
    assert [list(r["outputs"].values()) for r in regions] == [
        ["conv_lips"], ["conv_left_eye", "conv_left_iris"], ["conv_right_eye", "conv_right_iris"],
    ]
    assert all(r["landmark_scale"] == 0.25 and r["crop_size"] == [16, 16] for r in regions)
    assert {o.name for o in heads.graph.output} == {n for r in regions for n in r["outputs"].values()}


def test_cut_is_deterministic(attention_tflite, cut):
    again = convert_attention(attention_tflite, "face_landmark_with_attention")
    assert [m.SerializeToString() for m in again] == [m.SerializeToString() for m in cut]


def test_unknown_custom_op_version_is_refused(attention_tflite):
    graph = read_tflite(attention_tflite)
    custom = next(op for op in graph.ops if op.kind == "CUSTOM")
    custom.options["version"] = 1
    with pytest.raises(UnsupportedOpError, match="version 1 is not supported"):
        attention_spec(graph)


def test_a_graph_without_region_crops_is_refused(mediapipe_wheel):
    graph = read_tflite(models._read_wheel(mediapipe_wheel)["face_landmark"])
    with pytest.raises(UnsupportedOpError, match="not an attention mesh"):
        attention_spec(graph)


def test_heads_take_their_three_crops_positionally():
    from dmask_live.inference import OnnxModel

    try:
        heads = OnnxModel(models.load_model_paths()["face_landmark_attention_heads"])
    except models.ModelError as error:
        pytest.skip(f"ONNX models not built (run `dmask-live models`): {error}")
    crops = [np.zeros((1, 32, 16, 16), np.float32)] * 3
    assert [o.shape for o in heads(*crops)] == [(1, 1, 1, 160), (1, 1, 1, 142), (1, 1, 1, 10), (1, 1, 1, 142),
                                                 (1, 1, 1, 10)]  # fmt: skip
    with pytest.raises(ValueError, match="expected 3 inputs, got 2"):
        heads(*crops[:2])
