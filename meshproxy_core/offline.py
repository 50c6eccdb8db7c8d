"""Offline accounting: logged exchanges fed through the live proxy's own state machine.

Owns: `account_exchange`, which replays one `CapturedExchange` through an `Exchange` (so an
offline number is the number the live proxy would have recorded, by construction); the readers
that turn logs into captured exchanges (`read_har` for HAR 1.2 files from browsers and
mitmproxy, `read_capture` for the proxy's own capture log, `read_plain` for one bare response
body or event stream); and `summarise`, the totals by project, room, participant and model.

Readers never raise on bad input. Each yields `(line, item)` pairs, where `item` is a
`CapturedExchange` or a `ParseProblem` saying why that entry was skipped, so one bad line costs
one line and the rest is still counted. `read_plain` is the exception: it reads one body, and a
body it cannot make sense of raises `PlainInputError`.

Replays are pre-authenticated: tokens in logs are redacted or long expired, so the identity comes
from the capture (or a placeholder "offline" principal), and models the price book cannot price
are accounted, not refused (the request was answered long ago).

Does not own: files, stdin, output formats or the command line (adapters.usage_cli); the capture
format itself (capture); any parsing of usage (usage/, through the exchange).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import re
from collections.abc import Iterable, Iterator
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from typing import Any
from urllib.parse import urlsplit

import attrs

from . import routes
from .capture import CapturedExchange, CaptureFormatError, from_json_line
from .errors import ProxyError
from .exchange import CheckOwnership, Exchange, Proxy, Reject
from .headers import redacted
from .records import Ending, ImageCount, Principal, Usage, UsageRecord
from .sse import SSEParser

__all__ = [
    "OFFLINE_PRINCIPAL",
    "ParseProblem",
    "PlainInputError",
    "SummaryRow",
    "account_exchange",
    "add_usage",
    "combine_rows",
    "infer_endpoint",
    "read_capture",
    "read_har",
    "read_plain",
    "resolve_endpoint",
    "summarise",
]

# Who an exchange is charged to when the log does not say (HAR files, plain bodies).
OFFLINE_PRINCIPAL = Principal(project="offline", room="offline", participant="offline")


@attrs.frozen
class ParseProblem:
    """Why one entry of a log was not accounted. `skipped`: the entry is well formed but is not
    a call the proxy accounts (a web page in a HAR, a CORS preflight); otherwise it is broken."""

    reason: str
    skipped: bool = False


class PlainInputError(ValueError):
    """A plain response body whose provider or endpoint is unknown and cannot be inferred."""


# -- replay ------------------------------------------------------------------------------------


def account_exchange(proxy: Proxy, captured: CapturedExchange) -> UsageRecord:
    """The record the live proxy makes for `captured`, made again from its bytes.

    The whole response goes in as one chunk: the exchange gives the same answer however the
    bytes are split. A capture with no upstream response (status 0) ends the way the proxy
    ended it: refused, failed upstream, or abandoned. A truncated capture's record is marked
    `partial`: its usage was read from part of the response only.
    """
    ending = Ending(captured.ending)
    principal = captured.principal or _placeholder(captured, proxy.config.mount)
    ex = proxy.exchange(
        now=captured.started_at,
        # Never a fresh random id: the same log must give the same records every time.
        request_id=captured.request_id or "offline",
        principal=principal,
        enforce_prices=False,
    )
    _replay(ex, captured, ending)
    record = ex.record
    assert record is not None  # every path above leaves the exchange DONE
    if captured.truncated:
        record = attrs.evolve(record, partial=True)
    return record


def _replay(ex: Exchange, captured: CapturedExchange, ending: Ending) -> None:
    """Drive `ex` with the capture's inputs, in the order the live adapter called it."""
    decision = ex.request_head(
        captured.method,
        captured.target,
        _bytes_headers(captured.request_headers),
        content_length=len(captured.request_body),
    )
    if isinstance(decision, Reject):
        return  # refused again, as it was live (or would have been, had it been seen)
    forward = ex.request_body(captured.request_body)
    if isinstance(forward, CheckOwnership):
        # The log is the truth: what was answered live was the caller's own. A listing's
        # filter is irrelevant to accounting (listing is free).
        owner = (forward.project, forward.room)
        forward = ex.ownership_known(owner=owner, owned_ids=())
    if isinstance(forward, Reject):
        return
    if captured.status == 0:
        if ending in (Ending.UPSTREAM_FAILED, Ending.TIMEOUT):
            ex.upstream_failed(ending, now=captured.ended_at)
        else:
            ex.abandon(ending, now=captured.ended_at)
        return
    ex.response_head(captured.status, _bytes_headers(captured.response_headers))
    ex.response_data(captured.response_body)
    ex.finish(ending, now=captured.ended_at)


