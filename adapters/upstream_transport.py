"""An httpcore network backend on asyncio transports, for the upstream connections.

Owns: the bytes between httpcore and the provider's socket when the event loop is asyncio:
connecting (with timeout and socket options), TLS through `loop.start_tls`, reads and writes
with httpcore's per-operation timeouts (one lazily re-armed read timer per connection), and
answering httpcore's `is_readable` question (is an idle keep-alive connection dead?) from what
the transport has already seen, without a syscall.

Does not own: the receive buffer and its flow control (buffered_protocol), HTTP (httpcore and
h11), pooling (httpcore's pool), or running under trio (the pool falls back to httpcore's own
backend there: `backend_for_running_loop`).

Why not httpcore's default anyio backend: profiles of `meshproxy serve` (docs/performance.md)
put about a sixth of the proxy's CPU per request in it: a cancel scope and an exception-mapping
context manager around every read and write, an event-loop round trip per write, and, before
every request, `anyio`'s `extra()` building the whole attribute map of the socket
(`getpeername` included) just to reach the raw socket for a `select()` readability probe. This
backend does the same jobs with one `transport.write` per write and a buffer per read. httpcore
documents the network backend as its extension point (`network_backend=`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore

from .buffered_protocol import BufferedProtocol

__all__ = ["AsyncioBackend", "backend_for_running_loop"]

SocketOption = tuple[int, int, int | bytes] | tuple[int, int, None, int]


class _UpstreamProtocol(BufferedProtocol):
    """Buffers what the socket delivers until httpcore reads it; times reads out."""

    KEEP_OPEN_ON_EOF = False  # HTTP/1.1 has no use for a half-open upstream

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._read_deadline: float | None = None  # of the read waiting now, if any
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    async def wait_readable(self, timeout: float | None) -> None:
        waiter = self.read_waiter()
        if timeout is None:
            await waiter
            return
        # One lazily re-armed timer per connection instead of one per read: a stream waits
        # for each of its events, and the read timeout (minutes) almost never fires. A read
        # only moves the deadline; the timer, when it fires early, re-arms for what is left.
        self._read_deadline = deadline = self.loop.time() + timeout
        if self._read_timer is None or deadline < self._read_timer.when():
            if self._read_timer is not None:
                self._read_timer.cancel()
            self._read_timer = self.loop.call_at(deadline, self._check_read_deadline)
        try:
            await waiter
        finally:
            self._read_deadline = None

    def _check_read_deadline(self) -> None:
        self._read_timer = None
        deadline = self._read_deadline
        if deadline is None:
            return  # no read waiting: the next one arms a timer again
        if self.loop.time() < deadline:
            self._read_timer = self.loop.call_at(deadline, self._check_read_deadline)
            return
        self.fail_reader(_Expired())

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    async def wait_drained(self, timeout: float | None) -> None:
        await _wait(self.drain_waiter(), timeout)


class _Expired(Exception):
    """An operation's timeout passed. Not TimeoutError: that is also the OSError of a
    connection the kernel gave up on (ETIMEDOUT), which is a failure, not a timeout."""


async def _wait(waiter: asyncio.Future[None], timeout: float | None) -> None:
    """Await `waiter`, raising `_Expired` after `timeout` seconds. A timer callback rather
    than `asyncio.wait_for`, which wraps the await in a new task on Python < 3.12."""
    if timeout is None:
        await waiter
        return
    timer = waiter.get_loop().call_later(timeout, _expire, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One upstream connection (plain or TLS) as httpcore sees it."""

    def __init__(self, transport: asyncio.Transport, protocol: _UpstreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        while not protocol.buffer:
            if protocol.eof:
                if protocol.error is not None:
                    raise httpcore.ReadError(_message(protocol.error))
                return b""
            try:
                await protocol.wait_readable(timeout)
            except _Expired as exc:
                raise httpcore.ReadTimeout("timed out reading from upstream") from exc
        return protocol.take(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("upstream connection is closed")
        self._transport.write(buffer)
        protocol = self._protocol
        if protocol.write_paused:
            try:
                await protocol.wait_drained(timeout)
            except _Expired as exc:
                raise httpcore.WriteTimeout("timed out writing to upstream") from exc
            if protocol.error is not None:
                raise httpcore.WriteError(_message(protocol.error)) from protocol.error
            if self._transport.is_closing():
                raise httpcore.WriteError("upstream connection closed")

    async def aclose(self) -> None:
        if self._transport.get_extra_info("ssl_object") is not None:
            # Like httpcore's own backend, do not wait for the server's TLS close_notify
            # (asyncio would, for up to 30 s): HTTP/1.1 framing already says where data ends.
            self._transport.abort()
        else:
            self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = self._protocol.loop
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                ),
                timeout,
            )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(_message(exc)) from exc
        if transport is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("connection closed during the TLS handshake")
        self._protocol.transport = transport
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks before reusing an idle connection: readable means the server
            # closed it or sent something unasked, either way it must not be reused.
            return bool(self._protocol.buffer) or self._protocol.eof
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend for an asyncio event loop (see the module docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local_addr = (local_address, 0) if local_address else None
        transport, protocol = await _connect(
            lambda factory: loop.create_connection(factory, host, port, local_addr=local_addr),
            timeout,
            f"{host}:{port}",
        )
        sock = transport.get_extra_info("socket")
        # asyncio sets TCP_NODELAY on TCP transports already: a request head is not held back.
        for option in socket_options or ():
            if sock is not None:
                sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        transport, protocol = await _connect(
            lambda factory: loop.create_unix_connection(factory, path), timeout, path
        )
        return AsyncioStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(
    start: Callable[[Callable[[], _UpstreamProtocol]], Awaitable[tuple[Any, Any]]],
    timeout: float | None,
    target: str,
) -> tuple[asyncio.Transport, _UpstreamProtocol]:
    """Open a connection with `start(protocol_factory)`, httpcore's exceptions on failure."""
    protocol = _UpstreamProtocol(asyncio.get_running_loop())
    try:
        transport, _ = await asyncio.wait_for(start(lambda: protocol), timeout)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"timed out connecting to {target}") from exc
    except OSError as exc:
        raise httpcore.ConnectError(_message(exc)) from exc
    assert isinstance(transport, asyncio.Transport)
    return transport, protocol


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def backend_for_running_loop() -> httpcore.AsyncNetworkBackend | None:
    """The backend for the pool being created now: ours on asyncio, httpcore's own (None)
    elsewhere (trio under hypercorn)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return AsyncioBackend()
