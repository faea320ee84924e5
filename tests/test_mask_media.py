"""`dmask-live mask`: video and photo round trips, the built-in sample, and every failure mode."""

from __future__ import annotations

import csv
import errno
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from dmask_live import mask_media, sample
from dmask_live.cli import main
from dmask_live.pipeline import MaskPipeline
from dmask_live.renderer import BACKGROUND
from dmask_live.types import AvatarState, OcularMetrics

FPS = 10
FRAMES = 8


# --------------------------------------------------------------------------- helpers
class FaceEverywhere:
    """Landmark stand-in: a face in every non-uniform frame."""

    def process(self, image):
        return None if image.std() == 0 else object()

    def reset(self):
        pass


class CentredTracker:
    def update(self, landmarks, timestamp):
        if landmarks is None:
            return AvatarState.untracked((128, 128), timestamp)
        return AvatarState(True, translation=np.array([64.0, 64.0], np.float32), scale=5.0,
                           image_size=(128, 128), timestamp=timestamp)

    def reset(self):
        pass


class Analyzer:
    def __init__(self):
        self.count = 0

    def update(self, state):
        self.count += 1
        return OcularMetrics(state.timestamp, state.tracked, gaze_yaw_deg=(1.0, 2.0), blink_count=self.count)


@pytest.fixture()
def fake_stages(monkeypatch):
    """mask_media with stand-in landmark/tracker/ocular stages (the real renderer)."""

    def make(size, placement, model_dir, threads):
        return MaskPipeline(output_size=size, placement=placement, landmarker=FaceEverywhere(),
                            tracker=CentredTracker(), analyzer=Analyzer())

    monkeypatch.setattr(mask_media, "_make_pipeline", make)


def astronaut_frames(astronaut, count=FRAMES):
    small = np.ascontiguousarray(astronaut[::4, ::4])  # 128x128
    for index in range(count):
        yield np.ascontiguousarray(np.roll(small, index, axis=1))


