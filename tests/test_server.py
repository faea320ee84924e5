"""The consult server: links and tokens, signalling errors, limits, and real aiortc calls on loopback."""

from __future__ import annotations

import asyncio
import fractions
import json
import time

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack
from av import VideoFrame

from dmask_live.consults import CLINICIAN, PATIENT, ConsultLimits
from dmask_live.relay import NEUTRAL_RGB, BroadcastTrack, NeutralMasker
from dmask_live.rtp_release import enable_marker_release
from dmask_live.server import MAX_OFFER_BYTES, REGISTRY_KEY, create_app

PATIENT_RGB = (250, 20, 200)  # a loud colour the masked output must never show
CLINICIAN_RGB = (20, 120, 250)


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class ColourTrack(MediaStreamTrack):
    """A 30 fps camera stand-in: flat colour frames with a moving bar, real pts."""

    kind = "video"

    def __init__(self, colour, size=(320, 240)) -> None:
        super().__init__()
        self._colour, self._size, self._count, self._start = colour, size, 0, None

    async def recv(self) -> VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        self._count += 1
        await asyncio.sleep(max(0.0, self._start + self._count / 30 - time.monotonic()))
        width, height = self._size
        image = np.empty((height, width, 3), np.uint8)
        image[:] = self._colour
        image[:, (self._count * 4) % width : (self._count * 4) % width + 8] = 255
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = self._count * 3000, fractions.Fraction(1, 90000)
        return frame


async def make_app_client(**limits) -> TestClient:
    app = create_app(NeutralMasker, limits=ConsultLimits(**limits) if limits else None)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def create_consult(client: TestClient) -> dict:
    response = await client.post("/api/consults", json={})
    assert response.status == 201, await response.text()
    body = await response.json()
    body["patient"] = body["patient_url"].rsplit("/", 1)[1]
    body["clinician"] = body["clinician_url"].rsplit("/", 1)[1]
    return body


# --------------------------------------------------------------------------- links, tokens, limits
def test_create_consult_and_token_checks():
    async def body():
        client = await make_app_client()
        try:
            consult = await create_consult(client)
            assert len(consult["patient"]) >= 43 and consult["patient"] != consult["clinician"]  # 256 bits
            page = await client.get(consult["patient_url"])
            assert page.status == 200 and "patient" in await page.text()
            assert page.headers["Referrer-Policy"] == "no-referrer"
            assert (await client.get(consult["clinician_url"])).status == 200
            for url in (
                f"/clinician/{consult['patient']}",  # the patient's token does not open the clinician page
                f"/patient/{consult['clinician']}",
                "/patient/" + "A" * 43,
                "/clinician/x",
            ):
                response = await client.get(url)
                assert response.status == 403
                assert await response.json() == {"error": "forbidden"}
            wrong = await client.post("/api/offer/" + "B" * 43, json={"type": "offer", "sdp": "v=0"})
            assert wrong.status == 403
            index = await client.get("/")
            assert index.status == 200 and "Create consult" in await index.text()
            assert (await client.get("/static/plots.js")).status == 200
        finally:
            await client.close()

    run(body())


def test_start_key_required_when_set():
    async def body():
        client = TestClient(TestServer(create_app(NeutralMasker, start_key="sesame")))
        await client.start_server()
        try:
            assert (await client.post("/api/consults", json={})).status == 403
            bad = await client.post("/api/consults", json={}, headers={"Authorization": "Bearer nope"})
            assert bad.status == 403
            ok = await client.post("/api/consults", json={}, headers={"Authorization": "Bearer sesame"})
            assert ok.status == 201
        finally:
            await client.close()

    run(body())


def test_malformed_and_oversized_offers():
    async def body():
        client = await make_app_client()
        try:
            consult = await create_consult(client)
            url = f"/api/offer/{consult['patient']}"
            cases = [
                (b"not json", 400),
                (json.dumps([1, 2]).encode(), 400),
                (json.dumps({"type": "answer", "sdp": "v=0\r\n"}).encode(), 400),
                (json.dumps({"type": "offer", "sdp": "hello"}).encode(), 400),
                (json.dumps({"type": "offer", "sdp": "v=0\r\nm=video 9 RTP/SAVPF 96\r\n"}).encode(), 400),
                (json.dumps({"type": "offer", "sdp": "v=0\r\n" + "a" * MAX_OFFER_BYTES}).encode(), 413),
            ]
            for payload, status in cases:
                response = await client.post(url, data=payload, headers={"Content-Type": "application/json"})
                assert response.status == status, (payload[:40], response.status, await response.text())
                assert "error" in await response.json()
            # an audio-only offer has nothing to mask: refused
            pc = RTCPeerConnection()
            pc.addTransceiver("audio")
            await pc.setLocalDescription(await pc.createOffer())
            response = await client.post(url, json={"type": "offer", "sdp": pc.localDescription.sdp})
            await pc.close()
            assert response.status == 400
            # the server still serves
            assert (await client.get(consult["patient_url"])).status == 200
        finally:
            await client.close()

    run(body())


