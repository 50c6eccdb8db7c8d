"""The asyncio network backend for upstream connections, against real sockets on 127.0.0.1.

Each test runs its own event loop under `asyncio.run` with a hard deadline (`run`), talks to a
small asyncio server started in the test, and synchronises on what the servers and transports
report (queues, events, futures); where it must wait for an event-loop callback it polls with
a deadline (`wait_until`).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshproxy.adapters.buffered_protocol import HIGH_WATER, LOW_WATER
from meshproxy.adapters.upstream_transport import (
    AsyncioBackend,
    AsyncioStream,
    backend_for_running_loop,
)

T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

TEST_DEADLINE = 4.0  # seconds, per test: a hang fails the test instead of the suite
STEP = 2.0  # seconds, for one awaited step inside a test
SOCKET_READ = 256 * 1024  # what asyncio's selector transport asks recv() for at most


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one test body on a fresh event loop, failing it after TEST_DEADLINE seconds."""
    return asyncio.run(asyncio.wait_for(coro, TEST_DEADLINE))


async def wait_until(predicate: Callable[[], bool], timeout: float = STEP) -> None:
    """Let the event loop run until `predicate()` holds (a transport callback has run)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.001)


async def step(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, STEP)


async def read_exactly(stream: httpcore.AsyncNetworkStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.read(n - len(data), timeout=STEP)
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


def rst_close(writer: asyncio.StreamWriter) -> None:
    """Close the server side of a connection with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Listener:
    """A TCP server on 127.0.0.1: every accepted connection is queued for the test and, if a
    handler is given, served by it."""

    def __init__(self, handler: Handler | None) -> None:
        self.handler = handler
        self.port = 0
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.writers: list[asyncio.StreamWriter] = []

    @property
    def connection_count(self) -> int:
        return len(self.writers)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.accepted.put_nowait((reader, writer))
        if self.handler is not None:
            await self.handler(reader, writer)

    async def next_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await step(self.accepted.get())


@asynccontextmanager
async def listening(
    handler: Handler | None = None, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Listener]:
    listener = Listener(handler)
    server = await asyncio.start_server(listener._on_connect, "127.0.0.1", 0, ssl=ssl_context)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()
        for writer in listener.writers:
            writer.transport.abort()
        await server.wait_closed()


def http_handler(*, close_after_response: bool = False) -> Handler:
    """A minimal HTTP/1.1 server: answers every request on a connection with
    `conn=<n> <method> <target> <request body>`, keeping the connection open unless told to
    close it (silently, without `Connection: close`) after the first response."""
    served: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(served)
        served.append(index)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ")
                length = 0
                for line in header_lines:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                payload = f"conn={index} {method} {target} ".encode() + body
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
                )
                await writer.drain()
                if close_after_response:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return handle


# TLS material: one self-signed certificate for localhost and 127.0.0.1


class Certificate:
    def __init__(self, directory: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False
            )
            .sign(key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self.cert_path = directory / "cert.pem"
        self.key_path = directory / "key.pem"
        self.cert_path.write_text(self.cert_pem)
        self.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.cert_pem)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return Certificate(tmp_path_factory.mktemp("tls"))


# connecting, reading and writing


def test_round_trip_and_connection_info() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port, timeout=STEP)
            reader, writer = await server.next_connection()
            try:
                await stream.write(b"ping", timeout=STEP)
                assert await step(reader.readexactly(4)) == b"ping"
                writer.write(b"pong")
                assert await read_exactly(stream, 4) == b"pong"

                assert stream.get_extra_info("client_addr") == writer.get_extra_info("peername")
                assert stream.get_extra_info("server_addr") == ("127.0.0.1", server.port)
                assert stream.get_extra_info("ssl_object") is None
                sock = stream.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                assert stream.get_extra_info("no such thing") is None
                assert stream.get_extra_info("is_readable") is False

                # Something the client did not ask for makes an idle connection readable.
                writer.write(b"!")
                await wait_until(lambda: stream.get_extra_info("is_readable"))
                assert await stream.read(10, timeout=STEP) == b"!"
                assert stream.get_extra_info("is_readable") is False
            finally:
                await stream.aclose()
            assert await step(reader.read()) == b""  # the server sees the client's close

    run(body())


def test_read_honours_max_bytes_and_keeps_order() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            _, writer = await server.next_connection()
            try:
                writer.write(b"0123456789")
                await wait_until(lambda: len(stream._protocol.buffer) == 10)  # type: ignore[attr-defined]
                assert await stream.read(3) == b"012"
                assert await stream.read(3) == b"345"
                assert await stream.read(100) == b"6789"
            finally:
                await stream.aclose()

    run(body())


