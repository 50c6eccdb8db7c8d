"""The request side of accounting: what a meter needs to know, read from the request body.

Owns: `read_request`, which reads JSON bodies (model, stream, n, size, quality, speech `input`
length in characters, response_format, stream_format) and multipart/form-data bodies (the same
form fields; file parts are skipped unread, through python-multipart's sans-IO streaming parser),
and the one request rewrite accounting needs: a streamed chat completion whose client did not
ask for `stream_options.include_usage` gets it added upstream, and the meter is told to remove
the usage chunk again (`strip_usage_chunk`, WIRE.md §2, §16.6).

The rewrite keeps every byte the client sent when it can: without `stream_options`, the option
is inserted right after the opening brace; only a body that already has `stream_options` (without
include_usage) is re-serialised.

Refusals (`BadRequest`) name the rule, never the body.

Does not own: routing, size limits, model allow-lists (exchange, routes).
"""

from __future__ import annotations

import json
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import BadRequest
from . import RequestFacts

__all__ = ["read_request"]

_INCLUDE_USAGE = b'"stream_options":{"include_usage":true},'
# Form fields read from multipart bodies; values longer than this are not ours to read.
_FORM_FIELDS = frozenset({"model", "n", "size", "quality", "response_format", "stream"})
_MAX_FIELD = 1024


def read_request(
    provider: str,
    endpoint: str,
    content_type: str | None,
    body: bytes,
    *,
    batch_id: str | None = None,
    public_base_url: str | None = None,
    creates: str | None = None,
) -> tuple[RequestFacts, bytes]:
    """Facts about the request, and the body to send upstream (usually `body` itself)."""
    # Every field is gathered first and the frozen facts built once (this runs per request).
    known: dict[str, Any] = {
        "provider": provider,
        "endpoint": endpoint,
        "batch_id": batch_id,
        "public_base_url": public_base_url,
        "creates": creates,
    }
    if not body.strip():
        return RequestFacts(**known), body
    options = parse_options_header(content_type)
    if options[0].lower() == b"multipart/form-data":
        fields = _read_multipart(provider, options[1].get(b"boundary"), body)
        return RequestFacts(**known, **_form_fields(fields)), body
    obj = _read_json(provider, body)
    known.update(_json_fields(endpoint, obj))
    if endpoint == "chat.completions" and known["stream"] and not _asks_for_usage(obj):
        known["strip_usage_chunk"] = True
        return RequestFacts(**known), _add_include_usage(body, obj)
    return RequestFacts(**known), body


# -- JSON --------------------------------------------------------------------------------------


def _read_json(provider: str, body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest(provider, "The request body is not valid JSON.") from None
    if not isinstance(obj, dict):
        raise BadRequest(provider, "The request body must be a JSON object.")
    return obj


def _json_fields(endpoint: str, obj: dict[str, Any]) -> dict[str, Any]:
    speech_input = obj.get("input")
    return dict(
        model=_str(obj.get("model")),
        stream=obj.get("stream") is True,
        n=_count(obj.get("n")),
        size=_str(obj.get("size")),
        quality=_str(obj.get("quality")),
        input_characters=(
            len(speech_input) if endpoint == "audio.speech" and isinstance(speech_input, str) else 0
        ),
        response_format=_str(obj.get("response_format")),
        stream_format=_str(obj.get("stream_format")),
        previous_response_id=_str(obj.get("previous_response_id")),
        names_conversation=obj.get("conversation") is not None,
        batch_models=_batch_models(obj) if endpoint == "messages.batches" else (),
    )


def _batch_models(obj: dict[str, Any]) -> tuple[str, ...]:
    """The distinct models a batch's requests name: each is checked like a single request's,
    because the batch is billed (per line) when its results are read (WIRE.md §11)."""
    requests = obj.get("requests")
    if not isinstance(requests, list):
        return ()
    models: dict[str, None] = {}
    for item in requests:
        params = item.get("params") if isinstance(item, dict) else None
        model = params.get("model") if isinstance(params, dict) else None
        if isinstance(model, str):
            models[model] = None
    return tuple(models)


def _asks_for_usage(obj: dict[str, Any]) -> bool:
    options = obj.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _add_include_usage(body: bytes, obj: dict[str, Any]) -> bytes:
    if "stream_options" not in obj:
        # Insert after the opening brace: every other byte stays as the client sent it. The
        # object is not empty (it has "stream": true), so the trailing comma is valid.
        brace = body.index(b"{")
        return body[: brace + 1] + _INCLUDE_USAGE + body[brace + 1 :]
    options = obj.get("stream_options")
    merged = dict(options) if isinstance(options, dict) else {}
    merged["include_usage"] = True
    rewritten = {**obj, "stream_options": merged}
    return json.dumps(rewritten, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- multipart/form-data -----------------------------------------------------------------------


class _FormReader:
    """Collects the small form fields we need; file parts and unknown fields are skipped."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.ended = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._name: str | None = None
        self._value = bytearray()
        self._keep = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._name = None
        self._value.clear()
        self._keep = False

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_field).lower() == b"content-disposition":
            _, params = parse_options_header(bytes(self._header_value))
            name = params.get(b"name", b"").decode("utf-8", "replace")
            self._name = name
            self._keep = name in _FORM_FIELDS and b"filename" not in params
        self._header_field.clear()
        self._header_value.clear()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._keep and len(self._value) <= _MAX_FIELD:
            self._value += data[start:end]

    def _part_end(self) -> None:
        if self._keep and self._name is not None and len(self._value) <= _MAX_FIELD:
            self.fields[self._name] = self._value.decode("utf-8", "replace").strip()

    def _end(self) -> None:
        self.ended = True


def _read_multipart(provider: str, boundary: bytes | None, body: bytes) -> dict[str, str]:
    if not boundary:
        raise BadRequest(provider, "The multipart/form-data body has no boundary.")
    reader = _FormReader()
    try:
        parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError):
        raise BadRequest(provider, "The multipart/form-data body is malformed.") from None
    if not reader.ended:
        raise BadRequest(provider, "The multipart/form-data body is incomplete.")
    return reader.fields


def _form_fields(fields: dict[str, str]) -> dict[str, Any]:
    n = fields.get("n", "")
    return dict(
        model=fields.get("model") or None,
        stream=fields.get("stream", "").lower() == "true",
        n=_count(int(n)) if n.isascii() and n.isdigit() else 1,
        size=fields.get("size") or None,
        quality=fields.get("quality") or None,
        response_format=fields.get("response_format") or None,
    )


# -- small readers -----------------------------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int:
    """`n`: a positive int, else the default 1 (the provider validates the real range)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return 1
    return value
