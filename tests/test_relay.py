"""Relay media stages: latest-frame holding, mask-once fan-out, pts, fail-closed, RTP marker release."""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver
from aiortc.rtp import RtpPacket
from av import VideoFrame

from dmask_live.relay import (
    NEUTRAL_RGB,
    FrameBroadcast,
    LatestFrameSlot,
    MaskingRelay,
    NeutralMasker,
    flat_frame,
)
from dmask_live.rtp_release import MarkerReleaseJitterBuffer, enable_marker_release
from dmask_live.types import AvatarState, MaskedFrame, OcularMetrics

TIME_BASE = fractions.Fraction(1, 90000)
AVATAR_RGB = (10, 200, 30)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def patient_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


class ListTrack(MediaStreamTrack):
    """A source of given frames, optionally paced; ends with MediaStreamError."""

    kind = "video"

    def __init__(self, frames: list[VideoFrame], interval_s: float = 0.0, hold: bool = False) -> None:
        super().__init__()
        self._frames = list(frames)
        self._interval = interval_s
        self._hold = hold

    async def recv(self) -> VideoFrame:
        if self._interval:
            await asyncio.sleep(self._interval)
        if not self._frames:
            if self._hold:  # a live source that has nothing new yet
                await asyncio.Event().wait()
            raise MediaStreamError
        return self._frames.pop(0)


def video_frames(count: int, start_pts: int = 1000, step: int = 3000) -> list[VideoFrame]:
    frames = []
    for i in range(count):
        frame = VideoFrame.from_ndarray(patient_image(i), format="rgb24")
        frame.pts, frame.time_base = start_pts + i * step, TIME_BASE
        frames.append(frame)
    return frames


class AvatarMasker(NeutralMasker):
    """Counts calls and returns a tracked flat 'avatar' rendering."""

    async def process(self, image: np.ndarray, timestamp: float) -> MaskedFrame:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        height, width = image.shape[:2]
        state = AvatarState(tracked=True, image_size=(width, height), timestamp=timestamp)
        return MaskedFrame(flat_frame((width, height), AVATAR_RGB), state, OcularMetrics(timestamp, True))


class FailingMasker(NeutralMasker):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    async def process(self, image: np.ndarray, timestamp: float) -> MaskedFrame:
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError("boom")
        state = AvatarState(tracked=self.mode != "untracked", image_size=(image.shape[1], image.shape[0]))
        image = image if self.mode == "input" else image.copy()
        return MaskedFrame(image, state, OcularMetrics(timestamp, True))


