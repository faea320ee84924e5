"""The relay benchmark's processes: the server (dmask-live's app or the stock aiortc anchor), and
the patients and clinicians that connect to it. Process targets stay module-level (spawn pickles
them by name)."""

from __future__ import annotations

import asyncio
import fractions
import os
import sys
import time

from relay_clip import FPS, clip_frames, pts_of
from relay_maskers import masker_factory
from relay_probes import StageProbes, WakeProbe


# --------------------------------------------------------------------------- server process
def server_main(port: int, mode: str, masker: dict, ready) -> None:
    import logging

    from dmask_live.server import limit_blas_threads

    limit_blas_threads()  # as `dmask-live serve` does
    if os.environ.get("BENCH_SWITCH_MS"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_MS"]) / 1000.0)

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(port, mode, masker, ready))


async def _serve(port: int, mode: str, masker: dict, ready) -> None:
    from aiohttp import web

    probes = StageProbes().install()
    wake = WakeProbe().start()
    traces: list = []
    if mode == "mask":
        from dmask_live.relay import MaskingRelay
        from dmask_live.server import REGISTRY_KEY, check_pipeline, create_app

        if masker["kind"] == "pipeline":
            await check_pipeline(masker["mask_in"])  # as `dmask-live serve` does: build + warm up
        MaskingRelay.trace_frames = 5000

        app = create_app(masker_factory(masker))

        async def stats(request):
            registry = request.app[REGISTRY_KEY]
            consults = list(registry.consults.values())
            traces[:] = [list(c.relay.trace or ()) for c in consults]
            return web.json_response([c.relay.stats.as_dict(c.relay.dropped) for c in consults])

        app.router.add_get("/bench/stats", stats)
    else:
        app = stock_app(marker=mode == "stock+marker")

    async def trace(request):
        return web.json_response({**probes.as_dict(), "relay": traces, "wake": wake.summary()})

    app.router.add_get("/bench/trace", trace)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    ready.set()
    await asyncio.Event().wait()


def stock_app(marker: bool):
    """The anchor: stock aiortc forwarding (MediaRelay) with the same HTTP signalling shape."""
    import secrets

    from aiohttp import web
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaRelay

    from dmask_live.rtp_release import enable_marker_release

    relay = MediaRelay()
    consults: dict[str, dict] = {}
    pcs: set = set()

    async def create(request):
        token = secrets.token_urlsafe(16)
        consults[token] = {}
        links = {"patient_url": f"/p/{token}:p", "clinician_url": f"/c/{token}:c"}
        return web.json_response(links, status=201)

    async def offer(request):
        token, role = request.match_info["token"].split(":")
        consult = consults[token]
        body = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.add(pc)
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        video = next(t for t in pc.getTransceivers() if t.kind == "video")
        if marker:
            enable_marker_release(video.receiver)
        if role == "p":
            consult["source"] = video.receiver.track
        else:
            video.sender.replaceTrack(relay.subscribe(consult["source"]))
            video.direction = "sendonly"
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"type": "answer", "sdp": pc.localDescription.sdp})

    async def stats(request):
        return web.json_response([])

    app = web.Application()
    app.router.add_post("/api/consults", create)
    app.router.add_post("/api/offer/{token}", offer)
    app.router.add_get("/bench/stats", stats)
    return app


# --------------------------------------------------------------------------- client processes
async def _join(session, base: str, token: str, pc) -> None:
    from aiortc import RTCSessionDescription

    await pc.setLocalDescription(await pc.createOffer())
    offer = {"type": "offer", "sdp": pc.localDescription.sdp}
    async with session.post(f"{base}/api/offer/{token}", json=offer) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"offer refused: {r.status} {body}")
    await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))


async def _read_frames(track, log: list | None = None) -> None:
    """Receive ``track`` until it ends; with ``log``, note each frame's (pts, arrival time)."""
    from aiortc.mediastreams import MediaStreamError

    try:
        while True:
            frame = await track.recv()
            if log is not None:
                log.append((frame.pts, time.monotonic()))
    except MediaStreamError:
        pass


def patients_main(base: str, tokens: list[str], consult: int, duration: float, self_view: bool, out,
                  joined) -> None:
    out.put(asyncio.run(_patients(base, tokens, consult, duration, self_view, joined)))


async def _patients(base, tokens, consult, duration, self_view, joined):
    import aiohttp
    import cv2
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import MediaStreamTrack
    from av import VideoFrame

    probes = StageProbes().install()
    frames, _ = clip_frames()
    yuv = [cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420) for f in frames]
    start = time.monotonic() + 1.0 + 0.5 * len(tokens)
    sent: list[dict[int, float]] = [dict() for _ in tokens]

    class ClipTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self, log: dict[int, float]) -> None:
            super().__init__()
            self._index, self._log = 0, log

        async def recv(self):
            due = start + self._index / FPS
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            frame = VideoFrame.from_ndarray(yuv[self._index % len(yuv)], format="yuv420p")
            frame.pts, frame.time_base = pts_of(self._index, consult), fractions.Fraction(1, 90000)
            self._log[frame.pts] = time.monotonic()
            self._index += 1
            return frame

    pcs, drains = [], []
    async with aiohttp.ClientSession() as session:
        for token, log in zip(tokens, sent, strict=True):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            transceiver = pc.addTransceiver(ClipTrack(log), direction="sendrecv" if self_view else "sendonly")
            await _join(session, base, token, pc)
            if self_view:
                drains.append(asyncio.ensure_future(_read_frames(transceiver.receiver.track)))
            pcs.append(pc)
        joined.set()
        await asyncio.sleep(max(0.0, start + duration + 1.5 - time.monotonic()))
    for pc in pcs:
        await pc.close()
    for task in drains:
        task.cancel()
    return sent, probes.as_dict()


def clinicians_main(base: str, tokens: list[str], duration: float, out) -> None:
    out.put(asyncio.run(_clinicians(base, tokens, duration)))


async def _clinicians(base, tokens, duration):
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection

    from dmask_live.rtp_release import enable_marker_release

    probes = StageProbes().install()
    received: list[list[tuple[int, float]]] = [[] for _ in tokens]

    pcs, readers = [], []
    async with aiohttp.ClientSession() as session:
        for token, log in zip(tokens, received, strict=True):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            transceiver = pc.addTransceiver("video", direction="recvonly")
            enable_marker_release(transceiver.receiver)  # browsers release complete frames at once
            await _join(session, base, token, pc)
            readers.append(asyncio.ensure_future(_read_frames(transceiver.receiver.track, log)))
            pcs.append(pc)
        await asyncio.sleep(duration + 1.0)
    for pc in pcs:
        await pc.close()
    for task in readers:
        task.cancel()
    return received, probes.as_dict()
