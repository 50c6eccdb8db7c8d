"""Async relay of one forwarded request: upstream through httpcore, downstream through a port.

Owns: the I/O of talking to the provider (an httpcore async connection pool, timeouts, mapping
httpcore's exceptions to an `Ending`) and pumping bytes between it and any async downstream (the
h11 server, ASGI). Both async adapters call `relay()`, so the order of exchange calls, and what
happens on every kind of failure, is written once.

Does not own: any decision. The exchange decides what the client sees and what the record says;
this module only reads, calls, writes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import anyio
import attrs
import httpcore

from meshproxy_core.capture import CaptureTap
from meshproxy_core.exchange import CheckOwnership, Exchange, Forward, Reject
from meshproxy_core.headers import content_length
from meshproxy_core.records import Ending, UsageRecord

from .upstream_transport import backend_for_running_loop

__all__ = [
    "ClientGone",
    "ClientPort",
    "Downstream",
    "UpstreamPool",
    "UpstreamTimeouts",
    "handle_request",
    "polling_for_disconnect",
    "relay",
]

Clock = Callable[[], float]
# Awaited with the finished record before the response's end is sent (ledger durability).
Settle = Callable[[UsageRecord], Awaitable[None]]


class ClientGone(Exception):
    """The downstream client went away while the response was being written."""


class Downstream(Protocol):
    """Where the response goes: implemented by each async adapter."""

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    async def send(self, data: bytes) -> None: ...

    async def end(self, *, clean: bool) -> None: ...


class ClientPort(Downstream, Protocol):
    """The client side of one request, as an async adapter sees it."""

    async def read_body(self, max_bytes: int) -> bytes | None:
        """The whole request body, or None when it is longer than `max_bytes`."""
        ...

    async def reject(self, reject: Reject) -> None:
        """Send a refusal (the body may still be unread)."""
        ...

    def watch_disconnect(
        self, on_gone: Callable[[], None]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """While the block runs (the response is relayed), call `on_gone` once if the client
        goes away. An adapter that must poll for it uses `polling_for_disconnect`."""
        ...


@contextlib.asynccontextmanager
async def polling_for_disconnect(
    wait_disconnected: Callable[[], Awaitable[None]], on_gone: Callable[[], None]
) -> AsyncIterator[None]:
    """`ClientPort.watch_disconnect` for a port that learns of a disconnect only by waiting
    for it (ASGI's `receive()`): a watcher task for the duration of the block."""
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            await wait_disconnected()
            on_gone()

        group.start_soon(watch)
        try:
            yield
        finally:
            group.cancel_scope.cancel()


@attrs.frozen
class UpstreamTimeouts:
    connect: float = 10.0
    # Between two reads of the upstream body, not the whole response: a long stream is fine as
    # long as it keeps moving. Non-streaming reasoning requests can think for minutes.
    read: float = 600.0
    write: float = 60.0
    pool: float = 30.0


def upstream_request(forward: Forward, timeouts: UpstreamTimeouts) -> dict[str, Any]:
    """httpcore's arguments for `forward`, for the async pool here and WSGI's sync pool."""
    t = timeouts
    return {
        "method": forward.method,
        "url": forward.url,
        "headers": forward.headers,
        "content": forward.body if forward.body or forward.method != "GET" else None,
        "extensions": {
            "timeout": {"connect": t.connect, "read": t.read, "write": t.write, "pool": t.pool}
        },
    }


class FinalBytes:
    """Holds back the bytes that complete a fixed-length body. They are the response's end, so
    they wait until the record is settled (durable), as a chunked body's last chunk does."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._remaining = content_length(headers)
        self.held = b""

    def pass_on(self, out: bytes) -> bytes:
        """What of `out` may be sent now."""
        if self._remaining is None:
            return out
        if len(out) >= self._remaining:
            self.held += out
            return b""
        self._remaining -= len(out)
        return out


class UpstreamPool:
    """Keep-alive httpcore pools shared by every exchange of one adapter instance.

    Several small pools rather than one large one: httpcore's pool re-examines every connection
    and queued request (with a readability syscall per idle connection) each time a request
    starts or ends, so one pool of hundreds of connections spends its CPU on bookkeeping under
    load. Shards of 32 are created as concurrency grows, and each request goes to the shard
    with the fewest requests in flight: one request at a time keeps reusing one connection,
    a thousand open streams spread over 32 shards.
    """

    SHARD_SIZE = 32

    def __init__(
        self, *, timeouts: UpstreamTimeouts | None = None, max_connections: int = 10_000
    ) -> None:
        self.timeouts = timeouts or UpstreamTimeouts()
        self._max_shards = max(1, -(-max_connections // self.SHARD_SIZE))
        self._pools: list[httpcore.AsyncConnectionPool] = []
        self._in_flight: list[int] = []

    def _pick(self) -> int:
        best = min(range(len(self._pools)), key=self._in_flight.__getitem__, default=-1)
        full = best == -1 or self._in_flight[best] >= self.SHARD_SIZE
        if full and len(self._pools) < self._max_shards:
            self._pools.append(
                httpcore.AsyncConnectionPool(
                    max_connections=self.SHARD_SIZE,
                    keepalive_expiry=30.0,
                    retries=0,
                    network_backend=backend_for_running_loop(),
                )
            )
            self._in_flight.append(0)
            return len(self._pools) - 1
        return best

    @contextlib.asynccontextmanager
    async def stream(self, forward: Forward) -> AsyncIterator[httpcore.Response]:
        shard = self._pick()
        self._in_flight[shard] += 1
        try:
            async with self._pools[shard].stream(
                **upstream_request(forward, self.timeouts)
            ) as response:
                yield response
        finally:
            self._in_flight[shard] -= 1

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def _ending_for(exc: BaseException) -> Ending:
    if isinstance(exc, httpcore.TimeoutException):
        return Ending.TIMEOUT
    return Ending.UPSTREAM_FAILED


_UPSTREAM_ERRORS = (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError)


async def relay(
    exchange: Exchange,
    forward: Forward,
    pool: UpstreamPool,
    downstream: Downstream,
    *,
    clock: Clock = time.time,
    cancel_ending: Callable[[], Ending] = lambda: Ending.CLIENT_GONE,
    tap: CaptureTap | None = None,
    settle: Settle | None = None,
) -> None:
    """Send `forward` upstream and stream the answer to `downstream`.

    Always leaves `exchange.record` set, whatever happens, including cancellation (then the
    ending is `cancel_ending()`: the caller knows whether the client left or the proxy stops).
    """
    try:
        await _relay(exchange, forward, pool, downstream, clock, tap, settle)
    except anyio.get_cancelled_exc_class():
        exchange.abandon(cancel_ending(), now=clock())
        raise
    except ClientGone:
        exchange.abandon(Ending.CLIENT_GONE, now=clock())


async def _relay(
    exchange: Exchange,
    forward: Forward,
    pool: UpstreamPool,
    downstream: Downstream,
    clock: Clock,
    tap: CaptureTap | None,
    settle: Settle | None,
) -> None:
    head_sent = False
    try:
        async with pool.stream(forward) as response:
            head = exchange.response_head(response.status, response.headers)
            if tap is not None:
                tap.response_head(response.status, response.headers)
            await downstream.start(head.status, head.headers)
            head_sent = True
            final = FinalBytes(head.headers if settle is not None else [])
            ending = Ending.COMPLETE
            try:
                async for chunk in response.aiter_stream():
                    if tap is not None:
                        tap.response_data(chunk)  # the upstream bytes, before any decoding
                    out = final.pass_on(exchange.response_data(chunk))
                    if out:
                        await downstream.send(out)
            except _UPSTREAM_ERRORS as exc:
                ending = _ending_for(exc)
            tail = exchange.finish(ending, now=clock())
            if settle is not None and exchange.record is not None:
                await settle(exchange.record)
            if final.held or tail:
                await downstream.send(final.held + tail)
            # A cut stream that the exchange closed with an error event ends cleanly; any other
            # cut response is ended abruptly, so the client sees it is incomplete.
            await downstream.end(clean=ending is Ending.COMPLETE or bool(tail))
    except _UPSTREAM_ERRORS as exc:
        if head_sent:
            exchange.abandon(_ending_for(exc), now=clock())
            await downstream.end(clean=False)
            return
        reject = exchange.upstream_failed(_ending_for(exc), now=clock())
        await downstream.start(reject.status, reject.headers)
        await downstream.send(reject.body)
        await downstream.end(clean=True)


async def handle_request(
    exchange: Exchange,
    method: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    port: ClientPort,
    pool: UpstreamPool,
    *,
    clock: Clock = time.time,
    cancel_ending: Callable[[], Ending] = lambda: Ending.SHUTDOWN,
    tap: CaptureTap | None = None,
    settle: Settle | None = None,
    upstream_headers: Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]]
    | None = None,
    ownership: Callable[[Exchange, CheckOwnership], Awaitable[Reject | Forward]] | None = None,
) -> None:
    """One request from head to record, for any async adapter: the order of exchange calls,
    reading the body, refusing, relaying, and noticing a client that leaves mid-response.

    `cancel_ending` names why an outside cancellation happened (the adapter knows: shutdown).
    Always leaves `exchange.record` set.
    """
    client_left = False

    def ending() -> Ending:
        return Ending.CLIENT_GONE if client_left else cancel_ending()

    try:
        decision = exchange.request_head(
            method, target, headers, content_length=content_length(headers)
        )
        if isinstance(decision, Reject):
            await port.reject(decision)
            return
        body = await port.read_body(decision.max_bytes)
        if body is None:
            await port.reject(exchange.body_too_large())
            return
        forward = exchange.request_body(body)
        if isinstance(forward, CheckOwnership):
            forward = await (ownership or _nobody_owns)(exchange, forward)
        if isinstance(forward, Reject):
            await port.reject(forward)
            return
        if tap is not None:
            tap.request(method, target, headers, body)  # the client's body, before rewriting
        if upstream_headers is not None:
            forward = attrs.evolve(forward, headers=upstream_headers(forward.headers))
        with anyio.CancelScope() as relaying:

            def gone() -> None:
                nonlocal client_left
                client_left = True
                relaying.cancel()

            async with port.watch_disconnect(gone):
                await relay(
                    exchange,
                    forward,
                    pool,
                    port,
                    clock=clock,
                    cancel_ending=ending,
                    tap=tap,
                    settle=settle,
                )
    except anyio.get_cancelled_exc_class():
        exchange.abandon(ending(), now=clock())
        raise
    except (ClientGone, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
        exchange.abandon(Ending.CLIENT_GONE, now=clock())


async def _nobody_owns(exchange: Exchange, _question: CheckOwnership) -> Reject | Forward:
    """With no ownership store, nothing is owned: closed by default (meshproxy_core.ownership)."""
    return exchange.ownership_known(owner=None, owned_ids=())