def rgb(frame: VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


# --------------------------------------------------------------------------- latest-frame holder
def test_latest_slot_newest_wins_and_counts_drops():
    async def body():
        slot: LatestFrameSlot[int] = LatestFrameSlot()
        for i in range(5):
            slot.put(i)
        assert await slot.get() == 4
        assert slot.dropped == 4
        waiter = asyncio.ensure_future(slot.get())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # empty: get waits instead of repeating an old item
        slot.put(7)
        assert await waiter == 7
        slot.close()
        assert await slot.get() is None
        slot.put(8)  # ignored once closed
        assert await slot.get() is None

    run(body())


def test_broadcast_reader_sees_newest_and_end():
    async def body():
        broadcast = FrameBroadcast()
        broadcast.publish("a")
        broadcast.publish("b")
        assert await broadcast.next_after(0) == (2, "b")
        broadcast.close()
        assert await broadcast.next_after(2) is None

    run(body())


# --------------------------------------------------------------------------- masking relay
def test_mask_once_fan_out_every_frame_with_pts():
    async def body():
        masker = AvatarMasker()
        relay = MaskingRelay(lambda: masker, name="test")
        clinician, self_view = relay.subscribe(), relay.subscribe()
        frames = video_frames(8)
        expected_pts = [f.pts for f in frames]
        relay.attach(ListTrack(frames, interval_s=0.03))
        got = {"clinician": [], "self": []}

        async def consume(track, key):
            for _ in range(8):
                got[key].append(await track.recv())

        await asyncio.gather(consume(clinician, "clinician"), consume(self_view, "self"))
        await relay.stop()
        await relay.stop()  # idempotent
        assert masker.calls == 8  # once per frame, not once per consumer
        for key in got:
            assert [f.pts for f in got[key]] == expected_pts
            assert all(f.time_base == TIME_BASE for f in got[key])
            assert all(np.abs(rgb(f).astype(int) - AVATAR_RGB).max() <= 3 for f in got[key])
        assert got["clinician"][3] is got["self"][3]  # the same masked frame object, fanned out

    run(body())


def test_encoded_fan_out_one_encode_shared_keyframe_on_request():
    from aiortc.codecs import get_decoder
    from aiortc.jitterbuffer import JitterFrame

    async def body():
        relay = MaskingRelay(AvatarMasker, name="test")
        first, second = relay.subscribe_encoded(), relay.subscribe_encoded()
        frames = video_frames(6)
        relay.attach(ListTrack(frames, interval_s=0.03, hold=True))
        got = []
        for index in range(6):
            if index == 4:
                relay.encoder.request_keyframe()  # e.g. a viewer's PLI
            packet = await first.recv()
            assert await second.recv() is packet  # one encode, shared
            got.append(packet)
        await relay.stop()
        assert [p.pts for p in got] == [f.pts for f in frames]
        keyframes = [p for p in got if bytes(p)[0] & 1 == 0]
        assert got[0] in keyframes and got[4] in keyframes and len(keyframes) == 2
        decoder = get_decoder(VP8)
        decoded = [decoder.decode(JitterFrame(bytes(p), p.pts))[0] for p in got]
        for frame in decoded:
            assert np.abs(rgb(frame).astype(int) - AVATAR_RGB).mean() < 6  # the avatar, never the input

    run(body())


class ChangingAvatarMasker(NeutralMasker):
    """A tracked 'avatar' whose colour changes every frame, so every delta frame carries change."""

    async def process(self, image: np.ndarray, timestamp: float) -> MaskedFrame:
        self.calls += 1
        height, width = image.shape[:2]
        state = AvatarState(tracked=True, image_size=(width, height), timestamp=timestamp)
        colour = (10, 200, 30 + 10 * (self.calls % 8))
        return MaskedFrame(flat_frame((width, height), colour), state, OcularMetrics(timestamp, True))


async def wait_published(broadcast: FrameBroadcast, count: int) -> None:
    target = broadcast.seq + count
    while broadcast.seq < target:
        await asyncio.sleep(0.005)


def decodes_to_avatar(packets) -> bool:
    """A fresh decoder (a new viewer) turns the packets into green avatar frames."""
    from aiortc.codecs import get_decoder
    from aiortc.jitterbuffer import JitterFrame

    decoder = get_decoder(VP8)
    for packet in packets:
        frames = decoder.decode(JitterFrame(bytes(packet), packet.pts))
        if len(frames) != 1 or abs(rgb(frames[0])[..., 1].astype(int).mean() - 200) > 8:
            return False
    return True


def test_late_viewer_of_shared_encoder_starts_at_a_keyframe():
    """The join key frame went by before the viewer's sender read (DTLS set-up under load):
    the viewer must still start at a key frame, never a delta against a picture it never had."""

    async def body():
        relay = MaskingRelay(ChangingAvatarMasker, name="test")
        early = relay.subscribe_encoded()
        relay.attach(ListTrack(video_frames(40), interval_s=0.02, hold=True))
        early_packets = [await early.recv() for _ in range(3)]
        late = relay.subscribe_encoded()
        await wait_published(relay.encoded, 3)  # the join key frame is no longer the newest packet
        late_packets = [await late.recv() for _ in range(4)]
        early_packets += [await early.recv() for _ in range(2)]
        await relay.stop()
        assert late_packets[0].is_keyframe and bytes(late_packets[0])[0] & 1 == 0
        assert late.withheld >= 1  # deltas were held back until the key frame
        assert not any(p.is_keyframe for p in late_packets[1:])  # then deltas flow again
        assert decodes_to_avatar(late_packets)
        assert early_packets[0].is_keyframe and decodes_to_avatar(early_packets)

    run(body())


def test_viewer_that_skips_a_packet_resumes_at_a_keyframe():
    async def body():
        relay = MaskingRelay(ChangingAvatarMasker, name="test")
        viewer = relay.subscribe_encoded()
        relay.attach(ListTrack(video_frames(40), interval_s=0.02, hold=True))
        before = [await viewer.recv() for _ in range(3)]
        await wait_published(relay.encoded, 3)  # the viewer fell behind: packets went by unseen
        after = [await viewer.recv() for _ in range(3)]
        await relay.stop()
        assert before[0].is_keyframe and not before[1].is_keyframe
        assert viewer.skipped >= 2
        assert after[0].is_keyframe  # a delta after a gap would decode against the wrong picture
        assert decodes_to_avatar(after)

    run(body())


def test_viewer_waiting_for_a_keyframe_after_the_patient_left_gets_the_neutral_one():
    """No new frames come once the patient has gone; a viewer that joins (or skipped a packet)
    then must still get a key frame: the neutral frame, sent again as one."""

    async def body():
        relay = MaskingRelay(ChangingAvatarMasker, name="test")
        first = relay.subscribe_encoded()
        relay.attach(ListTrack(video_frames(3), interval_s=0.02))
        while not relay._showing_neutral:
            await asyncio.sleep(0.01)
        late = relay.subscribe_encoded()
        packet = await asyncio.wait_for(late.recv(), 5)
        assert packet.is_keyframe
        assert first.received == 0  # the first viewer has not read yet: it also starts at a key frame
        assert (await asyncio.wait_for(first.recv(), 5)).is_keyframe
        await relay.stop()
        from aiortc.codecs import get_decoder
        from aiortc.jitterbuffer import JitterFrame

        shown = get_decoder(VP8).decode(JitterFrame(bytes(packet), packet.pts))[0]
        assert np.abs(rgb(shown).astype(int) - NEUTRAL_RGB).max() <= 3

    run(body())


def test_an_encoder_failure_skips_one_frame_not_the_stream():
    async def body():
        relay = MaskingRelay(ChangingAvatarMasker, name="test")
        viewer = relay.subscribe_encoded()
        encode, calls = relay.encoder.encode, []

        def flaky_encode(frame):
            calls.append(frame.pts)
            if len(calls) == 2:
                raise RuntimeError("synthetic encoder failure")
            return encode(frame)

        relay.encoder.encode = flaky_encode
        relay.attach(ListTrack(video_frames(8), interval_s=0.02, hold=True))
        packets = [await asyncio.wait_for(viewer.recv(), 5) for _ in range(4)]
        await relay.stop()
        assert relay.stats.errors == 1
        assert calls[1] not in [p.pts for p in packets]  # that one frame is missing, the rest flow
        assert packets[1].is_keyframe  # the next packet restarts the chain
        assert decodes_to_avatar(packets)

    run(body())


def test_reader_drains_while_masker_is_slow():
    async def body():
        masker = AvatarMasker(delay_s=0.05)
        relay = MaskingRelay(lambda: masker, name="test")
        out = relay.subscribe()
        relay.attach(ListTrack(video_frames(40), interval_s=0.005))
        last = None
        while relay.stats.frames_in < 40:
            last = await asyncio.wait_for(out.recv(), 2)
        await asyncio.sleep(0.15)
        await relay.stop()
        assert relay.stats.frames_in == 40  # the source was drained at its own pace
        assert relay.dropped > 20  # stale frames dropped, not queued
        assert masker.calls + relay.dropped <= 40
        assert last is not None

    run(body())


def test_overload_waits_for_fresh_frames_and_accounts_every_frame():
    async def body():
        masker = AvatarMasker(delay_s=0.045)  # slower than the 20 ms frame interval below
        relay = MaskingRelay(lambda: masker, name="test")
        out = relay.subscribe()
        relay.attach(ListTrack(video_frames(80), interval_s=0.02, hold=True))
        while relay.stats.frames_in < 80:
            await asyncio.wait_for(out.recv(), 2)
        await relay.stop()
        stats = relay.stats
        assert stats.waited_for_fresh > 0  # overloaded: some picked-up frames swapped for fresher ones
        # every input frame is either masked, dropped (counted), or the one in flight / waiting
        assert stats.frames_out + relay.dropped <= stats.frames_in <= stats.frames_out + relay.dropped + 2

    run(body())


def test_overload_frame_a_whole_interval_old_waits_for_the_one_being_decoded():
    """Overloaded, the masker frees up as a frame turns one interval old: its successor is due
    (being decoded), so that one is masked instead; a stalled source is not waited for."""
    import time

    async def body():
        relay = MaskingRelay(AvatarMasker, name="test")
        relay.stats.frames_out, relay.stats.masker_ms = 20, 70.0  # masking takes 2 intervals
        old, new = video_frames(2)
        arrived = time.monotonic() - 1.05 * relay._interval_s
        asyncio.get_running_loop().call_later(0.008, relay._slot.put, (new, time.monotonic()))
        frame, _ = await relay._fresher(old, arrived)
        assert frame is new and relay.stats.waited_for_fresh == 1 and relay.dropped == 1
        stalled = time.monotonic() - 1.6 * relay._interval_s
        frame, _ = await relay._fresher(old, stalled)
        assert frame is old  # no successor due any more: mask what there is
        await relay.stop()

    run(body())


@pytest.mark.parametrize("mode", ["raise", "input", "untracked"])
def test_fail_closed_outputs_neutral_not_input(mode):
    async def body():
        masker = FailingMasker(mode)
        relay = MaskingRelay(lambda: masker, name="test")
        out = relay.subscribe()
        frame = video_frames(1)[0]
        source_pixels = rgb(frame)
        relay.attach(ListTrack([frame], hold=True))
        masked = await out.recv()
        await relay.stop()
        image = rgb(masked)
        assert masked.pts == frame.pts
        assert np.abs(image.astype(int) - NEUTRAL_RGB).max() <= 3  # the flat neutral frame
        assert np.abs(image.astype(int) - source_pixels.astype(int)).mean() > 40
        if mode == "raise":
            assert relay.stats.errors == 1
        if mode == "input":  # a masker handing back its input is treated as a failure
            assert relay.stats.errors == 1

    run(body())


def test_source_end_shows_neutral_frame():
    async def body():
        relay = MaskingRelay(AvatarMasker, name="test")
        out = relay.subscribe()
        relay.attach(ListTrack(video_frames(2), interval_s=0.02))
        frames = [await out.recv() for _ in range(3)]
        await relay.stop()
        assert np.abs(rgb(frames[1]).astype(int) - AVATAR_RGB).max() <= 3
        assert np.abs(rgb(frames[2]).astype(int) - NEUTRAL_RGB).max() <= 3  # patient gone
        assert frames[2].pts > frames[1].pts

    run(body())


def test_neutral_frame_is_resent_while_the_patient_is_gone():
    """Viewers' streams stay live after the patient left: the neutral frame comes again, pts in step
    with the time that passed (a receiver's jitter buffer schedules by RTP time)."""

    async def body():
        relay = MaskingRelay(AvatarMasker, name="test", idle_refresh_s=0.1)
        out = relay.subscribe()
        relay.attach(ListTrack(video_frames(2), interval_s=0.02))
        frames = [await asyncio.wait_for(out.recv(), 2) for _ in range(6)]
        await relay.stop()
        neutral = frames[2:]
        for frame in neutral:
            assert np.abs(rgb(frame).astype(int) - NEUTRAL_RGB).max() <= 3
        steps = np.diff([f.pts for f in neutral]) * float(neutral[0].time_base)
        assert (steps > 0.05).all() and (steps < 0.5).all()  # ~0.1 s apart in pts as in time

    run(body())


def test_metrics_callback_throttled():
    async def body():
        messages = []
        relay = MaskingRelay(AvatarMasker, on_metrics=messages.append, metrics_hz=1000.0, name="test")
        out = relay.subscribe()
        relay.attach(ListTrack(video_frames(3), interval_s=0.01))
        for _ in range(3):
            await out.recv()
        await relay.stop()
        assert len(messages) == 3
        assert messages[-1]["metrics"]["tracked"] is True
        assert {"fps", "dropped", "frames_in"} <= set(messages[-1])

    run(body())


# --------------------------------------------------------------------------- RTP marker release
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=100)


