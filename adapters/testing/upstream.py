"""The fake upstream server: a real HTTP/1.1 server on anyio + h11 that impersonates OpenAI and
Anthropic on 127.0.0.1, records what it receives and can be scripted to misbehave.

Owns: sockets and HTTP framing (keep-alive, Content-Length and chunked request bodies, chunked
streaming replies), the log of received requests and served exchanges, the queue of scripted
replies and their faults (delays, hangs, resets, compression, replayed recordings), the control
endpoints under `/__fake__/`, and the two ways to run it: in-process (`FakeUpstream.running`,
`serve_simulated_provider`) and as a subprocess (`FakeUpstreamProcess`).

Does not own: what a generated reply looks like or what usage it reports (scenarios.py). It never
binds or connects anywhere but a loopback address.

Control endpoints (JSON; not recorded in `received`):
  GET  /__fake__/received   -> {"received": [ReceivedRequest.to_json(), ...]}
  GET  /__fake__/served     -> {"served": [ServedExchange.to_json(), ...]}
  POST /__fake__/reset      -> clears both logs, the script queue and stored batches
  POST /__fake__/script     <- one Scripted.to_json() object or a list of them
  GET  /__fake__/images/... -> a tiny PNG (the URLs DALL·E replies point at)
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import itertools
import json
import queue
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import anyio
import anyio.abc
import attrs
import h11

from meshproxy.adapters.testing.scenarios import (
    TINY_PNG_B64,
    ReceivedRequest,
    Reply,
    Simulator,
    error_reply,
    provider_of,
)

__all__ = [
    "FakeUpstream",
    "FakeUpstreamProcess",
    "Scripted",
    "ServedExchange",
    "recording",
    "serve_simulated_provider",
]

_CONTROL_PREFIX = "/__fake__/"
_MAX_BODY = 64 * 1024 * 1024  # a fake has no business with larger uploads
_READ_SIZE = 65536


def recording(name: str) -> bytes:
    """The bytes of a file shipped in `meshproxy/adapters/testing/recordings/`."""
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"not a recording name: {name!r}")
    return resources.files("meshproxy.adapters.testing").joinpath("recordings", name).read_bytes()


def _to_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _chunks_converter(value: Iterable[bytes | str] | None) -> tuple[bytes, ...] | None:
    return None if value is None else tuple(_to_bytes(v) for v in value)


def _headers_converter(
    value: Iterable[tuple[str, str]] | Mapping[str, str],
) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k).lower(), str(v)) for k, v in items)


@attrs.frozen
class Scripted:
    """A reply that overrides the next request whose path ends with `path` (any path if None).

    The body is the first of these that is set: `replay` (a recordings file name), `chunks`
    (sent as separate writes with chunked transfer encoding), `json_body`, `body`. If none is set
    the fake GENERATES its normal reply and only the faults/overrides below apply, which is how a
    test cuts a realistic stream short.

    Faults count "pieces": chunks, SSE events of a replay or generated stream, or the single body.
      delay_before_head      seconds to wait before sending the status line
      delay_between_chunks   seconds between pieces
      hang_after_chunks      after N pieces stop sending and hold the connection open until the
                             client goes away (N=0: hang right after the head)
      reset_after_chunks     after N pieces close the socket abruptly (TCP RST) without
                             finishing the body
      content_encoding       "gzip" or "deflate": compress the body and set Content-Encoding
                             (streams are flushed per piece so they stay incremental)
    `status` defaults to 200, or to the status in a replayed file name like `..._error_429_...`.
    Content-Type defaults to text/event-stream for `chunks` and `.sse` replays (sent chunked),
    application/json otherwise; any `headers` given replace the defaults of the same name.
    `usage` is recorded in `ServedExchange.usage` for scripted bodies (the fake does not parse
    them); for generated replies the generated usage is recorded.
    """

    path: str | None = None
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_headers_converter)
    body: bytes | None = attrs.field(default=None, converter=attrs.converters.optional(_to_bytes))
    json_body: Any = None
    chunks: tuple[bytes, ...] | None = attrs.field(default=None, converter=_chunks_converter)
    replay: str | None = attrs.field(default=None)
    delay_before_head: float = 0.0
    delay_between_chunks: float = 0.0
    hang_after_chunks: int | None = None
    reset_after_chunks: int | None = None
    content_encoding: str | None = attrs.field(default=None)
    usage: dict[str, Any] | None = None

    @content_encoding.validator
    def _check_encoding(self, _attribute: Any, value: str | None) -> None:
        if value not in (None, "gzip", "deflate"):
            raise ValueError("content_encoding must be 'gzip', 'deflate' or None")

    @replay.validator
    def _check_replay(self, _attribute: Any, value: str | None) -> None:
        # Fail where the script is written, not later inside the server's connection task.
        if value is not None:
            recording(value)

    @property
    def generates(self) -> bool:
        """True when no body is scripted, so the generated reply is used."""
        return (
            self.replay is None
            and self.chunks is None
            and self.json_body is None
            and self.body is None
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = attrs.asdict(self, recurse=False)
        doc["headers"] = [list(pair) for pair in self.headers]
        if self.body is not None:
            doc["body"] = None
            doc["body_b64"] = base64.b64encode(self.body).decode("ascii")
        if self.chunks is not None:
            doc["chunks"] = None
            doc["chunks_b64"] = [base64.b64encode(c).decode("ascii") for c in self.chunks]
        return doc

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scripted:
        doc = dict(data)
        if "body_b64" in doc:
            doc["body"] = base64.b64decode(doc.pop("body_b64"))
        if "chunks_b64" in doc:
            doc["chunks"] = [base64.b64decode(c) for c in doc.pop("chunks_b64")]
        doc["headers"] = [tuple(pair) for pair in doc.get("headers", ())]
        return cls(**doc)


@attrs.frozen
class ServedExchange:
    """One reply the fake decided to send, with the usage numbers it put on the wire.

    `usage` is provider-shaped and raw (for a stream: the final merged value a client holds,
    e.g. Anthropic's message_start usage with message_delta's cumulative counts applied); None
    when the reply carries no usage (DALL·E, speech bytes, chat streams without include_usage).
    `item_usage` maps custom_id -> usage for Anthropic batch results. `fault` names a scripted
    fault ("hang" or "reset") that kept the reply from finishing.
    """

    index: int
    provider: str
    kind: str
    method: str
    path: str
    status: int
    model: str | None
    stream: bool
    usage: dict[str, Any] | None
    item_usage: dict[str, dict[str, Any]] | None = None
    scripted: bool = False
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServedExchange:
        return cls(**data)


@attrs.frozen
class _Outgoing:
    """A reply with its faults resolved: exactly what `_send` will do."""

    status: int
    headers: tuple[tuple[str, str], ...]
    pieces: tuple[bytes, ...]
    chunked: bool
    delay_before_head: float = 0.0
    delay_between_chunks: float = 0.0
    hang_after: int | None = None
    reset_after: int | None = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _compress(pieces: Sequence[bytes], encoding: str, chunked: bool) -> tuple[bytes, ...]:
    # HTTP "deflate" is the zlib format (RFC 9110 §8.4.1.2); gzip is wbits 16+15.
    compressor = zlib.compressobj(wbits=31 if encoding == "gzip" else 15)
    if not chunked:
        return (compressor.compress(b"".join(pieces)) + compressor.flush(),)
    # Sync-flush every piece so a streaming client can decode each event as it arrives.
    out = [compressor.compress(p) + compressor.flush(zlib.Z_SYNC_FLUSH) for p in pieces]
    if out:
        out[-1] += compressor.flush()
    else:
        out.append(compressor.flush())
    return tuple(out)


def _split_sse(data: bytes) -> tuple[bytes, ...]:
    """Split a recording into events at blank lines, keeping every byte (so faults and delays
    apply per event while the concatenation is exactly the file)."""
    for sep in (b"\r\n\r\n", b"\n\n", b"\r\r"):
        if sep in data:
            break
    else:
        return (data,)
    pieces: list[bytes] = []
    start = 0
    while True:
        index = data.find(sep, start)
        if index < 0:
            break
        pieces.append(data[start : index + len(sep)])
        start = index + len(sep)
    if start < len(data):
        pieces.append(data[start:])
    return tuple(pieces)


def _replay_status(name: str) -> int:
    parts = name.split("_")
    for before, value in itertools.pairwise(parts):
        if before == "error" and value.isdigit() and len(value) == 3:
            return int(value)
    return 200


def _content_type_for(name: str) -> str:
    if name.endswith(".sse"):
        return "text/event-stream; charset=utf-8"
    if name.endswith(".jsonl"):
        return "application/binary"
    return "application/json"


class FakeUpstream:
    """The fake provider. Mutable state (logs, script queue) is only touched from the event loop
    that serves it; read `received`/`served` from that loop or via the control endpoints."""

    def __init__(
        self,
        *,
        chunks: int = 8,
        chunk_delay: float = 0.0,
        openai_key: str | None = None,
        anthropic_key: str | None = None,
        clock: Callable[[], float] = time.time,
        log_limit: int | None = None,
    ) -> None:
        self.simulator = Simulator(chunks=chunks)
        # A long-running simulated provider must not grow without bound; tests keep everything.
        self.log_limit = log_limit
        self._served_count = 0
        self.chunk_delay = chunk_delay
        # When set, a request must carry exactly this key or it gets the provider's 401.
        self.openai_key = openai_key
        self.anthropic_key = anthropic_key
        self._clock = clock
        self.received: list[ReceivedRequest] = []
        self.served: list[ServedExchange] = []
        # Replies the client (the proxy) abandoned before their end: (path, epoch seconds when
        # the fake noticed). This is how tests see an upstream request being cancelled.
        self.abandoned: list[tuple[str, float]] = []
        self._scripts: list[Scripted] = []
        self.host = "127.0.0.1"
        self.port = 0

    # Public API -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`, without `/v1` (Anthropic's base URL shape)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def script(self, *scripted: Scripted) -> None:
        """Queue scripted replies; each overrides the next request that matches its path."""
        self._scripts.extend(scripted)

    def reset(self) -> None:
        self.received.clear()
        self.served.clear()
        self.abandoned.clear()
        self._served_count = 0
        self._scripts.clear()
        self.simulator.reset()

    def last_served(self, kind: str | None = None) -> ServedExchange:
        """The most recent served exchange (of `kind`, e.g. 'anthropic.messages')."""
        for exchange in reversed(self.served):
            if kind is None or exchange.kind == kind:
                return exchange
        raise LookupError(f"nothing served of kind {kind!r}")

    def expected_usage(self, kind: str | None = None) -> dict[str, Any] | None:
        """The usage the fake last reported (for `kind`), to compare with the proxy's record."""
        return self.last_served(kind).usage

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, host: str = "127.0.0.1", port: int = 0, **options: Any
    ) -> AsyncIterator[FakeUpstream]:
        """Serve in the current event loop for the duration of the block."""
        fake = cls(**options)
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            await tg.start(fake.serve, host, port)
            try:
                yield fake
            except Exception as exc:
                # Re-raised below, outside the task group, so a failing test sees its own
                # exception rather than an ExceptionGroup wrapping it.
                failure = exc
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: anyio.abc.TaskStatus[FakeUpstream] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on host:port (loopback only) and serve until cancelled."""
        if not _is_loopback(host):
            raise ValueError(f"the fake upstream only listens on loopback, not {host!r}")
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        async with listener:
            sockname = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_address)
            self.host, self.port = str(sockname[0]), int(sockname[1])
            task_status.started(self)
            await listener.serve(self._handle_connection)

    # Connection handling ----------------------------------------------------------------------

    async def _handle_connection(self, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=256 * 1024)
        try:
            while True:
                keep_open = await self._one_exchange(conn, stream)
                if not keep_open or conn.our_state is not h11.DONE:
                    break
                if conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            pass  # the client went away; nothing to tell anyone
        except Exception as exc:  # a bug here must not take the whole server down
            print(f"fake upstream: connection error: {exc!r}", file=sys.stderr, flush=True)
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def _next_event(self, conn: h11.Connection, stream: anyio.abc.SocketStream) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if conn.they_are_waiting_for_100_continue:
                await stream.send(conn.send(h11.InformationalResponse(status_code=100)))
            try:
                data = await stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data = b""
            conn.receive_data(data)

    async def _one_exchange(self, conn: h11.Connection, stream: anyio.abc.SocketStream) -> bool:
        """Read one request, answer it. False when the connection must close."""
        try:
            event = await self._next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed):
                return False
            assert isinstance(event, h11.Request)
            body = bytearray()
            while True:
                part = await self._next_event(conn, stream)
                if isinstance(part, h11.Data):
                    body += part.data
                    if len(body) > _MAX_BODY:
                        raise h11.RemoteProtocolError("body too large", 413)
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return False  # closed mid-body
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                reply = _Outgoing(
                    status, (("content-type", "text/plain"),), (b"bad request",), False
                )
                with contextlib.suppress(Exception):
                    await self._send(conn, stream, reply)
            return False

        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        request = ReceivedRequest(
            method=event.method.decode("latin-1"),
            path=path,
            query=query,
            headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers),
            body=bytes(body),
        )
        host = request.header("host") or f"{self.host}:{self.port}"
        base_url = f"http://{host}"
        if path.startswith(_CONTROL_PREFIX):
            return await self._send(conn, stream, self._control(request))
        self.received.append(request)
        self._trim(self.received)
        out = self._answer(request, base_url)
        try:
            finished = await self._send(conn, stream, out)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self.abandoned.append((path, time.time()))
            raise
        if out.hang_after is not None:  # a hang ends only when the client gives up
            self.abandoned.append((path, time.time()))
        return finished

    # Deciding what to answer ------------------------------------------------------------------

    def _take_script(self, path: str) -> Scripted | None:
        for index, scripted in enumerate(self._scripts):
            if scripted.path is None or path.endswith(scripted.path):
                return self._scripts.pop(index)
        return None

    def _auth_failure(self, request: ReceivedRequest) -> Reply | None:
        provider = provider_of(request.path, request.headers)
        expected = self.openai_key if provider == "openai" else self.anthropic_key
        if expected is None:
            return None
        if provider == "openai":
            given = (request.header("authorization") or "").removeprefix("Bearer ")
        else:
            given = request.header("x-api-key") or (request.header("authorization") or "")
            given = given.removeprefix("Bearer ")
        if given == expected:
            return None
        message = "Incorrect API key provided." if provider == "openai" else "invalid x-api-key"
        return error_reply(
            provider, 401, message, request_id="req_fake_auth", code="invalid_api_key"
        )

    def _answer(self, request: ReceivedRequest, base_url: str) -> _Outgoing:
        scripted = self._take_script(request.path)
        provider = provider_of(request.path, request.headers)
        if scripted is not None and not scripted.generates:
            # A scripted body stands for whatever the upstream did, so no key check applies.
            reply = self._scripted_reply(scripted, provider)
        else:
            reply = self._auth_failure(request) or self.simulator.reply(
                request, now=self._clock(), base_url=base_url
            )
        if scripted is None:
            self._log(request, reply, scripted=False, fault=None)
            return _Outgoing(
                reply.status,
                reply.headers,
                reply.pieces,
                reply.chunked,
                delay_between_chunks=self.chunk_delay if reply.chunked else 0.0,
            )

        names = {name for name, _ in scripted.headers}
        headers = tuple(h for h in reply.headers if h[0] not in names) + scripted.headers
        pieces = reply.pieces
        if scripted.content_encoding is not None:
            pieces = _compress(pieces, scripted.content_encoding, reply.chunked)
            headers = (*headers, ("content-encoding", scripted.content_encoding))
        status = scripted.status or reply.status
        fault = None
        if scripted.reset_after_chunks is not None:
            fault = "reset"
        elif scripted.hang_after_chunks is not None:
            fault = "hang"
        usage = scripted.usage if scripted.usage is not None else reply.usage
        logged = attrs.evolve(reply, status=status, usage=usage)
        self._log(request, logged, scripted=True, fault=fault)
        return _Outgoing(
            status,
            headers,
            pieces,
            reply.chunked,
            delay_before_head=scripted.delay_before_head,
            delay_between_chunks=scripted.delay_between_chunks,
            hang_after=scripted.hang_after_chunks,
            reset_after=scripted.reset_after_chunks,
        )

    def _scripted_reply(self, scripted: Scripted, provider: str) -> Reply:
        """The scripted body as a Reply (status and faults are applied by the caller)."""
        status = scripted.status or 200
        if scripted.replay is not None:
            data = recording(scripted.replay)
            status = scripted.status or _replay_status(scripted.replay)
            content_type = _content_type_for(scripted.replay)
            stream = content_type.startswith("text/event-stream")
            pieces = _split_sse(data) if stream else (data,)
        elif scripted.chunks is not None:
            content_type, stream, pieces = "text/event-stream", True, scripted.chunks
        elif scripted.json_body is not None:
            body = json.dumps(scripted.json_body).encode("utf-8")
            content_type, stream, pieces = "application/json", False, (body,)
        else:
            assert scripted.body is not None
            content_type, stream, pieces = "application/json", False, (scripted.body,)
        headers = (("content-type", content_type),)
        # Streams go out chunked (one write per piece), like a real provider's SSE.
        return Reply(
            status, headers, pieces, stream, provider, f"{provider}.scripted", None, stream
        )

    def _log(
        self, request: ReceivedRequest, reply: Reply, *, scripted: bool, fault: str | None
    ) -> None:
        self._served_count += 1
        self.served.append(
            ServedExchange(
                index=self._served_count - 1,
                provider=reply.provider,
                kind=reply.kind,
                method=request.method,
                path=request.path,
                status=reply.status,
                model=reply.model,
                stream=reply.stream,
                usage=reply.usage,
                item_usage=reply.item_usage,
                scripted=scripted,
                fault=fault,
            )
        )
        self._trim(self.served)

    def _trim(self, log: list[Any]) -> None:
        if self.log_limit is not None and len(log) > self.log_limit:
            del log[: len(log) - self.log_limit]

    def _control(self, request: ReceivedRequest) -> _Outgoing:
        action = request.path.removeprefix(_CONTROL_PREFIX)
        doc: Any
        status = 200
        if request.method == "GET" and action == "received":
            doc = {"received": [r.to_json() for r in self.received]}
        elif request.method == "GET" and action == "served":
            doc = {"served": [s.to_json() for s in self.served]}
        elif request.method == "GET" and action == "abandoned":
            doc = {"abandoned": [list(item) for item in self.abandoned]}
        elif request.method == "POST" and action == "reset":
            self.reset()
            doc = {"ok": True}
        elif request.method == "POST" and action == "script":
            try:
                data = json.loads(request.body)
                items = data if isinstance(data, list) else [data]
                self.script(*(Scripted.from_json(item) for item in items))
                doc = {"ok": True, "queued": len(self._scripts)}
            except (ValueError, TypeError, KeyError, OSError) as exc:
                status, doc = 400, {"error": f"bad script: {exc}"}
        elif request.method == "GET" and action.startswith("images/"):
            png = base64.b64decode(TINY_PNG_B64)
            return _Outgoing(200, (("content-type", "image/png"),), (png,), False)
        else:
            status, doc = 404, {"error": "unknown control endpoint"}
        body = json.dumps(doc).encode("utf-8")
        return _Outgoing(status, (("content-type", "application/json"),), (body,), False)

    # Sending ----------------------------------------------------------------------------------

    async def _send(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream, out: _Outgoing
    ) -> bool:
        """Send `out`, applying its faults. False when the connection must not be reused."""
        if out.delay_before_head:
            await anyio.sleep(out.delay_before_head)
        headers = [("server", "meshproxy-fake-upstream"), *out.headers]
        if not out.chunked:
            headers.append(("content-length", str(sum(len(p) for p in out.pieces))))
        # With no Content-Length, h11 uses chunked transfer encoding for HTTP/1.1 clients.
        await stream.send(conn.send(h11.Response(status_code=out.status, headers=headers)))
        for index, piece in enumerate(out.pieces):
            if await self._fault(stream, out, index):
                return False
            if index and out.delay_between_chunks:
                await anyio.sleep(out.delay_between_chunks)
            if piece:
                await stream.send(conn.send(h11.Data(data=piece)))
        if await self._fault(stream, out, len(out.pieces)):
            return False
        await stream.send(conn.send(h11.EndOfMessage()))
        return True

    async def _fault(self, stream: anyio.abc.SocketStream, out: _Outgoing, sent: int) -> bool:
        if out.reset_after == sent:
            _abort_with_rst(stream)
            await stream.aclose()
            return True
        if out.hang_after == sent:
            # Hold the connection open, sending nothing, until the client gives up. Reading
            # (and discarding) notices the client closing, so the task ends with it.
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await stream.receive(_READ_SIZE)
            return True
        return False


def _abort_with_rst(stream: anyio.abc.SocketStream) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN: an abrupt reset.
    with contextlib.suppress(Exception):
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def serve_simulated_provider(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: anyio.abc.TaskStatus[FakeUpstream] = anyio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Run the simulated provider in the caller's event loop: `fake = await tg.start(
    serve_simulated_provider)`; then point the proxy at `fake.base_url` (+ "/v1" for OpenAI).
    Its logs keep the last 1000 entries unless `log_limit` says otherwise."""
    options.setdefault("log_limit", 1000)
    await FakeUpstream(**options).serve(host, port, task_status=task_status)


