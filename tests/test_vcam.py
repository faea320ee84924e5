"""``dmask-live vcam``: the loop from a source to a sink, sinks, sources, CLI exit codes.

The loop mechanics run against a stand-in masker (draws a disk that moves with time, never
reads input pixels) so they are fast and exact; one test runs the real MaskPipeline on the
same clip and skips with the reason when the pipeline cannot be built here.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from dmask_live import cli, vcam
from dmask_live.sinks import (
    SINKS,
    FileSink,
    MemorySink,
    SinkUnavailableError,
    check_frame,
    open_sink,
    register_sink,
    virtual_camera_setup_help,
)
from dmask_live.sources import FrameReader, LatestFrame, SourceError, SourceFrame, open_camera, open_file
from dmask_live.types import AvatarState, MaskedFrame, OcularMetrics

SIZE = (320, 240)  # width, height
FPS = 15.0
CLIP_FRAMES = 24


def astronaut_frames(astronaut: np.ndarray, n: int, size=SIZE) -> list[np.ndarray]:
    """The astronaut's head with small sideways/vertical motions, cropped to ``size``."""
    crop = astronaut[0:384, 32:544] if astronaut.shape[1] >= 544 else astronaut[0:384, 0:512]
    base = cv2.resize(np.ascontiguousarray(crop), size, interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        dx, dy = 6 * np.sin(i / 4.0), 3 * np.cos(i / 5.0)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        frames.append(cv2.warpAffine(base, shift, size, borderMode=cv2.BORDER_REFLECT))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip_frames(astronaut) -> list[np.ndarray]:
    return astronaut_frames(astronaut, CLIP_FRAMES)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, clip_frames) -> Path:
    return write_clip(tmp_path_factory.mktemp("vcam") / "astronaut.mp4", clip_frames)


class DiskAvatar:
    """Stand-in for MaskPipeline: a rendering that depends on time only, never on pixels."""

    def __init__(self, size=SIZE) -> None:
        self.size = size
        self.closed = 0
        self.thread = threading.get_ident()

    def neutral_frame(self, size):
        return np.full((size[1], size[0], 3), 90, np.uint8)

    def process(self, rgb, timestamp):
        assert threading.get_ident() == self.thread, "masker used off its creating thread"
        width, height = self.size
        image = np.full((height, width, 3), 200, np.uint8)
        centre = (int(width / 2 + 40 * np.sin(timestamp * 3)), height // 2)
        cv2.circle(image, centre, 40, (180, 120, 100), -1)
        state = AvatarState(tracked=True, image_size=self.size, timestamp=timestamp)
        metrics = OcularMetrics(timestamp=timestamp, tracked=True, blink_count=0)
        return MaskedFrame(image=image, state=state, metrics=metrics, timings_ms={"total": 1.0})

    def close(self):
        self.closed += 1


class SyntheticCamera:
    """A live-like source: frames at ``fps`` from a list; raises SourceError after ``fail_after``."""

    def __init__(self, frames, fps=30.0, fail_after=None, start_time=0.0) -> None:
        self.frames, self.fps, self.fail_after = frames, fps, fail_after
        self.index, self.start_time, self.closed = 0, start_time, False

    def read(self) -> SourceFrame:
        if self.fail_after is not None and self.index >= self.fail_after:
            raise SourceError("camera /dev/video0 read failed: [Errno 19] No such device (unplugged)")
        time.sleep(1.0 / self.fps)
        rgb = self.frames[self.index % len(self.frames)]
        frame = SourceFrame(rgb, self.start_time + self.index / self.fps, self.index, time.monotonic())
        self.index += 1
        return frame

    def close(self):
        self.closed = True


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64).ravel()
    b = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def assert_never_input(sent: list[np.ndarray], inputs: list[np.ndarray]) -> None:
    for out in sent:
        for inp in inputs[:: max(1, len(inputs) // 6)]:
            if out.shape == inp.shape:
                assert not np.array_equal(out, inp)
                assert abs(correlation(out, inp)) < 0.5


def run_file(clip, masker_factory, tmp_path, **config):
    source = open_file(clip)
    sink = MemorySink(width=SIZE[0], height=SIZE[1], fps=source.fps)
    cfg = vcam.LoopConfig(output_size=SIZE, fps=source.fps, metrics_path=tmp_path / "m.jsonl", **config)
    stats = vcam.run_loop(lambda: open_file(clip), sink, masker_factory, cfg,
                          first_source=source, retry=False)
    return stats, sink, tmp_path / "m.jsonl"


# ------------------------------------------------------------------ the loop


def test_loop_masks_a_file_source_paced_by_its_clock(clip, clip_frames, tmp_path):
    maskers = []

    def make():
        maskers.append(DiskAvatar())
        return maskers[-1]

    stats, sink, metrics_path = run_file(clip, make, tmp_path)
    # every source frame is either sent masked or dropped (newest wins), nothing else
    assert stats.received == CLIP_FRAMES
    assert stats.masked_frames + stats.dropped == CLIP_FRAMES
    assert stats.frames_sent == stats.masked_frames == len(sink.frames) > CLIP_FRAMES // 2
    assert stats.kinds == ["masked"] * stats.frames_sent
    assert maskers[0].closed == 1
    # ordered: media timestamps and send times only go forward
    stamps = [ts for _, ts in sink.records]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    # paced like a camera: the clip's 23 frame intervals cannot pass faster than its clock
    send_times = [t for t, _ in sink.records]
    assert send_times[-1] - send_times[0] >= 0.8 * (stamps[-1] - stamps[0])
    assert stamps[-1] - stamps[0] == pytest.approx((CLIP_FRAMES - 1) / FPS, abs=1.5 / FPS)
    assert_never_input(sink.frames, clip_frames)
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    assert len(lines) == stats.masked_frames
    assert [line["frame"] for line in lines] == list(range(stats.frames_sent))
    source_frames = [line["source_frame"] for line in lines]
    assert source_frames == sorted(set(source_frames))
    assert all(line["tracked"] is True and "gaze_yaw_deg" in line for line in lines)
    assert len(stats.latencies_ms) == stats.frames_sent and min(stats.latencies_ms) >= 0


def test_slow_masker_drops_stale_frames_instead_of_queueing(clip, tmp_path):
    class SlowAvatar(DiskAvatar):
        def process(self, rgb, timestamp):
            time.sleep(2.5 / FPS)  # slower than the source: the loop must skip frames
            return super().process(rgb, timestamp)

    stats, sink, _ = run_file(clip, SlowAvatar, tmp_path)
    assert stats.dropped > 0
    assert stats.masked_frames + stats.dropped == stats.received == CLIP_FRAMES
    stamps = [ts for _, ts in sink.records]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))


