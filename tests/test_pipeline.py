"""MaskPipeline: fail-closed masking, no input pixels in outputs, thread binding, PipelineWorker."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading

import numpy as np
import pytest

from dmask_live.pipeline import MaskPipeline, PipelineWorker
from dmask_live.renderer import BACKGROUND, AvatarRenderer, neutral_frame
from dmask_live.types import AvatarState, OcularMetrics

SIZE = (320, 240)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two same-sized images' grey values."""
    ga = a.astype(np.float64).mean(-1).ravel()
    gb = b.astype(np.float64).mean(-1).ravel()
    if ga.std() == 0 or gb.std() == 0:
        return 0.0
    return float(np.corrcoef(ga, gb)[0, 1])


def resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------- stage stand-ins
class FakeLandmarker:
    """'Finds a face' in any frame that is not uniform; raises on request."""

    def __init__(self):
        self.fail_next = False
        self.resets = 0

    def process(self, image):
        if self.fail_next:
            self.fail_next = False
            raise ValueError("synthetic landmark failure")
        return None if image.std() == 0 else object()

    def reset(self):
        self.resets += 1


class FakeTracker:
    """Every found face becomes the same frontal state: two people → one AvatarState."""

    def update(self, landmarks, timestamp):
        if landmarks is None:
            return AvatarState.untracked((SIZE[0] * 2, SIZE[1] * 2), timestamp)
        return AvatarState(
            tracked=True, translation=np.array([SIZE[0], SIZE[1]], np.float32), scale=16.0,
            image_size=(SIZE[0] * 2, SIZE[1] * 2), timestamp=timestamp,
        )

    def reset(self):
        pass


class FakeAnalyzer:
    def update(self, state):
        return OcularMetrics(timestamp=state.timestamp, tracked=state.tracked)

    def reset(self):
        pass


def fake_pipeline(**kwargs) -> MaskPipeline:
    return MaskPipeline(landmarker=FakeLandmarker(), tracker=FakeTracker(), analyzer=FakeAnalyzer(), **kwargs)


@pytest.fixture()
def pipeline():
    pipe = fake_pipeline(output_size=SIZE)
    yield pipe
    pipe.close()


# --------------------------------------------------------------------------- behaviour
def test_face_gives_an_avatar_with_timings(pipeline, astronaut):
    masked = pipeline.process(astronaut, 0.5)
    assert masked.image.shape == (SIZE[1], SIZE[0], 3) and masked.image.dtype == np.uint8
    assert masked.state.tracked and masked.metrics.tracked
    assert set(masked.timings_ms) >= {"landmarks", "tracker", "render", "ocular", "total"}
    assert tuple(masked.image[0, 0]) == BACKGROUND
    assert correlation(masked.image, resized(astronaut, SIZE)) < 0.3


def test_no_face_gives_the_neutral_frame(pipeline):
    masked = pipeline.process(np.full((240, 320, 3), 128, np.uint8), 0.0)
    assert not masked.state.tracked
    assert np.array_equal(masked.image, neutral_frame(*SIZE))
    assert np.array_equal(pipeline.neutral_frame(), neutral_frame(*SIZE))


def test_stage_failure_fails_closed_with_one_log_line(pipeline, astronaut, caplog):
    pipeline._landmarker.fail_next = True
    with caplog.at_level(logging.ERROR, logger="dmask_live.pipeline"):
        masked = pipeline.process(astronaut, 1.0)
    assert np.array_equal(masked.image, neutral_frame(*SIZE))
    assert not masked.state.tracked and not masked.metrics.tracked
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "ValueError: synthetic landmark failure" in errors[0].getMessage()
    assert errors[0].exc_info is None  # no traceback (locals could hold frames)
    assert pipeline._landmarker.resets == 1  # tracking restarts after a failure
    assert pipeline.process(astronaut, 1.1).state.tracked  # and the next frame is masked again


@pytest.mark.parametrize(
    "bad",
    [np.zeros((240, 320), np.uint8), np.zeros((240, 320, 3), np.float32), np.zeros((240, 320, 4), np.uint8),
     "not an image", np.zeros((4, 4, 3), np.uint8)],
    ids=["grey", "float", "rgba", "str", "tiny"],
)
def test_bad_input_gives_the_neutral_frame(pipeline, bad, caplog):
    with caplog.at_level(logging.ERROR, logger="dmask_live.pipeline"):
        masked = pipeline.process(bad, 0.0)
    assert np.array_equal(masked.image, neutral_frame(*SIZE))
    assert len(caplog.records) == 1


