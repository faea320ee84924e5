"""Search the avatar's brow shades (renderer._BROW_SHADES) so the networks read its orbit right.

    python benchmarks/tune_brow_shades.py [--start 1 1 1 1] [--evaluations 45]

Why: the tracker places each eyeball by the periorbital loops the landmark networks read, and on
the rendered avatar they read those loops where its brows suggest. A mis-read orbit moves the
re-tracked eyeballs, and every gaze read back from the mask is off by a constant. This renders the
canonical avatar with known states (gaze, lids, head pose; two face sizes), tracks each rendering
back (landmark networks + tracker, as bench_fidelity does) and minimises, over the four brow-edge
shades, the gaze error (RMS, degrees) plus the lid error, with a penalty when a shut eye stops
reading shut (blinks must survive). Only synthetic renders of the canonical face go in: no
person's data. Prints every evaluation and the best shades to copy into renderer._BROW_SHADES;
then check them on real clips with bench_fidelity.py (the search never sees those).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fidelity import SIZE, Tracking, base_state, gaze  # noqa: E402

from dmask_live import renderer  # noqa: E402

CASES = {
    "straight": {},
    "right": {"gaze_deg": gaze((15, 0), (15, 0))},
    "left": {"gaze_deg": gaze((-15, 0), (-15, 0))},
    "up": {"gaze_deg": gaze((0, 10), (0, 10))},
    "down": {"gaze_deg": gaze((0, -10), (0, -10))},
    "esotropia": {"gaze_deg": gaze((15, 0), (0, 0))},
    "ptosis": {"eyelids": np.array([[0.45, 1.0], [1.0, 1.0]], np.float32)},
    "wide": {"eyelids": np.array([[1.6, 1.3], [1.6, 1.3]], np.float32)},
    "turned": {"head_pose_deg": [15.0, -8.0, 5.0], "gaze_deg": gaze((5, 5), (5, 5))},
}
SMALL_FACE_CASES = ("straight", "right", "up", "wide", "ptosis", "esotropia")
SMALL_FACE = 0.7  # second size: the face at 0.7x the benchmark's
WARM_FRAMES, HOLD_FRAMES = 10, 8  # neutral frames (tracker settles), then the case held
SHUT_READ_LIMIT = 0.08  # a shut eye's read aperture, fraction of its open one, above this: penalised


BASE = renderer._BROW_SHADES  # the shipped shades: the search's start and its vertex groups


def state(case: dict, size: float, t: float = 0.0):
    changes = {"head_pose_deg": [0.0, 0.0, 0.0], **case}
    s = base_state(t, **changes)
    return dataclasses.replace(s, scale=s.scale * size)


def read_back(render, tracking: Tracking, truth, size: float, frames: int = HOLD_FRAMES):
    """Track ``truth`` rendered, after a neutral warm-up; the last frames' mean state."""
    images = [render(state({}, size))] * WARM_FRAMES + [render(truth)] * frames
    times = np.cumsum([0.0] + [1 / 30] * (len(images) - 1))
    states, metrics = tracking.run(images, times)
    open_aperture = np.mean(metrics[WARM_FRAMES - 1].lid_aperture)
    last = slice(-4, None)
    aperture = np.mean([m.lid_aperture for m in metrics[last]]) / max(open_aperture, 1e-9)
    return (np.mean([s.gaze_deg for s in states[last]], 0), np.mean([s.eyelids for s in states[last]], 0),
            float(aperture))


def score(shades: np.ndarray, tracking: Tracking) -> tuple[float, dict]:
    renderer._BROW_SHADES = tuple((indices, float(s)) for (indices, _), s in zip(BASE, shades, strict=True))
    gaze_err, lid_err, shut = {1.0: [], SMALL_FACE: []}, [], []
    with renderer.AvatarRenderer(*SIZE) as avatar:
        for size in (1.0, SMALL_FACE):
            for name, case in CASES.items():
                if size != 1.0 and name not in SMALL_FACE_CASES:
                    continue
                truth = state(case, size)
                g, lids, _ = read_back(avatar.render, tracking, truth, size)
                gaze_err[size].append(g - truth.gaze_deg)
                if size == 1.0:
                    lid_err.append(lids - truth.eyelids)
            shut_state = state({"eyelids": np.array([[-0.3, 1.0], [-0.3, 1.0]], np.float32)}, size)
            shut.append(read_back(avatar.render, tracking, shut_state, size, frames=4)[2])
    rms = {size: float(np.sqrt(np.mean(np.square(e)))) for size, e in gaze_err.items()}
    lid_rms = float(np.sqrt(np.mean(np.square(lid_err))))
    penalty = sum(20.0 * max(0.0, s - SHUT_READ_LIMIT) for s in shut)
    value = 0.6 * rms[1.0] + 0.4 * rms[SMALL_FACE] + 2.0 * lid_rms + penalty
    return value, {"gaze_rms_deg": rms, "lid_rms": lid_rms, "shut_read": shut}



def main() -> int:
    from scipy.optimize import minimize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=float, nargs=4, default=[s for _, s in BASE])
    parser.add_argument("--evaluations", type=int, default=45)
    args = parser.parse_args()
    tracking = Tracking()
    tried: list[tuple[float, list[float], dict]] = []

    def objective(x: np.ndarray) -> float:
        shades = np.clip(x, 0.0, 1.6)  # darker than 1.6x BROW clips toward black
        value, parts = score(shades, tracking)
        tried.append((value, [round(float(s), 3) for s in shades], parts))
        print(f"{value:7.3f} shades {tried[-1][1]} {parts}", flush=True)
        return value

    minimize(objective, np.array(args.start), method="Nelder-Mead",
             options={"maxfev": args.evaluations, "xatol": 0.02, "fatol": 0.02})
    best = min(tried, key=lambda row: row[0])
    print(f"best {best[1]} (objective {best[0]:.3f}, {best[2]}): copy into renderer._BROW_SHADES")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