def test_unplugged_camera_gets_neutral_frames_and_a_clear_message(astronaut, caplog):
    frames = astronaut_frames(astronaut, 8)
    opened = []

    def open_source():
        if opened:
            raise SourceError("camera /dev/video0 unavailable: [Errno 2] No such file or directory")
        opened.append(SyntheticCamera(frames, fail_after=6))
        return opened[-1]

    sink = MemorySink(width=SIZE[0], height=SIZE[1], fps=30)
    cfg = vcam.LoopConfig(output_size=SIZE, fps=30.0, max_frames=16, stall_timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="dmask_live.vcam"):
        stats = vcam.run_loop(open_source, sink, DiskAvatar, cfg, retry_interval=0.05)
    kinds = stats.kinds
    first_neutral = kinds.index("neutral")
    assert 1 <= first_neutral <= 6
    assert kinds[first_neutral:] == ["neutral"] * (16 - first_neutral)  # never masked, never raw
    neutral = DiskAvatar().neutral_frame(SIZE)
    assert all(np.array_equal(f, neutral) for f in sink.frames[first_neutral:])
    assert_never_input(sink.frames, frames)
    assert stats.source_outages == 1
    assert opened[0].closed
    text = caplog.text
    assert "unplugged" in text or "unavailable" in text
    assert "sending the neutral frame until frames come back" in text


def test_camera_that_comes_back_is_masked_again(astronaut, caplog):
    frames = astronaut_frames(astronaut, 4)
    attempts = []

    def open_source():
        attempts.append(1)
        if len(attempts) == 1:
            return SyntheticCamera(frames, fail_after=4)
        if len(attempts) < 4:
            raise SourceError("camera /dev/video0 unavailable: [Errno 16] Device or resource busy")
        return SyntheticCamera(frames)  # its clock restarts at 0

    sink = MemorySink(width=SIZE[0], height=SIZE[1], fps=30)
    cfg = vcam.LoopConfig(output_size=SIZE, fps=30.0, max_frames=30, stall_timeout=0.5)
    with caplog.at_level(logging.INFO, logger="dmask_live.vcam"):
        stats = vcam.run_loop(open_source, sink, DiskAvatar, cfg, retry_interval=0.1)
    kinds = "".join(k[0] for k in stats.kinds)  # m = masked, n = neutral
    assert kinds.startswith("m") and "mn" in kinds and "nm" in kinds and kinds.endswith("m")
    assert stats.source_outages == 1
    assert "masking resumes" in caplog.text
    stamps = [ts for _, ts in sink.records if ts is not None]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))  # clock restart hidden


