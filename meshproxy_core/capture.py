"""The capture log: one proxied exchange, as the proxy saw it, on one JSON line.

Owns: `CapturedExchange` (what an exchange looked like on the wire: the client's request as it
arrived, with credentials redacted, and the upstream's response as it was sent, compressed or
not), its JSON-lines form (`to_json_line` / `from_json_line`, documented in
docs/usage-offline.md), and `CaptureTap`, the bounded recorder an adapter feeds next to the
exchange so that a server can write the log when asked (`meshproxy serve --capture FILE`).

Why the client's request and the upstream's bytes: offline accounting (`offline`) replays a
capture through the same `Exchange` the live proxy ran, so the capture must hold exactly the
inputs the exchange was given, not what it produced. The request is the one before any rewrite
(the exchange redoes it); the response is the upstream's, before any decoding or stripping.

Never in a capture: a room token, a provider key, a cookie. Request headers go through
`headers.redacted`; response headers too (an upstream `set-cookie` is a session of the shared
provider account, not the room's business). Bodies are kept as they are: they are the room's own
prompts and answers, which is what the operator asked to capture.

Does not own: files, rotation, or when to capture (adapters); accounting (offline).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from .headers import redacted
from .records import Ending, Principal, UsageRecord

__all__ = [
    "CAPTURE_VERSION",
    "CaptureFormatError",
    "CaptureTap",
    "CapturedExchange",
    "from_json_line",
    "to_json_line",
]

# The value of the `capture` key on every line. A reader refuses versions it does not know
# rather than guess what their fields mean.
CAPTURE_VERSION = 1

_ENDINGS = frozenset(ending.value for ending in Ending)

StrHeaders = tuple[tuple[str, str], ...]


class CaptureFormatError(ValueError):
    """A capture line cannot be read; the message says which rule it breaks."""


def _str_headers(items: Iterable[Sequence[str]]) -> StrHeaders:
    return tuple((str(name), str(value)) for name, value in items)


@attrs.frozen
class CapturedExchange:
    """One exchange as it crossed the wire. Header names are lowercase; values latin-1 text."""

    request_id: str
    started_at: float
    ended_at: float
    principal: Principal | None  # only project, room, participant and session are kept
    method: str
    target: str  # path + query exactly as the client sent it (mount and room prefix included)
    request_headers: StrHeaders = attrs.field(converter=_str_headers)  # credentials redacted
    request_body: bytes
    status: int  # the upstream's status; 0: no upstream response head (unreachable, client gone)
    response_headers: StrHeaders = attrs.field(converter=_str_headers)  # content-encoding kept
    response_body: bytes  # the upstream's bytes, still compressed if they were
    truncated: bool = False  # a body was longer than the tap's bound and was cut
    ending: str = attrs.field(
        default=Ending.COMPLETE.value, validator=attrs.validators.in_(_ENDINGS)
    )  # an `Ending` value: how the response ended


# -- JSON lines --------------------------------------------------------------------------------


def to_json_line(ex: CapturedExchange) -> bytes:
    """One line of the capture log, newline included. Pure ASCII (bodies are base64, text is
    escaped), so the file is safe to grep, split and concatenate."""
    obj: dict[str, Any] = {
        "capture": CAPTURE_VERSION,
        "request_id": ex.request_id,
        "started_at": ex.started_at,
        "ended_at": ex.ended_at,
        "principal": _principal_to_json(ex.principal),
        "method": ex.method,
        "target": ex.target,
        "request_headers": [list(pair) for pair in ex.request_headers],
        "request_body_b64": base64.b64encode(ex.request_body).decode("ascii"),
        "status": ex.status,
        "response_headers": [list(pair) for pair in ex.response_headers],
        "response_body_b64": base64.b64encode(ex.response_body).decode("ascii"),
        "truncated": ex.truncated,
        "ending": ex.ending,
    }
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def from_json_line(line: str | bytes) -> CapturedExchange:
    """Read one capture line (with or without its newline). Unknown keys are ignored, so a newer
    writer that adds a field stays readable; a missing or mistyped field is an error."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError is a ValueError too: bytes that are not UTF-8 land here.
        raise CaptureFormatError(f"not a JSON line: {_short(exc)}") from None
    if not isinstance(obj, dict):
        raise CaptureFormatError("a capture line must be a JSON object")
    version = obj.get("capture")
    if version != CAPTURE_VERSION or isinstance(version, bool):
        raise CaptureFormatError(
            f"not a capture line: 'capture' must be {CAPTURE_VERSION}, got {_shown(version)}"
        )
    ending = _field(obj, "ending", str)
    if ending not in _ENDINGS:
        raise CaptureFormatError(f"'ending' must be one of {', '.join(sorted(_ENDINGS))}")
    status = _field(obj, "status", int)
    if not 0 <= status <= 999:
        raise CaptureFormatError("'status' must be 0 (no response) or an HTTP status")
    return CapturedExchange(
        request_id=_field(obj, "request_id", str),
        started_at=_time(obj, "started_at"),
        ended_at=_time(obj, "ended_at"),
        principal=_principal_from_json(obj.get("principal")),
        method=_field(obj, "method", str),
        target=_field(obj, "target", str),
        request_headers=_headers(obj, "request_headers"),
        request_body=_body(obj, "request_body_b64"),
        status=status,
        response_headers=_headers(obj, "response_headers"),
        response_body=_body(obj, "response_body_b64"),
        truncated=_field(obj, "truncated", bool),
        ending=ending,
    )