def test_too_many_consults_and_end():
    async def body():
        client = await make_app_client(max_consults=2)
        try:
            first = await create_consult(client)
            await create_consult(client)
            refused = await client.post("/api/consults", json={})
            assert refused.status == 429 and "error" in await refused.json()
            assert (await client.post(f"/api/end/{first['patient']}")).status == 403  # only the clinician
            ended = await client.post(f"/api/end/{first['clinician']}")
            assert ended.status == 200
            assert (await client.get(first["clinician_url"])).status == 403
            assert (await client.get(first["patient_url"])).status == 403
            assert (await client.post(f"/api/end/{first['clinician']}")).status == 403
            await create_consult(client)  # room again
        finally:
            await client.close()

    run(body())


def test_idle_and_max_duration_timeouts():
    async def body():
        client = await make_app_client(idle_timeout_s=0.2, reap_interval_s=0.05)
        try:
            consult = await create_consult(client)
            assert (await client.get(consult["patient_url"])).status == 200
            await asyncio.sleep(0.5)
            assert (await client.get(consult["patient_url"])).status == 403
            assert not client.app[REGISTRY_KEY].consults
        finally:
            await client.close()
        client = await make_app_client(max_duration_s=0.2, reap_interval_s=10)
        try:
            consult = await create_consult(client)
            await asyncio.sleep(0.3)
            assert (await client.get(consult["clinician_url"])).status == 403  # checked on use too
        finally:
            await client.close()

    run(body())


# --------------------------------------------------------------------------- real calls on loopback
class Peer:
    """A Python aiortc patient or clinician using the same m-line layout as the web pages."""

    def __init__(self, role: str, colour) -> None:
        self.role = role
        self.pc = RTCPeerConnection()
        self.camera = ColourTrack(colour)
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.metrics: list[dict] = []
        camera_tx = self.pc.addTransceiver(self.camera, direction="sendrecv")
        enable_marker_release(camera_tx.receiver)  # as browsers do: the last frame is not held back
        self.pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
        names = {id(camera_tx): "masked"}
        if role == PATIENT:
            names[id(self.pc.addTransceiver("video", direction="recvonly"))] = "clinician_video"
        else:
            channel = self.pc.createDataChannel("metrics")
            channel.on("message", lambda message: self.metrics.append(json.loads(message)))

        @self.pc.on("track")
        def on_track(track):
            transceiver = next(t for t in self.pc.getTransceivers() if t.receiver.track is track)
            self.tracks[names.get(id(transceiver), track.kind)] = track

    async def join(self, client: TestClient, token: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"type": "offer", "sdp": self.pc.localDescription.sdp}
        response = await client.post(f"/api/offer/{token}", json=offer)
        assert response.status == 200, await response.text()
        await self.pc.setRemoteDescription(RTCSessionDescription(**await response.json()))

    async def frames(self, name: str, count: int) -> list:
        return [await asyncio.wait_for(self.tracks[name].recv(), 10) for _ in range(count)]


def mean_rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)