def test_socket_options_and_local_address_are_applied() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp(
                "127.0.0.1",
                server.port,
                local_address="127.0.0.1",
                socket_options=[
                    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
                    (socket.SOL_SOCKET, socket.SO_RCVBUF, 65536),
                ],
            )
            try:
                sock = stream.get_extra_info("socket")
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536
                assert stream.get_extra_info("client_addr")[0] == "127.0.0.1"
            finally:
                await stream.aclose()

    run(body())


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix domain sockets")
def test_unix_socket_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "upstream.sock")
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(5)
        received.put_nowait(data)
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    async def body() -> None:
        server = await asyncio.start_unix_server(echo, path)
        try:
            stream = await AsyncioBackend().connect_unix_socket(path, timeout=STEP)
            try:
                await stream.write(b"hello")
                assert await read_exactly(stream, 5) == b"HELLO"
                assert await stream.read(10, timeout=STEP) == b""  # the server closed
            finally:
                await stream.aclose()
            assert received.get_nowait() == b"hello"
        finally:
            server.close()
            await server.wait_closed()

    run(body())


def test_clean_close_by_the_server_reads_as_eof() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            _, writer = await server.next_connection()
            try:
                writer.write(b"last words")
                writer.close()
                assert await read_exactly(stream, 10) == b"last words"
                assert await stream.read(10, timeout=STEP) == b""
                assert await stream.read(10, timeout=STEP) == b""  # and stays at EOF
                assert stream.get_extra_info("is_readable") is True
            finally:
                await stream.aclose()

    run(body())


def test_read_timeout_then_the_stream_still_reads() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            _, writer = await server.next_connection()
            loop = asyncio.get_running_loop()
            try:
                started = loop.time()
                with pytest.raises(httpcore.ReadTimeout):
                    await stream.read(1024, timeout=0.2)
                assert 0.15 <= loop.time() - started < STEP
                # A late answer is still delivered to the next read (no stale waiter).
                writer.write(b"late")
                assert await read_exactly(stream, 4) == b"late"
            finally:
                await stream.aclose()

    run(body())


def test_connect_to_a_closed_port_raises_connect_error() -> None:
    async def body() -> None:
        # A bound socket that is not listening: the kernel refuses connections to its port.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            with pytest.raises(httpcore.ConnectError):
                await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=STEP)

    run(body())


def test_connect_timeout_when_the_listen_backlog_is_full() -> None:
    async def body() -> None:
        # A listener that never accepts, with a backlog of 0 filled by earlier connects: Linux
        # drops further SYNs, so the next connect waits until its timeout.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            fillers = [socket.socket() for _ in range(3)]
            try:
                for filler in fillers:
                    filler.setblocking(False)
                    filler.connect_ex(("127.0.0.1", port))
                try:
                    stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=0.2)
                except httpcore.ConnectTimeout:
                    return
                await stream.aclose()
                pytest.skip("this kernel completed a connect past a full listen backlog")
            finally:
                for filler in fillers:
                    filler.close()

    run(body())


def test_reset_during_a_read_raises_read_error() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            _, writer = await server.next_connection()
            protocol = stream._protocol  # type: ignore[attr-defined]
            try:
                writer.write(b"HTTP/1.1 200 OK\r\n")
                assert await read_exactly(stream, 17) == b"HTTP/1.1 200 OK\r\n"
                reading = asyncio.ensure_future(stream.read(1024, timeout=STEP))
                await wait_until(lambda: protocol._read_waiter is not None)
                assert not reading.done()
                rst_close(writer)
                with pytest.raises(httpcore.ReadError):
                    await step(reading)
                assert isinstance(protocol.error, ConnectionResetError)
                assert stream.get_extra_info("is_readable") is True
                with pytest.raises(httpcore.ReadError):  # and every later read
                    await stream.read(1024, timeout=STEP)
                with pytest.raises(httpcore.WriteError):
                    await stream.write(b"more")
            finally:
                await stream.aclose()

    run(body())


def test_data_before_a_reset_is_still_read_then_read_error() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            _, writer = await server.next_connection()
            protocol = stream._protocol  # type: ignore[attr-defined]
            try:
                writer.write(b"partial")
                await wait_until(lambda: bool(protocol.buffer))
                rst_close(writer)
                await wait_until(lambda: protocol.eof)
                assert await read_exactly(stream, 7) == b"partial"
                with pytest.raises(httpcore.ReadError):
                    await stream.read(1024, timeout=STEP)
            finally:
                await stream.aclose()

    run(body())


