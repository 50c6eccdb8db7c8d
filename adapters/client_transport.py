"""The built-in server's client connections on asyncio transports.

Owns: accepting connections on the sockets of an anyio listener when the event loop is asyncio,
and `ClientStream`, the byte stream a connection is served over: reads from the buffer of a
`buffered_protocol.BufferedProtocol`, writes straight to the transport (waiting only when the
kernel pushes back), half-close, close (with a bounded flush). It raises anyio's stream exceptions
(`EndOfStream`, `BrokenResourceError`, `ClosedResourceError`), so the server's code is the same
over it and over anyio's own socket streams (its fallback when the loop is not asyncio).

Does not own: HTTP (server.py with h11), timeouts (the server's cancel scopes), or which
connections to accept (the server's limits).

Why not anyio's socket stream: profiles of a streamed response (docs/performance.md) put about
two fifths of the built-in server's CPU in it: every `send` is a checkpoint (a walk up the cancel
scopes, a shielded scope, and a trip through the event loop), and every `receive` that waits
re-registers the socket with epoll twice. A stream of 50 events paid that 50 times; uvicorn,
which writes to its transport directly, streamed the same responses for about two thirds of the
CPU. Cancellation still works: every wait here is on an asyncio future, which anyio's cancel
scopes cancel like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSListener

from .buffered_protocol import BufferedProtocol

__all__ = ["ClientStream", "serve_accepted"]

# After `aclose`, how long bytes still buffered for a slow client may take to leave before the
# connection is aborted: a response's tail is not cut at once, and a client that never reads
# does not hold a socket forever.
_FLUSH_TIMEOUT = 5.0


class _ClientProtocol(BufferedProtocol):
    """Buffers what the client sends until the server reads it."""

    KEEP_OPEN_ON_EOF = True  # a response may still be written after the client's half-close


class ClientStream:
    """One accepted client connection: the part of `anyio.abc.SocketStream` the server uses."""

    def __init__(self, transport: asyncio.Transport, protocol: _ClientProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        protocol = self._protocol
        while not protocol.buffer:
            if self._closed:
                raise anyio.ClosedResourceError
            if protocol.eof:
                if protocol.error is not None:
                    raise anyio.BrokenResourceError from protocol.error
                raise anyio.EndOfStream
            await protocol.read_waiter()
        return protocol.take(max_bytes)

    async def send(self, item: bytes) -> None:
        self._check_writable()
        self._transport.write(item)
        if self._protocol.write_paused:
            await self._protocol.drain_waiter()
            self._check_writable()

    async def send_eof(self) -> None:
        if self._transport.can_write_eof() and not self._transport.is_closing():
            with contextlib.suppress(OSError):
                self._transport.write_eof()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        transport.close()  # sends what is buffered first, then closes
        if transport.get_write_buffer_size():
            self._protocol.loop.call_later(_FLUSH_TIMEOUT, transport.abort)
        # A reader or writer waiting on this connection learns that this side closed it.
        self._protocol.wake_reader()
        self._protocol.wake_writer()

    def _check_writable(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._protocol.error is not None or self._transport.is_closing():
            raise anyio.BrokenResourceError from self._protocol.error


Handler = Callable[[Any], Awaitable[None]]

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


async def serve_accepted(
    listener: anyio.abc.Listener[Any], handler: Handler, task_group: anyio.abc.TaskGroup
) -> bool:
    """Accept on `listener`'s sockets and serve each connection as a `ClientStream` in
    `task_group`. Returns False at once when it cannot (the loop is not asyncio, or the
    listener has no raw sockets): the caller then uses `listener.serve`. Otherwise runs until
    cancelled."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    sockets = _raw_sockets(listener)
    if not sockets:
        return False
    async with anyio.create_task_group() as acceptors:
        for sock in sockets:
            acceptors.start_soon(_accept_loop, loop, sock, handler, task_group)
    return True


async def _accept_loop(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    handler: Handler,
    task_group: anyio.abc.TaskGroup,
) -> None:
    while True:
        try:
            conn, _ = await loop.sock_accept(sock)
        except (ConnectionAbortedError, ConnectionResetError):
            continue  # the client gave up before it was accepted
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                # Out of file descriptors or buffers: back off, as anyio's listener does,
                # instead of spinning on a socket that stays readable.
                await anyio.sleep(0.1)
                continue
            raise
        try:
            stream = await _client_stream(loop, conn)
        except OSError:
            conn.close()  # gone between accept and setup: nothing to serve
            continue
        task_group.start_soon(handler, stream)


async def _client_stream(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> ClientStream:
    if conn.family in (socket.AF_INET, socket.AF_INET6):
        # asyncio sets this only on sockets whose proto says TCP, and an accepted socket
        # inherits the listener's 0. Without it, Nagle holds a response's last small write
        # until the client's delayed ACK: 40 ms per response.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport, protocol = await loop.connect_accepted_socket(lambda: _ClientProtocol(loop), conn)
    assert isinstance(transport, asyncio.Transport)
    assert isinstance(protocol, _ClientProtocol)
    return ClientStream(transport, protocol)


def _raw_sockets(listener: anyio.abc.Listener[Any]) -> list[socket.socket]:
    """The listening sockets, when accepting on them directly serves the same bytes the
    listener would: plain TCP only (a TLS listener passes `raw_socket` through too)."""
    listeners = getattr(listener, "listeners", [listener])
    sockets = []
    for one in listeners:
        if isinstance(one, TLSListener):
            return []
        raw = one.extra(anyio.abc.SocketAttribute.raw_socket, None)
        if not isinstance(raw, socket.socket):
            return []
        sockets.append(raw)
    return sockets
