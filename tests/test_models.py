"""`dmask-live models`: building, verifying and locating the ONNX networks."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from dmask_live import cli, models


@pytest.fixture(scope="session")
def built_once(tmp_path_factory, mediapipe_wheel) -> Path:
    """A model directory built once; tests that damage files work on a copy."""
    return models.build_models(tmp_path_factory.mktemp("models"), wheel=mediapipe_wheel)


@pytest.fixture
def model_dir(tmp_path, built_once) -> Path:
    target = tmp_path / "onnx"
    target.mkdir()
    for path in built_once.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def _mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def test_build_writes_models_manifest_and_notice(built_once, mediapipe_wheel):
    paths = models.load_model_paths(built_once)
    assert list(paths) == list(models.MODEL_NAMES)
    assert all(p.parent == built_once and p.suffix == ".onnx" for p in paths.values())
    manifest = json.loads((built_once / models.MANIFEST_NAME).read_text())
    assert manifest["mediapipe_version"] == models.MEDIAPIPE_VERSION
    assert manifest["wheel"]["filename"] == mediapipe_wheel.name
    assert len(manifest["wheel"]["sha256"]) == 64
    for name in models.MODEL_NAMES:
        entry = manifest["models"][name]
        assert entry["tflite_sha256"] == models.TFLITE_SHA256[name]
        assert entry["onnx_sha256"] == models.file_sha256(paths[name])
        if name in models.INPUT_RANGES:
            assert entry["input_range"] == list(models.INPUT_RANGES[name])
        else:  # the attention heads read feature-map crops, not an image
            assert entry["input_shape"] == models.HEADS_INPUT["input_shape"]
    assert "Apache License" in (built_once / models.NOTICE_NAME).read_text()
    assert "Apache License" in (built_once / models.LICENSE_NAME).read_text()
    assert not list(built_once.glob(".*.tmp"))


def test_second_build_changes_nothing(model_dir, mediapipe_wheel):
    before = _mtimes(model_dir)
    assert models.build_models(model_dir, wheel=mediapipe_wheel) == model_dir
    assert _mtimes(model_dir) == before


def test_force_rebuilds_identical_files(model_dir, mediapipe_wheel):
    before = {p.name: p.read_bytes() for p in model_dir.glob("*.onnx")}
    models.build_models(model_dir, wheel=mediapipe_wheel, force=True)
    assert {p.name: p.read_bytes() for p in model_dir.glob("*.onnx")} == before


def test_damaged_onnx_names_the_file_and_the_fix(model_dir):
    damaged = model_dir / "face_landmark.onnx"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hash can tell
    damaged.write_bytes(bytes(data))
    os.utime(damaged, ns=(1_000_000_000, 1_000_000_000))
    with pytest.raises(models.ModelError) as info:
        models.load_model_paths(model_dir)
    message = str(info.value)
    assert "face_landmark.onnx" in message and "damaged" in message
    assert "dmask-live models --force" in message


def test_damaged_file_is_rebuilt_by_build(model_dir, mediapipe_wheel):
    (model_dir / "iris_landmark.onnx").write_bytes(b"not a model")
    models.build_models(model_dir, wheel=mediapipe_wheel)
    assert set(models.load_model_paths(model_dir)) == set(models.MODEL_NAMES)


def test_missing_onnx_names_the_file(model_dir):
    (model_dir / "iris_landmark.onnx").unlink()
    with pytest.raises(models.ModelError, match=r"iris_landmark\.onnx is missing.*dmask-live models"):
        models.load_model_paths(model_dir)


def test_missing_manifest(model_dir):
    (model_dir / models.MANIFEST_NAME).unlink()
    with pytest.raises(models.ModelError, match=r"no manifest\.json.*dmask-live models"):
        models.load_model_paths(model_dir)


def test_unreadable_manifest(model_dir):
    (model_dir / models.MANIFEST_NAME).write_text("{ not json")
    with pytest.raises(models.ModelError, match=r"manifest\.json is damaged.*--force"):
        models.load_model_paths(model_dir)


def test_interrupted_build_leaves_nothing_that_verifies(model_dir, mediapipe_wheel, monkeypatch):
    import dmask_live.convert as convert

    calls = []

    def failing_convert(source, name="model"):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_convert(source, name)

    real_convert = convert.convert_tflite
    monkeypatch.setattr(convert, "convert_tflite", failing_convert)
    with pytest.raises(KeyboardInterrupt):
        models.build_models(model_dir, wheel=mediapipe_wheel, force=True)
    with pytest.raises(models.ModelError, match="dmask-live models"):
        models.load_model_paths(model_dir)
    assert not list(model_dir.glob(".*.tmp"))
    monkeypatch.undo()
    models.build_models(model_dir, wheel=mediapipe_wheel)
    assert set(models.load_model_paths(model_dir)) == set(models.MODEL_NAMES)


def test_outdated_converter_asks_for_a_rebuild(model_dir, mediapipe_wheel):
    manifest_path = model_dir / models.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["converter_version"] = "0"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(models.ModelError, match=r"converter 0.*run `dmask-live models"):
        models.load_model_paths(model_dir)
    models.build_models(model_dir, wheel=mediapipe_wheel)
    assert set(models.load_model_paths(model_dir)) == set(models.MODEL_NAMES)


def test_wheel_without_the_networks_is_refused(tmp_path):
    fake = tmp_path / f"mediapipe-{models.MEDIAPIPE_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("mediapipe/__init__.py", "")
    with pytest.raises(models.ModelError, match="not a usable mediapipe"):
        models.build_models(tmp_path / "out", wheel=fake)
    assert not (tmp_path / "out" / models.MANIFEST_NAME).exists()


def test_cli_check_exit_codes(model_dir, capsys):
    assert cli.main(["models", "--check", "--dir", str(model_dir)]) == 0
    assert "verify" in capsys.readouterr().out
    (model_dir / "face_detection_short_range.onnx").write_bytes(b"broken")
    assert cli.main(["models", "--check", "--dir", str(model_dir)]) == 1
    err = capsys.readouterr().err
    assert "face_detection_short_range.onnx" in err and "dmask-live models" in err


def test_cli_reports_up_to_date(model_dir, capsys):
    assert cli.main(["models", "--dir", str(model_dir)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_cli_nonexistent_wheel_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["models", "--dir", str(tmp_path / "out"), "--wheel", "/nonexistent/mediapipe.whl"])
    assert code != 0
    err = capsys.readouterr().err
    assert "/nonexistent/mediapipe.whl does not exist" in err and "--wheel PATH" in err


def test_cli_nonexistent_wheel_fails_even_when_up_to_date(model_dir, capsys):
    assert cli.main(["models", "--dir", str(model_dir), "--wheel", "/nonexistent/mediapipe.whl"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_builds_from_wheel(tmp_path, mediapipe_wheel, capsys):
    target = tmp_path / "fresh"
    assert cli.main(["models", "--dir", str(target), "--wheel", str(mediapipe_wheel)]) == 0
    assert "built" in capsys.readouterr().out
    assert set(models.load_model_paths(target)) == set(models.MODEL_NAMES)


def test_default_model_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(models.MODEL_DIR_ENV, str(tmp_path / "custom"))
    assert models.default_model_dir() == tmp_path / "custom"
    monkeypatch.delenv(models.MODEL_DIR_ENV)
    checkout_onnx = Path(models.__file__).resolve().parents[1] / "onnx"
    if checkout_onnx.is_dir() and os.access(checkout_onnx, os.W_OK):
        assert models.default_model_dir() == checkout_onnx
    else:
        assert models.default_model_dir().parts[-2:] == ("dmask-live", "onnx")


def test_verification_hashes_each_file_once(built_once, monkeypatch):
    models.load_model_paths(built_once)
    hashed = []
    monkeypatch.setattr(models, "_sha256_bytes_of", lambda path: hashed.append(path) or "x")
    models.load_model_paths(built_once)
    assert hashed == []
