"""One Euro filter (Casiez, Roussel, Vogel, CHI 2012) for vectors, driven by media timestamps.

Low cutoff while a signal is still (removes jitter), high cutoff while it moves fast (no lag on
saccades, blinks or head turns): ``cutoff = min_cutoff + beta * |smoothed derivative|``.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Element-wise One Euro filter over arrays of a fixed shape.

    The parameters may be scalars or arrays broadcasting to the filtered shape (one setting per element).
    """

    def __init__(self, min_cutoff=1.0, beta=0.0, d_cutoff=1.0) -> None:
        self.min_cutoff = np.asarray(min_cutoff, dtype=np.float64)
        self.beta = np.asarray(beta, dtype=np.float64)
        self.d_cutoff = np.asarray(d_cutoff, dtype=np.float64)
        if np.any(self.min_cutoff <= 0) or np.any(self.d_cutoff <= 0) or np.any(self.beta < 0):
            raise ValueError("OneEuroFilter needs min_cutoff > 0, d_cutoff > 0 and beta >= 0")
        self.reset()

    def reset(self) -> None:
        self._value: np.ndarray | None = None
        self._derivative: np.ndarray | None = None
        self._time: float | None = None

    def __call__(self, value, timestamp: float) -> np.ndarray:
        x = np.asarray(value, dtype=np.float64)
        if self._value is None or self._time is None or self._value.shape != x.shape:
            self._value, self._derivative, self._time = x.copy(), np.zeros_like(x), float(timestamp)
            return x.copy()
        dt = float(timestamp) - self._time
        if not dt > 0.0:  # repeated or out-of-order timestamp: assume a nominal 30 fps step
            dt = 1.0 / 30.0
        derivative = (x - self._value) / dt
        self._derivative = self._derivative + _alpha(self.d_cutoff, dt) * (derivative - self._derivative)
        cutoff = self.min_cutoff + self.beta * np.abs(self._derivative)
        self._value = self._value + _alpha(cutoff, dt) * (x - self._value)
        self._time = float(timestamp)
        return self._value.copy()