def test_unreadable_file_source_ends_the_run_with_its_reason(caplog, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)

    def open_source():
        return open_file(bad)

    sink = MemorySink(width=SIZE[0], height=SIZE[1], fps=30)
    cfg = vcam.LoopConfig(output_size=SIZE, fps=30.0, max_frames=50)
    with caplog.at_level(logging.ERROR, logger="dmask_live.vcam"):
        stats = vcam.run_loop(open_source, sink, DiskAvatar, cfg, retry=False)
    assert stats.received == 0 and stats.masked_frames == 0
    assert "source bad.mp4 unavailable" in caplog.text and "stopping" in caplog.text


def test_camera_missing_from_the_start_sends_neutral_frames(caplog):
    def open_source():
        raise SourceError("camera /dev/video7 unavailable: [Errno 2] No such file or directory")

    sink = MemorySink(width=SIZE[0], height=SIZE[1], fps=30)
    cfg = vcam.LoopConfig(output_size=SIZE, fps=30.0, max_frames=5, stall_timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="dmask_live.vcam"):
        stats = vcam.run_loop(open_source, sink, DiskAvatar, cfg, retry_interval=0.05)
    assert stats.kinds == ["neutral"] * 5 and stats.received == 0
    assert "/dev/video7 unavailable" in caplog.text


@pytest.mark.parametrize("failure", ["raises", "returns_input", "wrong_shape"])
def test_masker_failures_send_the_neutral_frame_never_the_input(astronaut, failure):
    frames = astronaut_frames(astronaut, 4)

    class BrokenAvatar(DiskAvatar):
        def process(self, rgb, timestamp):
            good = super().process(rgb, timestamp)
            if failure == "raises":
                raise RuntimeError("landmark network exploded")
            if failure == "returns_input":
                return MaskedFrame(rgb, good.state, good.metrics)
            return MaskedFrame(good.image[:, :-2], good.state, good.metrics)

    sink = MemorySink(width=SIZE[0], height=SIZE[1], fps=30)
    cfg = vcam.LoopConfig(output_size=SIZE, fps=30.0, max_frames=4)
    stats = vcam.run_loop(lambda: SyntheticCamera(frames), sink, BrokenAvatar, cfg)
    neutral = DiskAvatar().neutral_frame(SIZE)
    assert stats.frames_sent == 4
    assert all(np.array_equal(f, neutral) for f in sink.frames)
    assert stats.masked_frames == 0 and stats.mask_errors == 4 and stats.kinds == ["neutral"] * 4


def test_ctrl_c_stops_the_loop_cleanly(astronaut):
    maskers = []

    class InterruptedAvatar(DiskAvatar):
        def process(self, rgb, timestamp):
            if timestamp > 0.05:
                raise KeyboardInterrupt
            return super().process(rgb, timestamp)

    def make():
        maskers.append(InterruptedAvatar())
        return maskers[-1]

    camera = SyntheticCamera(astronaut_frames(astronaut, 4))
    sink = MemorySink(width=SIZE[0], height=SIZE[1], fps=30)
    stats = vcam.run_loop(lambda: camera, sink, make, vcam.LoopConfig(output_size=SIZE, fps=30.0))
    assert stats.interrupted and stats.frames_sent >= 1 and maskers[0].closed == 1
    time.sleep(0.2)
    assert camera.closed  # the reader thread stopped and released the camera


def test_ctrl_c_while_the_masker_loads(clip):
    def make():
        raise KeyboardInterrupt

    source = open_file(clip)
    sink = MemorySink(width=SIZE[0], height=SIZE[1], fps=30)
    with pytest.raises(KeyboardInterrupt):
        vcam.run_loop(lambda: source, sink, make, vcam.LoopConfig(output_size=SIZE, fps=30.0),
                      first_source=source)
    assert source._container is None  # closed