def _placeholder(captured: CapturedExchange, mount: str) -> Principal:
    """The offline principal, in the room the path names if it names one (a `/rooms/{room}/`
    target checks the room against the principal, and the log's room is the truth)."""
    try:
        route = routes.match_route(captured.method, captured.target, mount=mount)
    except ProxyError:
        return OFFLINE_PRINCIPAL
    if route.room is None:
        return OFFLINE_PRINCIPAL
    return attrs.evolve(OFFLINE_PRINCIPAL, room=route.room)


def _bytes_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    # Captures hold latin-1 text (what h11 decodes to); anything else is replaced, not fatal.
    return [
        (name.encode("latin-1", "replace"), value.encode("latin-1", "replace"))
        for name, value in headers
    ]


# -- the capture log ---------------------------------------------------------------------------


def read_capture(
    lines: Iterable[str | bytes],
) -> Iterator[tuple[int, CapturedExchange | ParseProblem]]:
    """Each non-blank line of a capture log, numbered from 1."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, from_json_line(line)
        except CaptureFormatError as exc:
            yield number, ParseProblem(str(exc))


# -- HAR 1.2 -----------------------------------------------------------------------------------

# Provider hosts and the proxy prefix their paths live under, so one route table serves both
# a HAR recorded against the providers and one recorded against the proxy.
_PROVIDER_HOSTS = {"api.openai.com": "/openai", "api.anthropic.com": "/anthropic"}

# HAR content text is decoded already (browsers and mitmproxy store the body as the page saw
# it), so the headers describing the wire form of the body no longer describe these bytes.
_WIRE_FORM_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _HarShapeError(Exception):
    def __init__(self, pos: int, reason: str) -> None:
        super().__init__(reason)
        self.pos = pos
        self.reason = reason


def read_har(
    text: str, *, mount: str = ""
) -> Iterator[tuple[int, CapturedExchange | ParseProblem]]:
    """Each entry of `log.entries`, numbered by the line its object starts on.

    The entries array is walked one entry at a time (not loaded whole), so a file cut short or
    broken half way still yields every entry before the break, then one problem at the line of
    the break. `mount`: the proxy's mount prefix, for HAR files recorded against a mounted proxy.
    """
    text = text.removeprefix("\ufeff")
    lines = _LineCounter(text)
    pos = 0
    try:
        pos = _member(text, _skip_ws(text, 0), "log")
        pos = _member(text, pos, "entries")
        for start, entry in _array_items(text, pos):
            pos = start
            line = lines.line_at(start)
            yield line, _har_entry(entry, line, mount)
    except _HarShapeError as exc:
        yield lines.line_at(exc.pos), ParseProblem(exc.reason)
    except json.JSONDecodeError as exc:
        yield exc.lineno, ParseProblem(f"not valid JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        yield lines.line_at(pos), ParseProblem("JSON nested too deeply")


class _LineCounter:
    """Line numbers of increasing offsets, counting each newline once."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._line = 1

    def line_at(self, pos: int) -> int:
        if pos < self._pos:
            self._pos, self._line = 0, 1
        self._line += self._text.count("\n", self._pos, pos)
        self._pos = pos
        return self._line