def write_video(path: Path, frames, fps=FPS, audio=False) -> None:
    """Encode frames (in memory) into a small H.264 mp4, optionally with a sine audio track."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        audio_stream = container.add_stream("aac", rate=16000) if audio else None
        count = 0
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
        if audio_stream is not None:
            samples = int(16000 * count / fps)
            tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 16000)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[None, start:start + 1024]
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate, frame.pts = 16000, start
                container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))


def read_video(path: Path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        info = {
            "fps": float(stream.average_rate),
            "duration": float(container.duration / av.time_base) if container.duration else None,
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "audio": len(container.streams.audio),
        }
    return frames, info


def leftovers(directory: Path, keep=()) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    ga, gb = a.astype(float).mean(-1).ravel(), b.astype(float).mean(-1).ravel()
    return 0.0 if ga.std() == 0 or gb.std() == 0 else float(np.corrcoef(ga, gb)[0, 1])


# --------------------------------------------------------------------------- round trips
def test_video_round_trip(tmp_path, astronaut, fake_stages, capsys):
    source = tmp_path / "in.mp4"
    write_video(source, astronaut_frames(astronaut))
    target = tmp_path / "out.mp4"
    assert main(["mask", str(source), str(target)]) == 0
    frames, info = read_video(target)
    _, info_in = read_video(source)
    assert len(frames) == FRAMES
    assert info["fps"] == pytest.approx(FPS)
    assert info["duration"] == pytest.approx(info_in["duration"], abs=1.0 / FPS)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["audio"] == 0
    originals = list(astronaut_frames(astronaut))
    for frame, original in zip(frames, originals, strict=True):
        assert frame.shape == (128, 128, 3)
        assert np.abs(frame[0, 0].astype(int) - BACKGROUND).max() <= 6  # encoded background
        assert correlation(frame, original) < 0.3
    with open(f"{target}.metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["frame"]) for r in rows] == list(range(FRAMES))
    assert rows[0]["tracked"] == "True" and rows[0]["gaze_yaw_od_deg"] == "1.0"
    assert rows[0]["horizontal_deviation_deg"] == ""  # NaN is an empty cell
    assert float(rows[-1]["timestamp"]) == pytest.approx((FRAMES - 1) / FPS)
    assert leftovers(tmp_path) == ["in.mp4", "out.mp4", "out.mp4.metrics.csv"]
    assert "masked 8 frame(s)" in capsys.readouterr().err


def test_keep_audio_and_json_metrics(tmp_path, astronaut, fake_stages):
    source = tmp_path / "talk.mp4"
    write_video(source, astronaut_frames(astronaut), audio=True)
    silent, kept = tmp_path / "silent.mkv", tmp_path / "kept.mp4"
    metrics = tmp_path / "m.json"
    assert main(["mask", str(source), str(silent)]) == 0
    assert main(["mask", "--keep-audio", "--metrics", str(metrics), str(source), str(kept)]) == 0
    assert read_video(silent)[1]["audio"] == 0
    assert read_video(kept)[1]["audio"] == 1
    data = json.loads(metrics.read_text())
    assert data["fps"] == pytest.approx(FPS) and data["frame_count"] == FRAMES
    assert len(data["frames"]) == FRAMES and data["frames"][3]["blink_count"] == 4
    assert "talk" not in metrics.read_text()  # no source path (it may name the patient)


def test_photo_round_trip(tmp_path, astronaut, fake_stages):
    from PIL import Image

    source, target = tmp_path / "face.jpg", tmp_path / "masked.png"
    Image.fromarray(astronaut).save(source)
    assert main(["mask", str(source), str(target)]) == 0
    with Image.open(target) as image:
        out = np.asarray(image.convert("RGB"))
    assert out.shape == astronaut.shape
    assert tuple(out[0, 0]) == BACKGROUND
    assert correlation(out, astronaut) < 0.3
    rows = list(csv.DictReader(open(f"{target}.metrics.csv", newline="")))
    assert len(rows) == 1 and rows[0]["tracked"] == "True"


def test_sample_is_masked(tmp_path, fake_stages, monkeypatch):
    monkeypatch.setattr(sample, "SAMPLE_SECONDS", 0.4)
    monkeypatch.setattr(sample, "sample_frame_count", lambda seconds=0.4, fps=25: 10)
    target = tmp_path / "sample.mp4"
    assert main(["mask", "--sample", str(target)]) == 0
    frames, info = read_video(target)
    assert len(frames) == 10 and info["fps"] == pytest.approx(sample.SAMPLE_FPS)
    assert leftovers(tmp_path) == ["sample.mp4", "sample.mp4.metrics.csv"]


def test_sample_frames_move_a_real_face():
    frames = list(sample.sample_frames(seconds=0.4))
    assert len(frames) == 10 and frames[0].shape == (512, 512, 3) and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[5])
    assert correlation(frames[0], sample.sample_face()) > 0.85  # small motion of the same photo


# --------------------------------------------------------------------------- failures
def run_failing(args, capsys) -> str:
    code = main(["mask", *[str(a) for a in args]])
    assert code != 0
    return capsys.readouterr().err


def test_missing_and_directory_input(tmp_path, capsys):
    assert "not found" in run_failing([tmp_path / "nope.mp4", tmp_path / "o.mp4"], capsys)
    (tmp_path / "dir").mkdir()
    assert "directory" in run_failing([tmp_path / "dir", tmp_path / "o.mp4"], capsys)
    assert leftovers(tmp_path) == ["dir"]


def test_unreadable_and_truncated_input(tmp_path, astronaut, fake_stages, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    assert "cannot read" in run_failing([junk, tmp_path / "o.mp4"], capsys)
    good = tmp_path / "good.mp4"
    write_video(good, astronaut_frames(astronaut))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "cannot read" in run_failing([cut, tmp_path / "o.mp4"], capsys)
    bad_photo = tmp_path / "bad.jpg"
    from PIL import Image

    Image.fromarray(astronaut).save(tmp_path / "full.jpg")
    bad_photo.write_bytes((tmp_path / "full.jpg").read_bytes()[:3000])
    assert "cannot read the photo" in run_failing([bad_photo, tmp_path / "o.png"], capsys)
    assert leftovers(tmp_path) == ["bad.jpg", "cut.mp4", "full.jpg", "good.mp4", "junk.mp4"]


def test_unwritable_outputs(tmp_path, astronaut, capsys):
    source = tmp_path / "in.mp4"
    write_video(source, astronaut_frames(astronaut, 2))
    assert "does not exist" in run_failing([source, tmp_path / "no" / "o.mp4"], capsys)
    (tmp_path / "file").write_text("x")
    assert "does not exist" in run_failing([source, tmp_path / "file" / "o.mp4"], capsys)
    (tmp_path / "outdir.mp4").mkdir()
    assert "directory" in run_failing([source, tmp_path / "outdir.mp4"], capsys)
    assert "overwrite the input" in run_failing([source, source], capsys)
    assert "must end in" in run_failing([source, tmp_path / "o.avi"], capsys)
    assert "must end in .csv or .json" in run_failing([source, tmp_path / "o.mp4", "--metrics",
                                                       tmp_path / "m.txt"], capsys)
    assert leftovers(tmp_path) == ["file", "in.mp4", "outdir.mp4"]


def test_missing_encoder(tmp_path, astronaut, fake_stages, monkeypatch, capsys):
    source = tmp_path / "in.mp4"
    write_video(source, astronaut_frames(astronaut, 2))
    monkeypatch.setattr(mask_media, "VIDEO_CODEC", "no_such_h264_encoder")
    assert "no_such_h264_encoder" in run_failing([source, tmp_path / "o.mp4"], capsys)
    assert leftovers(tmp_path) == ["in.mp4"]


def test_full_disk_mid_video(tmp_path, astronaut, fake_stages, monkeypatch, capsys):
    source = tmp_path / "in.mp4"
    write_video(source, astronaut_frames(astronaut))
    real_mux, calls = mask_media._mux, []

    def mux_then_fill(container, packets):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_mux(container, packets)

    monkeypatch.setattr(mask_media, "_mux", mux_then_fill)
    assert "no space left" in run_failing([source, tmp_path / "o.mp4"], capsys)
    assert leftovers(tmp_path) == ["in.mp4"]


def test_pipeline_start_failure_leaves_nothing(tmp_path, astronaut, monkeypatch, capsys):
    source = tmp_path / "in.mp4"
    write_video(source, astronaut_frames(astronaut, 2))

    def broken(*args):
        raise mask_media.MaskMediaError("cannot start the mask pipeline: RuntimeError: no EGL")

    monkeypatch.setattr(mask_media, "_make_pipeline", broken)
    assert "no EGL" in run_failing([source, tmp_path / "o.mp4"], capsys)
    assert leftovers(tmp_path) == ["in.mp4"]


def test_usage_errors(tmp_path, capsys):
    assert main(["mask"]) == 2
    assert main(["mask", "--sample", str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]) == 2
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- the real stages
def test_real_sample_end_to_end(tmp_path, monkeypatch):
    pytest.importorskip("dmask_live.tracker", reason="tracker stage not available yet")
    pytest.importorskip("dmask_live.ocular", reason="ocular stage not available yet")
    monkeypatch.setattr(sample, "sample_frame_count", lambda seconds=0.0, fps=25: 12)
    target = tmp_path / "sample.mp4"
    assert main(["mask", "--sample", str(target)]) == 0
    frames, info = read_video(target)
    assert len(frames) == 12 and info["fps"] == pytest.approx(25)
    rows = list(csv.DictReader(open(f"{target}.metrics.csv", newline="")))
    assert sum(r["tracked"] == "True" for r in rows) >= 10
    originals = list(sample.sample_frames())[:12]
    for frame, original in zip(frames, originals, strict=True):
        assert correlation(frame, original) < 0.3


def test_unexpected_failure_is_one_message_and_no_file(tmp_path, astronaut, fake_stages, monkeypatch, capsys):
    source = tmp_path / "in.mp4"
    write_video(source, astronaut_frames(astronaut, 3))

    def broken_encoder(*args):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(mask_media, "_video_encoder", broken_encoder)
    assert "RuntimeError: encoder exploded" in run_failing([source, tmp_path / "o.mp4"], capsys)
    assert leftovers(tmp_path) == ["in.mp4"]


def test_interrupt_leaves_no_partial_file(tmp_path, astronaut, fake_stages, monkeypatch):
    source = tmp_path / "in.mp4"
    write_video(source, astronaut_frames(astronaut))
    real_mux, calls = mask_media._mux, []

    def interrupted(container, packets):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        real_mux(container, packets)

    monkeypatch.setattr(mask_media, "_mux", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["mask", str(source), str(tmp_path / "o.mp4")])
    assert leftovers(tmp_path) == ["in.mp4"]