def test_latest_frame_holder_keeps_only_the_newest():
    holder = LatestFrame()
    rgb = np.zeros((4, 4, 3), np.uint8)
    for i in range(3):
        holder.put(SourceFrame(rgb, i / 30, i, time.monotonic()))
    assert holder.take(timeout=0.01).index == 2
    assert holder.take(timeout=0.01) is None
    snap = holder.snapshot()
    assert (snap.received, snap.dropped, snap.ended) == (3, 2, False)
    holder.end()
    assert holder.snapshot().ended


def test_reader_stops_promptly_and_closes_its_source(astronaut):
    camera = SyntheticCamera(astronaut_frames(astronaut, 2))
    holder = LatestFrame()
    reader = FrameReader(lambda: camera, holder)
    reader.start()
    assert holder.take(timeout=2.0) is not None
    reader.stop()
    reader.join(timeout=2.0)
    holder.take(timeout=0.01)  # a frame may still wait in the slot
    assert not reader.is_alive() and camera.closed and holder.snapshot().ended


def test_status_line_rewrites_in_place_on_a_tty_and_logs_otherwise(caplog):
    stream = io.StringIO()
    status = vcam.StatusLine(stream, tty=True)
    status.record(1.0, 42.0)
    status.update(1.0, "tracking", 3, force=True)
    status.finish()
    out = stream.getvalue()
    assert out.startswith("\r") and "fps" in out and "42 ms" in out
    assert "tracking" in out and "dropped 3" in out
    with caplog.at_level(logging.INFO, logger="dmask_live.vcam"):
        logged = vcam.StatusLine(io.StringIO(), tty=False)
        logged.update(10.0, "searching face", 0)
        logged.update(11.0, "searching face", 0)  # within the log interval: not repeated
    assert caplog.text.count("searching face") == 1


def test_preview_without_a_gui_says_what_it_needs(monkeypatch, caplog):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with caplog.at_level(logging.WARNING, logger="dmask_live.vcam"):
        preview = vcam.Preview()
    if preview._show is not None:
        pytest.skip("this OpenCV build has a GUI; nothing to report")
    assert "opencv-python" in caplog.text and "continuing without it" in caplog.text
    preview.show(np.zeros((8, 8, 3), np.uint8))  # a no-op, no error
    preview.close()


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb (Debian package xvfb) for a window")
def test_preview_shows_the_masked_frame_in_a_tk_window(monkeypatch):
    display = f":{90 + os.getpid() % 100}"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "640x480x24"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        monkeypatch.setenv("DISPLAY", display)
        preview = vcam.Preview()
        if preview._show is None:
            pytest.skip("no usable GUI toolkit under Xvfb (tkinter missing?)")
        preview.show(np.full((120, 160, 3), 90, np.uint8))
        assert preview._show is not None  # shown without error
        preview.close()
        preview.close()
    finally:
        server.terminate()
        server.wait(timeout=5)


# ------------------------------------------------------------------ the real pipeline


def _warm_real_pipeline_or_skip(first_frame: np.ndarray):
    """The real pipeline, already past its first (compiling) frame; skips when it cannot run here."""
    try:
        from dmask_live.pipeline import MaskPipeline

        pipeline = MaskPipeline(output_size=SIZE)
    except Exception as exc:  # noqa: BLE001 - any reason it cannot run here is the skip reason
        pytest.skip(f"the real MaskPipeline cannot be built here: {type(exc).__name__}: {exc}")
    pipeline.process(first_frame, 0.0)
    pipeline.reset()
    return pipeline


def test_loop_with_the_real_pipeline(clip, clip_frames, tmp_path):
    pipeline = _warm_real_pipeline_or_skip(clip_frames[0])
    stats, sink, metrics_path = run_file(clip, lambda: pipeline, tmp_path)
    assert stats.masked_frames + stats.dropped == stats.received == CLIP_FRAMES
    assert stats.frames_sent == len(sink.frames) == stats.masked_frames > 0
    assert_never_input(sink.frames, clip_frames)
    neutral = pipeline.neutral_frame(SIZE)
    assert any(not np.array_equal(frame, neutral) for frame in sink.frames), "no avatar was rendered"
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    assert len(lines) == stats.masked_frames
    assert sum(line["tracked"] for line in lines) >= len(lines) // 2, "the astronaut should be tracked"
    assert all(set(line) >= {"frame", "timestamp", "gaze_yaw_deg", "blink_count"} for line in lines)


# ------------------------------------------------------------------ sinks