def vp8_packets(count: int) -> list[list[RtpPacket]]:
    """Real VP8 RTP packets (aiortc's encoder and packetizer), one list per frame, marker on the last."""
    encoder = get_encoder(VP8)
    sequence = 1000
    frames = []
    for i in range(count):
        image = np.random.default_rng(i).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = i * 3000, TIME_BASE
        payloads, timestamp = encoder.encode(frame)
        packets = []
        for j, payload in enumerate(payloads):
            packets.append(
                RtpPacket(
                    payload_type=VP8.payloadType, sequence_number=sequence, timestamp=timestamp,
                    marker=int(j == len(payloads) - 1), ssrc=1234, payload=payload,
                )
            )
            sequence += 1
        frames.append(packets)
    return frames


def test_marker_release_jitter_buffer_against_stock():
    frames = vp8_packets(3)
    assert len(frames[0]) > 1  # a keyframe of random pixels spans several packets
    stock, patched = JitterBuffer(capacity=512, is_video=True), MarkerReleaseJitterBuffer()
    for packets in frames:
        for packet in packets:
            packet._data = packet.payload
    for index, packets in enumerate(frames):
        for packet in packets:
            _, stock_frame = stock.add(packet)
            _, patched_frame = patched.add(packet)
            if packet.marker:
                assert patched_frame is not None and patched_frame.timestamp == packet.timestamp
                assert patched_frame.data == b"".join(p.payload for p in packets)
            else:
                assert patched_frame is None
            # stock aiortc releases a frame only at the next frame's first packet
            is_next_frame_start = packet is packets[0] and index > 0
            assert (stock_frame is not None) == is_next_frame_start
    assert patched.marker_releases == 3