async def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def test_call_through_server_patient_vanishes_then_another_consult_works():
    async def body():
        client = await make_app_client()
        registry = client.app[REGISTRY_KEY]
        try:
            links = await create_consult(client)
            consult = registry.consults[links["consult"]]
            clinician, patient = Peer(CLINICIAN, CLINICIAN_RGB), Peer(PATIENT, PATIENT_RGB)
            await clinician.join(client, links["clinician"])
            await patient.join(client, links["patient"])
            await wait_until(lambda: {"masked", "audio"} <= set(clinician.tracks))
            await wait_until(lambda: {"masked", "clinician_video", "audio"} <= set(patient.tracks))

            # the clinician sees masked (neutral) frames, never the patient's colour
            for frame in await clinician.frames("masked", 10):
                assert np.abs(mean_rgb(frame) - NEUTRAL_RGB).max() < 6
            # the patient's self-view is the same masked stream; the clinician's camera is forwarded
            for frame in await patient.frames("masked", 5):
                assert np.abs(mean_rgb(frame) - NEUTRAL_RGB).max() < 6
            clinician_frame = (await patient.frames("clinician_video", 3))[-1]
            assert np.abs(mean_rgb(clinician_frame)[2] - CLINICIAN_RGB[2]) < 40
            assert (await clinician.frames("audio", 3))[0].sample_rate > 0  # the patient's audio arrives
            await wait_until(lambda: len(clinician.metrics) >= 3)
            assert clinician.metrics[-1]["type"] == "metrics" and "metrics" in clinician.metrics[-1]

            # no server sender carries a raw incoming track: only broadcasts of masked/forwarded media
            for pc in consult.pcs.values():
                for sender in pc.getSenders():
                    if sender.track is not None:
                        assert isinstance(sender.track, BroadcastTrack)
                        if sender.track.kind == "video" and sender is pc.getTransceivers()[0].sender:
                            # VP8 viewers share the single encode of the masked frames
                            assert sender.track._broadcast is consult.relay.encoded

            assert consult.relay.encoder.keyframes >= 1

            # the patient vanishes mid-call
            await patient.pc.close()
            await wait_until(lambda: PATIENT not in consult.pcs)
            await wait_until(lambda: consult.relay.stats.frames_out > 0 and consult.relay._reader.done())
            frames = await clinician.frames("masked", 2)  # the clinician now sees the neutral frame
            assert np.abs(mean_rgb(frames[-1]) - NEUTRAL_RGB).max() < 6

            # another consult works while the first is still open
            other_links = await create_consult(client)
            other_clinician, other_patient = Peer(CLINICIAN, CLINICIAN_RGB), Peer(PATIENT, PATIENT_RGB)
            await other_clinician.join(client, other_links["clinician"])
            await other_patient.join(client, other_links["patient"])
            await wait_until(lambda: "masked" in other_clinician.tracks)
            before = registry.consults[other_links["consult"]].relay.stats.frames_out
            await other_clinician.frames("masked", 5)
            assert registry.consults[other_links["consult"]].relay.stats.frames_out > before

            # the clinician ends the first consult: its connections close
            assert (await client.post(f"/api/end/{links['clinician']}")).status == 200
            assert consult.ended and not consult.pcs
            await wait_until(lambda: clinician.pc.connectionState in ("closed", "failed"), timeout=40)
            for peer in (clinician, other_clinician, other_patient):
                await peer.pc.close()
        finally:
            await client.close()
        assert not registry.consults  # shutdown ended every consult

    run(body(), timeout=120)


def test_cli_options():
    from dmask_live.cli import build_parser

    argv = ["serve", "--host", "0.0.0.0", "--port", "8443", "--cert", "c.pem", "--key", "k.pem"]
    args = build_parser("serve").parse_args([*argv, "--max-consults", "2"])
    assert (args.host, args.port, args.cert, args.key) == ("0.0.0.0", 8443, "c.pem", "k.pem")
    assert args.max_consults == 2
    defaults = build_parser("serve").parse_args(["serve"])
    assert (defaults.host, defaults.port, defaults.masker) == ("127.0.0.1", 8080, "pipeline")
    assert defaults.mask_in is None  # the server picks: own process per consult where available
    assert build_parser("serve").parse_args(["serve", "--mask-in", "thread"]).mask_in == "thread"


def test_pipeline_masker_factory_places_the_pipeline():
    from dmask_live.mask_process import ProcessMasker, available
    from dmask_live.pipeline import PipelineWorker
    from dmask_live.server import default_mask_in, pipeline_masker_factory

    assert default_mask_in() == ("process" if available() else "thread")
    with pytest.raises(ValueError, match="mask_in"):
        pipeline_masker_factory("gpu")

    async def body():
        for mask_in, kind in (("thread", PipelineWorker), ("process", ProcessMasker)):
            if mask_in == "process" and not available():
                continue
            masker = pipeline_masker_factory(mask_in, placement="centre")()
            assert isinstance(masker, kind)
            await masker.close()

    run(body())


def test_viewer_keyframe_request_reaches_shared_encoder():
    """A viewer's PLI/FIR (aiortc calls the sender's _send_keyframe) must key the shared VP8 encoder."""
    from dmask_live.consults import Consult

    async def body():
        consult = Consult(NeutralMasker, [])
        viewer = RTCPeerConnection()
        viewer.addTransceiver("video", direction="recvonly")
        await viewer.setLocalDescription(await viewer.createOffer())
        try:
            await consult.answer(CLINICIAN, viewer.localDescription)
            sender = consult.pcs[CLINICIAN].getTransceivers()[0].sender
            assert sender.track._broadcast is consult.relay.encoded  # VP8 negotiated: shared encode
            consult.relay.encoder._keyframe = False
            sender._send_keyframe()
            assert consult.relay.encoder._keyframe
        finally:
            await consult.end("test")
            await viewer.close()

    run(body())