def test_write_after_close_raises_write_error() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            await stream.aclose()
            with pytest.raises(httpcore.WriteError):
                await stream.write(b"too late", timeout=STEP)
            await stream.write(b"")  # an empty write is a no-op, even now

    run(body())


def test_write_after_the_server_closed_raises_write_error() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            _, writer = await server.next_connection()
            try:
                writer.close()
                await wait_until(lambda: stream.get_extra_info("is_readable"))
                with pytest.raises(httpcore.WriteError):
                    await stream.write(b"anyone there?")
            finally:
                await stream.aclose()

    run(body())


def test_write_timeout_when_the_server_does_not_read() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            _, writer = await server.next_connection()
            protocol = stream._protocol  # type: ignore[attr-defined]
            try:
                # Far more than the kernel buffers on both ends take without a reader.
                with pytest.raises(httpcore.WriteTimeout):
                    await stream.write(b"x" * (32 * 1024 * 1024), timeout=0.2)
                assert protocol.write_paused
            finally:
                writer.transport.abort()  # unread data: the client's pending write is reset
                await wait_until(lambda: protocol.eof)
                await stream.aclose()

    run(body())


def test_reset_while_waiting_to_drain_raises_write_error() -> None:
    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            _, writer = await server.next_connection()
            protocol = stream._protocol  # type: ignore[attr-defined]
            try:
                writing = asyncio.ensure_future(stream.write(b"x" * (32 * 1024 * 1024)))
                await wait_until(lambda: protocol._drain_waiter is not None)
                assert not writing.done()
                rst_close(writer)
                with pytest.raises(httpcore.WriteError):
                    await step(writing)
            finally:
                await stream.aclose()

    run(body())


