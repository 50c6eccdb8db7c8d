"""ASGI: the proxy as an ASGI app, and as middleware in front of an existing ASGI app.

Owns: translating ASGI messages to the relay's client port (`http.request` chunks in,
`http.response.*` out, `http.disconnect` as the client leaving), and lifespan (the upstream
pool is closed and sinks are flushed at shutdown).

    app = MeshProxyApp.from_environment()                 # uvicorn meshproxy.adapters.asgi:app
    app = MeshProxyMiddleware(existing_app, proxy)        # proxy paths here, the rest to the app

Does not own: any decision (the exchange) or the request flow (relay.handle_request). The same
core object decides in every adapter, so an app behind this middleware behaves exactly like
`meshproxy serve`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import anyio

from meshproxy_core.config import ProxyConfig
from meshproxy_core.exchange import Proxy, Reject
from meshproxy_core.records import UsageSink
from meshproxy_core.routes import claims_path

from .admin import AdminAPI
from .live_settings import LiveSettings
from .recording import Recorder
from .relay import (
    ClientGone,
    UpstreamPool,
    UpstreamTimeouts,
    handle_request,
    polling_for_disconnect,
)

__all__ = ["MeshProxyApp", "MeshProxyMiddleware", "app"]

log = logging.getLogger("meshproxy.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MeshProxyApp:
    """An ASGI app that serves the proxy paths (every other path gets the proxy's 404)."""

    def __init__(
        self,
        proxy: Proxy,
        *,
        sinks: Sequence[UsageSink] = (),
        recorder: Recorder | None = None,
        timeouts: UpstreamTimeouts | None = None,
        clock: Callable[[], float] = time.time,
        admin: AdminAPI | None = None,
        settings: LiveSettings | None = None,
    ) -> None:
        self.proxy = proxy
        self.admin = admin  # answers /admin/… when set
        self.settings = settings  # when set, settings changed at run time replace `proxy`
        self.recorder = recorder or Recorder(sinks)
        self.clock = clock
        self._timeouts = timeouts
        self._pool: UpstreamPool | None = None

    @classmethod
    def from_environment(cls, env: MutableMapping[str, str] | None = None) -> MeshProxyApp:
        """Configured like `meshproxy serve` (see `cli.components_from_environment`)."""
        from .cli import admin_from_environment, components_from_environment

        env = os.environ if env is None else env
        proxy, recorder = components_from_environment(env)
        # the admin API and run-time settings, when the ledger's database is there
        proxy, admin, settings = admin_from_environment(env, proxy, recorder)
        return cls(proxy, recorder=recorder, admin=admin, settings=settings)

    @property
    def pool(self) -> UpstreamPool:
        if self._pool is None:  # created on first use: an app may never see a lifespan event
            self._pool = UpstreamPool(timeouts=self._timeouts)
        return self._pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _serve_lifespan(receive, send, on_shutdown=self.aclose)
        else:  # websockets: nothing to proxy
            await send({"type": "websocket.close", "code": 1008})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.admin is not None and AdminAPI.claims(scope["path"]):
            await self._serve_admin(self.admin, scope, receive, send)
            return
        if self.settings is not None and self.settings.stale():
            # Changed on this replica or another: the next request runs on the new settings.
            self.proxy = await anyio.to_thread.run_sync(self.settings.reload)
        exchange = self.proxy.exchange(now=self.clock())
        port = _ASGIPort(receive, send)
        headers = [(bytes(k).lower(), bytes(v)) for k, v in scope["headers"]]
        context = self.recorder.start(headers)
        try:
            await handle_request(
                exchange,
                scope["method"],
                _target(scope),
                headers,
                port,
                self.pool,
                clock=self.clock,
                settle=lambda record: self.recorder.settle(context, record),
                ownership=self.recorder.ownership,
                upstream_headers=lambda forwarded: self.recorder.upstream_headers(
                    context, forwarded
                ),
            )
        finally:
            self.recorder.emit(context, exchange.record)

    async def _serve_admin(
        self, admin: AdminAPI, scope: Scope, receive: Receive, send: Send
    ) -> None:
        port = _ASGIPort(receive, send)
        try:
            body = await port.read_body(admin.max_body_bytes)
        except ClientGone:
            return
        headers = [(bytes(k).lower(), bytes(v)) for k, v in scope["headers"]]
        # database I/O: off the event loop
        status, out, data = await anyio.to_thread.run_sync(
            admin.handle, scope["method"], _target(scope), headers, body
        )
        try:
            await port.reject(Reject(status=status, headers=out, body=data))
        except ClientGone:
            return

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
        if self.settings is not None:
            self.settings.store.close()
        self.recorder.close()


class MeshProxyMiddleware:
    """Serves the proxy paths (under the config's `mount`, e.g. "/llm") and passes every other
    request, and every lifespan message, to the wrapped app untouched."""

    def __init__(
        self,
        app: ASGIApp,
        proxy: Proxy | ProxyConfig,
        *,
        sinks: Sequence[UsageSink] = (),
        timeouts: UpstreamTimeouts | None = None,
    ) -> None:
        if isinstance(proxy, ProxyConfig):
            from .cli import build_proxy

            proxy = build_proxy(proxy)
        self.app = app
        self.proxy_app = MeshProxyApp(proxy, sinks=sinks, timeouts=timeouts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and claims_path(
            scope["path"], mount=self.proxy_app.proxy.config.mount
        ):
            await self.proxy_app.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, _watch_shutdown(receive, self.proxy_app.aclose), send)
        else:
            await self.app(scope, receive, send)


class _ASGIPort:
    """The client side of one request over ASGI (relay.ClientPort)."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._disconnected = False

    async def read_body(self, max_bytes: int) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnected = True
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def reject(self, reject: Reject) -> None:
        await self.start(reject.status, reject.headers)
        await self.send(reject.body)
        await self.end(clean=True)

    def watch_disconnect(
        self, on_gone: Callable[[], None]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return polling_for_disconnect(self._wait_disconnected, on_gone)

    async def _wait_disconnected(self) -> None:
        while not self._disconnected:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnected = True

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self._guarded({"type": "http.response.start", "status": status, "headers": headers})

    async def send(self, data: bytes) -> None:
        await self._guarded({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, *, clean: bool) -> None:
        if clean:
            await self._guarded({"type": "http.response.body", "body": b"", "more_body": False})
        # Not clean: return without completing the response; ASGI servers then close the
        # connection, so the client sees the body is incomplete.

    async def _guarded(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError as exc:  # ASGI 2.4: send after the client left raises an OSError
            raise ClientGone from exc


def _target(scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = bytes(raw).decode("latin-1") if raw else scope["path"]
    query = scope.get("query_string", b"")
    return f"{path}?{bytes(query).decode('latin-1')}" if query else path


async def _serve_lifespan(
    receive: Receive, send: Send, *, on_shutdown: Callable[[], Awaitable[None]]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _watch_shutdown(receive: Receive, on_shutdown: Callable[[], Awaitable[None]]) -> Receive:
    """The wrapped app's lifespan receive, closing the proxy's pool when shutdown arrives."""

    async def wrapped() -> Message:
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await on_shutdown()
        return message

    return wrapped


class _LazyApp:
    """`meshproxy.adapters.asgi:app` for `uvicorn`/`hypercorn`/`granian`: configured from the
    environment on first use, so importing the module reads nothing."""

    def __init__(self) -> None:
        self._app: MeshProxyApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = MeshProxyApp.from_environment()
        await self._app(scope, receive, send)


app = _LazyApp()
