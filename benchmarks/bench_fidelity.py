"""Clinical fidelity of the mask: do gaze, lids, blinks and head pose survive the avatar?

Two measurements, both "render → landmarks → tracker" round trips with the package's own stages:

1. Known-truth signs. The avatar is rendered with chosen parameters (the truth) and tracked back:
   pendular nystagmus 3 Hz ±8°, a 15° inward deviation of the right eye (esotropia), a drooping
   right upper lid (ptosis), saccades (±15° steps), blinks, and head-pose sweeps. Reported:
   recovered vs. true values (frequency, amplitude, deviation, lid ratio, blink count, RMS errors).
2. Real clips (../shared/data/videos, every frame, or the first N): the patient's video is tracked (state A),
   the avatar of A is rendered and tracked again (state B); A vs. B errors say how much of what was
   measured on the patient the clinician's view still carries.

    python benchmarks/bench_fidelity.py [--clip-frames N] [--no-clips]

Whole clips by default (3,235 frames; the patients' tracking counted 16 blinks on 2026-12-01). The
first 90 frames of each, which earlier results used, hold 3 blinks: too few to tell a blink F1 of
0.8 from 0.5.

writes benchmarks/results/fidelity.json, fidelity.md and fidelity.png (nystagmus and saccade traces).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine_info  # noqa: E402
from bench_renderer import machine  # noqa: E402

from dmask_live import face_model as fm  # noqa: E402
from dmask_live.renderer import AvatarRenderer  # noqa: E402
from dmask_live.types import AvatarState  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FPS = 30.0
SIZE = (640, 480)
WARMUP = 15  # frames the tracker needs to settle (cold start, private shape, filters)
BLINK_MATCH_FRAMES = 3  # an avatar blink within this many frames of the patient's is the same blink


# --------------------------------------------------------------------------- scenarios
def base_state(t: float, **changes) -> AvatarState:
    model = fm.load_face_model()
    scale = 0.55 * SIZE[1] / float(np.ptp(model.vertices[:, 1]))
    state = AvatarState(
        tracked=True,
        head_pose_deg=np.array([3 * np.sin(0.5 * t), 2 * np.sin(0.3 * t), 0.0], np.float32),
        translation=np.array([SIZE[0] / 2, SIZE[1] / 2], np.float32),
        scale=scale, image_size=SIZE, timestamp=t,
    )
    return dataclasses.replace(state, **{k: np.asarray(v, np.float32) for k, v in changes.items()})


def gaze(od: tuple[float, float], os_: tuple[float, float]) -> np.ndarray:
    return np.array([od, os_], np.float32)


def scenario_nystagmus(seconds=4.0):
    out = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        yaw = 8.0 * np.sin(2 * np.pi * 3.0 * t)
        out.append(base_state(t, gaze_deg=gaze((yaw, 0), (yaw, 0))))
    return out


def scenario_esotropia(seconds=2.0):
    return [base_state(i / FPS, gaze_deg=gaze((15, 0), (0, 0))) for i in range(int(seconds * FPS))]


def scenario_ptosis(seconds=2.0):
    lids = np.array([[0.45, 1.0], [1.0, 1.0]])
    return [base_state(i / FPS, eyelids=lids) for i in range(int(seconds * FPS))]


def scenario_saccades(seconds=3.0):
    targets = [0.0, 15.0, -15.0, 0.0, 15.0, -15.0]
    out = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        yaw = targets[min(int(t / 0.5), len(targets) - 1)]
        out.append(base_state(t, gaze_deg=gaze((yaw, 0), (yaw, 0))))
    return out


def scenario_blinks(seconds=4.0, count=5):
    profile = [1.0, 0.6, 0.15, 0.0, 0.0, 0.15, 0.6, 1.0]  # ~270 ms blink
    starts = [int((0.6 + k * 0.7) * FPS) for k in range(count)]
    out = []
    for i in range(int(seconds * FPS)):
        openness = 1.0
        for s in starts:
            if s <= i < s + len(profile):
                openness = profile[i - s]
        out.append(base_state(i / FPS, eyelids=np.full((2, 2), openness)))
    return out


def scenario_head_pose(seconds=4.0):
    out = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        pose = [30 * np.sin(2 * np.pi * 0.25 * t), 15 * np.sin(2 * np.pi * 0.35 * t),
                12 * np.sin(2 * np.pi * 0.2 * t)]
        out.append(base_state(t, head_pose_deg=pose))
    return out


SCENARIOS = {
    "nystagmus": scenario_nystagmus,
    "esotropia": scenario_esotropia,
    "ptosis": scenario_ptosis,
    "saccades": scenario_saccades,
    "blinks": scenario_blinks,
    "head_pose": scenario_head_pose,
}


# --------------------------------------------------------------------------- round trip
class Tracking:
    """landmarks → tracker → ocular, fresh per sequence."""

    def __init__(self):
        from dmask_live.landmarks import FaceLandmarker

        self.landmarker = FaceLandmarker()

    def run(self, frames, timestamps, landmarks=None, read=None):
        """Track frames; or, with ``landmarks`` (one per frame), skip the landmark networks.

        ``read``: a list that receives what the networks read from each frame (None: no face).
        """
        from dmask_live.ocular import OcularAnalyzer  # noqa: I001 - lazy stage imports
        from dmask_live.tracker import FaceTracker

        self.landmarker.reset()
        tracker, analyzer = FaceTracker(), OcularAnalyzer()
        states, metrics = [], []
        for i, t in enumerate(timestamps):
            found = landmarks[i] if landmarks is not None else self.landmarker.process(frames[i])
            if read is not None:
                read.append(found)
            state = tracker.update(found, float(t))
            states.append(state)
            metrics.append(analyzer.update(state))
        return states, metrics


def series(states, name: str) -> np.ndarray:
    """(N, ...) array of a state field; NaN rows where untracked."""
    rows = []
    for s in states:
        value = np.asarray(getattr(s, name), np.float64)
        rows.append(value if s.tracked else np.full(value.shape, np.nan))
    return np.array(rows)


def rms(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(a ** 2))) if a.size else float("nan")


def dominant_frequency(signal: np.ndarray, fps: float) -> tuple[float, float]:
    """(frequency Hz, amplitude) of the strongest sinusoid (amplitude = half peak-to-peak)."""
    x = signal[np.isfinite(signal)]
    x = x - x.mean()
    window = np.hanning(x.size)
    spectrum = np.abs(np.fft.rfft(x * window))
    freqs = np.fft.rfftfreq(x.size, 1.0 / fps)
    k = int(np.argmax(spectrum[1:]) + 1)
    amplitude = 2.0 * spectrum[k] / window.sum()
    return float(freqs[k]), float(amplitude)


def r(value, digits=2):
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def evaluate_scenario(name: str, truth, recovered, metrics) -> dict:
    sl = slice(WARMUP, None)
    t_gaze, r_gaze = series(truth, "gaze_deg")[sl], series(recovered, "gaze_deg")[sl]
    t_lids, r_lids = series(truth, "eyelids")[sl], series(recovered, "eyelids")[sl]
    t_pose, r_pose = series(truth, "head_pose_deg")[sl], series(recovered, "head_pose_deg")[sl]
    out = {
        "frames": len(truth),
        "tracked_fraction": r(np.mean([s.tracked for s in recovered]), 3),
        "gaze_rms_error_deg": r(rms(r_gaze - t_gaze)),
        "lid_rms_error": r(rms(r_lids - t_lids), 3),
        "head_pose_rms_error_deg": {k: r(rms(r_pose[:, i] - t_pose[:, i])) for i, k in
                                    enumerate(("yaw", "pitch", "roll"))},
    }
    last = metrics[-1]
    if name == "nystagmus":
        freq, amp = dominant_frequency(r_gaze[:, 0, 0], FPS)
        out.update(true_frequency_hz=3.0, true_amplitude_deg=8.0, recovered_frequency_hz=r(freq),
                   recovered_amplitude_deg=r(amp),
                   analyzer_frequency_hz=r(last.oscillation_frequency_hz),
                   analyzer_amplitude_deg=r(last.oscillation_amplitude_deg))
    elif name == "esotropia":
        deviation = r_gaze[:, 0, 0] - r_gaze[:, 1, 0]
        analyzer = np.array([m.horizontal_deviation_deg for m in metrics[WARMUP:]], np.float64)
        out.update(true_deviation_deg=15.0, recovered_deviation_deg=r(np.nanmean(deviation)),
                   analyzer_deviation_deg=r(np.nanmean(analyzer)))
    elif name == "ptosis":
        ratio = r_lids[:, 0, 0] / r_lids[:, 1, 0]
        aperture = np.array([m.lid_aperture for m in metrics[WARMUP:]], np.float64)
        out.update(true_upper_lid_ratio_od_os=0.45, recovered_upper_lid_ratio_od_os=r(np.nanmean(ratio), 3),
                   analyzer_aperture_od=r(np.nanmean(aperture[:, 0]), 3),
                   analyzer_aperture_os=r(np.nanmean(aperture[:, 1]), 3))
    elif name == "saccades":
        yaw_t, yaw_r = t_gaze[:, 0, 0], r_gaze[:, 0, 0]
        steps = np.nonzero(np.diff(yaw_t))[0] + 1
        latencies, amplitudes = [], []
        for s in steps:
            target, before = yaw_t[s], yaw_t[s - 1]
            reached = np.nonzero(np.abs(yaw_r[s:s + 15] - before) >= 0.9 * abs(target - before))[0]
            latencies.append(float(reached[0]) if reached.size else float("nan"))
            amplitudes.append(float(np.nanmedian(yaw_r[s + 5:s + 14])))
        out.update(steps=len(steps), frames_to_90pct=[r(v, 1) for v in latencies],
                   settled_yaw_deg=[r(v, 1) for v in amplitudes],
                   true_yaw_deg=[float(yaw_t[s]) for s in steps])
    elif name == "blinks":
        out.update(true_blinks=5, analyzer_blinks=int(last.blink_count))
    return out


def perfect_landmarks(state: AvatarState):
    from dmask_live.types import FaceLandmarks

    points, contours, iris = fm.landmarks_from_state(fm.load_face_model(), state)
    return FaceLandmarks(points, contours, iris, 1.0, (0.0, 0.0, 0.0, 0.0), state.image_size)


def synthetic(tracking: Tracking) -> tuple[dict, dict]:
    results, traces = {}, {}
    with AvatarRenderer(*SIZE) as renderer:
        for name, make in SCENARIOS.items():
            truth = make()
            frames = [renderer.render(s) for s in truth]
            recovered, metrics = tracking.run(frames, [s.timestamp for s in truth])
            results[name] = evaluate_scenario(name, truth, recovered, metrics)
            # Reference: the tracker fed the exact landmarks of the truth (no rendering, no networks).
            perfect, perfect_metrics = tracking.run(None, [s.timestamp for s in truth],
                                                    landmarks=[perfect_landmarks(s) for s in truth])
            results[name]["with_perfect_landmarks"] = evaluate_scenario(name, truth, perfect, perfect_metrics)
            if name in ("nystagmus", "saccades"):
                traces[name] = (series(truth, "gaze_deg")[:, 0, 0], series(recovered, "gaze_deg")[:, 0, 0])
            print(f"{name}: {results[name]}", file=sys.stderr)
    return results, traces


# --------------------------------------------------------------------------- what the clinician sees
def rendered_gaze_check() -> dict:
    """Is the rendered iris where the state says? Iris-pixel centroid vs. the model's iris centre.

    Lids are opened wide; only irises that are fully and cleanly visible (pixel area within 3% of
    the projected disc's) are scored, since a centroid of a partly hidden disc is not its centre. The error in
    pixels is also given as the eyeball rotation it corresponds to (pixels / (scale * radius)).
    """
    from scipy.ndimage import binary_fill_holes

    model = fm.load_face_model()
    errors_px, errors_deg = [], []
    with AvatarRenderer(*SIZE) as renderer:
        for yaw in (-20.0, -10.0, 0.0, 10.0, 20.0):
            for pitch in (-10.0, 0.0, 10.0):
                for head in ([0.0, 0.0, 0.0], [15.0, -8.0, 6.0]):
                    state = base_state(0.0, gaze_deg=gaze((yaw, pitch), (-yaw, pitch)),
                                       eyelids=np.full((2, 2), 2.0), head_pose_deg=head)
                    image = renderer.render(state).astype(int)
                    _, _, iris = fm.landmarks_from_state(model, state)
                    for eye in range(2):
                        centre = iris[eye, 0, :2]
                        radius = float(np.linalg.norm(iris[eye, 1, :2] - centre))
                        x0, y0 = (centre - 2 * radius).astype(int)
                        x1, y1 = (centre + 2 * radius).astype(int)
                        region = image[y0:y1, x0:x1]
                        blue = region[..., 2] > region[..., 0] + 25
                        if not blue.any():
                            continue
                        # The pupil is dark; so is the lash line: only dark pixels among the blue
                        # ones' bounding box belong to the iris.
                        ys, xs = np.nonzero(blue)
                        inside = np.zeros_like(blue)
                        inside[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
                        mask = blue | ((region.max(-1) < 40) & inside)
                        # The corneal highlight lies on the iris/pupil: count it as iris (fill holes).
                        mask = binary_fill_holes(mask)
                        _, rotation, _ = fm.eyeball_pose(model, state, eye)
                        facing = abs(float((np.asarray(rotation) @ np.array([0.0, 0.0, -1.0]))[2]))
                        if not 0.97 <= mask.sum() / (np.pi * radius ** 2 * facing) <= 1.03:
                            continue  # partly hidden (lids, canthus) or mixed with other pixels
                        ys, xs = np.nonzero(mask)
                        error = np.hypot(xs.mean() + x0 + 0.5 - centre[0], ys.mean() + y0 + 0.5 - centre[1])
                        errors_px.append(error)
                        px_per_rad = state.scale * model.eyeball_radius
                        errors_deg.append(np.degrees(np.arcsin(min(error / px_per_rad, 1.0))))
    return {"irises_scored": len(errors_px), "irises_rendered": 60,
            "iris_centre_error_px_median": r(np.median(errors_px)),
            "iris_centre_error_px_max": r(np.max(errors_px)),
            "as_rotation_deg_median": r(np.median(errors_deg)), "as_rotation_deg_max": r(np.max(errors_deg))}


# --------------------------------------------------------------------------- what the networks see
def network_eye_check(tracking: Tracking) -> dict:
    """Landmark networks on single rendered frames vs. the model's exact points (no tracker).

    Iris: head straight, both eyes turned by the same yaw, the frame as rendered and mirrored (the
    mirrored eye crop of the iris network must not add a bias). Reported per eye: the iris-centre
    x error at yaw 0 (px, + = toward the nose) and the slope of detected over true iris displacement
    for nasal and temporal turns (1 = exact). Lids: upper/lower margin y error (px, + = down) of the
    iris model's contour (5 middle points) at upper-lid openness 1.0 / 0.6 / 0.35.
    """
    model = fm.load_face_model()
    landmarker = tracking.landmarker

    def detect(image):
        landmarker.reset()
        landmarker.process(image)
        return landmarker.process(image)

    def flip(points):
        out = np.array(points[::-1], np.float64)  # eyes swap sides in a mirrored image
        out[..., 0] = SIZE[0] - out[..., 0]
        return out

    out: dict = {}
    with AvatarRenderer(*SIZE) as renderer:
        centre = base_state(0.0, head_pose_deg=[0.0, 0.0, 0.0])
        _, _, iris0 = fm.landmarks_from_state(model, centre)
        for mirrored in (False, True):
            rows = {eye: {"bias": [], "nasal": [], "temporal": []} for eye in range(2)}
            for yaw in (-20.0, -10.0, 0.0, 10.0, 20.0):
                state = dataclasses.replace(centre, gaze_deg=gaze((yaw, 0.0), (yaw, 0.0)))
                image = renderer.render(state)
                _, _, truth = fm.landmarks_from_state(model, state)
                base = iris0
                if mirrored:
                    image, truth, base = np.ascontiguousarray(image[:, ::-1]), flip(truth), flip(iris0)
                found = detect(image)
                for eye in range(2):
                    # Image-left eye: the nose is toward +x; image-right eye: toward -x.
                    nasal_sign = 1.0 if eye == 0 else -1.0
                    true_dx = truth[eye, 0, 0] - base[eye, 0, 0]
                    found_dx = found.iris[eye, 0, 0] - base[eye, 0, 0]
                    if yaw == 0.0:
                        rows[eye]["bias"].append(nasal_sign * (found_dx - true_dx))
                    else:
                        side = "nasal" if nasal_sign * true_dx > 0 else "temporal"
                        rows[eye][side].append(found_dx / true_dx)
            key = "mirrored" if mirrored else "as_rendered"
            out[key] = {f"image_{'left' if eye == 0 else 'right'}_eye": {
                "iris_bias_px_nasal": r(np.mean(v["bias"])), "slope_nasal": r(np.mean(v["nasal"]), 3),
                "slope_temporal": r(np.mean(v["temporal"]), 3)} for eye, v in rows.items()}
        lids = {}
        for openness in (1.0, 0.6, 0.35):
            lids_state = np.array([[openness, 1.0], [openness, 1.0]], np.float32)
            state = dataclasses.replace(centre, eyelids=lids_state)
            _, contours, _ = fm.landmarks_from_state(model, state)
            found = detect(renderer.render(state))
            upper = found.eye_contours[:, 10:15, 1] - contours[:, 10:15, 1]
            lower = found.eye_contours[:, 2:7, 1] - contours[:, 2:7, 1]
            lids[str(openness)] = {"upper_px": r(upper.mean()), "lower_px": r(lower.mean())}
        out["lid_margin_error"] = lids
        _, contours, _ = fm.landmarks_from_state(model, centre)
        found = detect(renderer.render(centre))
        corners = (found.eye_contours[:, [0, 8], 0] - contours[:, [0, 8], 0]) * np.array([[1.0], [-1.0]])
        out["eye_corner_error_px_nasal"] = {"outer": r(corners[:, 0].mean()),
                                            "inner": r(corners[:, 1].mean())}
    out["iris_radius_px"] = r(float(np.linalg.norm(iris0[0, 1, :2] - iris0[0, 0, :2])))
    return out


# --------------------------------------------------------------------------- real clips
def read_clip(path: Path, count: int | None):
    """The clip's first ``count`` frames (None: all) as RGB arrays, with their times."""
    import av

    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
            if count is not None and len(frames) >= count:
                break
    return frames, times


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 4 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def blink_f1(clips: dict, tolerance: int = BLINK_MATCH_FRAMES) -> dict:
    """Avatar blinks matched one-to-one to the patient's (completion frames within ``tolerance``)."""
    hits = found = true = 0
    for c in clips.values():
        free = list(c["blink_frames_avatar"])
        found += len(free)
        true += len(c["blink_frames_patient"])
        for frame in c["blink_frames_patient"]:
            match = next((f for f in free if abs(f - frame) <= tolerance), None)
            if match is not None:
                free.remove(match)
                hits += 1
    precision = hits / found if found else float("nan")
    recall = hits / true if true else float("nan")
    f1 = 2 * hits / (found + true) if found + true else float("nan")
    return {"patient_blinks": true, "avatar_blinks": found, "matched": hits,
            "precision": r(precision, 3), "recall": r(recall, 3), "f1": r(f1, 3)}


# Where the round trip loses: each group of the landmarks the networks read from the avatar replaced
# by the exact points of the state the avatar was rendered from (face_model.landmarks_from_state).
LANDMARK_SWAPS = {
    "exact iris": ("iris",),
    "exact mesh and eye contours": ("points", "eye_contours"),
    "all exact (no rendering, no networks)": ("points", "eye_contours", "iris"),
}


def swapped_landmarks(read, exact, groups: tuple[str, ...]):
    """``read`` (the networks' landmarks of the avatar frame) with ``groups`` taken from ``exact``, the
    exact ones of its state (None where the patient was not tracked: nothing was rendered)."""
    from dmask_live.types import FaceLandmarks

    if exact is None or (read is None and len(groups) < 3):
        return None
    base = exact if read is None else read
    parts = {k: getattr(exact if k in groups else base, k) for k in ("points", "eye_contours", "iris")}
    return FaceLandmarks(**parts, confidence=base.confidence, roi=base.roi, image_size=base.image_size)


def round_trip_scores(patient, patient_metrics, avatar, avatar_metrics) -> dict:
    """Per-clip errors of the re-tracked avatar (states B) against the patient (states A)."""
    count = len(patient)
    both = [i for i in range(WARMUP, count) if patient[i].tracked and avatar[i].tracked]

    def pick(states, name, both=both):
        return series([states[i] for i in both], name)

    gaze_err = pick(avatar, "gaze_deg") - pick(patient, "gaze_deg")
    lid_err = pick(avatar, "eyelids") - pick(patient, "eyelids")
    pose_err = pick(avatar, "head_pose_deg") - pick(patient, "head_pose_deg")
    dev_p = pick(patient, "gaze_deg")[:, 0, 0] - pick(patient, "gaze_deg")[:, 1, 0]
    dev_a = pick(avatar, "gaze_deg")[:, 0, 0] - pick(avatar, "gaze_deg")[:, 1, 0]
    aperture_p = np.array([patient_metrics[i].lid_aperture for i in both], np.float64)
    aperture_a = np.array([avatar_metrics[i].lid_aperture for i in both], np.float64)
    return {
        "frames": count,
        "patient_tracked": r(np.mean([s.tracked for s in patient]), 3),
        "avatar_tracked": r(np.mean([s.tracked for s in avatar]), 3),
        "gaze_rms_error_deg": r(rms(gaze_err)),
        # per frame and eye: the angle between the two gaze directions (yaw, pitch differences)
        "gaze_median_error_deg": r(np.nanmedian(np.hypot(gaze_err[..., 0], gaze_err[..., 1])))
        if len(both) else None,
        "lid_aperture_correlation": r(correlation(aperture_a.ravel(), aperture_p.ravel()), 3),
        "blink_frames_patient": [i for i in range(count) if patient_metrics[i].blink],
        "blink_frames_avatar": [i for i in range(count) if avatar_metrics[i].blink],
        "gaze_yaw_correlation": r(np.corrcoef(pick(avatar, "gaze_deg")[:, :, 0].ravel(),
                                              pick(patient, "gaze_deg")[:, :, 0].ravel())[0, 1], 3)
        if len(both) > 3 else None,
        "deviation_rms_error_deg": r(rms(dev_a - dev_p)),
        "lid_rms_error": r(rms(lid_err), 3),
        "head_pose_rms_error_deg": r(rms(pose_err)),
        "blinks_patient": int(patient_metrics[-1].blink_count),
        "blinks_avatar": int(avatar_metrics[-1].blink_count),
    }


def clip_round_trip(tracking: Tracking, count: int | None) -> tuple[dict, dict]:
    """Per clip: the round trip's scores, and the same with exact landmark groups (LANDMARK_SWAPS)."""
    out, swaps = {}, {name: {} for name in LANDMARK_SWAPS}
    for path in sorted((SHARED / "videos").glob("*.mp4")):
        frames, times = read_clip(path, count)
        height, width = frames[0].shape[:2]
        patient, patient_metrics = tracking.run(frames, times)
        with AvatarRenderer(width, height) as renderer:
            avatar_frames = [renderer.render(s) for s in patient]
        del frames  # raw frames are not kept beyond this clip
        read: list = []
        avatar, avatar_metrics = tracking.run(avatar_frames, times, read=read)
        out[path.name] = round_trip_scores(patient, patient_metrics, avatar, avatar_metrics)
        print(f"{path.name}: {out[path.name]}", file=sys.stderr)
        exact = [perfect_landmarks(s) if s.tracked else None for s in patient]  # once for every swap
        for name, groups in LANDMARK_SWAPS.items():
            landmarks = [swapped_landmarks(f, e, groups) for f, e in zip(read, exact, strict=True)]
            states, metrics = tracking.run(None, times, landmarks=landmarks)
            swaps[name][path.name] = round_trip_scores(patient, patient_metrics, states, metrics)
    return out, swaps


def clip_summary(clips: dict) -> dict:
    def median(key):
        values = [c[key] for c in clips.values() if c[key] is not None]
        return r(float(np.median(values)), 3) if values else None

    return {"gaze_median_error_deg": median("gaze_median_error_deg"),
            "lid_aperture_correlation": median("lid_aperture_correlation"),
            "head_pose_rms_error_deg": median("head_pose_rms_error_deg"), "blinks": blink_f1(clips)}


# --------------------------------------------------------------------------- report
def plot(traces: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(traces), 1, figsize=(8, 2.6 * len(traces)), squeeze=False)
    for ax, (name, (truth, recovered)) in zip(axes[:, 0], traces.items(), strict=True):
        t = np.arange(truth.size) / FPS
        ax.plot(t, truth, label="true (rendered)", lw=1.5)
        ax.plot(t, recovered, label="tracked back", lw=1.0)
        ax.set_title(f"{name}: OD gaze yaw")
        ax.set_ylabel("deg")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def network_lines(check: dict) -> list[str]:
    lines = [
        "Iris centre from the iris network vs. the model's, both eyes turned together (yaw −20…+20°, head "
        "straight): bias at yaw 0 (px, + = toward the nose) and detected/true displacement (1 = exact).", "",
        "| frame | eye | bias at 0° (px) | slope nasal | slope temporal |", "| --- | --- | --- | --- | --- |",
    ]
    for frame in ("as_rendered", "mirrored"):
        for eye, v in check[frame].items():
            lines.append(f"| {frame} | {eye} | {v['iris_bias_px_nasal']} | {v['slope_nasal']} | "
                         f"{v['slope_temporal']} |")
    lids = ", ".join(f"{k}: upper {v['upper_px']}, lower {v['lower_px']}"
                     for k, v in check["lid_margin_error"].items())
    corners = check["eye_corner_error_px_nasal"]
    lines += ["", "Lid margins from the iris network's contour vs. the model's (px, + = down), by upper-lid "
              f"openness: {lids}. Eye corners (px, + = toward the nose): outer {corners['outer']}, "
              f"inner {corners['inner']}. Iris radius {check['iris_radius_px']} px "
              "(1 px ≈ 3° of eye rotation at this size)."]
    return lines


def swap_lines(summary: dict, swaps: dict | None) -> list[str]:
    if not swaps:
        return []
    lines = [
        "", "### Where the round trip loses: the landmarks read from the avatar vs. exact ones", "",
        "The avatar frames' landmarks as the networks read them, with some groups replaced by the exact "
        "points of the state each frame was rendered from, then tracked as before (same clips, same "
        "patient states A):", "",
        "| avatar landmarks | gaze median (deg) | lid aperture corr. | blink F1 (matched / patient / avatar) "
        "| head pose RMS (deg) |", "| --- | --- | --- | --- | --- |",
    ]
    for name, row in {"read by the networks (above)": summary, **swaps}.items():
        b = row["blinks"]
        lines.append(f"| {name} | {row['gaze_median_error_deg']} | {row['lid_aperture_correlation']} | "
                     f"{b['f1']} ({b['matched']} / {b['patient_blinks']} / {b['avatar_blinks']}) | "
                     f"{row['head_pose_rms_error_deg']} |")
    return lines


def write_markdown(path: Path, result: dict) -> None:
    m = result["machine"]
    syn = result["synthetic"]
    lines = [
        "# Clinical fidelity benchmark", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, GL: {m['gl_renderer']}; "
        f"load average (1/5/15 min) at the start {result['load_average_start']}, at the end "
        f"{m['load_average_1_5_15']}.",
        f"Command: `{result['command']}` ({result['seconds']} s).", "",
        "## What the clinician sees: is the rendered iris where the state puts it?", "",
        f"Over {result['rendered_iris']['irises_scored']} fully visible irises (of "
        f"{result['rendered_iris']['irises_rendered']} rendered, 30 gaze/head states), the centroid of the "
        f"rendered iris pixels is {result['rendered_iris']['iris_centre_error_px_median']} px (median; max "
        f"{result['rendered_iris']['iris_centre_error_px_max']} px) from the model's iris centre, i.e. "
        f"{result['rendered_iris']['as_rotation_deg_median']}° of eye rotation (max "
        f"{result['rendered_iris']['as_rotation_deg_max']}°).", "",
        "## What the landmark networks read from the avatar (single frames, no tracker)", "",
        *network_lines(result["network_eye_check"]), "",
        "## Known-truth signs (avatar rendered with the truth, tracked back)", "",
        "| sign | truth | recovered | tracked | gaze RMS err (deg) | lid RMS err "
        "| head yaw/pitch/roll RMS err (deg) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    describe = {
        "nystagmus": lambda s: (
            "3 Hz, ±8°",
            f"{s['recovered_frequency_hz']} Hz, ±{s['recovered_amplitude_deg']}° "
            f"(analyzer {s['analyzer_frequency_hz']} Hz, ±{s['analyzer_amplitude_deg']}°)"),
        "esotropia": lambda s: (
            "+15° (OD in)", f"{s['recovered_deviation_deg']}° (analyzer {s['analyzer_deviation_deg']}°)"),
        "ptosis": lambda s: ("OD/OS upper lid 0.45", f"{s['recovered_upper_lid_ratio_od_os']} (aperture OD "
                             f"{s['analyzer_aperture_od']} vs OS {s['analyzer_aperture_os']} iris diam.)"),
        "saccades": lambda s: (
            f"steps to {s['true_yaw_deg']}°",
            f"settled {s['settled_yaw_deg']}°, frames to 90%: {s['frames_to_90pct']}"),
        "blinks": lambda s: ("5 blinks", f"{s['analyzer_blinks']} blinks counted"),
        "head_pose": lambda s: ("yaw ±30°, pitch ±15°, roll ±12°", "see RMS errors"),
    }
    for name, s in syn.items():
        truth, recovered = describe[name](s)
        pose = s["head_pose_rms_error_deg"]
        lines.append(f"| {name} | {truth} | {recovered} | {s['tracked_fraction']} | "
                     f"{s['gaze_rms_error_deg']} | {s['lid_rms_error']} | "
                     f"{pose['yaw']} / {pose['pitch']} / {pose['roll']} |")
    lines += [
        "", "Reference: the tracker fed the exact landmarks of the truth (no rendering, no landmark "
        "networks); the difference to the table above is what rendering + landmark networks add.", "",
        "| sign | truth | recovered | gaze RMS err (deg) | lid RMS err | head yaw/pitch/roll RMS err (deg) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, full in syn.items():
        s = full["with_perfect_landmarks"]
        truth, recovered = describe[name](s)
        pose = s["head_pose_rms_error_deg"]
        lines.append(f"| {name} | {truth} | {recovered} | {s['gaze_rms_error_deg']} | {s['lid_rms_error']} | "
                     f"{pose['yaw']} / {pose['pitch']} / {pose['roll']} |")
    if result.get("clips"):
        lines += [
            "",
            "## Real clips: patient → avatar → tracked again ("
            + (f"first {result['clip_frames']} frames each)" if result["clip_frames"] else "every frame)"),
            "",
            "| clip | tracked patient / avatar | gaze median (deg) | gaze RMS (deg) | gaze yaw corr. "
            "| deviation RMS (deg) | lid RMS | lid aperture corr. | head pose RMS (deg) "
            "| blinks patient / avatar |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for clip, c in result["clips"].items():
            lines.append(f"| {clip} | {c['patient_tracked']} / {c['avatar_tracked']} | "
                         f"{c['gaze_median_error_deg']} | {c['gaze_rms_error_deg']} | "
                         f"{c['gaze_yaw_correlation']} | {c['deviation_rms_error_deg']} | "
                         f"{c['lid_rms_error']} | "
                         f"{c['lid_aperture_correlation']} | {c['head_pose_rms_error_deg']} | "
                         f"{c['blinks_patient']} / {c['blinks_avatar']} |")
        summary = result["clip_summary"]
        blinks = summary["blinks"]
        lines += ["", f"Over all clips: gaze error, median of the per-clip medians, "
                  f"{summary['gaze_median_error_deg']}° (goal ≤ 2°); lid-aperture correlation median "
                  f"{summary['lid_aperture_correlation']} (goal ≥ 0.95); head pose RMS median "
                  f"{summary['head_pose_rms_error_deg']}° (goal ≤ 3°); blinks: "
                  f"{blinks['patient_blinks']} on the patients, {blinks['avatar_blinks']} on the avatars, "
                  f"{blinks['matched']} matched within "
                  f"±{BLINK_MATCH_FRAMES} frames: F1 {blinks['f1']} (goal ≥ 0.95)."]
        lines += swap_lines(summary, result.get("exact_landmark_swaps"))
    if result.get("plot"):
        lines += ["", "![nystagmus and saccade traces](fidelity.png)"]
    lines += ["", f"First {WARMUP} frames of each sequence are the tracker's warm-up and not scored.", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-frames", type=int, default=None, help="frames per clip (default: all)")
    parser.add_argument("--no-clips", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    load_start = machine_info.load_average()
    tracking = Tracking()
    rendered = rendered_gaze_check()
    print(f"rendered iris check: {rendered}", file=sys.stderr)
    networks = network_eye_check(tracking)
    print(f"network eye check: {networks}", file=sys.stderr)
    synthetic_results, traces = synthetic(tracking)
    clips = swaps = None
    if not args.no_clips and (SHARED / "videos").is_dir():
        clips, swaps = clip_round_trip(tracking, args.clip_frames)
    with AvatarRenderer(16, 16) as probe:
        with probe.ctx:
            gl = probe.ctx.info["GL_RENDERER"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "topic": "fidelity",
        "command": "python benchmarks/bench_fidelity.py " + " ".join(sys.argv[1:]),
        "machine": machine(gl),
        "load_average_start": load_start,
        "rendered_iris": rendered,
        "network_eye_check": networks,
        "synthetic": synthetic_results,
        "clip_frames": args.clip_frames,
        "clips": clips,
        "clip_summary": clip_summary(clips) if clips else None,
        # per swap: the summary over clips (the per-clip rows are in the run's stderr)
        "exact_landmark_swaps": {name: clip_summary(c) for name, c in swaps.items()} if swaps else None,
        "plot": plot(traces, RESULTS / "fidelity.png"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (RESULTS / "fidelity.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(RESULTS / "fidelity.md", result)
    print((RESULTS / "fidelity.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
