"""Consults: tokens, peer connections per role, media wiring, timeouts.

A consult has two secret links, one per role. Media wiring (the patient's raw video goes
only into the ``MaskingRelay``; no outgoing sender ever carries it)::

    patient  video ─▶ MaskingRelay ─▶ masked ─▶ clinician video, patient self-view
    patient  audio ─▶ patient_audio broadcast ─▶ clinician audio
    clinician video/audio ─▶ broadcasts ─▶ patient (the clinician is not masked)
    masking relay metrics ─▶ clinician's "metrics" data channel (JSON, ~15 Hz)

Each role's offer is answered by a new peer connection that replaces that role's previous
one (a page reload rejoins). A consult ends when the clinician ends it, when nobody has
been connected for ``idle_timeout_s``, or after ``max_duration_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtcpeerconnection import or_direction

from dmask_live.relay import BroadcastTrack, FrameBroadcast, Masker, MaskingRelay, TaskSet, forward_track
from dmask_live.rtp_release import enable_marker_release

logger = logging.getLogger(__name__)

PATIENT = "patient"
CLINICIAN = "clinician"
TOKEN_BYTES = 32  # 256 bits from secrets.token_urlsafe
METRICS_BUFFER_LIMIT = 256 * 1024  # bytes queued on the data channel before metrics are skipped


class TooManyConsultsError(RuntimeError):
    pass


class OfferError(ValueError):
    """The offer cannot be answered (bad SDP or the wrong media for the role)."""


@dataclass
class ConsultLimits:
    max_consults: int = 4
    idle_timeout_s: float = 15 * 60.0
    max_duration_s: float = 2 * 3600.0
    reap_interval_s: float = 1.0


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Consult:
    """One patient–clinician session: its two peer connections and the media between them."""

    def __init__(self, masker_factory: Callable[[], Masker], ice_servers: list[RTCIceServer]) -> None:
        self.id = secrets.token_hex(4)  # for logs only; never grants access
        self.tokens = {role: secrets.token_urlsafe(TOKEN_BYTES) for role in (PATIENT, CLINICIAN)}
        self.created = time.monotonic()
        self.last_activity = self.created
        self.ended = False
        self.end_reason = ""
        self.relay = MaskingRelay(masker_factory, on_metrics=self._send_metrics, name=f"consult {self.id}")
        self.patient_audio = FrameBroadcast()
        self.clinician_video = FrameBroadcast()
        self.clinician_audio = FrameBroadcast()
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.metrics_channel: RTCDataChannel | None = None
        self._ice_servers = ice_servers
        self._tasks = TaskSet(f"consult {self.id}")

    def connected_roles(self) -> list[str]:
        return [role for role, pc in self.pcs.items() if pc.connectionState in ("connecting", "connected")]

    async def answer(self, role: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answer a role's offer with a new peer connection (waits for ICE gathering)."""
        if self.ended:
            raise OfferError("consult ended")
        self.last_activity = time.monotonic()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        try:
            await self._negotiate(role, pc, offer)
        except Exception:
            await pc.close()
            raise
        previous, self.pcs[role] = self.pcs.get(role), pc
        if previous is not None:
            await previous.close()
        logger.info("consult %s: %s joined", self.id, role)
        return pc.localDescription

    async def _negotiate(self, role: str, pc: RTCPeerConnection, offer: RTCSessionDescription) -> None:
        pc.on("connectionstatechange", lambda: self._on_state(role, pc))
        if role == CLINICIAN:
            pc.on("datachannel", self._on_datachannel)
        try:
            await pc.setRemoteDescription(offer)
        except Exception as exc:
            raise OfferError(f"unusable offer: {type(exc).__name__}") from exc
        videos = [t for t in pc.getTransceivers() if t.kind == "video"]
        audios = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if not videos:
            raise OfferError("offer has no video")
        for transceiver in videos:
            enable_marker_release(transceiver.receiver)
        outgoing = [(videos[0], self._masked_track(videos[0]))]  # clinician view / patient self-view
        if role == PATIENT:
            # m-line order set by the patient page: camera (↔ masked self-view), mic (↔ clinician
            # audio), then a receive-only video for the clinician's camera.
            if len(videos) > 1:
                outgoing.append((videos[1], BroadcastTrack("video", self.clinician_video)))
            if audios:
                outgoing.append((audios[0], BroadcastTrack("audio", self.clinician_audio)))
        elif audios:
            outgoing.append((audios[0], BroadcastTrack("audio", self.patient_audio)))
        for transceiver, track in outgoing:
            transceiver.sender.replaceTrack(track)
            transceiver.direction = or_direction(transceiver.direction, "sendonly")
        await pc.setLocalDescription(await pc.createAnswer())
        # Wired only once the answer exists, so a failed renegotiation never disturbs live media.
        self._wire_incoming(role, videos[0].receiver.track, audios[0].receiver.track if audios else None)

    def _masked_track(self, transceiver) -> MediaStreamTrack:
        """VP8 viewers share one encode of the masked video; any other codec encodes its own."""
        codecs = getattr(transceiver, "_codecs", None) or []  # aiortc: the negotiated codecs, preferred first
        if not codecs or codecs[0].mimeType.lower() != "video/vp8":
            return self.relay.subscribe()
        sender = transceiver.sender
        stock_keyframe = sender._send_keyframe

        def send_keyframe() -> None:  # a viewer's PLI/FIR must reach the shared encoder
            stock_keyframe()
            self.relay.request_keyframe()

        sender._send_keyframe = send_keyframe
        return self.relay.subscribe_encoded()

    def _wire_incoming(
        self, role: str, video: MediaStreamTrack | None, audio: MediaStreamTrack | None
    ) -> None:
        """Route the role's incoming media (a receive-only offer has no incoming track)."""
        if role == PATIENT:
            if video is not None:
                self.relay.attach(video)  # the only place the patient's raw video goes
            if audio is not None:
                self._tasks.spawn(forward_track(audio, self.patient_audio), "patient-audio")
            return
        if video is not None:
            self._tasks.spawn(forward_track(video, self.clinician_video), "clinician-video")
        if audio is not None:
            self._tasks.spawn(forward_track(audio, self.clinician_audio), "clinician-audio")

    def _on_state(self, role: str, pc: RTCPeerConnection) -> None:
        state = pc.connectionState
        logger.info("consult %s: %s connection %s", self.id, role, state)
        self.last_activity = time.monotonic()
        if state in ("failed", "closed") and self.pcs.get(role) is pc:
            del self.pcs[role]
            if state == "failed":
                self._tasks.spawn(pc.close(), f"{role}-close")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label == "metrics":
            self.metrics_channel = channel

    def _send_metrics(self, message: dict) -> None:
        channel = self.metrics_channel
        if channel is None or channel.readyState != "open":
            return
        if channel.bufferedAmount > METRICS_BUFFER_LIMIT:
            return  # the clinician is behind: skip rather than queue
        channel.send(json.dumps(message, separators=(",", ":")))

    async def end(self, reason: str) -> None:
        """Close both peer connections and stop the media; idempotent."""
        if self.ended:
            return
        self.ended, self.end_reason = True, reason
        logger.info("consult %s: ended (%s)", self.id, reason)
        pcs, self.pcs = list(self.pcs.values()), {}
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
        for broadcast in (self.patient_audio, self.clinician_video, self.clinician_audio):
            broadcast.close()
        await self.relay.stop()
        await self._tasks.cancel_all()


