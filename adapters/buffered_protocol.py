"""A buffering asyncio protocol: the part both socket layers share.

Owns: the receive buffer of one connection with read-side flow control (stop reading the socket
at `HIGH_WATER` unread bytes, resume at `LOW_WATER`, so the kernel's receive window pushes back
on a sender that is faster than its reader), write-side pause and resume, and the futures a
reader or a writer waits on until bytes arrive or the kernel's send buffer drains.

Does not own: timeouts or the exceptions a caller sees (`upstream_transport` maps to httpcore's,
`client_transport` to anyio's), or what a half-close means (`KEEP_OPEN_ON_EOF`).
"""

from __future__ import annotations

import asyncio

__all__ = ["HIGH_WATER", "LOW_WATER", "BufferedProtocol"]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class BufferedProtocol(asyncio.Protocol):
    """Buffers what the socket delivers until the connection's reader takes it."""

    # What `eof_received` answers: True keeps our side open for writing after the peer's
    # half-close (a server may still answer), False closes the transport.
    KEEP_OPEN_ON_EOF = False

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False  # no more bytes will arrive: EOF, or the connection is gone
        self.error: BaseException | None = None  # why the connection was lost, if not cleanly
        self.read_paused = False
        self.write_paused = False
        # The transport reading was paused on. During `start_tls` bytes can arrive through the
        # TLS layer before `transport` is switched to it; resuming must reach the same one.
        self._paused_transport: asyncio.Transport | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.read_paused and self.transport:
            self.read_paused = True
            self._paused_transport = self.transport
            self.transport.pause_reading()
        self.wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self.wake_reader()
        return self.KEEP_OPEN_ON_EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self.wake_reader()
        self.wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.wake_writer()

    # -- what a stream uses --------------------------------------------------------------------

    def take(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` buffered bytes (the caller checked there are some)."""
        data = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        if self.read_paused and len(self.buffer) <= LOW_WATER:
            self.read_paused = False
            paused, self._paused_transport = self._paused_transport, None
            if paused is not None:
                paused.resume_reading()
        return data

    def read_waiter(self) -> asyncio.Future[None]:
        """A future done when bytes arrive or the connection ends."""
        self._read_waiter = self.loop.create_future()
        return self._read_waiter

    def drain_waiter(self) -> asyncio.Future[None]:
        """A future done when writing may go on, or the connection is lost."""
        self._drain_waiter = self.loop.create_future()
        return self._drain_waiter

    def fail_reader(self, exc: BaseException) -> None:
        """Raise `exc` in the reader waiting now, if any (its timeout passed)."""
        waiter, self._read_waiter = self._read_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def wake_reader(self) -> None:
        waiter, self._read_waiter = self._read_waiter, None
        _wake(waiter)

    def wake_writer(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        _wake(waiter)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