def _skip_ws(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _member(text: str, pos: int, key: str) -> int:
    """`pos` is at an object; the position of the value of its member `key`."""
    if text[pos : pos + 1] != "{":
        raise _HarShapeError(pos, f"not a HAR file: expected an object holding '{key}'")
    pos = _skip_ws(text, pos + 1)
    if text[pos : pos + 1] == "}":
        raise _HarShapeError(pos, f"not a HAR file: no '{key}'")
    while True:
        if text[pos : pos + 1] != '"':
            raise _HarShapeError(pos, "not valid JSON: expected a member name")
        name, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_ws(text, pos)
        if text[pos : pos + 1] != ":":
            raise _HarShapeError(pos, "not valid JSON: expected ':'")
        pos = _skip_ws(text, pos + 1)
        if name == key:
            return pos
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_ws(text, pos)
        separator = text[pos : pos + 1]
        if separator == "}":
            raise _HarShapeError(pos, f"not a HAR file: no '{key}'")
        if separator != ",":
            raise _HarShapeError(pos, "not valid JSON: expected ',' or '}'")
        pos = _skip_ws(text, pos + 1)


def _array_items(text: str, pos: int) -> Iterator[tuple[int, Any]]:
    if text[pos : pos + 1] != "[":
        raise _HarShapeError(pos, "not a HAR file: 'log.entries' is not a list")
    pos = _skip_ws(text, pos + 1)
    if text[pos : pos + 1] == "]":
        return
    while True:
        start = pos
        value, pos = _DECODER.raw_decode(text, pos)
        yield start, value
        pos = _skip_ws(text, pos)
        separator = text[pos : pos + 1]
        if separator == "]":
            return
        if separator != ",":
            raise _HarShapeError(pos, "not valid JSON: expected ',' or ']' after an entry")
        pos = _skip_ws(text, pos + 1)


def _har_entry(entry: Any, line: int, mount: str) -> CapturedExchange | ParseProblem:
    if not isinstance(entry, dict):
        return ParseProblem("entry is not an object")
    request, response = entry.get("request"), entry.get("response")
    if not isinstance(request, dict) or not isinstance(response, dict):
        return ParseProblem("entry has no 'request' or 'response' object")
    method, url = request.get("method"), request.get("url")
    if not isinstance(method, str) or not isinstance(url, str) or not method:
        return ParseProblem("entry has no 'request.method' or 'request.url'")
    target = _har_target(url)
    shown = _url_for_message(url)
    if target is None:
        return ParseProblem(f"skipped: {method} {shown} is not an LLM API call", skipped=True)
    try:
        routes.match_route(method, target, mount=mount)
    except ProxyError:
        return ParseProblem(f"skipped: {method} {shown} is not a proxied endpoint", skipped=True)
    status = response.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or status > 999:
        return ParseProblem("'response.status' is not an HTTP status")
    if status <= 0:
        # Browsers record blocked and cancelled requests with status 0 (or -1) and no body.
        return ParseProblem(f"skipped: {method} {shown} has no response recorded", skipped=True)
    try:
        request_body, request_type = _har_post_data(request.get("postData"))
        response_body, response_type, cut = _har_content(response.get("content"))
    except ValueError as exc:
        return ParseProblem(str(exc))
    request_headers = _har_headers(request.get("headers"), drop=frozenset())
    response_headers = _har_headers(response.get("headers"), drop=_WIRE_FORM_HEADERS)
    request_headers = _with_content_type(request_headers, request_type)
    response_headers = _with_content_type(response_headers, response_type)
    started = _har_time(entry.get("startedDateTime"))
    duration = _seconds(entry.get("time"), scale=1000.0) or 0.0
    # A HAR recorded against the proxy carries the proxy's own id: keep it, so the offline
    # record can be matched with the live one.
    request_id = _header(response_headers, "x-meshproxy-request-id") or f"har-{line}"
    return CapturedExchange(
        request_id=request_id,
        started_at=started,
        ended_at=started + duration,
        principal=None,
        method=method,
        target=target,
        request_headers=request_headers,
        request_body=request_body,
        status=status,
        response_headers=response_headers,
        response_body=response_body,
        truncated=cut,
        ending=Ending.COMPLETE.value,
    )


def _har_target(url: str) -> str | None:
    """The proxy target for `url`: provider URLs move under the proxy's provider prefix, proxy
    URLs keep their path. None for a URL that cannot be an API call."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    path = parts.path
    if not path.startswith("/"):
        return None
    prefix = _PROVIDER_HOSTS.get(host)
    if prefix is not None:
        if not (path == "/v1" or path.startswith("/v1/")):
            return None
        path = prefix + path
    return path + (f"?{parts.query}" if parts.query else "")


def _url_for_message(url: str) -> str:
    # Never the query: it may hold a key (`?key=...`) or a signature.
    shown = url.split("?", 1)[0].split("#", 1)[0]
    return shown if len(shown) <= 120 else shown[:117] + "..."


def _har_headers(value: Any, *, drop: frozenset[str]) -> list[tuple[str, str]]:
    """HAR `[{name, value}]` headers, lowercased, credentials redacted. HTTP/2 pseudo-headers
    (`:path`, `:authority`) and malformed items are left out: they carry nothing we account."""
    if not isinstance(value, list):
        return []
    raw: list[tuple[bytes, bytes]] = []
    for item in value:
        if not isinstance(item, dict):
            continue
        name, text = item.get("name"), item.get("value")
        if not isinstance(name, str) or not isinstance(text, str) or name.startswith(":"):
            continue
        if name.lower() in drop:
            continue
        raw.append((_utf8(name), _utf8(text)))
    return redacted(raw)


def _utf8(text: str) -> bytes:
    # JSON strings may hold lone surrogates, which UTF-8 cannot encode.
    return text.encode("utf-8", "replace")


def _with_content_type(headers: list[tuple[str, str]], mime: str | None) -> list[tuple[str, str]]:
    if mime and _header(headers, "content-type") is None:
        return [*headers, ("content-type", mime)]
    return headers


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _har_post_data(value: Any) -> tuple[bytes, str | None]:
    if value is None:
        return b"", None
    if not isinstance(value, dict):
        raise ValueError("'request.postData' is not an object")
    mime = value.get("mimeType") if isinstance(value.get("mimeType"), str) else None
    text = value.get("text")
    if text is None:
        return b"", mime
    if not isinstance(text, str):
        raise ValueError("'request.postData.text' is not a string")
    # Not in HAR 1.2, but some exporters mark binary request bodies the way content does.
    return _har_text(text, value.get("encoding"), "request.postData"), mime


def _har_content(value: Any) -> tuple[bytes, str | None, bool]:
    """Response body bytes, its MIME type, and whether the HAR left the body out."""
    if value is None:
        return b"", None, False
    if not isinstance(value, dict):
        raise ValueError("'response.content' is not an object")
    mime = value.get("mimeType") if isinstance(value.get("mimeType"), str) else None
    text = value.get("text")
    size = value.get("size")
    if text is None:
        # The exporter kept the size but not the body (Chrome does so for some streams).
        cut = isinstance(size, int) and not isinstance(size, bool) and size > 0
        return b"", mime, cut
    if not isinstance(text, str):
        raise ValueError("'response.content.text' is not a string")
    return _har_text(text, value.get("encoding"), "response.content"), mime, False


def _har_text(text: str, encoding: Any, where: str) -> bytes:
    if encoding is None:
        return _utf8(text)
    if encoding != "base64":
        raise ValueError(f"'{where}.encoding' is {_shown(encoding)}, not base64")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"'{where}.text' is not valid base64") from None


def _har_time(value: Any) -> float:
    """`startedDateTime` (ISO 8601) as seconds since the epoch; 0.0 when absent or unreadable
    (the time is informational; a bad one is no reason to drop the tokens)."""
    if not isinstance(value, str):
        return 0.0
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        # No zone: read as UTC, never as this machine's local time.
        moment = moment.replace(tzinfo=datetime.UTC)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return 0.0


def _seconds(value: Any, *, scale: float) -> float | None:
    """A JSON number divided by `scale`, or None unless it is a finite non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = value / scale
    except OverflowError:  # an integer too large for a float
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


# -- plain bodies ------------------------------------------------------------------------------

# Endpoint kind -> (provider, method, path under the provider prefix) of the request a bare
# response answers. Model lists exist at both providers; "openai" is only the default.
_PLAIN_REQUESTS: dict[routes.EndpointKind, tuple[str, str, str]] = {
    routes.EndpointKind.CHAT_COMPLETIONS: ("openai", "POST", "/chat/completions"),
    routes.EndpointKind.RESPONSES: ("openai", "POST", "/responses"),
    routes.EndpointKind.RESPONSES_COMPACT: ("openai", "POST", "/responses/compact"),
    routes.EndpointKind.RESPONSES_INPUT_TOKENS: ("openai", "POST", "/responses/input_tokens"),
    routes.EndpointKind.EMBEDDINGS: ("openai", "POST", "/embeddings"),
    routes.EndpointKind.AUDIO_SPEECH: ("openai", "POST", "/audio/speech"),
    routes.EndpointKind.AUDIO_TRANSCRIPTIONS: ("openai", "POST", "/audio/transcriptions"),
    routes.EndpointKind.AUDIO_TRANSLATIONS: ("openai", "POST", "/audio/translations"),
    routes.EndpointKind.IMAGES_GENERATIONS: ("openai", "POST", "/images/generations"),
    routes.EndpointKind.IMAGES_EDITS: ("openai", "POST", "/images/edits"),
    routes.EndpointKind.IMAGES_VARIATIONS: ("openai", "POST", "/images/variations"),
    routes.EndpointKind.MODELS: ("openai", "GET", "/models"),
    routes.EndpointKind.MESSAGES: ("anthropic", "POST", "/messages"),
    routes.EndpointKind.MESSAGES_COUNT_TOKENS: ("anthropic", "POST", "/messages/count_tokens"),
    routes.EndpointKind.MESSAGE_BATCHES: ("anthropic", "POST", "/messages/batches"),
    routes.EndpointKind.MESSAGE_BATCH_RESULTS: (
        "anthropic",
        "GET",
        "/messages/batches/msgbatch_offline/results",
    ),
    routes.EndpointKind.COMPLETE: ("anthropic", "POST", "/complete"),
}

# Short names people type for endpoints, besides the kind names and the paths.
_ENDPOINT_ALIASES = {
    "chat": routes.EndpointKind.CHAT_COMPLETIONS,
    "compact": routes.EndpointKind.RESPONSES_COMPACT,
    "input_tokens": routes.EndpointKind.RESPONSES_INPUT_TOKENS,
    "speech": routes.EndpointKind.AUDIO_SPEECH,
    "transcriptions": routes.EndpointKind.AUDIO_TRANSCRIPTIONS,
    "translations": routes.EndpointKind.AUDIO_TRANSLATIONS,
    "images": routes.EndpointKind.IMAGES_GENERATIONS,
    "count_tokens": routes.EndpointKind.MESSAGES_COUNT_TOKENS,
    "batches": routes.EndpointKind.MESSAGE_BATCHES,
    "batch_results": routes.EndpointKind.MESSAGE_BATCH_RESULTS,
}

_PATH_PREFIXES = ("/openai/v1", "/anthropic/v1", "/v1")


def resolve_endpoint(endpoint: str, provider: str | None = None) -> tuple[str, str]:
    """`(provider, endpoint kind)` for an endpoint named by kind ("chat.completions"), short
    name ("chat") or path ("/v1/chat/completions", "/anthropic/v1/messages")."""
    name = endpoint.strip()
    kind: routes.EndpointKind | None = None
    path_provider: str | None = None
    if "/" in name:
        path = "/" + name.strip("/")
        for prefix in _PATH_PREFIXES:
            if path.startswith(prefix + "/"):
                path_provider = {"/openai/v1": "openai", "/anthropic/v1": "anthropic"}.get(prefix)
                path = path[len(prefix) :]
                break
        for candidate, (owner, _, known) in _PLAIN_REQUESTS.items():
            if known == path or (
                candidate is routes.EndpointKind.MESSAGE_BATCH_RESULTS
                and re.fullmatch(r"/messages/batches/[^/]+/results", path)
            ):
                kind, path_provider = candidate, path_provider or owner
                break
    else:
        lowered = name.lower()
        kind = _ENDPOINT_ALIASES.get(lowered)
        if kind is None:
            kind = next((k for k in routes.EndpointKind if k.value == lowered), None)
    if kind is None:
        known_names = ", ".join(sorted(k.value for k in _PLAIN_REQUESTS))
        raise PlainInputError(f"unknown endpoint {endpoint!r}; one of: {known_names}")
    owner = _PLAIN_REQUESTS[kind][0]
    chosen = provider or path_provider or owner
    if kind is not routes.EndpointKind.MODELS and chosen != owner:
        raise PlainInputError(f"endpoint {kind.value} is an {owner} endpoint, not {chosen}")
    return chosen, kind.value


def read_plain(
    body: bytes,
    provider: str | None = None,
    endpoint: str | None = None,
    model: str | None = None,
    *,
    request_id: str = "plain-1",
) -> CapturedExchange:
    """One bare response body (JSON, JSONL or an event stream) as an exchange, with a request
    made up to match: the given endpoint and model, `stream` when the body is a stream.

    Provider and endpoint are inferred from the body when not given (`infer_endpoint`); a body
    that names neither raises `PlainInputError`. Only what the response says is accounted:
    usage a provider reports only through the request (speech characters, DALL-E image sizes)
    needs the real request, in a HAR or a capture.
    """
    if provider is not None and provider not in ("openai", "anthropic"):
        raise PlainInputError(f"unknown provider {provider!r}; openai or anthropic")
    if endpoint is not None:
        provider, kind_name = resolve_endpoint(endpoint, provider)
    else:
        inferred_provider, kind_name = infer_endpoint(body)
        if provider is not None and provider != inferred_provider:
            raise PlainInputError(
                f"the body looks like {inferred_provider} {kind_name}, not {provider}; "
                "give --endpoint to override"
            )
        provider = inferred_provider
    kind = routes.EndpointKind(kind_name)
    _, method, path = _PLAIN_REQUESTS[kind]
    stream = _looks_like_sse(body)
    request_body = _plain_request_body(kind, model, stream) if method == "POST" else b""
    request_headers = [("content-type", "application/json")] if request_body else []
    return CapturedExchange(
        request_id=request_id,
        started_at=0.0,
        ended_at=0.0,
        principal=None,
        method=method,
        target=f"/{provider}/v1{path}",
        request_headers=request_headers,
        request_body=request_body,
        status=200,
        response_headers=[("content-type", _plain_content_type(body, stream))],
        response_body=body,
        truncated=False,
        ending=Ending.COMPLETE.value,
    )


def _plain_request_body(kind: routes.EndpointKind, model: str | None, stream: bool) -> bytes:
    request: dict[str, Any] = {}
    if model:
        request["model"] = model
    if stream:
        request["stream"] = True
        if kind is routes.EndpointKind.CHAT_COMPLETIONS:
            # The stream has its usage chunk or it has not; asking for it here only keeps the
            # exchange from planning to strip a chunk nobody will see.
            request["stream_options"] = {"include_usage": True}
        if kind is routes.EndpointKind.AUDIO_SPEECH:
            request["stream_format"] = "sse"
    return json.dumps(request, separators=(",", ":")).encode() if request else b""


def _plain_content_type(body: bytes, stream: bool) -> str:
    if stream:
        return "text/event-stream"
    start = _content_start(body)
    if start[:1] in (b"{", b"["):
        return "application/json"
    try:
        start.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"  # speech audio
    return "text/plain"  # text, srt or vtt transcripts


_BOM = b"\xef\xbb\xbf"
_SSE_FIELD = re.compile(rb"(event|data|id|retry)(:|\r|\n)|:")
_SNIFF_BYTES = 64 * 1024  # inference reads the start of a body; the answer is always there
_SNIFF_EVENTS = 32


def _content_start(body: bytes) -> bytes:
    return body[: _SNIFF_BYTES + 3].removeprefix(_BOM).lstrip()


def _looks_like_sse(body: bytes) -> bool:
    return _SSE_FIELD.match(_content_start(body)) is not None


def infer_endpoint(body: bytes) -> tuple[str, str]:
    """`(provider, endpoint kind)` of a bare response body, from what only that endpoint
    sends: event names and `type`s in a stream, `object`/`type` and telling keys in JSON.
    Raises `PlainInputError` naming what the body looked like when nothing decides it."""
    if _looks_like_sse(body):
        return _infer_stream(body)
    start = _content_start(body)
    if start[:1] != b"{":
        raise PlainInputError(
            "not JSON or an event stream (raw audio or a text transcript?): "
            "give --provider and --endpoint"
        )
    obj = _first_json_object(body)
    if obj is None:
        raise PlainInputError("the body is not valid JSON: give --provider and --endpoint")
    found = _infer_object(obj)
    if found is None:
        raise PlainInputError(
            "cannot tell the endpoint from this JSON body (an error body, or a shape several "
            "endpoints share): give --provider and --endpoint"
        )
    return found


def _first_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as JSON, or its first line when it is JSON lines (batch results)."""
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None
    for candidate in (text, text.lstrip().split("\n", 1)[0]):
        try:
            obj = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        return obj if isinstance(obj, dict) else None
    return None


_ANTHROPIC_STREAM_TYPES = frozenset(
    {
        "message_start",
        "message_delta",
        "message_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
    }
)

# Prefixes of OpenAI stream event types -> endpoint kind.
_OPENAI_STREAM_PREFIXES = (
    ("response.", "responses"),
    ("transcript.text.", "audio.transcriptions"),
    ("speech.audio.", "audio.speech"),
    ("image_generation.", "images.generations"),
    ("image_edit.", "images.edits"),
)


def _infer_stream(body: bytes) -> tuple[str, str]:
    parser = SSEParser()
    events = parser.feed(body[: _SNIFF_BYTES * 16]) + parser.close()
    for event in events[:_SNIFF_EVENTS]:
        kind = _stream_kind(event.event, _event_json(event.data))
        if kind is not None:
            return kind
    raise PlainInputError(
        "an event stream, but no event says which endpoint sent it: give --provider and --endpoint"
    )


def _event_json(data: bytes) -> dict[str, Any]:
    if not data.lstrip().startswith(b"{"):
        return {}
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _stream_kind(name: str, obj: dict[str, Any]) -> tuple[str, str] | None:
    kind = obj.get("type") if isinstance(obj.get("type"), str) else name
    if kind in _ANTHROPIC_STREAM_TYPES or name in _ANTHROPIC_STREAM_TYPES:
        return "anthropic", "messages"
    if kind == "completion" or name == "completion":
        return "anthropic", "complete"
    if obj.get("object") == "chat.completion.chunk":
        return "openai", "chat.completions"
    for prefix, endpoint in _OPENAI_STREAM_PREFIXES:
        if kind.startswith(prefix):
            return "openai", endpoint
    return None


def _infer_object(obj: dict[str, Any]) -> tuple[str, str] | None:
    shape, kind = obj.get("object"), obj.get("type")
    by_object = {
        "chat.completion": ("openai", "chat.completions"),
        "response": ("openai", "responses"),
        "response.compaction": ("openai", "responses.compact"),
        "response.input_tokens": ("openai", "responses.input_tokens"),
        "model": ("openai", "models"),
    }
    by_type = {
        "message": ("anthropic", "messages"),
        "message_batch": ("anthropic", "messages.batches"),
        "completion": ("anthropic", "complete"),
    }
    if isinstance(shape, str) and shape in by_object:
        return by_object[shape]
    if isinstance(kind, str) and kind in by_type:
        return by_type[kind]
    if shape == "list":
        items = obj.get("data")
        first = items[0] if isinstance(items, list) and items else None
        item_shape = first.get("object") if isinstance(first, dict) else None
        if item_shape == "embedding":
            return "openai", "embeddings"
        if item_shape == "model":
            return "openai", "models"
        return None
    if "custom_id" in obj and "result" in obj:
        return "anthropic", "messages.batches.results"
    if isinstance(obj.get("data"), list) and "created" in obj:
        return "openai", "images.generations"
    usage = obj.get("usage")
    if "text" in obj and isinstance(usage, dict) and usage.get("type") in ("tokens", "duration"):
        return "openai", "audio.transcriptions"
    if obj.get("task") == "transcribe":
        return "openai", "audio.transcriptions"
    if obj.get("task") == "translate":
        return "openai", "audio.translations"
    if set(obj) <= {"input_tokens", "context_management"} and "input_tokens" in obj:
        return "anthropic", "messages.count_tokens"
    return None


# -- summary -----------------------------------------------------------------------------------


@attrs.frozen
class SummaryRow:
    """Totals of one (project, room, participant, model). `usage` is the field-by-field sum of
    the records' usage. `cost` is the exact sum of every priced record's cost, or None when no
    record with usage could be priced ("n/a"); `cost_incomplete` says some usage was not priced
    (a model the book lacks, or a unit it has no rate for), so `cost` is a lower bound."""

    project: str
    room: str
    participant: str
    model: str
    requests: int
    usage: Usage
    cost: Decimal | None
    cost_incomplete: bool = False

    def cost_text(self) -> str:
        """The exact cost in plain notation without trailing zeros ("0.000024"), or "n/a"."""
        if self.cost is None:
            return "n/a"
        return format(self.cost.normalize(_EXACT), "f")


def summarise(records: Iterable[UsageRecord]) -> list[SummaryRow]:
    """One row per (project, room, participant, model), sorted by that key. The model is the
    one the request asked for, else the one the provider reported; "-" marks a missing part."""
    groups: dict[tuple[str, str, str, str], SummaryRow] = {}
    for record in records:
        principal = record.principal
        key = (
            principal.project if principal else "-",
            principal.room if principal else "-",
            principal.participant if principal else "-",
            record.model or record.response_model or "-",
        )
        row = _record_row(key, record)
        groups[key] = combine_rows(groups[key], row) if key in groups else row
    return [groups[key] for key in sorted(groups)]


def _record_row(key: tuple[str, str, str, str], record: UsageRecord) -> SummaryRow:
    cost = record.cost
    # An unresolvable model gets a zero Cost marked incomplete with missing unit "model": that
    # is no price at all, not a price of zero.
    priced = cost is not None and "model" not in cost.missing_units
    has_usage = not record.usage.is_zero()
    return SummaryRow(
        project=key[0],
        room=key[1],
        participant=key[2],
        model=key[3],
        requests=1,
        usage=record.usage,
        cost=cost.total if priced and cost is not None else (None if has_usage else _ZERO),
        cost_incomplete=(has_usage and not priced) or (cost is not None and cost.incomplete),
    )


def combine_rows(a: SummaryRow, b: SummaryRow, **key: str) -> SummaryRow:
    """`a` and `b` added up (under `a`'s key, or the key fields given)."""
    if a.cost is None and b.cost is None:
        cost: Decimal | None = None
    else:
        cost = _EXACT.add(a.cost or _ZERO, b.cost or _ZERO)
    return attrs.evolve(
        a,
        requests=a.requests + b.requests,
        usage=add_usage(a.usage, b.usage),
        cost=cost,
        cost_incomplete=a.cost_incomplete or b.cost_incomplete,
        **key,
    )


def add_usage(a: Usage, b: Usage) -> Usage:
    """Field-by-field sum; image counts of the same size and quality are merged."""
    values: dict[str, Any] = {}
    for field in attrs.fields(Usage):
        if field.name == "images":
            counts: dict[tuple[str, str], int] = {}
            for image in (*a.images, *b.images):
                counts[(image.size, image.quality)] = (
                    counts.get((image.size, image.quality), 0) + image.count
                )
            values["images"] = tuple(
                ImageCount(size=size, quality=quality, count=count)
                for (size, quality), count in sorted(counts.items())
            )
        elif field.name == "audio_seconds":
            values[field.name] = _EXACT.add(a.audio_seconds, b.audio_seconds)
        else:
            values[field.name] = getattr(a, field.name) + getattr(b, field.name)
    return Usage(**values)


# Money and seconds are added exactly: the default decimal context rounds to 28 digits, and a
# long log of sub-cent amounts must add up to the cent. Anything inexact raises, never rounds.
_EXACT = Context(prec=200, traps=[Inexact, InvalidOperation, Overflow])
_ZERO = Decimal(0)
