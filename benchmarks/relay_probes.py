"""Probes run inside the relay benchmark's processes: aiortc stage timestamps, thread wake-up delays
(the GIL's share) and CPU use per process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


# --------------------------------------------------------------------------- stage probes
class StageProbes:
    """Per-process timestamps of aiortc's own stages, keyed by RTP/pts timestamp (first one wins).

    ``released``: a video jitter buffer handed a complete frame to the decoder;
    ``sent``: a sender had a frame's RTP payloads ready (encoded, or a shared packet packed).
    Installed by wrapping aiortc methods in the benchmark's own processes only.
    """

    def __init__(self) -> None:
        self.released: dict[int, float] = {}
        self.sent: dict[int, float] = {}

    def install(self) -> StageProbes:
        from aiortc.jitterbuffer import JitterBuffer
        from aiortc.rtcrtpsender import RTCRtpSender

        from dmask_live.rtp_release import MarkerReleaseJitterBuffer

        probes = self

        def wrap_add(original):
            def add(buffer, packet):
                pli, frame = original(buffer, packet)
                if frame is not None and buffer._is_video:
                    probes.released.setdefault(frame.timestamp, time.monotonic())
                return pli, frame

            return add

        JitterBuffer.add = wrap_add(JitterBuffer.add)
        MarkerReleaseJitterBuffer.add = wrap_add(MarkerReleaseJitterBuffer.add)
        next_encoded = RTCRtpSender._next_encoded_frame

        async def next_encoded_frame(sender, codec):
            frame = await next_encoded(sender, codec)
            if frame is not None and sender.kind == "video":
                probes.sent.setdefault(frame.timestamp, time.monotonic())
            return frame

        RTCRtpSender._next_encoded_frame = next_encoded_frame
        return self

    def as_dict(self) -> dict:
        return {"released": list(self.released.items()), "sent": list(self.sent.items())}


# --------------------------------------------------------------------------- GIL probe
class WakeProbe:
    """How late a thread wakes from a 2 ms sleep: OS scheduling, plus waiting for the GIL when it
    runs inside a busy Python process. The same probe alone in its own process measures the OS
    share, so the difference is what the server's threads lose to each other over the GIL."""

    def __init__(self, period_s: float = 0.002) -> None:
        import threading

        self._period = period_s
        self._late: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wake-probe", daemon=True)

    def start(self) -> WakeProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            time.sleep(self._period)
            self._late.append(time.perf_counter() - started - self._period)

    def summary(self) -> dict:
        late = np.array(self._late[-20000:]) * 1000.0
        if late.size == 0:
            return {}
        return {"p50_ms": round(float(np.percentile(late, 50)), 2),
                "p95_ms": round(float(np.percentile(late, 95)), 2),
                "p99_ms": round(float(np.percentile(late, 99)), 2)}


def wake_probe_main(duration: float, out) -> None:
    probe = WakeProbe().start()
    time.sleep(duration)
    out.put(probe.summary())


# --------------------------------------------------------------------------- CPU accounting
def _cpu_ticks() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, user + system clock ticks) of every process (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


def cpu_share(roles: dict[str, list[int]], settle_s: float, window_s: float) -> dict[str, float]:
    """% of one core used over a window by each role's process, and by the server's children
    (the masking processes) as "mask processes"; {} where /proc is not available."""
    if not Path("/proc/self/stat").exists():
        return {}
    time.sleep(settle_s)
    before = _cpu_ticks()
    time.sleep(window_s)
    after = _cpu_ticks()
    ticks_per_s = os.sysconf("SC_CLK_TCK") * window_s

    def used(pid: int) -> float:
        return (after[pid][1] - before[pid][1]) if pid in after and pid in before else 0

    share = {role: sum(used(pid) for pid in pids) for role, pids in roles.items()}
    server = roles["server"][0]
    share["mask processes"] = sum(used(pid) for pid, (ppid, _) in after.items() if ppid == server)
    return {role: round(100.0 * ticks / ticks_per_s, 1) for role, ticks in share.items()}
