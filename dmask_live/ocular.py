"""Clinical eye measurements from the avatar state (what the avatar shows, in canonical geometry).

Everything is computed from :class:`~dmask_live.types.AvatarState` and the canonical face model,
never from the patient's shape, so a masked video tracked again gives the same numbers.

* gaze yaw/pitch per eye (degrees, relative to the head) and the deviations
  (horizontal = yaw OD − yaw OS, positive = convergent/eso; vertical = pitch OD − pitch OS);
* lid aperture per eye: upper-to-lower margin distance through the iris centre, in iris diameters;
* upper-lid margin height above the iris centre (an MRD1 analogue), in iris diameters;
* blinks: both eyes closing below ``close_ratio`` of the neutral aperture and reopening above
  ``open_ratio`` (hysteresis), within ``max_blink_s``; rate per minute over the window;
* oscillation of horizontal gaze (nystagmus): dominant frequency of the detrended, windowed
  spectrum over the sliding window and its amplitude (half peak-to-peak) from a sine fit.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from dmask_live.face_model import FaceModel, drawn_eyelids, eyeball_centres, load_face_model
from dmask_live.types import AvatarState, OcularMetrics

NAN = float("nan")
OSCILLATION_UPDATE_S = 0.2


class OcularAnalyzer:
    """Per-frame ocular metrics with a sliding window (one instance per patient stream)."""

    def __init__(
        self,
        model: FaceModel | None = None,
        window_s: float = 10.0,
        close_ratio: float = 0.3,
        open_ratio: float = 0.6,
        max_blink_s: float = 1.0,
        min_oscillation_deg: float = 0.5,
        frequency_range_hz: tuple[float, float] = (0.5, 12.0),
    ) -> None:
        if not 0.0 < close_ratio < open_ratio:
            raise ValueError("OcularAnalyzer needs 0 < close_ratio < open_ratio")
        self.model = load_face_model() if model is None else model
        self.window_s = float(window_s)
        self.close_ratio = float(close_ratio)
        self.open_ratio = float(open_ratio)
        self.max_blink_s = float(max_blink_s)
        self.min_oscillation_deg = float(min_oscillation_deg)
        self.frequency_range_hz = frequency_range_hz
        self._iris_diameter = 2.0 * self.model.iris_radius
        # Lid margins (x, y) per eye: neutral, per-lid closing and per-expression offsets, as the
        # lower (outer → inner corner) and upper (inner → outer corner) polylines.
        rings = self.model.eye_ring
        half = rings.shape[1] // 2
        loops = [np.r_[0 : half + 1], np.r_[half : rings.shape[1], 0]]
        model = self.model
        self._margin_neutral = [
            [model.vertices[rings[e][i], :2].astype(np.float64) for i in loops] for e in range(2)
        ]
        self._margin_lids = [
            [model.eyelid_basis[e][:, rings[e][i], :2].astype(np.float64) for i in loops] for e in range(2)
        ]
        self._margin_expression = [
            [model.expression_basis[:, rings[e][i], :2].astype(np.float64) for i in loops] for e in range(2)
        ]
        neutral_eyeballs = eyeball_centres(model, np.zeros(0))
        self._neutral_aperture = np.array(
            [self._eye_geometry(np.ones((2, 2)), np.zeros((2, 2)), eye, neutral_eyeballs[eye])[0]
             for eye in range(2)]
        )  # fmt: skip
        self.reset()

    def reset(self) -> None:
        self.blink_count = 0
        self._closed_since: float | None = None
        self._blink_times: deque[float] = deque()
        self._history: deque[tuple[float, float]] = deque()  # (time, horizontal gaze) while eyes open
        self._first_time: float | None = None
        self._oscillation_cache: tuple[float, float, float] = (-math.inf, NAN, NAN)  # (time, f, amplitude)

    # -- geometry -------------------------------------------------------------------------------
    def _eye_geometry(
        self,
        eyelids: np.ndarray,
        gaze_deg: np.ndarray,
        eye: int,
        eyeball: np.ndarray,
        expression: np.ndarray | None = None,
    ) -> tuple[float, float]:
        """(aperture, upper margin above iris centre) in model units, frontal view of model space.

        ``eyeball`` is this eye's centre under ``expression`` (face_model.eyeball_centres, computed once
        per frame for both eyes).
        """
        model = self.model
        closing = 1.0 - eyelids[eye]
        count = 0 if expression is None else min(len(expression), model.num_expressions)
        yaw, pitch = np.radians(gaze_deg[eye])
        # Iris centre = eyeball centre (riding with its orbit under the expression) + iris_depth * gaze
        # direction (see face_model.eyeball_centres and gaze_rotation).
        centre_x = eyeball[0] + model.iris_depth * math.sin(yaw) * math.cos(pitch)
        centre_y = eyeball[1] - model.iris_depth * math.sin(pitch)
        heights = []
        for loop in range(2):  # lower, upper
            margin = self._margin_neutral[eye][loop] + np.tensordot(
                closing, self._margin_lids[eye][loop], axes=1
            )
            if count:
                margin = margin + np.tensordot(
                    expression[:count], self._margin_expression[eye][loop][:count], axes=1
                )
            heights.append(_interp_y(centre_x, margin))
        y_lower, y_upper = heights
        return y_lower - y_upper, centre_y - y_upper

    # -- per frame ------------------------------------------------------------------------------
    def update(self, state: AvatarState) -> OcularMetrics:
        t = float(state.timestamp)
        if self._first_time is None:
            self._first_time = t
        self._expire(t)
        if not state.tracked:
            self._closed_since = None
            return OcularMetrics(timestamp=t, tracked=False, blink_count=self.blink_count,
                                 blink_rate_per_min=self._blink_rate(t))  # fmt: skip
        lids = drawn_eyelids(state.eyelids)  # measured as the avatar shows them: a shut lid meets its pair
        gaze = np.asarray(state.gaze_deg, np.float64).reshape(2, 2)
        expression = np.asarray(state.expression, np.float64).reshape(-1)
        eyeballs = eyeball_centres(self.model, expression)
        geometry = [self._eye_geometry(lids, gaze, eye, eyeballs[eye], expression) for eye in range(2)]
        aperture = np.array([max(g[0], 0.0) for g in geometry])
        ratio = aperture / self._neutral_aperture
        blink = self._blink_step(t, ratio)
        is_open = ratio >= self.close_ratio
        yaw = [float(gaze[e, 0]) if is_open[e] else NAN for e in range(2)]
        pitch = [float(gaze[e, 1]) if is_open[e] else NAN for e in range(2)]
        if is_open.any():
            self._history.append((t, float(np.nanmean(yaw))))
        frequency, amplitude = self._oscillation_at(t)
        d = self._iris_diameter
        return OcularMetrics(
            timestamp=t,
            tracked=True,
            gaze_yaw_deg=(yaw[0], yaw[1]),
            gaze_pitch_deg=(pitch[0], pitch[1]),
            horizontal_deviation_deg=yaw[0] - yaw[1],
            vertical_deviation_deg=pitch[0] - pitch[1],
            lid_aperture=(float(aperture[0] / d), float(aperture[1] / d)),
            upper_lid_to_iris_centre=(float(geometry[0][1] / d), float(geometry[1][1] / d)),
            blink=blink,
            blink_count=self.blink_count,
            blink_rate_per_min=self._blink_rate(t),
            oscillation_frequency_hz=frequency,
            oscillation_amplitude_deg=amplitude,
            head_pose_deg=tuple(float(v) for v in np.asarray(state.head_pose_deg).reshape(3)),
        )

    def _blink_step(self, t: float, ratio: np.ndarray) -> bool:
        if self._closed_since is None:
            if ratio.max() < self.close_ratio:  # both eyes closed
                self._closed_since = t
            return False
        if ratio.min() > self.open_ratio:  # both eyes open again
            duration = t - self._closed_since
            self._closed_since = None
            if duration <= self.max_blink_s:
                self.blink_count += 1
                self._blink_times.append(t)
                return True
        return False

    def _expire(self, t: float) -> None:
        while self._blink_times and self._blink_times[0] < t - self.window_s:
            self._blink_times.popleft()
        while self._history and self._history[0][0] < t - self.window_s:
            self._history.popleft()

    def _blink_rate(self, t: float) -> float:
        span = min(self.window_s, t - (self._first_time if self._first_time is not None else t))
        if span < 0.5 * self.window_s:
            return NAN
        return 60.0 * len(self._blink_times) / span

    def _oscillation_at(self, t: float) -> tuple[float, float]:
        """The window's oscillation, recomputed every ``OSCILLATION_UPDATE_S`` (the window is long)."""
        last, frequency, amplitude = self._oscillation_cache
        if not 0.0 <= t - last < OSCILLATION_UPDATE_S:
            frequency, amplitude = self._oscillation()
            self._oscillation_cache = (t, frequency, amplitude)
        return frequency, amplitude

    def _oscillation(self) -> tuple[float, float]:
        if len(self._history) < 16:
            return NAN, NAN
        times, values = np.array(self._history).T
        span = times[-1] - times[0]
        if span < 2.0:
            return NAN, NAN
        rate = (len(times) - 1) / span
        grid = np.linspace(times[0], times[-1], len(times))
        signal = np.interp(grid, times, values)
        signal = signal - np.polyval(np.polyfit(grid - grid[0], signal, 1), grid - grid[0])
        window = np.hanning(len(signal))
        n_fft = 1 << int(math.ceil(math.log2(len(signal) * 8)))
        power = np.abs(np.fft.rfft(signal * window, n_fft)) ** 2
        freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
        band = (freqs >= self.frequency_range_hz[0]) & (freqs <= min(self.frequency_range_hz[1], 0.45 * rate))
        if not band.any():
            return NAN, NAN
        peak = int(np.flatnonzero(band)[np.argmax(power[band])])
        if 0 < peak < len(power) - 1:  # parabolic refinement on log power
            a, b, c = np.log(power[peak - 1 : peak + 2] + 1e-30)
            shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
            frequency = float(freqs[peak] + shift * (freqs[1] - freqs[0]))
        else:
            frequency = float(freqs[peak])
        # Amplitude from a least-squares sine at that frequency (with offset and trend).
        phase = 2 * math.pi * frequency * (grid - grid[0])
        design = np.stack([np.sin(phase), np.cos(phase), np.ones_like(phase), grid - grid[0]], axis=1)
        coef, *_ = np.linalg.lstsq(design, signal, rcond=None)
        amplitude = float(math.hypot(coef[0], coef[1]))
        explained = 1.0 - np.var(signal - design @ coef) / max(np.var(signal), 1e-12)
        if amplitude < self.min_oscillation_deg or explained < 0.3:
            return NAN, NAN
        return frequency, amplitude


def _interp_y(x: float, curve: np.ndarray) -> float:
    """Height of a margin polyline at x (linear between its points, flat beyond the corners)."""
    xs, ys = curve[:, 0], curve[:, 1]
    if xs[0] > xs[-1]:
        xs, ys = xs[::-1], ys[::-1]
    return float(np.interp(x, xs, ys))