def test_repeated_failures_are_not_logged_every_frame(pipeline, caplog):
    with caplog.at_level(logging.ERROR, logger="dmask_live.pipeline"):
        for _ in range(20):
            pipeline.process(np.zeros((240, 320), np.uint8), 0.0)
    assert len(caplog.records) == 1


@pytest.fixture(scope="module")
def other_face(astronaut) -> np.ndarray:
    """A second real person (../shared/data/faces/img1.jpg); without it, the astronaut mirrored."""
    from conftest import shared_data_dir

    folder = shared_data_dir()
    if folder is None:
        return np.ascontiguousarray(astronaut[:, ::-1])
    from PIL import Image

    with Image.open(folder / "faces" / "img1.jpg") as other:
        return np.ascontiguousarray(np.asarray(other.convert("RGB").resize((512, 512))))


def test_different_people_same_state_identical_frames(pipeline, astronaut, other_face):
    """The output depends on the AvatarState only: nothing of who is in front of the camera."""
    first = pipeline.process(astronaut, 0.0).image
    second = pipeline.process(other_face, 0.04).image
    assert np.array_equal(first, second)
    assert correlation(second, resized(other_face, SIZE)) < 0.3


def test_broken_tracker_output_fails_closed(astronaut, caplog):
    class NanTracker(FakeTracker):
        def update(self, landmarks, timestamp):
            state = super().update(landmarks, timestamp)
            return dataclasses.replace(state, head_pose_deg=np.full(3, np.nan, np.float32))

    with MaskPipeline(output_size=SIZE, landmarker=FakeLandmarker(), tracker=NanTracker(),
                      analyzer=FakeAnalyzer()) as pipe, caplog.at_level(logging.ERROR):
        masked = pipe.process(astronaut, 0.0)
    assert np.array_equal(masked.image, neutral_frame(*SIZE))
    assert "non-finite" in caplog.records[0].getMessage()


def test_output_size_follows_input_when_not_set(astronaut):
    with fake_pipeline() as pipe:
        assert pipe.process(astronaut, 0.0).image.shape == astronaut.shape
        small = np.ascontiguousarray(astronaut[:200, :300])
        assert pipe.process(small, 0.1).image.shape == small.shape
        assert pipe.neutral_frame((64, 48)).shape == (48, 64, 3)


def test_other_thread_is_refused(pipeline, astronaut):
    errors = []

    def use():
        try:
            pipeline.process(astronaut, 0.0)
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    assert errors and "thread" in errors[0]


def test_close_is_idempotent(astronaut):
    pipe = fake_pipeline(output_size=SIZE)
    pipe.close()
    pipe.close()
    with pytest.raises(RuntimeError, match="close"):
        pipe.process(astronaut, 0.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="placement"):
        fake_pipeline(placement="side")
    with pytest.raises(ValueError, match="output_size"):
        fake_pipeline(output_size=(0, 10))


def test_worker_builds_and_runs_the_pipeline_on_its_thread(astronaut, monkeypatch):
    import dmask_live.pipeline as pipeline_module

    threads = []

    class Recording(MaskPipeline):
        def __init__(self, **kwargs):
            threads.append(threading.get_ident())
            super().__init__(landmarker=FakeLandmarker(), tracker=FakeTracker(), analyzer=FakeAnalyzer(),
                             **kwargs)

    monkeypatch.setattr(pipeline_module, "MaskPipeline", Recording)

    async def main():
        worker = PipelineWorker(output_size=SIZE)
        await worker.start()
        masked = await worker.process(astronaut, 0.0)
        neutral = await worker.neutral_frame()
        await worker.reset()
        await worker.close()
        await worker.close()
        with pytest.raises(RuntimeError):
            await worker.process(astronaut, 0.1)
        return masked, neutral

    masked, neutral = asyncio.run(main())
    assert threads and threads[0] != threading.get_ident()
    assert masked.state.tracked and masked.image.shape == (SIZE[1], SIZE[0], 3)
    assert np.array_equal(neutral, neutral_frame(*SIZE))


def test_worker_reports_construction_errors():
    async def main():
        worker = PipelineWorker(placement="nowhere")
        with pytest.raises(ValueError, match="placement"):
            await worker.start()
        await worker.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- the real stages
@pytest.fixture(scope="module")
def real_pipeline():
    pytest.importorskip("dmask_live.tracker", reason="tracker stage not available yet")
    pytest.importorskip("dmask_live.ocular", reason="ocular stage not available yet")
    from dmask_live.models import ModelError

    try:
        pipe = MaskPipeline(output_size=(512, 512))
    except ModelError as error:
        pytest.skip(f"ONNX models not built (run `dmask-live models`): {error}")
    yield pipe
    pipe.close()


