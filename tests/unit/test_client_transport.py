"""The built-in server's client connections on asyncio transports, against real sockets on
127.0.0.1.

Each test runs its own event loop under `anyio.run` (asyncio backend) with a hard deadline
(`run`), accepts with `serve_accepted` on an anyio listener, and drives the accepted
`ClientStream` from the test while an asyncio stream plays the client. Tests synchronise on what
the transports report; where they must wait for an event-loop callback they poll with a deadline
(`wait_until`).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.abc
import pytest

from meshproxy.adapters import client_transport
from meshproxy.adapters.buffered_protocol import HIGH_WATER, LOW_WATER
from meshproxy.adapters.client_transport import (
    ClientStream,
    serve_accepted,
)
from meshproxy.adapters.server import Server
from meshproxy_core.auth import mint_token
from meshproxy_core.config import ProviderSettings, ProxyConfig
from meshproxy_core.exchange import Proxy

T = TypeVar("T")
Handler = Callable[[ClientStream], Awaitable[None]]

TEST_DEADLINE = 4.0  # seconds, per test: a hang fails the test instead of the suite
STEP = 2.0  # seconds, for one awaited step inside a test
SOCKET_READ = 256 * 1024  # what asyncio's selector transport asks recv() for at most
LARGE = 8 * 1024 * 1024  # far more than the kernel buffers on both ends hold


def run(body: Callable[[], Awaitable[None]]) -> None:
    """Run one test body on a fresh asyncio loop under anyio, failing it after TEST_DEADLINE."""

    async def main() -> None:
        with anyio.fail_after(TEST_DEADLINE):
            await body()

    anyio.run(main, backend="asyncio")


async def wait_until(predicate: Callable[[], bool], timeout: float = STEP) -> None:
    """Let the event loop run until `predicate()` holds (a transport callback has run)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


async def step(awaitable: Awaitable[T], timeout: float = STEP) -> T:
    with anyio.fail_after(timeout):
        return await awaitable


