"""Relay latency, overload and capacity: Python aiortc patient → server → clinician on loopback.

Three processes per scenario (server, patients, clinicians), clocks compared with the
system-wide monotonic clock. The patient sends 640x480 at 30 fps from a real-face clip; each
frame's pts carries a known pseudo-random offset inside its 33 ms slot, so the clinician's
received pts (RTP keeps pts differences exactly) identify the sent frame whatever the RTP
origins: latency = clinician receive time − patient capture time, per frame.

Scenarios, all in the same run:
* stock        — anchor: stock aiortc passthrough (``MediaRelay`` forwarding the patient's track),
                 stock receivers;
* stock+marker — the same passthrough with ``rtp_release`` on the server's receiver;
* mask         — dmask-live's real server (``create_app``: latest-frame relay, marker release,
                 mask once, masked self-view back to the patient as in a real consult).
The clinician stand-in releases frames at the marker bit in every scenario, as browsers do.

Masker: the real pipeline when it can be built (``--masker pipeline``, default when available),
placed as ``dmask-live serve`` places it (``--mask-in process|thread`` to choose), else
``--masker standin``: a worker thread that sleeps ``--standin-ms`` per frame and returns a flat
rendering (relay overhead without the pipeline's CPU use). Overload always uses the stand-in at
2 frame intervals.

Per-stage breakdown (1-consult runs): aiortc's jitter-buffer release and sender hand-off are
timestamped by wrapping its methods in the benchmark's processes, the relay's own stages by its
``trace_frames`` record; each stage's events are mapped to the sent frame by pts. A wake-up probe
(a thread sleeping 2 ms) inside the server and alone in a process shows the GIL's share of delays.

    python benchmarks/bench_relay.py                      # full run, writes results/relay.{json,md}
    python benchmarks/bench_relay.py --quick --no-write   # smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import sys
from pathlib import Path

import numpy as np

# the benchmark's parts (relay_*.py) live next to it; spawned processes inherit this sys.path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay_analysis import WARMUP_S, match_latencies, relay_stages, stage_breakdown, summarise  # noqa: E402
from relay_clients import clinicians_main, patients_main, server_main  # noqa: E402
from relay_clip import FPS, clip_frames  # noqa: E402
from relay_maskers import pipeline_available  # noqa: E402
from relay_probes import cpu_share, wake_probe_main  # noqa: E402
from relay_report import RESULTS, machine, write_report  # noqa: E402


# --------------------------------------------------------------------------- scenario runner
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_scenario(mode: str, masker: dict, consults: int, duration: float) -> dict:
    import urllib.request

    ctx = mp.get_context("spawn")
    load_before = os.getloadavg()[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ready = ctx.Event()
    # not a daemon: the server may start masking processes of its own (ProcessMasker)
    server = ctx.Process(target=server_main, args=(port, mode, masker, ready))
    server.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("server did not start")
        patients, clinicians = [], []
        for _ in range(consults):
            request = urllib.request.Request(f"{base}/api/consults", data=b"{}", method="POST")
            with urllib.request.urlopen(request) as response:
                links = json.loads(response.read())
            patients.append(links["patient_url"].rsplit("/", 1)[1])
            clinicians.append(links["clinician_url"].rsplit("/", 1)[1])
        # one process per patient and per clinician (each a separate browser in real use), so one
        # client's GIL does not hold up another's frames
        patient_outs, clinician_outs = [ctx.Queue() for _ in patients], [ctx.Queue() for _ in clinicians]
        patient_procs, clinician_procs = [], []
        for index, (token, out) in enumerate(zip(patients, patient_outs, strict=True)):
            joined = ctx.Event()
            args = (base, [token], index, duration, mode == "mask", out, joined)
            patient_procs.append(ctx.Process(target=patients_main, args=args, daemon=True))
            patient_procs[-1].start()
            if not joined.wait(60):  # patients join first (the stock anchor needs the source track)
                raise RuntimeError("patients did not join")
        for token, out in zip(clinicians, clinician_outs, strict=True):
            clinician_procs.append(ctx.Process(target=clinicians_main, args=(base, [token], duration, out)))
            clinician_procs[-1].start()
        wake_out = ctx.Queue()
        wake_proc = ctx.Process(target=wake_probe_main, args=(duration, wake_out), daemon=True)
        wake_proc.start()
        roles = {"server": [server.pid], "patients": [p.pid for p in patient_procs],
                 "clinicians": [p.pid for p in clinician_procs]}
        cpu = cpu_share(roles, settle_s=WARMUP_S + 1.0, window_s=max(2.0, duration - WARMUP_S - 2.0))
        # each client process answers (one list per token it ran: here one, probes)
        clinician_results = [out.get(timeout=duration + 120) for out in clinician_outs]
        received = [logs[0] for logs, _ in clinician_results]
        clinician_probes = [probes for _, probes in clinician_results]
        patient_results = [out.get(timeout=60) for out in patient_outs]
        sent = [logs[0] for logs, _ in patient_results]
        patient_probes = [probes for _, probes in patient_results]
        with urllib.request.urlopen(f"{base}/bench/stats") as response:
            server_stats = json.loads(response.read())
        with urllib.request.urlopen(f"{base}/bench/trace") as response:
            server_trace = json.loads(response.read())
        wake_alone = wake_out.get(timeout=30)
        wake_proc.join(10)
        for proc in patient_procs + clinician_procs:
            proc.join(10)
    finally:
        server.terminate()
        server.join(10)
    per_consult = []
    for i in range(consults):
        start = min(sent[i].values())
        per_consult.append(summarise(match_latencies(sent[i], received[i]), start, duration))
    result = {"mode": mode, "consults": consults, "duration_s": duration, "per_consult": per_consult}
    result["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    p95s = [c.get("p95_ms", float("inf")) for c in per_consult]
    result["worst_p95_ms"] = max(p95s)
    result["server"] = server_stats
    result["cpu_percent"] = cpu
    result["relay_stages"] = [relay_stages(trace) for trace in server_trace.get("relay", [])]
    result["wake_late_ms"] = {"server thread": server_trace.get("wake", {}), "own process": wake_alone}
    stages = []
    for i in range(consults):
        relay = server_trace["relay"][i : i + 1] if len(server_trace.get("relay", [])) > i else []
        probes = {"patient": patient_probes[i], "server": {**server_trace, "relay": relay},
                  "clinician": clinician_probes[i]}
        stages.append(stage_breakdown(sent[i], received[i], probes, min(sent[i].values()) + WARMUP_S))
    result["stages_per_consult"] = stages
    worst = int(np.argmax(p95s))
    result["stages"] = stages[worst]  # the worst consult's (the only one's in 1-consult runs)
    if consults == 1:
        if os.environ.get("BENCH_RELAY_DUMP"):
            Path(os.environ["BENCH_RELAY_DUMP"]).write_text(
                json.dumps({"sent": list(sent[0].items()), "received": received[0], "probes": probes})
            )
    return result


def main() -> int:
    from dmask_live.server import MASK_IN, default_mask_in

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--masker", choices=("auto", "pipeline", "standin"), default="auto")
    parser.add_argument(
        "--mask-in", choices=MASK_IN, default=None,
        help="where the real pipeline runs (default: as `dmask-live serve` does)",
    )
    parser.add_argument("--standin-ms", type=float, default=20.0, help="stand-in masking time per frame")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per latency scenario")
    parser.add_argument("--overload-duration", type=float, default=120.0)
    parser.add_argument("--capacity-duration", type=float, default=15.0)
    parser.add_argument("--max-capacity", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=("overload", "capacity"))
    args = parser.parse_args()
    if args.quick:
        args.duration, args.overload_duration, args.capacity_duration, args.max_capacity = 8, 10, 8, 2

    reason = "" if args.masker == "standin" else pipeline_available()
    if args.masker == "pipeline" and reason:
        print(f"pipeline unavailable: {reason}", file=sys.stderr)
        return 1
    if reason or args.masker == "standin":
        masker = {"kind": "standin", "delay_ms": args.standin_ms}
        label = f"stand-in worker thread sleeping {args.standin_ms:.0f} ms/frame" + (
            f" (real pipeline unavailable: {reason})" if reason else ""
        )
    else:
        mask_in = args.mask_in or default_mask_in()
        masker = {"kind": "pipeline", "mask_in": mask_in}
        label = "real pipeline (landmarks + tracker + renderer), " + (
            "one process per consult (ProcessMasker)" if mask_in == "process" else "one thread per consult"
        )
    print("masker:", label, flush=True)
    report = {
        "machine": machine(),
        "command": "python benchmarks/bench_relay.py " + " ".join(sys.argv[1:]),
        "clip": clip_frames(1)[1],
        "masker": masker,
        "masker_label": label,
        "latency": {},
    }
    for mode in ("stock", "stock+marker", "mask"):
        result = run_scenario(mode, masker, 1, args.duration)
        report["latency"][mode] = result
        print(mode, result["per_consult"][0], flush=True)
        print("  stages", json.dumps(result.get("stages")), flush=True)

    if "overload" not in args.skip:
        slow = {"kind": "standin", "delay_ms": 2000.0 / FPS}
        result = run_scenario("mask", slow, 1, args.overload_duration)
        result["masker_ms"] = slow["delay_ms"]
        report["overload"] = result
        print("overload", result["per_consult"][0], result["server"], flush=True)
        print("  stages", json.dumps(result.get("stages")), flush=True)

    if "capacity" not in args.skip:
        runs, best = [], 0
        for n in range(1, args.max_capacity + 1):
            result = run_scenario("mask", masker, n, args.capacity_duration)
            runs.append(result)
            print("capacity", n, result["worst_p95_ms"], result["wake_late_ms"], flush=True)
            print("  relay stages p50/p95 ms", result["relay_stages"], flush=True)
            print("  cpu % of a core", result["cpu_percent"], flush=True)
            print("  stages", json.dumps(result.get("stages")), flush=True)
            if result["worst_p95_ms"] >= 100.0:
                break
            best = n
        note = (
            "server, patients and clinicians share the same 2 cores, so this is a lower bound for the "
            "server alone; "
            + ("masker = real pipeline" if masker["kind"] == "pipeline" else "stand-in masker uses no CPU")
        )
        report["capacity"] = {"runs": runs, "max_consults": best, "note": note}

    if not args.no_write and "overload" in report and "capacity" in report:
        write_report(report)
        print(f"wrote {RESULTS / 'relay.md'}")
    else:
        print(json.dumps(report, indent=1)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