def test_read_side_flow_control() -> None:
    total = 8 * 1024 * 1024
    payload = bytes(range(256)) * (total // 256)

    async def body() -> None:
        async with listening() as server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            _, writer = await server.next_connection()
            protocol = stream._protocol  # type: ignore[attr-defined]
            sent: asyncio.Future[None] | None = None
            try:
                writer.write(payload)
                sent = asyncio.ensure_future(writer.drain())
                # The client reads nothing: the protocol must stop reading the socket.
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
                    chunk = await stream.read(64 * 1024, timeout=STEP)
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
                writer.close()
                assert await stream.read(1024, timeout=STEP) == b""
            finally:
                if sent is not None:
                    sent.cancel()
                await stream.aclose()

    run(body())


# TLS


def test_tls_round_trip(certificate: Certificate) -> None:
    async def body() -> None:
        async with listening(ssl_context=certificate.server_context()) as server:
            plain = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            assert plain.get_extra_info("ssl_object") is None
            stream = await plain.start_tls(
                certificate.client_context(), server_hostname="localhost", timeout=STEP
            )
            reader, writer = await server.next_connection()
            try:
                ssl_object = stream.get_extra_info("ssl_object")
                assert ssl_object is not None
                assert ssl_object.server_hostname == "localhost"
                assert ssl_object.version().startswith("TLS")
                assert stream.get_extra_info("server_addr") == ("127.0.0.1", server.port)
                await stream.write(b"ping over tls", timeout=STEP)
                assert await step(reader.readexactly(13)) == b"ping over tls"
                writer.write(b"pong over tls")
                assert await read_exactly(stream, 13) == b"pong over tls"
                assert stream.get_extra_info("is_readable") is False
                writer.close()
                await wait_until(lambda: stream.get_extra_info("is_readable"))
                assert await stream.read(100, timeout=STEP) == b""
            finally:
                await stream.aclose()

    run(body())


def test_tls_reset_during_a_read_raises_read_error(certificate: Certificate) -> None:
    async def body() -> None:
        async with listening(ssl_context=certificate.server_context()) as server:
            plain = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            stream = await plain.start_tls(
                certificate.client_context(), server_hostname="localhost", timeout=STEP
            )
            _, writer = await server.next_connection()
            protocol = stream._protocol  # type: ignore[attr-defined]
            try:
                writer.write(b"partial")
                assert await read_exactly(stream, 7) == b"partial"
                reading = asyncio.ensure_future(stream.read(1024, timeout=STEP))
                await wait_until(lambda: protocol._read_waiter is not None)
                rst_close(writer)
                with pytest.raises(httpcore.ReadError):
                    await step(reading)
                assert stream.get_extra_info("is_readable") is True
            finally:
                await stream.aclose()

    run(body())


@pytest.mark.parametrize("failure", ["untrusted certificate", "wrong hostname"])
def test_tls_verification_failure_raises_connect_error(
    certificate: Certificate, failure: str
) -> None:
    async def body() -> None:
        if failure == "untrusted certificate":
            context, hostname = ssl.create_default_context(), "localhost"
        else:
            context, hostname = certificate.client_context(), "upstream.example"
        async with listening(ssl_context=certificate.server_context()) as server:
            plain = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            with pytest.raises(httpcore.ConnectError) as caught:
                await plain.start_tls(context, server_hostname=hostname, timeout=STEP)
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            with pytest.raises(httpcore.WriteError):  # the connection is closed
                await plain.write(b"x")

    run(body())


def test_tls_handshake_against_a_server_that_closes_raises_connect_error(
    certificate: Certificate,
) -> None:
    async def body() -> None:
        async with listening() as server:  # plain TCP: it closes instead of answering
            plain = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            _, writer = await server.next_connection()
            writer.close()
            with pytest.raises(httpcore.ConnectError):
                await plain.start_tls(
                    certificate.client_context(), server_hostname="localhost", timeout=STEP
                )

    run(body())


def test_tls_handshake_timeout_raises_connect_timeout(certificate: Certificate) -> None:
    async def body() -> None:
        async with listening() as server:  # plain TCP that never answers the ClientHello
            plain = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            with pytest.raises(httpcore.ConnectTimeout):
                await plain.start_tls(
                    certificate.client_context(), server_hostname="localhost", timeout=0.2
                )

    run(body())


def test_tls_read_side_flow_control(certificate: Certificate) -> None:
    total = 4 * 1024 * 1024
    payload = bytes(range(256)) * (total // 256)

    async def body() -> None:
        async with listening(ssl_context=certificate.server_context()) as server:
            plain = await AsyncioBackend().connect_tcp("127.0.0.1", server.port)
            stream = await plain.start_tls(
                certificate.client_context(), server_hostname="localhost", timeout=STEP
            )
            _, writer = await server.next_connection()
            protocol = stream._protocol  # type: ignore[attr-defined]
            sent: asyncio.Future[None] | None = None
            # The TLS layer may hand over what it decrypted in one go: up to one socket read
            # before the pause, and what it kept buffered while paused plus one read after.
            bound = HIGH_WATER + 2 * SOCKET_READ
            try:
                writer.write(payload)
                sent = asyncio.ensure_future(writer.drain())
                await wait_until(lambda: protocol.read_paused)
                buffered = len(protocol.buffer)
                assert HIGH_WATER < buffered <= bound
                for _ in range(20):  # paused: the TLS layer delivers nothing more
                    await asyncio.sleep(0)
                assert len(protocol.buffer) == buffered
                received = bytearray()
                while len(received) < total:
                    chunk = await stream.read(64 * 1024, timeout=STEP)
                    assert chunk
                    received += chunk
                    assert len(protocol.buffer) <= bound
                assert received == payload
                await step(sent)
                assert not protocol.read_paused
            finally:
                if sent is not None:
                    sent.cancel()
                await stream.aclose()

    run(body())


def test_tls_data_arriving_with_the_handshake_does_not_stall_the_connection(
    certificate: Certificate,
) -> None:
    total = 2 * 1024 * 1024
    payload = bytes(range(256)) * (total // 256)

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)  # unasked, as soon as the server's handshake is done

    async def body() -> None:
        # Regression: bytes that arrive through the TLS layer before `start_tls` returns are
        # seen while the protocol still holds the raw TCP transport; if they cross the high
        # mark, the pause lands on that transport and the resume must reach it too (an earlier
        # version resumed the TLS transport instead: the raw socket stayed paused forever).
        # Under TLS 1.2 the server's Finished is the last handshake message, so its data can
        # reach the client together with it; a large receive buffer lets a lot arrive at once.
        server_context = certificate.server_context()
        server_context.maximum_version = ssl.TLSVersion.TLSv1_2
        async with listening(greet, ssl_context=server_context) as server:
            plain = await AsyncioBackend().connect_tcp(
                "127.0.0.1",
                server.port,
                socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)],
            )
            stream = await plain.start_tls(
                certificate.client_context(), server_hostname="localhost", timeout=STEP
            )
            protocol = stream._protocol  # type: ignore[attr-defined]
            try:
                if len(protocol.buffer) <= HIGH_WATER:
                    pytest.skip("not enough data arrived during the handshake to need a pause")
                received = bytearray()
                while len(received) < total:
                    chunk = await stream.read(64 * 1024, timeout=0.5)
                    assert chunk
                    received += chunk
                assert received == payload
            finally:
                await stream.aclose()
                await plain.aclose()  # a stalled raw socket never completes the TLS close

    run(body())


