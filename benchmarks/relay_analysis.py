"""Relay benchmark analysis: sent/received frames matched by pts, latency summaries, per-stage breakdown."""

from __future__ import annotations

import numpy as np

from dmask_live.relay import TRACE_STAGES as RELAY_STAGES  # the relay's trace record, in order

WARMUP_S = 3.0  # seconds discarded at the start of each run


# --------------------------------------------------------------------------- analysis
PTS_TOLERANCE = 12  # ticks: the VP8 decoder's time-base rounding moves pts by a few ticks per hop


def _nearest(sent_pts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sent pts nearest each value (``sent_pts`` sorted), and whether it is within the tolerance."""
    index = np.clip(np.searchsorted(sent_pts, values), 1, len(sent_pts) - 1)
    left, right = sent_pts[index - 1], sent_pts[index]
    best = np.where(np.abs(values - left) <= np.abs(values - right), left, right)
    return best, np.abs(values - best) <= PTS_TOLERANCE


def match_latencies(sent: dict[int, float], received: list[tuple[int, float]]) -> list[tuple[float, float]]:
    """(capture time, latency s) per received frame; the unknown RTP pts origin is found by matching."""
    if not received:
        return []
    sent_pts = np.array(sorted(sent))
    probe = np.array([pts for pts, _ in received[:40]])
    offsets = sent_pts - probe[0]
    hits = [int(_nearest(sent_pts, probe + offset)[1].sum()) for offset in offsets]
    best = int(np.argmax(hits))
    if hits[best] < 0.8 * len(probe):
        raise RuntimeError(f"could not align received frames ({hits[best]}/{len(probe)})")
    matched, ok = _nearest(sent_pts, np.array([pts for pts, _ in received]) + offsets[best])
    pairs = zip(received, matched, ok, strict=True)
    return [(sent[int(m)], t - sent[int(m)]) for (_, t), m, good in pairs if good]


def align(sent_pts: np.ndarray, keys: list[int]) -> dict[int, int]:
    """key → sent pts, for keys that are sent pts plus one unknown constant (an RTP origin)."""
    if not keys:
        return {}
    keys_arr = np.array(keys, dtype=np.int64)
    best_hits, best_offset = 0, None
    for fraction in (0.5, 0.3, 0.7, 0.1, 0.9):  # keys may mix several consults' streams: try windows
        first = int(fraction * max(0, len(keys_arr) - 40))
        probe = keys_arr[first : first + 40]
        offsets = sent_pts - probe[0]
        hits = np.array([int(_nearest(sent_pts, probe + offset)[1].sum()) for offset in offsets])
        if hits.max() > best_hits:
            best_hits, best_offset = int(hits.max()), int(offsets[int(np.argmax(hits))])
    # a wrong offset matches by chance ~1 in 40 (tolerance 25 of 1000 jitter values); a right one
    # matches every key of this stream, which may be a third of a window that mixes three consults
    if best_offset is None or best_hits < min(8, len(keys_arr)):
        return {}
    matched, ok = _nearest(sent_pts, keys_arr + best_offset)
    return {int(k): int(m) for k, m, good in zip(keys_arr, matched, ok, strict=True) if good}


STAGES = [  # (name, process, event) in pipeline order; a stage's time = its event − the previous event
    ("patient encode", "patient", "sent"),
    ("network + server jitter buffer", "server", "released"),
    ("server decode → relay", "relay", "arrived"),
    ("wait for the masker", "relay", "picked"),
    ("to RGB", "relay", "rgb"),
    ("mask", "relay", "masked"),
    ("to YUV", "relay", "yuv"),
    ("encode", "relay", "encoded"),
    ("sender pick-up + packetise", "server", "sent"),
    ("send + network + clinician jitter buffer", "clinician", "released"),
    ("clinician decode", "clinician", "decoded"),
]


def stage_breakdown(sent: dict[int, float], received, probes: dict, start: float) -> dict:
    """p50/p95 per stage (ms) over frames seen at every stage, each stage's events mapped to sent pts."""
    sent_pts = np.array(sorted(sent))
    events: dict[tuple[str, str], dict[int, float]] = {}

    def add(process: str, event: str, pairs) -> None:
        pairs = list(pairs)
        mapping = align(sent_pts, [k for k, _ in pairs])
        events[(process, event)] = {mapping[k]: t for k, t in pairs if k in mapping}

    add("patient", "sent", probes["patient"]["sent"])
    add("server", "released", probes["server"]["released"])
    add("clinician", "released", probes["clinician"]["released"])
    add("clinician", "decoded", received)
    relay = probes["server"]["relay"][0] if probes["server"]["relay"] else []
    for event in RELAY_STAGES:
        add("relay", event, [(r["pts_in"], r[event]) for r in relay if event in r])
    # the server's sender sees output pts (= input pts unless the source restarted)
    add("server", "sent", probes["server"]["sent"])
    stages = [s for s in STAGES if events.get((s[1], s[2]))]
    frames = [p for p in sent_pts if sent[int(p)] >= start and all(p in events[(s[1], s[2])] for s in stages)]
    out = {"frames": len(frames), "stages": []}
    previous = np.array([sent[int(p)] for p in frames])
    total = previous.copy()
    for name, process, event in stages:
        times = np.array([events[(process, event)][int(p)] for p in frames])
        if times.size:
            ms = (times - previous) * 1000.0
            out["stages"].append(
                {"stage": name, "p50_ms": round(float(np.percentile(ms, 50)), 1),
                 "p95_ms": round(float(np.percentile(ms, 95)), 1)}
            )
            previous = times
    if frames:
        ms = (previous - total) * 1000.0
        out["total"] = {"p50_ms": round(float(np.percentile(ms, 50)), 1),
                        "p95_ms": round(float(np.percentile(ms, 95)), 1)}
    return out


def relay_stages(trace: list[dict], skip: int = 90) -> dict:
    """p50/p95 (ms) of each of the relay's own stages for one consult (first ``skip`` frames dropped)."""
    records = [r for r in trace[skip:] if all(name in r for name in RELAY_STAGES)]
    out = {}
    for before, after in zip(RELAY_STAGES, RELAY_STAGES[1:], strict=False):
        ms = np.array([r[after] - r[before] for r in records]) * 1000.0
        if ms.size:
            out[after] = [round(float(np.percentile(ms, 50)), 1), round(float(np.percentile(ms, 95)), 1)]
    return out


def summarise(latencies: list[tuple[float, float]], start: float, duration: float) -> dict:
    kept = [(c, lat) for c, lat in latencies if c >= start + WARMUP_S]
    values = np.array([lat for _, lat in kept]) * 1000.0
    if values.size == 0:
        return {"frames": 0}
    captures = np.array([c for c, _ in kept])
    thirds = np.array_split(values, 3)
    return {
        "frames": int(values.size),
        "fps": round(values.size / max(1e-6, captures.max() - captures.min()), 1),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p95_ms": round(float(np.percentile(values, 95)), 1),
        "max_ms": round(float(values.max()), 1),
        "p95_by_third_ms": [round(float(np.percentile(t, 95)), 1) for t in thirds if t.size],
    }