def test_sink_boundary_checks_are_precise():
    with pytest.raises(TypeError, match=r"unexpected frame dtype: float32 != uint8"):
        check_frame(np.zeros((240, 320, 3), np.float32), 320, 240)
    with pytest.raises(ValueError, match=r"unexpected frame shape: \(240, 320, 4\) != \(240, 320, 3\)"):
        check_frame(np.zeros((240, 320, 4), np.uint8), 320, 240)
    with pytest.raises(ValueError, match="not C-contiguous"):
        check_frame(np.zeros((240, 640, 3), np.uint8)[:, ::2], 320, 240)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        check_frame([[0]], 320, 240)
    sink = MemorySink(width=320, height=240, fps=30)
    with pytest.raises(ValueError, match="unexpected frame shape"):
        sink.send(np.zeros((480, 640, 3), np.uint8))
    assert sink.frames_sent == 0


def test_open_sink_falls_back_in_order():
    sink = open_sink("pyvirtualcam,test", width=320, height=240, fps=30, device="/nonexistent/video99")
    assert isinstance(sink, MemorySink) and sink.name == "test"


def test_open_sink_error_lists_every_failure_and_the_setup(monkeypatch):
    def broken(**kw):
        raise OSError("disk on fire")

    monkeypatch.setitem(SINKS, "broken", broken)
    with pytest.raises(SinkUnavailableError) as info:
        open_sink(["nope", "broken", "pyvirtualcam"], width=320, height=240, fps=30,
                  device="/nonexistent/video99")
    message = str(info.value)
    assert "'nope' sink: unknown" in message
    assert "'broken' sink: disk on fire" in message
    assert "'pyvirtualcam' sink:" in message
    if os.uname().sysname == "Linux":
        assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=dmask-live" in message
        assert "v4l2loopback-dkms" in message and "Chrome" in message


def test_setup_help_names_obs_on_windows_and_macos():
    for system in ("Windows", "Darwin"):
        text = virtual_camera_setup_help(system)
        assert "OBS" in text and "Virtual Camera" in text


def test_register_sink_adds_a_backend(monkeypatch):
    monkeypatch.setitem(SINKS, "mine", MemorySink)
    register_sink("mine", MemorySink)
    assert open_sink("mine", width=16, height=16, fps=1).name == "test"


def test_file_sink_writes_the_masked_stream(tmp_path):
    path = tmp_path / "masked.mp4"
    sink = FileSink(width=SIZE[0], height=SIZE[1], fps=30, device=str(path))
    frame = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
    for _ in range(5):
        sink.send(frame)
        time.sleep(0.01)
    sink.close()
    sink.close()  # idempotent
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (SIZE[1], SIZE[0], 3)
    assert abs(float(decoded[-1].mean()) - 90) < 3


# ------------------------------------------------------------------ sources


def test_file_source_loops_with_increasing_timestamps(clip):
    source = open_file(clip, loop=True, realtime=False)
    stamps = [source.read().timestamp for _ in range(CLIP_FRAMES + 5)]
    source.close()
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))


def test_camera_path_reads_a_device_input():
    # lavfi's test pattern stands in for a camera device: same PyAV demux/decode path
    camera = open_camera("testsrc=size=160x120:rate=30", width=160, height=120, fps=30, input_format="lavfi")
    frame = camera.read()
    camera.close()
    assert frame.rgb.shape == (120, 160, 3) and frame.rgb.dtype == np.uint8


def test_missing_camera_is_a_clear_source_error():
    with pytest.raises(SourceError, match=r"camera /nonexistent/video99 unavailable: .*(No such|not found)"):
        open_camera("/nonexistent/video99", width=640, height=480, fps=30, input_format="v4l2")


# ------------------------------------------------------------------ command line


def test_cli_no_virtual_camera_exits_with_the_setup_steps(clip, capsys):
    code = cli.main(["vcam", "--source", str(clip), "--masker", "neutral", "--frames", "2",
                     "--device", "/nonexistent/video99"])
    err = capsys.readouterr().err
    assert code == vcam.EXIT_NO_SINK != 0
    assert "'pyvirtualcam' sink:" in err
    if os.uname().sysname == "Linux":
        assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=dmask-live" in err


def test_cli_missing_camera_exits_non_zero_after_sending_neutral_frames(capsys, caplog):
    with caplog.at_level(logging.WARNING):
        code = cli.main(["vcam", "--camera", "/nonexistent/video99", "--sink", "null", "--masker", "neutral",
                         "--duration", "1.2", "--width", "160", "--height", "120"])
    assert code == vcam.EXIT_NO_SOURCE != 0
    assert "camera /nonexistent/video99 unavailable" in caplog.text
    assert "never delivered a frame" in capsys.readouterr().err


