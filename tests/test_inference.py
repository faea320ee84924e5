"""Inference backends: OpenVINO runs the converted ONNX files as onnxruntime does, and the
backend choice (default, environment, explicit, fallback) says what it did and why."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from dmask_live import inference
from dmask_live.inference import OnnxModel, OpenVinoModel, open_network

# Output agreement, as a fraction of each output's range over the batch (the conversion tests'
# measure). float32 in both runtimes: reordered sums only. bfloat16: 8-bit mantissas with float32
# accumulation, measured ~4e-3 on these inputs.
F32_TOLERANCE = 1e-4
BF16_TOLERANCE = 2e-2
NETWORK_INPUTS = {  # name -> (batch, size) as the landmark stage calls them
    "face_detection_short_range": (1, 128),
    "face_landmark": (1, 192),
    "iris_landmark": (2, 64),
}


@pytest.fixture(scope="module")
def paths():
    from dmask_live.models import ModelError, load_model_paths

    try:
        return load_model_paths()
    except ModelError as error:
        pytest.skip(f"ONNX models not built (run `dmask-live models`): {error}")


def face_inputs(astronaut: np.ndarray, batch: int, size: int) -> np.ndarray:
    """Real face pixels (the astronaut's face and eyes) as an NCHW float32 batch in [0, 1]."""
    boxes = [(160, 50, 290, 200), (180, 90, 225, 125), (225, 90, 270, 125)]  # face, eyes
    crops = [cv2.resize(astronaut[y0:y1, x0:x1], (size, size)) for x0, y0, x1, y1 in boxes]
    crops = crops[1:] if batch == 2 else crops[:1]
    return np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def relative_error(ours: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Largest difference / the output's range (its magnitude for a one-value output)."""
    return max(
        float(np.abs(a - b).max() / max(float(np.ptp(b)), float(np.abs(b).max()), 1e-6))
        for a, b in zip(ours, reference, strict=True)
    )


@pytest.mark.parametrize("name", sorted(NETWORK_INPUTS))
def test_openvino_float32_matches_onnxruntime(paths, astronaut, name):
    batch, size = NETWORK_INPUTS[name]
    reference, openvino = OnnxModel(paths[name]), OpenVinoModel(paths[name], precision="f32")
    assert openvino.output_names == reference.output_names
    noise = np.random.default_rng(0).random((batch, 3, size, size), np.float32)
    for x in (face_inputs(astronaut, batch, size), noise):
        assert relative_error(openvino(x), reference(x)) <= F32_TOLERANCE


@pytest.mark.parametrize("name", sorted(NETWORK_INPUTS))
def test_openvino_bfloat16_stays_close(paths, astronaut, name):
    if not inference.cpu_has_bf16():
        pytest.skip("this CPU has no native bfloat16 (OpenVINO would run float32)")
    batch, size = NETWORK_INPUTS[name]
    x = face_inputs(astronaut, batch, size)
    error = relative_error(OpenVinoModel(paths[name], precision="bf16")(x), OnnxModel(paths[name])(x))
    assert error <= BF16_TOLERANCE


def test_outputs_are_copies_not_views_of_the_next_call(paths):
    model = OpenVinoModel(paths["iris_landmark"], precision="f32")
    rng = np.random.default_rng(1)
    first_input = rng.random((2, 3, 64, 64), np.float32)
    first = model(first_input)
    kept = [out.copy() for out in first]
    model(rng.random((2, 3, 64, 64), np.float32))
    assert all(np.array_equal(a, b) for a, b in zip(first, kept, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(model(first_input), kept, strict=True))


def test_each_shape_compiles_once_and_others_still_run(paths):
    model = OpenVinoModel(paths["iris_landmark"], precision="f32")
    for batch in (1, 2, 3, 2, 1):
        contours, iris = model(np.zeros((batch, 3, 64, 64), np.float32))
        assert contours.shape[0] == batch and iris.shape == (batch, 15)
    assert len(model._compiled) == 3


@pytest.mark.parametrize(
    "inputs, message",
    [
        ((np.zeros((1, 3, 64, 64), np.float64),), "float32"),
        ((np.zeros((1, 3, 64, 64), np.float32),) * 2, "expected 1 inputs"),
        (([[0.0]],), "float32"),
    ],
)
def test_openvino_input_boundary(paths, inputs, message):
    with pytest.raises(ValueError, match=message):
        OpenVinoModel(paths["iris_landmark"])(*inputs)


def test_openvino_options_are_checked(paths):
    with pytest.raises(ValueError, match="threads"):
        OpenVinoModel(paths["iris_landmark"], threads=0)
    with pytest.raises(ValueError, match="precision"):
        OpenVinoModel(paths["iris_landmark"], precision="int8")


def test_environment_names_the_backend(paths, monkeypatch):
    monkeypatch.setenv(inference.BACKEND_ENV_VAR, "onnxruntime")
    assert isinstance(open_network(paths["iris_landmark"]), OnnxModel)
    monkeypatch.setenv(inference.BACKEND_ENV_VAR, "openvino-f32")
    assert open_network(paths["iris_landmark"]).backend == "openvino-f32"
    monkeypatch.setenv(inference.BACKEND_ENV_VAR, "tensorrt")
    with pytest.raises(ValueError, match="DMASK_INFERENCE must be auto or one of onnxruntime, openvino"):
        open_network(paths["iris_landmark"])
    monkeypatch.setenv(inference.BACKEND_ENV_VAR, "auto")
    assert open_network(paths["iris_landmark"]).backend.startswith(inference.default_backend())


def test_explicit_choices(paths, monkeypatch):
    monkeypatch.delenv(inference.BACKEND_ENV_VAR, raising=False)
    # onnxruntime providers are onnxruntime's: naming them means onnxruntime.
    assert isinstance(open_network(paths["iris_landmark"], providers=[inference.CPU]), OnnxModel)
    assert isinstance(open_network(paths["iris_landmark"], backend="openvino"), OpenVinoModel)
    with pytest.raises(ValueError, match="backend must be one of"):
        open_network(paths["iris_landmark"], backend="OpenVINO")


def test_a_named_backend_that_fails_is_an_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(RuntimeError, match="broken.onnx: backend openvino-f32 failed"):
        open_network(broken, backend="openvino-f32")


def test_the_default_falls_back_to_onnxruntime_and_then_lists_every_failure(paths, tmp_path, monkeypatch):
    monkeypatch.delenv(inference.BACKEND_ENV_VAR, raising=False)
    monkeypatch.setattr(inference, "default_backend", lambda: "openvino")

    def unavailable(*args, **kwargs):
        raise ImportError("no module named openvino")

    monkeypatch.setattr(inference, "OpenVinoModel", unavailable)
    assert isinstance(open_network(paths["iris_landmark"]), OnnxModel)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(RuntimeError) as failure:
        open_network(broken)
    assert "openvino: ImportError: no module named openvino" in str(failure.value)
    assert "onnxruntime:" in str(failure.value)


def test_the_landmark_stage_agrees_across_backends(astronaut):
    from dmask_live.landmarks import FaceLandmarker

    reference = FaceLandmarker(backend="onnxruntime").process(astronaut)
    openvino = FaceLandmarker(backend="openvino").process(astronaut)
    assert reference is not None and openvino is not None
    eye_distance = np.linalg.norm(reference.iris[0, 0, :2] - reference.iris[1, 0, :2])
    gaps = np.linalg.norm(openvino.points[:, :2] - reference.points[:, :2], axis=1) / eye_distance
    assert np.median(gaps) < 0.01 and gaps.max() < 0.05


def test_openvino_makes_no_network_connection(paths):
    # OpenVINO's package carries a converter with opt-in telemetry; reading and compiling ONNX
    # files must never reach the network. A fresh interpreter, so that the import is covered too.
    script = textwrap.dedent(
        f"""
        import socket
        attempts = []
        def refuse(self, address, *args):
            attempts.append(address)
            raise OSError("network forbidden in this test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = lambda address, *a, **k: refuse(None, address)
        import numpy as np
        from dmask_live.inference import OpenVinoModel
        OpenVinoModel({str(paths["iris_landmark"])!r})(np.zeros((2, 3, 64, 64), np.float32))
        print("attempts", len(attempts))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "attempts 0" in done.stdout