class ConsultRegistry:
    """All live consults, looked up by token digest (constant-time token comparison)."""

    def __init__(
        self,
        masker_factory: Callable[[], Masker],
        limits: ConsultLimits | None = None,
        ice_servers: list[RTCIceServer] | None = None,
    ) -> None:
        self.limits = limits or ConsultLimits()
        self._masker_factory = masker_factory
        self._ice_servers = list(ice_servers or [])
        self._by_digest: dict[bytes, tuple[Consult, str]] = {}
        self.consults: dict[str, Consult] = {}
        self._tasks = TaskSet("registry")
        self._reaper: asyncio.Task | None = None

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = self._tasks.spawn(self._reap_forever(), "reaper")

    def create(self) -> Consult:
        if len(self.consults) >= self.limits.max_consults:
            raise TooManyConsultsError(f"at most {self.limits.max_consults} consults at once")
        consult = Consult(self._masker_factory, self._ice_servers)
        self.consults[consult.id] = consult
        for role, token in consult.tokens.items():
            self._by_digest[_digest(token)] = (consult, role)
        logger.info("consult %s: created (%d live)", consult.id, len(self.consults))
        return consult

    def find(self, token: str) -> tuple[Consult, str] | None:
        """The live consult and role for a token, or None (wrong, ended or expired)."""
        entry = self._by_digest.get(_digest(token))
        if entry is None:
            return None
        consult, role = entry
        if consult.ended or not hmac.compare_digest(consult.tokens[role].encode(), token.encode()):
            return None
        if self._expired(consult, time.monotonic()):
            return None
        return entry

    async def end(self, consult: Consult, reason: str) -> None:
        for token in consult.tokens.values():
            self._by_digest.pop(_digest(token), None)
        self.consults.pop(consult.id, None)
        await consult.end(reason)

    async def close(self) -> None:
        """End every consult and stop the reaper; idempotent."""
        await self._tasks.cancel_all()
        self._reaper = None
        for consult in list(self.consults.values()):
            await self.end(consult, "server stopping")

    def _expired(self, consult: Consult, now: float) -> str:
        if now - consult.created > self.limits.max_duration_s:
            return "maximum duration"
        if consult.connected_roles():
            consult.last_activity = now
        elif now - consult.last_activity > self.limits.idle_timeout_s:
            return "idle timeout"
        return ""

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.limits.reap_interval_s)
            now = time.monotonic()
            for consult in list(self.consults.values()):
                reason = self._expired(consult, now)
                if reason:
                    await self.end(consult, reason)