class FakeUpstreamProcess:
    """Run the fake as `python -m meshproxy.adapters.testing` for synchronous tests.

    with FakeUpstreamProcess() as fake:
        client = openai.OpenAI(base_url=fake.base_url + "/v1", api_key="sk-test")
        ...
        assert fake.received()[0].header("authorization") == "Bearer sk-test"
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        chunks: int = 8,
        chunk_delay: float = 0.0,
        openai_key: str | None = None,
        anthropic_key: str | None = None,
        start_timeout: float = 15.0,
        request_timeout: float = 5.0,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the fake upstream only listens on loopback, not {host!r}")
        self.host = host
        self.port = port
        self.args = ["--host", host, "--port", str(port), "--chunks", str(chunks)]
        self.args += ["--chunk-delay", str(chunk_delay)]
        if openai_key is not None:
            self.args += ["--openai-key", openai_key]
        if anthropic_key is not None:
            self.args += ["--anthropic-key", anthropic_key]
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> FakeUpstreamProcess:
        self._stderr = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "meshproxy.adapters.testing", *self.args]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL
        )
        assert self.process.stdout is not None
        lines: queue.Queue[bytes] = queue.Queue()
        # A thread reads the first line so a hung child cannot block the test past the timeout.
        stdout = self.process.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=self.start_timeout).decode("utf-8", "replace").strip()
        except queue.Empty:
            line = ""
        prefix = "listening on http://"
        if not line.startswith(prefix):
            stderr = self._read_stderr()
            self.__exit__(None, None, None)
            raise RuntimeError(f"fake upstream did not start: {line!r} {stderr}")
        self.port = int(line.removeprefix(prefix).rsplit(":", 1)[1])
        return self

    def __exit__(self, *exc_info: object) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-2000:]

    def _call(self, method: str, action: str, payload: Any = None) -> Any:
        # http.client, not urllib: urllib honours *_proxy variables, and this must stay local.
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.request_timeout)
        try:
            body = None if payload is None else json.dumps(payload).encode("utf-8")
            headers = {"content-type": "application/json"} if body is not None else {}
            conn.request(method, _CONTROL_PREFIX + action, body=body, headers=headers)
            response = conn.getresponse()
            data = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"fake upstream control {action}: {data}")
            return data
        finally:
            conn.close()

    def received(self) -> list[ReceivedRequest]:
        return [ReceivedRequest.from_json(r) for r in self._call("GET", "received")["received"]]

    def served(self) -> list[ServedExchange]:
        return [ServedExchange.from_json(s) for s in self._call("GET", "served")["served"]]

    def last_served(self, kind: str | None = None) -> ServedExchange:
        for exchange in reversed(self.served()):
            if kind is None or exchange.kind == kind:
                return exchange
        raise LookupError(f"nothing served of kind {kind!r}")

    def abandoned(self) -> list[tuple[str, float]]:
        """Replies the proxy abandoned before their end: (path, epoch seconds)."""
        return [(path, at) for path, at in self._call("GET", "abandoned")["abandoned"]]

    def reset(self) -> None:
        self._call("POST", "reset")

    def script(self, *scripted: Scripted) -> None:
        self._call("POST", "script", [s.to_json() for s in scripted])
