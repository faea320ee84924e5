"""OcularAnalyzer on synthetic AvatarState sequences with known clinical signs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dmask_live.ocular import OcularAnalyzer
from dmask_live.types import AvatarState

FPS = 30.0


def _state(
    t: float, gaze=((0.0, 0.0), (0.0, 0.0)), lids=((1.0, 1.0), (1.0, 1.0)), tracked=True
) -> AvatarState:
    return AvatarState(
        tracked=tracked,
        head_pose_deg=np.array([1.0, 2.0, 3.0]),
        gaze_deg=np.asarray(gaze, np.float64),
        eyelids=np.asarray(lids, np.float64),
        timestamp=t,
        expression=np.zeros(12),
    )


def _run(analyzer, states):
    return [analyzer.update(s) for s in states]


def test_nystagmus_frequency_and_amplitude():
    analyzer = OcularAnalyzer()
    states = []
    for i in range(int(12 * FPS)):
        t = i / FPS
        yaw = 8.0 * math.sin(2 * math.pi * 3.0 * t) + 2.0  # 3 Hz, ±8°, small offset
        states.append(_state(t, gaze=((yaw, 1.0), (yaw, 1.0))))
    last = _run(analyzer, states)[-1]
    assert last.oscillation_frequency_hz == pytest.approx(3.0, abs=0.2)
    assert last.oscillation_amplitude_deg == pytest.approx(8.0, rel=0.1)


def test_jerk_nystagmus_with_irregular_timestamps():
    analyzer = OcularAnalyzer()
    rng = np.random.default_rng(0)
    t, states = 0.0, []
    while t < 11.0:
        phase = (t * 2.5) % 1.0  # 2.5 Hz sawtooth: slow drift, fast reset
        yaw = 6.0 * (phase - 0.5) * 2
        states.append(_state(t, gaze=((yaw, 0.0), (yaw, 0.0))))
        t += rng.uniform(0.025, 0.045)
    last = _run(analyzer, states)[-1]
    assert last.oscillation_frequency_hz == pytest.approx(2.5, abs=0.2)


def test_steady_gaze_has_no_oscillation():
    analyzer = OcularAnalyzer()
    rng = np.random.default_rng(1)
    states = [_state(i / FPS, gaze=rng.normal(0, 0.1, (2, 2))) for i in range(int(10 * FPS))]
    last = _run(analyzer, states)[-1]
    assert math.isnan(last.oscillation_frequency_hz) and math.isnan(last.oscillation_amplitude_deg)


def test_esotropia_and_vertical_deviation_signs():
    analyzer = OcularAnalyzer()
    # Right eye (OD) turned 15° inward = toward the patient's left = positive yaw; OS straight.
    m = analyzer.update(_state(0.0, gaze=((15.0, 0.0), (0.0, 0.0))))
    assert m.horizontal_deviation_deg == pytest.approx(15.0)
    assert m.gaze_yaw_deg == (15.0, 0.0)
    # Left eye (OS) turned inward (toward the patient's right = negative yaw): also eso.
    m = analyzer.update(_state(0.1, gaze=((0.0, 0.0), (-15.0, 0.0))))
    assert m.horizontal_deviation_deg == pytest.approx(15.0)
    m = analyzer.update(_state(0.2, gaze=((-10.0, 0.0), (10.0, 0.0))))  # exo
    assert m.horizontal_deviation_deg == pytest.approx(-20.0)
    m = analyzer.update(_state(0.3, gaze=((0.0, 5.0), (0.0, 0.0))))  # right eye higher
    assert m.vertical_deviation_deg == pytest.approx(5.0)
    assert m.head_pose_deg == (1.0, 2.0, 3.0)


def test_blinks_counted_exactly_and_rate():
    analyzer = OcularAnalyzer()
    blink_starts = [1.0, 2.5, 4.0, 6.2, 8.0, 9.1]
    metrics = []
    for i in range(int(10.5 * FPS)):
        t = i / FPS
        closing = 0.0
        for start in blink_starts:  # 200 ms blink: close and reopen
            if start <= t < start + 0.2:
                closing = math.sin(math.pi * (t - start) / 0.2)
        lids = ((1.0 - closing, 1.0 - 0.3 * closing), (1.0 - closing, 1.0 - 0.3 * closing))
        metrics.append(analyzer.update(_state(t, lids=lids)))
    assert sum(m.blink for m in metrics) == len(blink_starts)
    assert metrics[-1].blink_count == len(blink_starts)
    assert metrics[-1].blink_rate_per_min == pytest.approx(6 / 10 * 60, rel=0.06)


def test_wink_and_long_closure_are_not_blinks():
    analyzer = OcularAnalyzer()
    metrics = []
    for i in range(int(6 * FPS)):
        t = i / FPS
        wink = 1.0 <= t < 1.3
        closed = 3.0 <= t < 5.0  # 2 s eyes closed
        od = 0.0 if (wink or closed) else 1.0
        os_ = 0.0 if closed else 1.0
        metrics.append(analyzer.update(_state(t, lids=((od, od), (os_, os_)))))
    assert metrics[-1].blink_count == 0
    closed_metrics = metrics[int(4 * FPS)]
    assert math.isnan(closed_metrics.gaze_yaw_deg[0])  # gaze not measurable with the eye closed


def test_ptosis_reduces_aperture_and_lid_height():
    analyzer = OcularAnalyzer()
    m = analyzer.update(_state(0.0, lids=((0.55, 1.0), (1.0, 1.0))))  # OD upper lid droops
    assert m.lid_aperture[0] < 0.8 * m.lid_aperture[1]
    assert m.upper_lid_to_iris_centre[0] < m.upper_lid_to_iris_centre[1]
    neutral = analyzer.update(_state(0.1))
    assert 0.5 < neutral.lid_aperture[0] < 1.3  # a normal palpebral fissure is ~0.8-1 iris diameters
    assert neutral.lid_aperture[0] == pytest.approx(neutral.lid_aperture[1])
    assert 0.2 < neutral.upper_lid_to_iris_centre[0] < 0.8


def test_untracked_frames():
    analyzer = OcularAnalyzer()
    m = analyzer.update(_state(0.0, tracked=False))
    assert not m.tracked and math.isnan(m.gaze_yaw_deg[0]) and m.blink_count == 0
    assert m.to_dict()["gaze_yaw_deg"] == [None, None]


def test_masked_video_tracked_again_gives_the_same_numbers():
    """Metrics of the avatar's own landmarks, tracked again, match the metrics of the states drawn."""
    from dmask_live.face_model import landmarks_from_state, load_face_model
    from dmask_live.tracker import FaceTracker
    from dmask_live.types import FaceLandmarks

    model = load_face_model()
    tracker, direct, again = FaceTracker(), OcularAnalyzer(model), OcularAnalyzer(model)
    for i in range(90):
        t = i / FPS
        state = AvatarState(
            tracked=True,
            head_pose_deg=np.array([10 * math.sin(t), 5.0, -3.0]),
            translation=np.array([320.0, 240.0]),
            scale=18.0,
            expression=np.zeros(model.num_expressions),
            eyelids=np.array([[0.55, 1.0], [1.0, 1.0]]),  # OD ptosis
            gaze_deg=np.array([[15.0 + 5 * math.sin(2 * t), 3.0], [5 * math.sin(2 * t), 0.0]]),  # OD eso 15°
            timestamp=t,
        )
        points, contours, iris = landmarks_from_state(model, state)
        landmarks = FaceLandmarks(points, contours, iris, 1.0, (0, 0, 0, 0), (640, 480))
        expected = direct.update(state)
        measured = again.update(tracker.update(landmarks, t))
    assert measured.horizontal_deviation_deg == pytest.approx(expected.horizontal_deviation_deg, abs=1.5)
    assert measured.horizontal_deviation_deg == pytest.approx(15.0, abs=1.5)
    assert measured.vertical_deviation_deg == pytest.approx(3.0, abs=1.0)
    assert measured.lid_aperture == pytest.approx(expected.lid_aperture, abs=0.05)
    assert measured.upper_lid_to_iris_centre == pytest.approx(expected.upper_lid_to_iris_centre, abs=0.06)


def test_a_shut_eye_measures_shut_whatever_the_lower_lid_reads():
    # A blink the tracker reads as the upper lid past the closed line with the lower lid far down
    # still closes the eye (face_model.drawn_eyelids): aperture 0 and a counted blink.
    analyzer = OcularAnalyzer()
    opened, shut = ((1.0, 1.0), (1.0, 1.0)), ((-0.1, 2.5), (-0.1, 2.5))
    lids = [opened] * 30 + [shut] * 3 + [opened] * 30
    out = _run(analyzer, [_state(i / FPS, lids=lid) for i, lid in enumerate(lids)])
    assert out[31].lid_aperture == (0.0, 0.0)
    assert out[-1].blink_count == 1