def test_real_pipeline_masks_a_face(real_pipeline, astronaut):
    real_pipeline.reset()
    masked = real_pipeline.process(astronaut, 0.0)
    assert masked.state.tracked
    assert masked.state.expression.ndim == 1
    image = masked.image
    assert tuple(image[0, 0]) == BACKGROUND and not np.array_equal(image, neutral_frame(512, 512))
    assert correlation(image, astronaut) < 0.3
    # The avatar sits where the astronaut's face is (x 160..290, y 50..200).
    ys, xs = np.nonzero(np.any(image != BACKGROUND, axis=-1))
    assert 150 < xs.mean() < 300 and 40 < ys.mean() < 210


def test_real_pipeline_two_people_differ_only_by_state(real_pipeline, astronaut, other_face):
    """Two people's outputs are renderings of their states; swapping the motion makes them equal."""
    real_pipeline.reset()
    a = real_pipeline.process(astronaut, 0.0)
    real_pipeline.reset()
    b = real_pipeline.process(other_face, 0.0)
    assert a.state.tracked and b.state.tracked
    assert correlation(b.image, other_face) < 0.3
    with AvatarRenderer(512, 512) as renderer:
        assert np.array_equal(renderer.render(a.state), a.image)
        fields = ("head_pose_deg", "translation", "scale", "expression", "eyelids", "gaze_deg")
        b_moved_like_a = dataclasses.replace(b.state, **{f: getattr(a.state, f) for f in fields})
        assert np.array_equal(renderer.render(b_moved_like_a), a.image)


def test_real_pipeline_no_face_is_neutral(real_pipeline):
    real_pipeline.reset()
    masked = real_pipeline.process(np.full((512, 512, 3), 90, np.uint8), 0.0)
    assert not masked.state.tracked
    assert np.array_equal(masked.image, neutral_frame(512, 512))


# --------------------------------------------------------------------------- the pipeline in its own process
needs_memfd = pytest.mark.skipif(
    not __import__("dmask_live.mask_process").mask_process.available(), reason="needs os.memfd_create"
)


@needs_memfd
def test_process_masker_matches_the_pipeline_and_fails_closed_when_it_dies(astronaut):
    """Same frames as the in-process pipeline (stand-in stages, pickled to the child); a dead child
    makes ``process`` raise (the relay then sends the neutral frame), never return the input."""
    from dmask_live.mask_process import ProcessMasker

    stages = {"landmarker": FakeLandmarker(), "tracker": FakeTracker(), "analyzer": FakeAnalyzer()}
    reference = MaskPipeline(output_size=None, **stages)

    async def main():
        masker = ProcessMasker(**stages)
        try:
            await masker.start()
            for size in ((320, 240), (256, 192)):  # a new input size gets new shared buffers
                image = resized(astronaut, size)
                masked = await masker.process(image, 0.25)
                expected = reference.process(image, 0.25)
                assert masked.state.tracked and masked.metrics.tracked
                assert np.array_equal(masked.image, expected.image)
                assert not np.shares_memory(masked.image, image)
                assert set(masked.timings_ms) >= {"landmarks", "total"}
            uniform = await masker.process(np.full((240, 320, 3), 128, np.uint8), 0.5)
            assert not uniform.state.tracked and np.array_equal(uniform.image, neutral_frame(320, 240))
            # a call cancelled mid-frame (the relay stopping) does not shift later answers by one
            cancelled = asyncio.ensure_future(masker.process(resized(astronaut, (320, 240)), 0.75))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert masker._unread_replies == 1  # the frame was sent: its answer is still to come
            uniform = await masker.process(np.full((240, 320, 3), 128, np.uint8), 0.8)
            assert not uniform.state.tracked and uniform.state.timestamp == pytest.approx(0.8)
            masker._process.kill()
            masker._process.join(5)
            with pytest.raises(RuntimeError, match="exited"):
                await masker.process(resized(astronaut, (320, 240)), 1.0)
        finally:
            await masker.close()
            await masker.close()  # idempotent
        with pytest.raises(RuntimeError, match="after close"):
            await masker.process(astronaut, 2.0)

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        reference.close()


@needs_memfd
def test_process_masker_reports_construction_errors():
    from dmask_live.mask_process import ProcessMasker

    async def main():
        masker = ProcessMasker(placement="nowhere")
        try:
            with pytest.raises(RuntimeError, match="placement"):
                await masker.start()
        finally:
            await masker.close()

    asyncio.run(asyncio.wait_for(main(), 60))
