"""A minimal HTTP/1.1 server for the proxy, on anyio + h11.

Owns: sockets. Accepting connections, reading requests with h11 under limits (header size, body
size, header-read and keep-alive idle timeouts), keep-alive, watching the client while a
response streams so a disconnect cancels the upstream request, and graceful shutdown (stop
accepting, let in-flight responses finish up to a deadline, then cut them; every cut request
still ends in a record).

Does not own: any decision about a request (the exchange) or the upstream I/O (relay).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.abc
import attrs
import h11

from meshproxy_core.capture import CaptureTap, to_json_line
from meshproxy_core.exchange import Exchange, Proxy, Reject
from meshproxy_core.headers import content_length, redacted
from meshproxy_core.records import Ending, UsageRecord, UsageSink

from .admin import AdminAPI
from .client_transport import ClientStream, serve_accepted
from .live_settings import LiveSettings
from .recording import Recorder
from .relay import ClientGone, UpstreamPool, UpstreamTimeouts, handle_request

__all__ = ["CaptureLog", "Server", "ServerLimits"]

log = logging.getLogger("meshproxy.server")
http_log = logging.getLogger("meshproxy.http")

_READ_SIZE = 65536

ClientByteStream = anyio.abc.SocketStream | ClientStream


@attrs.frozen
class ServerLimits:
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 15.0  # from connection (or previous response) to a complete head
    body_timeout: float = 60.0  # between two reads of the request body
    idle_timeout: float = 75.0  # keep-alive: how long an idle connection is kept open
    shutdown_grace: float = 30.0  # how long in-flight responses may run after SIGTERM
    max_connections: int = 10_000
    linger_timeout: float = 5.0  # after refusing an unread body, how long to drain it
    linger_bytes: int = 256 * 1024 * 1024


class Server:
    """Serves one `Proxy` on one address. `serve()` runs until `shutdown()` or a signal."""

    def __init__(
        self,
        proxy: Proxy,
        *,
        sinks: Sequence[UsageSink] = (),
        recorder: Recorder | None = None,
        limits: ServerLimits | None = None,
        timeouts: UpstreamTimeouts | None = None,
        clock: Callable[[], float] = time.time,
        log_http: bool = False,
        capture: CaptureLog | None = None,
        admin: AdminAPI | None = None,
        settings: LiveSettings | None = None,
    ) -> None:
        self.proxy = proxy
        self.capture = capture
        self.admin = admin  # answers /admin/… when set
        self.settings = settings  # when set, settings changed at run time replace `proxy`
        self.recorder = recorder or Recorder(sinks)
        self.limits = limits or ServerLimits()
        self.clock = clock
        self.log_http = log_http
        self.pool = UpstreamPool(timeouts=timeouts)
        self.port: int | None = None
        self._stopping = anyio.Event()
        self._stopped = anyio.Event()
        self._connections: set[_Connection] = set()

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8787,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
        handle_signals: bool = True,
    ) -> None:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        try:
            async with anyio.create_task_group() as connections:
                async with anyio.create_task_group() as acceptor:
                    acceptor.start_soon(self._accept, listener, connections)
                    if handle_signals:
                        acceptor.start_soon(self._watch_signals)
                    task_status.started(self.port)
                    await self._stopping.wait()
                    acceptor.cancel_scope.cancel()
                await listener.aclose()
                await self._drain()
        finally:
            await self.pool.aclose()
            self._stopped.set()

    async def _accept(
        self, listener: anyio.abc.Listener[anyio.abc.SocketStream], connections: anyio.abc.TaskGroup
    ) -> None:
        # Connections on asyncio transports (client_transport); anyio's own streams elsewhere.
        if not await serve_accepted(listener, self._handle, connections):
            await listener.serve(self._handle, connections)

    def shutdown(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.warning("received %s: shutting down", signal.Signals(signum).name)
                self.shutdown()
                return

    async def _drain(self) -> None:
        for connection in list(self._connections):
            connection.stop_when_idle()
        with anyio.move_on_after(self.limits.shutdown_grace):
            while self._connections:
                await anyio.sleep(0.05)
        for connection in list(self._connections):
            connection.cancel_for_shutdown()

    async def _handle(self, stream: ClientByteStream) -> None:
        if self._stopping.is_set() or len(self._connections) >= self.limits.max_connections:
            await stream.aclose()
            return
        connection = _Connection(self, stream)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            await stream.aclose()


class CaptureLog:
    """`meshproxy serve --capture FILE`: one capture line (meshproxy_core.capture) per forwarded
    exchange, for offline accounting and debugging. Bodies are kept up to the body limit;
    request credentials are redacted by the tap."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "ab")  # noqa: SIM115  (closed by close())
        self._lock = threading.Lock()

    def tap(self, max_body_bytes: int) -> CaptureTap:
        return CaptureTap(max_body_bytes)

    def write(self, tap: CaptureTap, record: UsageRecord | None) -> None:
        if record is None or not tap.forwarded:
            return  # refusals never reached a provider; their records say everything
        line = to_json_line(tap.finish(record))
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class _Connection:
    """One client connection: a loop of request/response cycles over h11.

    One reader task per connection owns the socket's receive side for the connection's whole
    life: it feeds h11 and wakes the request loop, and while a response is relayed, its EOF is
    how a client that left is noticed (and the upstream request cancelled). A task per
    connection rather than a watcher task per request: starting and cancelling one on every
    request was a tenth of the server's CPU (docs/performance.md).
    """

    def __init__(self, server: Server, stream: ClientByteStream) -> None:
        self.server = server
        self.stream = stream
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=server.limits.max_header_bytes
        )
        self.scope = anyio.CancelScope()
        self.busy = False
        self.closing = False
        self.cancel_reason = Ending.CLIENT_GONE
        self._held = b""
        # reader task state
        # Events exist only while someone waits on them: an idle keep-alive connection and an
        # open stream each hold a few hundred bytes less per event (docs/performance.md).
        self._arrived: anyio.Event | None = None  # the request loop waits for bytes
        self._may_read: anyio.Event | None = None  # the reader waits for the loop to catch up
        self._fed = 0  # bytes fed to h11 since the request loop last ran out of them
        self._eof = False  # the reader has stopped (EOF, error, or this side closed)
        self._discarding = False  # lingering after a refusal: drop what arrives
        self._reader_done: anyio.Event | None = None
        self._on_gone: Callable[[], None] | None = None

    def stop_when_idle(self) -> None:
        self.closing = True
        if not self.busy:
            self.scope.cancel()

    def cancel_for_shutdown(self) -> None:
        self.cancel_reason = Ending.SHUTDOWN
        self.scope.cancel()

    async def run(self) -> None:
        with self.scope:
            async with anyio.create_task_group() as group:
                group.start_soon(self._read_loop)
                await self._serve_cycles()
                group.cancel_scope.cancel()

    async def _serve_cycles(self) -> None:
        try:
            while not self.closing:
                if not await self._cycle():
                    return
                if self.h11.our_state is h11.MUST_CLOSE:
                    return
                self.h11.start_next_cycle()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            return
        except h11.RemoteProtocolError as exc:
            await self._send_protocol_error(exc)

    async def _read_loop(self) -> None:
        """The connection's only reader (see the class docstring). Buffers at most about the
        header limit ahead of the request loop (a pipelining client is then no longer read,
        as any server must stop somewhere); lingering, it discards instead."""
        limits = self.server.limits
        ahead = max(limits.max_header_bytes, _READ_SIZE)
        discarded = 0
        try:
            while True:
                if self._fed > ahead and not self._discarding:
                    self._may_read = anyio.Event()
                    try:
                        await self._may_read.wait()
                    finally:
                        self._may_read = None
                    continue
                try:
                    data = await self.stream.receive(_READ_SIZE)
                except anyio.ClosedResourceError:
                    return  # closed by this side: not the client leaving
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    data = b""
                if self._discarding:
                    discarded += len(data)
                    if data and discarded < limits.linger_bytes:
                        continue
                    return
                if not data:
                    self._client_left()
                    return
                self._fed += len(data)
                self.h11.receive_data(data)
                if self._arrived is not None:
                    self._arrived.set()
        finally:
            self._eof = True
            for waiting in (self._arrived, self._reader_done):
                if waiting is not None:
                    waiting.set()

    def _client_left(self) -> None:
        self.closing = True
        self.h11.receive_data(b"")  # h11 then reports ConnectionClosed or an incomplete request
        if self._on_gone is not None:
            self._on_gone()

    async def _wait_for_data(self) -> None:
        if self._eof:
            raise anyio.EndOfStream
        self._fed = 0
        if self._may_read is not None:
            self._may_read.set()
        self._arrived = anyio.Event()
        try:
            await self._arrived.wait()
        finally:
            self._arrived = None

    async def _next_event(self, timeout: float) -> h11.Event | type[h11.PAUSED]:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                if self._eof and self.closing:
                    # The client closed mid-request: it left, there is nobody to answer.
                    raise anyio.EndOfStream from None
                raise
            if event is not h11.NEED_DATA:
                return event
            with anyio.fail_after(timeout):
                await self._wait_for_data()

    async def _cycle(self) -> bool:
        """Serve one request. Returns False when the connection should close."""
        limits = self.server.limits
        try:
            event = self.h11.next_event()  # a pipelined request may be buffered already
            if event is h11.NEED_DATA:
                # Keep-alive: wait (idle_timeout) for the first byte of the next request...
                with anyio.fail_after(limits.idle_timeout):
                    await self._wait_for_data()
                # ...then the whole head must arrive within header_timeout (no slow-loris).
                with anyio.fail_after(limits.header_timeout):
                    event = await self._next_event(limits.header_timeout)
        except (TimeoutError, anyio.EndOfStream):
            return False
        if not isinstance(event, h11.Request):
            return False
        if _head_size(event) > limits.max_header_bytes:
            # h11 bounds only a head still incomplete; one that arrived whole is measured here.
            await self._send_protocol_error(h11.RemoteProtocolError("head too large", 431))
            return False
        self.busy = True
        try:
            return await self._serve(event)
        finally:
            self.busy = False

    async def _serve(self, request: h11.Request) -> bool:
        server = self.server
        if server.admin is not None and AdminAPI.claims(
            request.target.decode("latin-1").split("?", 1)[0]
        ):
            return await self._serve_admin(request, server.admin)
        if server.settings is not None and server.settings.stale():
            # Changed on this replica or another: the next request runs on the new settings.
            server.proxy = await anyio.to_thread.run_sync(server.settings.reload)
        exchange = server.proxy.exchange(now=server.clock())
        port = _H11Port(self)
        tap = server.capture.tap(server.proxy.config.max_body_bytes) if server.capture else None
        headers = list(request.headers)
        context = server.recorder.start(headers)
        try:
            await handle_request(
                exchange,
                request.method.decode("latin-1"),
                request.target.decode("latin-1"),
                headers,
                port,
                server.pool,
                clock=server.clock,
                cancel_ending=lambda: self.cancel_reason,
                tap=tap,
                settle=lambda record: server.recorder.settle(context, record),
                ownership=server.recorder.ownership,
                upstream_headers=lambda forwarded: server.recorder.upstream_headers(
                    context, forwarded
                ),
            )
        finally:
            server.recorder.emit(context, exchange.record)
            if tap is not None and server.capture is not None:
                server.capture.write(tap, exchange.record)
            if server.log_http:
                self._log(request, exchange)
        if exchange.record is not None and exchange.record.ending is Ending.CLIENT_GONE:
            return False
        return self._can_continue()

    async def _serve_admin(self, request: h11.Request, admin: AdminAPI) -> bool:
        method = request.method.decode("latin-1")
        target = request.target.decode("latin-1")
        try:
            body = await self._read_body(admin.max_body_bytes)
        except TimeoutError:  # a client that stops sending its body: just close
            return False
        # database I/O: off the event loop
        status, headers, data = await anyio.to_thread.run_sync(
            admin.handle, method, target, list(request.headers), body
        )
        await self._send_reject(Reject(status=status, headers=headers, body=data))
        if self.server.log_http:  # never the body: it may hold a provider key
            http_log.info("%s %s -> %s admin", method, target.split("?")[0], status)
        return self._can_continue()

    async def _read_body(self, max_bytes: int) -> bytes | None:
        if self.h11.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event(self.server.limits.body_timeout)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_bytes:
                    return None
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:
                raise anyio.EndOfStream

    async def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if self._held:
            data, self._held = self._held + (data or b""), b""
        if data:
            await self.stream.send(data)

    def _hold(self, event: h11.Event) -> None:
        """Serialise `event` now, write it with the next `_send`: a fixed-length response's
        head then leaves in the same write (and TCP segment) as its body."""
        self._held += self.h11.send(event) or b""

    async def _send_reject(self, reject: Reject) -> None:
        headers = reject.headers
        if self.h11.their_state is not h11.DONE:
            # The body is left unread, so this connection cannot carry another request: say so,
            # or a keep-alive client would send its next request into a closing socket.
            headers = [*headers, (b"connection", b"close")]
        await self._send(h11.Response(status_code=reject.status, headers=headers))
        await self._send(h11.Data(data=reject.body))
        await self._send(h11.EndOfMessage())
        if self.h11.their_state is not h11.DONE:
            await self._linger()

    async def _linger(self) -> None:
        """Refused with the body unread: half-close and discard what the client still sends.

        Closing at once would make the kernel answer the client's next bytes with a reset, and a
        client still uploading would lose the refusal it has not read yet (a "lingering close",
        as web servers do it). Bounded in time and bytes.
        """
        self.closing = True
        with contextlib.suppress(Exception):
            await self.stream.send_eof()
        self._discarding = True
        if self._may_read is not None:
            self._may_read.set()
        if self._eof:
            return
        self._reader_done = anyio.Event()
        with anyio.move_on_after(self.server.limits.linger_timeout):
            await self._reader_done.wait()

    def _can_continue(self) -> bool:
        # A refused request whose body was never read leaves the connection mid-message: close.
        return self.h11.their_state is h11.DONE and self.h11.our_state is h11.DONE

    async def _send_protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status = exc.error_status_hint
        body = b'{"error":{"message":"Malformed HTTP request.","type":"invalid_request_error",'
        body += b'"param":null,"code":"bad_http_request"}}'
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            await self._send(h11.Response(status_code=status, headers=headers))
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except (h11.LocalProtocolError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return

    def _log(self, request: h11.Request, exchange: Exchange) -> None:
        record = exchange.record
        http_log.info(
            "%s %s -> %s %s headers=%s",
            request.method.decode("latin-1"),
            request.target.decode("latin-1").split("?")[0],
            record.status if record else "-",
            record.outcome.value if record else "-",
            redacted(list(request.headers)),
        )


class _H11Port:
    """The client side of one request on an h11 connection (relay.ClientPort)."""

    def __init__(self, connection: _Connection) -> None:
        self.c = connection

    async def read_body(self, max_bytes: int) -> bytes | None:
        return await self.c._read_body(max_bytes)

    async def reject(self, reject: Reject) -> None:
        await self.c._send_reject(reject)

    def watch_disconnect(self, on_gone: Callable[[], None]) -> _DisconnectWatch:
        return _DisconnectWatch(self.c, on_gone)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        response = h11.Response(status_code=status, headers=headers)
        if content_length(headers) is not None:
            # A JSON answer: its body follows at once, so send head and body together. An
            # event stream's head goes out now, before its first event, which may be slow.
            self.c._hold(response)
            return
        await self._guard(self.c._send(response))

    async def send(self, data: bytes) -> None:
        await self._guard(self.c._send(h11.Data(data=data)))

    async def end(self, *, clean: bool) -> None:
        if clean:
            try:
                await self._guard(self.c._send(h11.EndOfMessage()))
                return
            except (ClientGone, h11.LocalProtocolError):
                pass
        # An incomplete body must look incomplete to the client: close without the last chunk.
        self.c.closing = True
        await self.c.stream.aclose()

    async def _guard(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ClientGone from exc


class _DisconnectWatch:
    """relay.ClientPort.watch_disconnect for the h11 server: the connection's reader calls
    `on_gone` when it sees EOF; no task of its own."""

    def __init__(self, connection: _Connection, on_gone: Callable[[], None]) -> None:
        self.c = connection
        self.on_gone = on_gone

    async def __aenter__(self) -> None:
        if self.c._eof:
            self.on_gone()
        else:
            self.c._on_gone = self.on_gone

    async def __aexit__(self, *exc_info: object) -> None:
        self.c._on_gone = None


def _head_size(request: h11.Request) -> int:
    return len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers)
