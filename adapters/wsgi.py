"""WSGI: the proxy as a WSGI app, and as middleware in front of an existing WSGI app.

Owns: translating WSGI (environ, `wsgi.input`, start_response, a generator body) to the exchange,
and the synchronous upstream I/O through an httpcore `ConnectionPool`. A client that goes away
makes the server `close()` the body generator: the upstream response is closed with it and the
record says `client_gone`.

    application = MeshProxyWSGI.from_environment()            # gunicorn meshproxy.adapters.wsgi:app
    app.wsgi_app = MeshProxyWSGIMiddleware(app.wsgi_app, proxy)  # Flask: proxy paths here

Does not own: any decision (the exchange). The order of exchange calls mirrors
`relay.handle_request`, written here synchronously because WSGI has no event loop.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import attrs
import httpcore

from meshproxy_core.config import ProxyConfig
from meshproxy_core.exchange import CheckOwnership, Exchange, Forward, Proxy, Reject
from meshproxy_core.records import Ending, UsageSink
from meshproxy_core.routes import claims_path

from .recording import Recorder, RequestContext
from .relay import FinalBytes, UpstreamTimeouts, upstream_request

__all__ = ["MeshProxyWSGI", "MeshProxyWSGIMiddleware", "app"]

log = logging.getLogger("meshproxy.wsgi")

Environ = MutableMapping[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_UPSTREAM_ERRORS = (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError)
_READ_SIZE = 65536


class MeshProxyWSGI:
    """A WSGI app that serves the proxy paths (every other path gets the proxy's 404)."""

    def __init__(
        self,
        proxy: Proxy,
        *,
        sinks: Sequence[UsageSink] = (),
        recorder: Recorder | None = None,
        timeouts: UpstreamTimeouts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.proxy = proxy
        self.recorder = recorder or Recorder(sinks)
        self.clock = clock
        self.timeouts = timeouts or UpstreamTimeouts()
        self.pool = httpcore.ConnectionPool(max_connections=256, keepalive_expiry=30.0)

    @classmethod
    def from_environment(cls, env: MutableMapping[str, str] | None = None) -> MeshProxyWSGI:
        """Configured like `meshproxy serve` (see `cli.components_from_environment`)."""
        from .cli import components_from_environment

        proxy, recorder = components_from_environment(os.environ if env is None else env)
        return cls(proxy, recorder=recorder)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        exchange = self.proxy.exchange(now=self.clock())
        headers = _headers(environ)
        context = self.recorder.start(headers)
        decision = exchange.request_head(
            environ["REQUEST_METHOD"],
            _target(environ),
            headers,
            content_length=_content_length(environ),
        )
        if isinstance(decision, Reject):
            return self._reject(exchange, context, decision, start_response)
        body = _read_body(environ, decision.max_bytes)
        if body is None:
            return self._reject(exchange, context, exchange.body_too_large(), start_response)
        forward = exchange.request_body(body)
        if isinstance(forward, CheckOwnership):
            forward = self.recorder.ownership_sync(exchange, forward)
        if isinstance(forward, Reject):
            return self._reject(exchange, context, forward, start_response)
        forward = attrs.evolve(
            forward, headers=self.recorder.upstream_headers(context, forward.headers)
        )
        return self._relay(exchange, context, forward, start_response)

    def _reject(
        self,
        exchange: Exchange,
        context: RequestContext,
        reject: Reject,
        start_response: StartResponse,
    ) -> list[bytes]:
        start_response(_status_line(reject.status), _native(reject.headers))
        self.recorder.emit(context, exchange.record)
        return [reject.body]

    def _relay(
        self,
        exchange: Exchange,
        context: RequestContext,
        forward: Forward,
        start_response: StartResponse,
    ) -> Iterator[bytes]:
        """The response body, as a generator: nothing upstream happens until the server iterates,
        and the server's `close()` (client gone) closes the upstream response too."""
        try:
            yield from self._stream(exchange, context, forward, start_response)
        finally:
            # Closed before the end (GeneratorExit) means the client left; a no-op otherwise.
            exchange.abandon(Ending.CLIENT_GONE, now=self.clock())
            self.recorder.emit(context, exchange.record)

    def _stream(
        self,
        exchange: Exchange,
        context: RequestContext,
        forward: Forward,
        start_response: StartResponse,
    ) -> Iterator[bytes]:
        head_sent = False
        try:
            with self.pool.stream(**upstream_request(forward, self.timeouts)) as response:
                head = exchange.response_head(response.status, response.headers)
                start_response(_status_line(head.status), _native(head.headers))
                head_sent = True
                final = FinalBytes(head.headers)
                ending = Ending.COMPLETE
                try:
                    for chunk in response.iter_stream():
                        out = final.pass_on(exchange.response_data(chunk))
                        if out:
                            yield out
                except _UPSTREAM_ERRORS as exc:
                    ending = _ending_for(exc)
                tail = exchange.finish(ending, now=self.clock())
                if exchange.record is not None:
                    self.recorder.settle_sync(context, exchange.record)
                if final.held or tail:
                    yield final.held + tail
                if ending is not Ending.COMPLETE and not tail:
                    # Cut and not closed with an error event: make the server drop the
                    # connection so the client sees the body is incomplete.
                    raise _TruncatedResponse
        except _UPSTREAM_ERRORS as exc:
            if head_sent:
                exchange.abandon(_ending_for(exc), now=self.clock())
                raise _TruncatedResponse from exc
            reject = exchange.upstream_failed(_ending_for(exc), now=self.clock())
            start_response(_status_line(reject.status), _native(reject.headers))
            yield reject.body

    def close(self) -> None:
        self.pool.close()
        self.recorder.close()


class MeshProxyWSGIMiddleware:
    """Serves the proxy paths (under the config's `mount`) and passes the rest to `app`."""

    def __init__(
        self, app: WSGIApp, proxy: Proxy | ProxyConfig, *, sinks: Sequence[UsageSink] = ()
    ) -> None:
        if isinstance(proxy, ProxyConfig):
            from .cli import build_proxy

            proxy = build_proxy(proxy)
        self.app = app
        self.proxy_app = MeshProxyWSGI(proxy, sinks=sinks)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if claims_path(path, mount=self.proxy_app.proxy.config.mount):
            return self.proxy_app(environ, start_response)
        return self.app(environ, start_response)


class _TruncatedResponse(Exception):
    """Raised from the body generator so the WSGI server aborts the connection."""


def _ending_for(exc: BaseException) -> Ending:
    return Ending.TIMEOUT if isinstance(exc, httpcore.TimeoutException) else Ending.UPSTREAM_FAILED


def _target(environ: Environ) -> str:
    # The raw request target, as the client sent it (gunicorn: RAW_URI; werkzeug and others:
    # REQUEST_URI). PATH_INFO is percent-decoded by the server, which would hide an encoded
    # slash from the path policy; re-quoting it is only the fallback.
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/:@~-._")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def _headers(environ: Environ) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.replace("_", "-").lower()
        else:
            continue
        if value:
            headers.append((name.encode("latin-1"), str(value).encode("latin-1")))
    return headers


def _content_length(environ: Environ) -> int | None:
    try:
        return int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def _read_body(environ: Environ, max_bytes: int) -> bytes | None:
    stream = environ["wsgi.input"]
    length = _content_length(environ)
    if length is not None:
        if length > max_bytes:
            return None
        return stream.read(length) if length else b""
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length and no terminated input: PEP 3333 says there is no body
    parts: list[bytes] = []
    size = 0
    while chunk := stream.read(_READ_SIZE):
        size += len(chunk)
        if size > max_bytes:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _native(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class _LazyApp:
    """`meshproxy.adapters.wsgi:app` for gunicorn: configured from the environment on first
    request, so importing the module reads nothing."""

    def __init__(self) -> None:
        self._app: MeshProxyWSGI | None = None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self._app is None:
            self._app = MeshProxyWSGI.from_environment()
        return self._app(environ, start_response)


app = _LazyApp()