def _principal_to_json(principal: Principal | None) -> dict[str, Any] | None:
    if principal is None:
        return None
    return {
        "project": principal.project,
        "room": principal.room,
        "participant": principal.participant,
        "session": principal.session,
    }


def _principal_from_json(value: Any) -> Principal | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CaptureFormatError("'principal' must be an object or null")
    session = value.get("session")
    if session is not None and not isinstance(session, str):
        raise CaptureFormatError("'principal.session' must be a string or null")
    return Principal(
        project=_field(value, "project", str, "principal."),
        room=_field(value, "room", str, "principal."),
        participant=_field(value, "participant", str, "principal."),
        session=session,
    )


def _field(obj: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in obj:
        raise CaptureFormatError(f"missing '{where}{key}'")
    value = obj[key]
    # bool is an int in Python; a status of `true` is a broken writer, not a 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CaptureFormatError(f"'{where}{key}' must be {_KIND_NAMES[kind]}")
    return value


_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def _time(obj: dict[str, Any], key: str) -> float:
    if key not in obj:
        raise CaptureFormatError(f"missing '{key}'")
    value = obj[key]
    try:
        seconds = float(value) if isinstance(value, int | float) else math.nan
    except OverflowError:  # an integer too large for a float
        seconds = math.nan
    # json.loads accepts NaN and Infinity; a time that is not finite is a broken writer.
    if isinstance(value, bool) or not math.isfinite(seconds):
        raise CaptureFormatError(f"'{key}' must be a number (seconds since the epoch)")
    return seconds


def _headers(obj: dict[str, Any], key: str) -> StrHeaders:
    value = obj.get(key)
    if not isinstance(value, list):
        raise CaptureFormatError(f"'{key}' must be a list of [name, value] pairs")
    pairs: list[tuple[str, str]] = []
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(part, str) and _latin1(part) for part in item)
        ):
            raise CaptureFormatError(f"'{key}' must be a list of [name, value] latin-1 strings")
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def _latin1(text: str) -> bool:
    # Header bytes are replayed into the exchange as latin-1, as h11 hands them over.
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _body(obj: dict[str, Any], key: str) -> bytes:
    text = _field(obj, key, str)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CaptureFormatError(f"'{key}' is not valid base64") from None


def _shown(value: Any) -> str:
    return "nothing" if value is None else _short(json.dumps(value, default=str))


def _short(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the tap -----------------------------------------------------------------------------------


class CaptureTap:
    """Records one exchange for the capture log, next to the adapter's exchange calls:

        tap = CaptureTap(max_body_bytes)
        tap.request(method, target, client_headers, body)   # with exchange.request_body(body)
        tap.response_head(status, upstream_headers)         # with exchange.response_head(...)
        tap.response_data(chunk)                            # with exchange.response_data(chunk)
        line = to_json_line(tap.finish(exchange.record))    # once the record is final

    Feed it what the exchange is fed (the client's request, the upstream's bytes), never what
    the exchange returns. Write a line for forwarded exchanges only: a refusal has no upstream
    bytes and no usage, and its record says everything already.

    Each body keeps at most `max_body_bytes`; the rest is dropped and the capture is marked
    `truncated`, so a huge upload or image stream cannot exhaust memory. Response calls may be
    missing (the upstream never answered): the capture then says status 0.
    """

    def __init__(self, max_body_bytes: int) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be >= 0")
        self._max = max_body_bytes
        self._method = ""
        self._target = ""
        self._request_headers: list[tuple[str, str]] = []
        self._request_body = b""
        self._status = 0
        self._response_headers: list[tuple[str, str]] = []
        self._response_body = bytearray()
        self._truncated = False

    @property
    def forwarded(self) -> bool:
        """Whether `request()` was called: adapters call it once the exchange forwards."""
        return bool(self._method)

    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> None:
        """The client's request. A request refused on its head alone has no body: call this
        without one."""
        self._method = method
        self._target = target
        self._request_headers = redacted(headers)
        if len(body) > self._max:
            self._truncated = True
            body = body[: self._max]
        self._request_body = bytes(body)

    def response_head(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self._status = status
        self._response_headers = redacted(headers)

    def response_data(self, chunk: bytes) -> None:
        room = self._max - len(self._response_body)
        if len(chunk) > room:
            self._truncated = True
            chunk = chunk[: max(room, 0)]
        self._response_body += chunk

    def finish(self, record: UsageRecord) -> CapturedExchange:
        """The capture, with identity, times and ending taken from the exchange's record."""
        principal = record.principal
        if principal is not None:
            # Grants, role and key id are the token's business, not the log's.
            principal = Principal(
                project=principal.project,
                room=principal.room,
                participant=principal.participant,
                session=principal.session,
            )
        return CapturedExchange(
            request_id=record.request_id,
            started_at=record.started_at,
            ended_at=record.ended_at,
            principal=principal,
            method=self._method or record.method,
            target=self._target,
            request_headers=self._request_headers,
            request_body=self._request_body,
            status=self._status,
            response_headers=self._response_headers,
            response_body=bytes(self._response_body),
            truncated=self._truncated,
            ending=record.ending.value,
        )
