"""Release a complete video frame at its RTP marker-bit packet instead of one frame later.

aiortc's ``JitterBuffer`` only knows a frame is complete when the *next* frame's first
packet arrives (a timestamp change), so every received video frame waits one frame
interval (~33 ms at 30 fps) before it is decoded. The RTP marker bit marks the last packet
of a video frame (RFC 7741 for VP8, RFC 6184 for H.264), so when the marker packet arrives
and every packet from the buffer's origin up to it is present with the same timestamp,
the frame is complete and can go to the decoder at once.

``MarkerReleaseJitterBuffer`` subclasses aiortc's buffer and changes nothing else: loss,
reordering, NACK/PLI handling and the timestamp-change release all stay aiortc's own code.
``enable_marker_release(receiver)`` swaps it into one ``RTCRtpReceiver`` (video only); it
is called explicitly by the server for each peer connection, never at import time.
"""

from __future__ import annotations

import logging

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

logger = logging.getLogger(__name__)

# RTCRtpReceiver keeps its buffer in a private (name-mangled) attribute; checked on use so an
# aiortc upgrade that renames it fails loudly in the unit test instead of silently.
_BUFFER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


class MarkerReleaseJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer plus release of a complete frame at its marker packet."""

    def __init__(self, capacity: int = 512, prefetch: int = 0, is_video: bool = True) -> None:
        super().__init__(capacity=capacity, prefetch=prefetch, is_video=is_video)
        self.marker_releases = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        if frame is None and packet.marker and self._prefetch == 0:
            frame = self._release_marked_frame(packet)
        return pli_flag, frame

    def _release_marked_frame(self, marker_packet: RtpPacket) -> JitterFrame | None:
        """The frame ending at ``marker_packet`` if all its packets from the origin are present."""
        if self._origin is None:
            return None
        count = uint16_add(marker_packet.sequence_number, -self._origin) + 1
        if count > self._capacity:
            return None
        packets: list[RtpPacket] = []
        for offset in range(count):
            packet = self._packets[(self._origin + offset) % self._capacity]
            if packet is None or packet.timestamp != marker_packet.timestamp:
                return None  # a gap or an older unfinished frame: aiortc's own path handles it
            packets.append(packet)
        self.remove(count)
        self.marker_releases += 1
        return JitterFrame(data=b"".join(p._data for p in packets), timestamp=marker_packet.timestamp)


def enable_marker_release(receiver: RTCRtpReceiver) -> bool:
    """Swap the marker-release buffer into a video receiver before media flows.

    Returns True when installed, False for audio receivers or a receiver that already got
    packets (both left unchanged). Raises
    RuntimeError if aiortc's receiver no longer has the buffer attribute this relies on.
    """
    current = getattr(receiver, _BUFFER_ATTRIBUTE, None)
    if not isinstance(current, JitterBuffer):
        raise RuntimeError(
            f"aiortc RTCRtpReceiver has no {_BUFFER_ATTRIBUTE!r} JitterBuffer; rtp_release needs updating"
        )
    if isinstance(current, MarkerReleaseJitterBuffer):
        return True
    if not current._is_video:
        return False
    if current._origin is not None:
        logger.warning("marker release not installed: packets already arrived on this receiver")
        return False
    setattr(receiver, _BUFFER_ATTRIBUTE, MarkerReleaseJitterBuffer(capacity=current.capacity))
    return True