def test_marker_release_missing_packet_waits():
    packets = vp8_packets(1)[0]
    buffer = MarkerReleaseJitterBuffer()
    for packet in packets:
        packet._data = packet.payload
    for packet in packets[:1] + packets[2:]:  # the second packet is lost
        _, frame = buffer.add(packet)
        assert frame is None


class StubTransport:
    state = "connected"

    def _register_rtp_receiver(self, receiver, parameters):
        pass

    def _unregister_rtp_receiver(self, receiver):
        pass

    async def _send_rtp(self, data):
        pass


@pytest.mark.parametrize("patched", [True, False])
def test_receiver_decodes_at_marker_packet(patched):
    """Through aiortc's own RTCRtpReceiver: with the patch a single frame is decoded once its
    marker packet arrives; stock aiortc holds it until a next frame starts."""

    async def body():
        receiver = RTCRtpReceiver("video", StubTransport())
        receiver._track = RemoteStreamTrack(kind="video")
        if patched:
            assert enable_marker_release(receiver) is True
            assert enable_marker_release(receiver) is True  # idempotent
        await receiver.receive(RTCRtpReceiveParameters(codecs=[VP8]))
        try:
            for packet in vp8_packets(1)[0]:
                await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
            if patched:
                frame = await asyncio.wait_for(receiver.track.recv(), 5)
                assert (frame.width, frame.height) == (640, 480)
            else:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(receiver.track.recv(), 0.5)
        finally:
            await receiver.stop()

    run(body())


def test_marker_release_leaves_audio_alone():
    assert enable_marker_release(RTCRtpReceiver("audio", StubTransport())) is False