async def receive_exactly(stream: ClientStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += await step(stream.receive(n - len(data)))
    return data


def rst_close(writer: asyncio.StreamWriter) -> None:
    """Close the client side of a connection with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def pattern(size: int) -> bytes:
    return bytes(range(256)) * (size // 256)


async def echo(stream: ClientStream) -> None:
    """Sends back whatever the client sends, until the connection ends (as the server's
    request loop does, on any of the stream's exceptions)."""
    try:
        while True:
            await stream.send(await stream.receive())
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


class Served:
    """What `serving` started: the port, and every `ClientStream` handed to the handler."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted: asyncio.Queue[ClientStream] = asyncio.Queue()
        self.streams: list[ClientStream] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await step(asyncio.open_connection("127.0.0.1", self.port))
        self.writers.append(writer)
        return reader, writer

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ClientStream]:
        """One client connection and the server's stream for it."""
        reader, writer = await self.open()
        return reader, writer, await step(self.accepted.get())


@asynccontextmanager
async def serving(handler: Handler | None = None) -> AsyncIterator[Served]:
    """`serve_accepted` on a fresh listener on 127.0.0.1; each accepted stream is queued for
    the test and, if a handler is given, served by it. Everything is closed on exit."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    served = Served(listener.extra(anyio.abc.SocketAttribute.local_port))

    async def on_connect(stream: ClientStream) -> None:
        served.streams.append(stream)
        served.accepted.put_nowait(stream)
        if handler is not None:
            await handler(stream)

    async def accept(group: anyio.abc.TaskGroup) -> None:
        assert await serve_accepted(listener, on_connect, group), "did not serve"

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(accept, group)
            try:
                yield served
            finally:
                for writer in served.writers:
                    writer.transport.abort()
                for stream in served.streams:
                    await stream.aclose()
                    stream._transport.abort()  # even one with unsent data
                await wait_until(lambda: all(s._protocol.eof for s in served.streams))
                group.cancel_scope.cancel()
    finally:
        await listener.aclose()


# Accepting


def test_accepted_connection_is_a_client_stream_with_nodelay_and_round_trips() -> None:
    async def body() -> None:
        async with serving(echo) as served:
            reader, writer, stream = await served.connect()
            assert isinstance(stream, ClientStream)
            sock = stream._transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            writer.write(b"ping")
            assert await step(reader.readexactly(4)) == b"ping"
            writer.write(b"pong" * 1000)
            assert await step(reader.readexactly(4000)) == b"pong" * 1000

    run(body)


def test_concurrent_connections_are_each_served() -> None:
    async def body() -> None:
        async with serving(echo) as served:
            clients = [await served.open() for _ in range(5)]
            await wait_until(lambda: len(served.streams) == 5)
            assert len({id(stream) for stream in served.streams}) == 5
            # Every handler now waits in receive(); the last client is answered first.
            for index, (reader, writer) in reversed(list(enumerate(clients))):
                message = f"client {index}".encode()
                writer.write(message)
                assert await step(reader.readexactly(len(message))) == message

    run(body)


def test_serve_accepted_returns_false_without_raw_sockets() -> None:
    class NoRawSocket:
        def extra(self, attribute: Any, default: Any = None) -> Any:
            return default

    async def handler(stream: Any) -> None:
        raise AssertionError("nothing should be served")

    async def body() -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        try:

            class Mixed:  # a multi-listener with one listener that has no raw socket
                listeners = [*listener.listeners, NoRawSocket()]

            async with anyio.create_task_group() as group:
                assert await serve_accepted(NoRawSocket(), handler, group) is False  # type: ignore[arg-type]
                assert await serve_accepted(Mixed(), handler, group) is False  # type: ignore[arg-type]
        finally:
            await listener.aclose()

    run(body)


def test_accept_skips_aborted_connections_and_backs_off_when_out_of_descriptors() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        real_accept = loop.sock_accept
        failures: list[OSError] = [
            ConnectionAbortedError(),
            OSError(errno.EMFILE, "Too many open files"),
        ]

        async def flaky_accept(sock: socket.socket) -> tuple[socket.socket, Any]:
            if failures:
                raise failures.pop(0)
            return await real_accept(sock)

        loop.sock_accept = flaky_accept  # type: ignore[method-assign]
        try:
            started = anyio.current_time()
            async with serving(echo) as served:
                reader, writer, _ = await served.connect()
                assert not failures
                assert anyio.current_time() - started >= 0.09  # the back-off after EMFILE
                writer.write(b"still serving")
                assert await step(reader.readexactly(13)) == b"still serving"
        finally:
            del loop.sock_accept

    run(body)


def test_a_connection_lost_during_setup_is_closed_and_accepting_goes_on() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        real_setup = loop.connect_accepted_socket
        failed: list[socket.socket] = []

        async def flaky_setup(factory: Any, sock: socket.socket) -> Any:
            if not failed:
                failed.append(sock)
                raise ConnectionResetError("reset before setup")
            return await real_setup(factory, sock)

        loop.connect_accepted_socket = flaky_setup  # type: ignore[method-assign]
        try:
            async with serving(echo) as served:
                first_reader, _ = await served.open()
                assert await step(first_reader.read()) == b""  # closed, not served
                assert failed[0].fileno() == -1
                reader, writer, _ = await served.connect()
                writer.write(b"second")
                assert await step(reader.readexactly(6)) == b"second"
        finally:
            del loop.connect_accepted_socket

    run(body)


def test_accept_raises_other_errors() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()

        async def broken_accept(sock: socket.socket) -> tuple[socket.socket, Any]:
            raise OSError(errno.EBADF, "Bad file descriptor")

        async def handler(stream: Any) -> None:
            raise AssertionError("nothing should be served")

        loop.sock_accept = broken_accept  # type: ignore[method-assign]
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        try:
            async with anyio.create_task_group() as group:
                with pytest.RaisesGroup(
                    pytest.RaisesExc(OSError, check=lambda exc: exc.errno == errno.EBADF)
                ):
                    await serve_accepted(listener, handler, group)
        finally:
            del loop.sock_accept
            await listener.aclose()

    run(body)


# Receiving


def test_receive_keeps_order_and_honours_max_bytes() -> None:
    async def body() -> None:
        async with serving() as served:
            _, writer, stream = await served.connect()
            writer.write(b"abcdefghij")
            await wait_until(lambda: len(stream._protocol.buffer) == 10)
            assert await stream.receive(3) == b"abc"
            assert await stream.receive(4) == b"defg"
            assert await stream.receive() == b"hij"
            writer.write(b"klm")
            assert await step(stream.receive()) == b"klm"  # waits for it

    run(body)


def test_client_half_close_is_end_of_stream_and_a_response_still_arrives() -> None:
    async def body() -> None:
        async with serving() as served:
            reader, writer, stream = await served.connect()
            writer.write(b"request")
            writer.write_eof()  # shutdown(SHUT_WR)
            assert await receive_exactly(stream, 7) == b"request"
            with pytest.raises(anyio.EndOfStream):
                await step(stream.receive())
            with pytest.raises(anyio.EndOfStream):  # and every later receive
                await step(stream.receive())
            await stream.send(b"response")
            await stream.aclose()
            assert await step(reader.read()) == b"response"  # then EOF

    run(body)


def test_client_reset_is_broken_resource_for_a_waiting_and_a_later_receive() -> None:
    async def body() -> None:
        async with serving() as served:
            _, writer, stream = await served.connect()
            receiving = asyncio.ensure_future(stream.receive())
            await wait_until(lambda: stream._protocol._read_waiter is not None)
            assert not receiving.done()
            rst_close(writer)
            # The module raises BrokenResourceError for a reset (a clean FIN is EndOfStream).
            with pytest.raises(anyio.BrokenResourceError) as info:
                await step(receiving)
            assert isinstance(info.value.__cause__, ConnectionResetError)
            with pytest.raises(anyio.BrokenResourceError):
                await stream.receive()
            with pytest.raises(anyio.BrokenResourceError):
                await stream.send(b"anyone there?")

    run(body)


def test_data_before_a_client_reset_is_still_received() -> None:
    async def body() -> None:
        async with serving() as served:
            _, writer, stream = await served.connect()
            writer.write(b"partial")
            await wait_until(lambda: len(stream._protocol.buffer) == 7)
            rst_close(writer)
            await wait_until(lambda: stream._protocol.eof)
            assert await stream.receive() == b"partial"
            with pytest.raises(anyio.BrokenResourceError):
                await stream.receive()

    run(body)


def test_closed_stream_raises_closed_resource_and_the_client_sees_eof() -> None:
    async def body() -> None:
        async with serving() as served:
            reader, _, stream = await served.connect()
            await stream.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await stream.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await stream.send(b"too late")
            await stream.send_eof()  # a no-op now
            await stream.aclose()  # and so is a second close
            assert await step(reader.read()) == b""

    run(body)


def test_aclose_wakes_a_waiting_receive_with_closed_resource() -> None:
    async def body() -> None:
        async with serving() as served:
            _, _, stream = await served.connect()
            receiving = asyncio.ensure_future(stream.receive())
            await wait_until(lambda: stream._protocol._read_waiter is not None)
            assert not receiving.done()
            await stream.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await step(receiving)

    run(body)


def test_read_side_flow_control() -> None:
    total = 4 * 1024 * 1024
    payload = pattern(total)

    async def body() -> None:
        async with serving() as served:
            _, writer, stream = await served.connect()
            protocol = stream._protocol
            writer.write(payload)
            sent = asyncio.ensure_future(writer.drain())
            try:
                # The server reads nothing: the protocol must stop reading the socket.
                await wait_until(lambda: protocol.read_paused)
                buffered = len(protocol.buffer)
                assert HIGH_WATER < buffered <= HIGH_WATER + SOCKET_READ
                for _ in range(20):  # paused means no more data_received calls
                    await asyncio.sleep(0)
                assert len(protocol.buffer) == buffered

                received = bytearray()
                resumed = False
                while len(received) < total:
                    was_paused = protocol.read_paused
                    chunk = await step(stream.receive(64 * 1024))
                    assert chunk
                    received += chunk
                    assert len(protocol.buffer) <= HIGH_WATER + SOCKET_READ
                    if was_paused and not protocol.read_paused:
                        resumed = True  # only once the reader brought it down to the low mark
                        assert len(protocol.buffer) <= LOW_WATER
                assert resumed
                assert received == payload
                await step(sent)
                assert not protocol.read_paused
                writer.write_eof()
                with pytest.raises(anyio.EndOfStream):
                    await step(stream.receive())
            finally:
                sent.cancel()

    run(body)


# Sending


def test_large_send_waits_for_a_slow_client_and_arrives_intact() -> None:
    payload = pattern(LARGE)

    async def body() -> None:
        async with serving() as served:
            reader, _, stream = await served.connect()
            protocol = stream._protocol
            sending = asyncio.ensure_future(stream.send(payload))
            try:
                # The client reads nothing yet: the send waits for the transport to drain.
                await wait_until(lambda: protocol._drain_waiter is not None)
                assert protocol.write_paused
                await anyio.sleep(0.05)
                assert not sending.done()

                received = bytearray()
                while len(received) < LARGE:
                    chunk = await step(reader.read(64 * 1024))
                    assert chunk, f"EOF after {len(received)} of {LARGE} bytes"
                    received += chunk
                    await asyncio.sleep(0)  # a slow reader: one chunk per loop iteration
                await step(sending)
                assert not protocol.write_paused
                assert received == payload
            finally:
                sending.cancel()

    run(body)


def test_send_after_a_client_reset_raises_broken_resource() -> None:
    async def body() -> None:
        async with serving() as served:
            _, writer, stream = await served.connect()
            # After the client's EOF the transport stops reading, so the reset that follows
            # is only learnt by writing: the first send may still succeed.
            writer.write_eof()
            with pytest.raises(anyio.EndOfStream):
                await step(stream.receive())
            rst_close(writer)
            with pytest.raises(anyio.BrokenResourceError):
                for _ in range(20):
                    await stream.send(b"anyone there?")
                    await anyio.sleep(0.01)
            assert isinstance(stream._protocol.error, ConnectionError)

    run(body)


def test_send_eof_then_the_client_sees_eof_and_can_still_send() -> None:
    async def body() -> None:
        async with serving() as served:
            reader, writer, stream = await served.connect()
            await stream.send(b"response")
            await stream.send_eof()
            await stream.send_eof()  # harmless twice
            assert await step(reader.read()) == b"response"  # then EOF
            writer.write(b"more from the client")
            assert await receive_exactly(stream, 20) == b"more from the client"
            writer.write_eof()
            with pytest.raises(anyio.EndOfStream):
                await step(stream.receive())

    run(body)


# Cancellation


def test_cancelled_receive_leaves_the_stream_usable() -> None:
    async def body() -> None:
        async with serving() as served:
            _, writer, stream = await served.connect()

            # A timeout, as the server's cancel scopes do it...
            with anyio.move_on_after(0.05) as timeout:
                await stream.receive()
            assert timeout.cancelled_caught

            # ...and a scope cancelled from another task while receive() waits.
            scope = anyio.CancelScope()
            received: list[bytes] = []

            async def receive_in_scope() -> None:
                with scope:
                    received.append(await stream.receive())

            async with anyio.create_task_group() as group:
                group.start_soon(receive_in_scope)
                await wait_until(lambda: stream._protocol._read_waiter is not None)
                scope.cancel()
            assert scope.cancelled_caught
            assert received == []

            writer.write(b"after")
            assert await receive_exactly(stream, 5) == b"after"
            await stream.send(b"still writable")

    run(body)


# Known bugs: aclose() does not release a connection whose client is not reading


def test_aclose_wakes_a_send_waiting_for_the_client_to_read() -> None:
    async def body() -> None:
        async with serving() as served:
            _, _, stream = await served.connect()
            sending = asyncio.ensure_future(stream.send(pattern(LARGE)))
            try:
                await wait_until(lambda: stream._protocol._drain_waiter is not None)
                await stream.aclose()
                with pytest.raises(anyio.ClosedResourceError):
                    await step(sending, timeout=0.5)
            finally:
                sending.cancel()

    run(body)


def test_aclose_releases_a_connection_whose_client_does_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The buffered tail gets _FLUSH_TIMEOUT to leave, then the connection is aborted.
    monkeypatch.setattr(client_transport, "_FLUSH_TIMEOUT", 0.2)

    async def body() -> None:
        async with serving() as served:
            _, _, stream = await served.connect()
            with anyio.move_on_after(0.1) as timeout:  # e.g. the server's shutdown deadline
                await stream.send(pattern(LARGE))
            assert timeout.cancelled_caught
            await stream.aclose()
            # The client never sends EOF, so `eof` here means connection_lost has run.
            await wait_until(lambda: stream._protocol.eof, timeout=1.5)

    run(body)


# End to end


def test_built_in_server_keeps_a_connection_alive_across_two_requests() -> None:
    secret = "client-transport-test-secret-" + "x" * 32
    config = ProxyConfig(
        secrets={"": secret},
        # Never contacted: the model check refuses the request after reading its body.
        providers={"openai": ProviderSettings(api_key="sk-test", base_url="http://127.0.0.1:9")},
    )
    token = mint_token(
        secret, project="p", room="r", participant="a", now=time.time(), models=["gpt-4o"]
    )
    payload = b'{"model":"not-in-the-token","messages":[]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\n"
        b"authorization: Bearer %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (token.encode(), len(payload), payload)
    )

    async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await step(reader.readuntil(b"\r\n\r\n"))
        lines = head.lower().split(b"\r\n")
        assert b"connection: close" not in lines
        [length] = [line.split(b":")[1] for line in lines if line.startswith(b"content-length:")]
        return head, await step(reader.readexactly(int(length)))

    async def body() -> None:
        server = Server(Proxy(config))
        async with anyio.create_task_group() as group:
            port = await group.start(
                functools.partial(server.serve, "127.0.0.1", 0, handle_signals=False)
            )
            reader, writer = await step(asyncio.open_connection("127.0.0.1", port))
            try:
                for _ in range(2):
                    writer.write(request)
                    head, answer = await read_response(reader)
                    assert head.startswith(b"HTTP/1.1 403 ")
                    assert b"model_not_allowed" in answer
                    [connection] = server._connections  # the same one, served over this module
                    assert isinstance(connection.stream, ClientStream)
            finally:
                writer.close()
                server.shutdown()
            await step(server.wait_stopped())

    run(body)
