"""The masking pipeline in a process of its own (``ProcessMasker``), for the teleconsult relay.

Why: the pipeline's Python work (pre/post-processing, the Numba tracker, moderngl calls) holds
the GIL for most of each frame; measured in one process, a thread waiting for the GIL while a
pipeline runs woke 7 ms late at p95. In the relay that thread is the event loop (RTP, DTLS,
every consult's media), and with two or three consults the pipelines and the loop take turns on
one GIL instead of using both cores. In its own process a pipeline has its own interpreter.

Frames cross in shared memory that has no name: ``memfd_create`` buffers (RAM only, never a
file in any directory) handed to the child as file descriptors, so no raw frame is ever in a
file system, not even /dev/shm, and the memory goes when both processes drop it. Only the
small results (avatar state, ocular metrics, timings) are pickled. Linux only
(``available()``); elsewhere the server uses the thread-based ``PipelineWorker``.

Fail-closed: if the child dies or answers badly, ``process`` raises and the relay sends the
neutral frame; the input is never returned.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import multiprocessing as mp
import os
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle

import numpy as np

from dmask_live.types import MaskedFrame

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0


def available() -> bool:
    """True where frames can be shared without a name (Linux ``memfd_create``)."""
    return hasattr(os, "memfd_create")


class _FrameBuffers:
    """An input and an output (H, W, 3) uint8 buffer in anonymous shared memory (one side's maps)."""

    def __init__(self, shape: tuple[int, int, int], fds: tuple[int, int] | None = None) -> None:
        self.shape = shape
        size = shape[0] * shape[1] * shape[2]
        if fds is None:
            fds = tuple(os.memfd_create(f"dmask-{name}", os.MFD_CLOEXEC) for name in ("in", "out"))
            for fd in fds:
                os.ftruncate(fd, size)
        self.fds = fds
        self._maps = [mmap.mmap(fd, size) for fd in fds]
        self.input = np.frombuffer(self._maps[0], np.uint8).reshape(shape)
        self.output = np.frombuffer(self._maps[1], np.uint8).reshape(shape)

    def close(self) -> None:
        self.input = self.output = None
        for buffer in self._maps:
            try:
                buffer.close()
            except BufferError:  # a view still exported: freed with it
                pass
        for fd in self.fds:
            os.close(fd)


def _child_main(conn: Connection, pipeline_kwargs: dict) -> None:
    """The masking process: build the pipeline, then mask frames from the shared buffers."""
    from dmask_live.pipeline import MaskPipeline

    buffers: _FrameBuffers | None = None
    try:
        pipeline = MaskPipeline(**pipeline_kwargs)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails closed
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message[0] == "close":
                return
            if message[0] == "buffers":
                if buffers is not None:
                    buffers.close()
                fds = (recv_handle(conn), recv_handle(conn))
                buffers = _FrameBuffers(message[1], fds)
                continue
            _, timestamp = message
            masked = pipeline.process(buffers.input, timestamp)
            image = masked.image
            if image.shape == buffers.shape:
                buffers.output[...] = image
                conn.send(("ok", (masked.state, masked.metrics, masked.timings_ms)))
            else:  # an output size other than the input's: rare, so pickled
                conn.send(("image", (image, masked.state, masked.metrics, masked.timings_ms)))
    finally:
        if buffers is not None:
            buffers.close()
        pipeline.close()


class ProcessMasker:
    """A ``MaskPipeline`` in a child process; the relay's ``Masker`` (``process``/``close``).

    One frame in flight at a time (the relay masks serially); the reply is awaited on the event
    loop's own selector (no helper thread). ``pipeline_kwargs`` go to ``MaskPipeline``.
    """

    def __init__(self, **pipeline_kwargs) -> None:
        if not available():
            raise RuntimeError("ProcessMasker needs os.memfd_create (Linux); use PipelineWorker")
        context = mp.get_context("spawn")  # a fresh interpreter: no inherited GL or thread state
        self._conn, child_conn = context.Pipe(duplex=True)
        self._process = context.Process(
            target=_child_main, args=(child_conn, pipeline_kwargs), name="dmask-mask", daemon=True
        )
        self._process.start()
        child_conn.close()
        self._buffers: _FrameBuffers | None = None
        self._lock = asyncio.Lock()
        self._ready = False
        self._closed = False
        self._unread_replies = 0

    async def start(self) -> None:
        """Wait until the child has built its pipeline; raises its construction error."""
        if self._ready:
            return
        kind, payload = await asyncio.wait_for(self._reply(), _START_TIMEOUT_S)
        if kind != "ready":
            raise RuntimeError(f"masking process failed to start: {payload}")
        self._ready = True

    async def process(self, image: np.ndarray, timestamp: float) -> MaskedFrame:
        if self._closed:
            raise RuntimeError("ProcessMasker used after close()")
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError("image must be (H, W, 3) uint8")
        async with self._lock:
            await self.start()
            while self._unread_replies:  # a call cancelled mid-frame: its answer comes first
                await self._reply()
                self._unread_replies -= 1
            try:
                buffers = self._buffers_for(image.shape)
                buffers.input[...] = image
                self._conn.send(("mask", float(timestamp)))
            except OSError:  # a broken pipe: the child is gone
                raise RuntimeError("masking process exited") from None
            try:
                kind, payload = await self._reply()
            except asyncio.CancelledError:
                self._unread_replies += 1  # the child still answers; that answer is not this frame's
                raise
            if kind == "ok":
                state, metrics, timings = payload
                return MaskedFrame(buffers.output.copy(), state, metrics, timings)
            if kind == "image":
                return MaskedFrame(*payload)
            raise RuntimeError(f"masking process answered {kind!r}")

    async def close(self) -> None:
        """Stop the child and free the shared buffers; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.send(("close",))
        except (OSError, ValueError):
            pass
        await asyncio.get_running_loop().run_in_executor(None, self._process.join, 5.0)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()
        if self._buffers is not None:
            self._buffers.close()
            self._buffers = None

    def _buffers_for(self, shape: tuple[int, ...]) -> _FrameBuffers:
        if self._buffers is None or self._buffers.shape != shape:
            if self._buffers is not None:
                self._buffers.close()
            self._buffers = _FrameBuffers(tuple(shape))
            self._conn.send(("buffers", tuple(shape)))
            for fd in self._buffers.fds:
                send_handle(self._conn, fd, self._process.pid)
        return self._buffers

    async def _reply(self) -> tuple[str, object]:
        """The child's next message, read when the pipe is readable (EOF: the child died)."""
        loop = asyncio.get_running_loop()
        fd = self._conn.fileno()
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)
        try:
            while not self._conn.poll():
                readable.clear()
                await readable.wait()
            return self._conn.recv()
        except EOFError:
            raise RuntimeError("masking process exited") from None
        finally:
            loop.remove_reader(fd)