# through httpcore's connection pool


def test_pool_request_and_keep_alive_reuse() -> None:
    async def body() -> None:
        async with (
            listening(http_handler()) as server,
            httpcore.AsyncConnectionPool(network_backend=AsyncioBackend()) as pool,
        ):
            url = f"http://127.0.0.1:{server.port}"
            timeouts = {"timeout": {"connect": STEP, "read": STEP, "write": STEP, "pool": STEP}}
            first = await pool.request("GET", f"{url}/models", extensions=timeouts)
            assert first.status == 200
            assert first.content == b"conn=0 GET /models "
            assert isinstance(first.extensions["network_stream"], AsyncioStream)

            second = await pool.request(
                "POST", f"{url}/echo", content=b'{"hello": 1}', extensions=timeouts
            )
            assert second.status == 200
            assert second.content == b'conn=0 POST /echo {"hello": 1}'
            assert server.connection_count == 1
            assert len(pool.connections) == 1

    run(body())


def test_pool_streams_a_large_response_body() -> None:
    size = 3 * 1024 * 1024
    body_bytes = bytes(range(256)) * (size // 256)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(body_bytes)
        await writer.drain()

    async def body() -> None:
        async with (
            listening(handle) as server,
            httpcore.AsyncConnectionPool(network_backend=AsyncioBackend()) as pool,
        ):
            url = f"http://127.0.0.1:{server.port}/big"
            async with pool.stream("GET", url, extensions={"timeout": {"read": STEP}}) as response:
                received = bytearray()
                async for chunk in response.aiter_stream():
                    received += chunk
            assert response.status == 200
            assert received == body_bytes

    run(body())


def test_pool_does_not_reuse_a_connection_the_server_closed_while_idle() -> None:
    async def body() -> None:
        async with (
            listening(http_handler(close_after_response=True)) as server,
            httpcore.AsyncConnectionPool(network_backend=AsyncioBackend()) as pool,
        ):
            url = f"http://127.0.0.1:{server.port}/"
            timeouts = {"timeout": {"connect": STEP, "read": STEP, "write": STEP, "pool": STEP}}
            first = await pool.request("GET", url, extensions=timeouts)
            assert first.content == b"conn=0 GET / "
            stream = first.extensions["network_stream"]
            # The server closed without `Connection: close`: the pool keeps the connection
            # until the transport reports the FIN, then must see it as readable.
            await wait_until(lambda: stream.get_extra_info("is_readable"))

            second = await pool.request("GET", url, extensions=timeouts)
            assert second.status == 200
            assert second.content == b"conn=1 GET / "
            assert server.connection_count == 2

    run(body())


def test_pool_read_timeout() -> None:
    async def body() -> None:
        async with (
            listening() as server,  # accepts, reads nothing, never answers
            httpcore.AsyncConnectionPool(network_backend=AsyncioBackend()) as pool,
        ):
            with pytest.raises(httpcore.ReadTimeout):
                await pool.request(
                    "GET",
                    f"http://127.0.0.1:{server.port}/slow",
                    extensions={"timeout": {"connect": STEP, "read": 0.2}},
                )

    run(body())


def test_pool_over_tls_with_keep_alive(certificate: Certificate) -> None:
    async def body() -> None:
        async with (
            listening(http_handler(), ssl_context=certificate.server_context()) as server,
            httpcore.AsyncConnectionPool(
                ssl_context=certificate.client_context(), network_backend=AsyncioBackend()
            ) as pool,
        ):
            url = f"https://127.0.0.1:{server.port}/v1/chat"
            extensions = {"sni_hostname": "localhost", "timeout": {"connect": STEP, "read": STEP}}
            for _ in range(2):
                response = await pool.request("POST", url, content=b"hi", extensions=extensions)
                assert response.status == 200
                assert response.content == b"conn=0 POST /v1/chat hi"
                assert response.extensions["network_stream"].get_extra_info("ssl_object")
            assert server.connection_count == 1

    run(body())


# choosing the backend


def test_backend_for_running_loop() -> None:
    assert backend_for_running_loop() is None  # no event loop running here

    async def body() -> None:
        backend = backend_for_running_loop()
        assert isinstance(backend, AsyncioBackend)
        await backend.sleep(0)

    run(body())