def test_cli_no_default_camera_on_windows_says_how_to_name_one(monkeypatch, capsys):
    monkeypatch.setattr("platform.system", lambda: "Windows")
    code = cli.main(["vcam", "--sink", "null", "--masker", "neutral", "--frames", "1"])
    assert code == vcam.EXIT_NO_SOURCE
    assert "--camera 'video=<camera name>'" in capsys.readouterr().err


def test_cli_refuses_to_read_its_own_virtual_camera(tmp_path, capsys):
    out = tmp_path / "video10.mp4"
    code = cli.main(["vcam", "--camera", str(out), "--sink", "file", "--device", str(out),
                     "--masker", "neutral", "--frames", "1"])
    assert code == vcam.EXIT_NO_SOURCE and "is the virtual camera" in capsys.readouterr().err


def test_cli_missing_source_file(tmp_path, capsys):
    code = cli.main(["vcam", "--source", str(tmp_path / "nope.mp4"), "--sink", "null"])
    assert code == vcam.EXIT_NO_SOURCE and "source file not found" in capsys.readouterr().err


def test_cli_pipeline_unavailable(clip, monkeypatch, capsys):
    def factory(size, **kw):
        def make():
            raise vcam.MaskerUnavailableError("the masking pipeline could not start: no models")
        return make

    monkeypatch.setattr(vcam, "pipeline_masker_factory", factory)
    code = cli.main(["vcam", "--source", str(clip), "--sink", "null", "--frames", "2"])
    assert code == vcam.EXIT_NO_MASKER and "no models" in capsys.readouterr().err


def test_cli_file_sink_and_metrics(clip, tmp_path):
    out, metrics = tmp_path / "out.mp4", tmp_path / "metrics.jsonl"
    code = cli.main(["vcam", "--source", str(clip), "--masker", "neutral", "--sink", "file",
                     "--device", str(out), "--metrics", str(metrics), "--frames", "6", "--fps", "30"])
    assert code == 0
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6
    assert len(metrics.read_text().splitlines()) == 6


def test_cli_camera_device_input_and_loop(clip):
    assert cli.main(["vcam", "--camera-format", "lavfi", "--camera", "testsrc=size=160x120:rate=30",
                     "--width", "160", "--height", "120", "--sink", "test", "--masker", "neutral",
                     "--camera-option", "analyzeduration=0", "--frames", "5"]) == 0
    assert cli.main(["vcam", "--camera-option", "oops", "--sink", "null"]) == vcam.EXIT_NO_SOURCE
    assert cli.main(["vcam", "--source", str(clip), "--loop", "--sink", "null", "--masker", "neutral",
                     "--frames", str(CLIP_FRAMES + 4)]) == 0


# ------------------------------------------------------------------ a real virtual camera


def _loopback_devices() -> list[str]:
    devices = []
    for name_file in glob.glob("/sys/class/video4linux/video*/name"):
        name = Path(name_file).read_text().strip().lower()
        if "loopback" in name or "dummy" in name or "dmask" in name:
            devices.append("/dev/" + Path(name_file).parent.name)
    return sorted(devices)


@pytest.mark.skipif(not _loopback_devices(), reason="no v4l2loopback device (/dev/video*) on this machine; "
                    "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=dmask-live")
def test_real_v4l2loopback_receives_masked_frames(clip):
    device = _loopback_devices()[0]
    assert cli.main(["vcam", "--source", str(clip), "--masker", "neutral", "--device", device,
                     "--frames", "10"]) == 0
    # an app reading the virtual camera sees the neutral frame while the loop runs
    sink = open_sink("pyvirtualcam", width=SIZE[0], height=SIZE[1], fps=30, device=device)
    cfg = vcam.LoopConfig(output_size=SIZE, fps=30.0, duration=3.0)
    done = []
    writer = threading.Thread(target=lambda: done.append(
        vcam.run_loop(lambda: open_file(clip, loop=True), sink, lambda: vcam.NeutralMasker(SIZE), cfg)))
    writer.start()
    try:
        time.sleep(0.8)
        with av.open(device, format="v4l2") as camera:
            frame = next(camera.decode(video=0)).to_ndarray(format="rgb24")
    finally:
        writer.join(timeout=10)
        sink.close()
    assert frame.shape == (SIZE[1], SIZE[0], 3)
    assert abs(float(frame.mean()) - 96) < 4  # NeutralMasker's gray, through the device's YUV
    assert done and done[0].masked_frames > 0
