"""OpenAI Responses usage: `/responses` (JSON and stream) and `/responses/compact` (WIRE.md §3).

Owns: normalising `ResponseUsage`, the JSON meter (a Response or a compaction), and the stream
meter, which decodes only the terminal events and `error`.

Normalisation (details are subsets, §3, §14):
    cache_read_tokens = input_tokens_details.cached_tokens
    input_tokens      = input_tokens - cached                       (clamped at 0)
    output_tokens     = output_tokens (reasoning inside); reasoning_tokens = detail
    web_search_requests = tool_usage.web_search.num_requests        (kept apart from usage, §16.14)
`cache_write_tokens` stays inside input_tokens, as for chat. `tool_usage.image_gen` tokens are
not folded in (they are priced at the image model's rates; the raw object is kept).

Stream: usage arrives only on the one terminal event: `response.completed`, `response.incomplete`
(billable; its usage may be null) or `response.failed` (usually null usage, plus
`response.error`). There is no `[DONE]` (§16.7). Text deltas are scanned for the estimator.

Created objects (ownership): the response `id` is reported as `created_object_id` only when the
request creates a stored response (`facts.creates`, i.e. `POST /responses`); a compaction's
`resp_...` id names nothing a later request can use.

Does not own: `/responses/input_tokens`, which is free (select).
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from ..records import Usage, UsageSource
from ..sse import Event
from . import Metering, RequestFacts
from .common import (
    JsonBodyMeter,
    SseMeter,
    as_int,
    as_str,
    estimate_output_tokens,
    event_kind,
    get,
    string_literal_chars,
)

__all__ = ["ResponsesJsonMeter", "ResponsesStreamMeter", "responses_usage"]

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.reasoning_summary_text.delta"})
_DELTA = re.compile(rb'"delta"\s*:\s*"((?:[^"\\\n]|\\.)*)"')


def responses_usage(raw: dict[str, Any], tool_usage: Any = None) -> Usage:
    """Normalise one `ResponseUsage` (and the hosted web-search count) (module header)."""
    total_in = as_int(raw.get("input_tokens"))
    output = as_int(raw.get("output_tokens"))
    cached = min(as_int(get(raw, "input_tokens_details", "cached_tokens")), total_in)
    reasoning = as_int(get(raw, "output_tokens_details", "reasoning_tokens"))
    return Usage(
        input_tokens=total_in - cached,
        cache_read_tokens=cached,
        output_tokens=output,
        reasoning_tokens=min(reasoning, output),
        web_search_requests=as_int(get(tool_usage, "web_search", "num_requests")),
    )


def _response_metering(response: dict[str, Any]) -> Metering:
    """Metering from a Response or compaction object (usage may be null)."""
    raw = response.get("usage")
    error_code = as_str(get(response, "error", "code"))
    fields: dict[str, Any] = {
        "created_object_id": as_str(response.get("id")),
        "response_model": as_str(response.get("model")),
        "service_tier": as_str(response.get("service_tier")),
        "error_code": error_code,
        "error_type": "response.failed" if response.get("status") == "failed" else None,
    }
    if not isinstance(raw, dict):
        return Metering(source=UsageSource.NONE, **fields)
    usage = responses_usage(raw, response.get("tool_usage"))
    raw_usage: Any = raw
    if response.get("tool_usage") is not None:
        raw_usage = {"usage": raw, "tool_usage": response.get("tool_usage")}
    return Metering(usage=usage, source=UsageSource.REPORTED, raw_usage=raw_usage, **fields)


class ResponsesJsonMeter(JsonBodyMeter):
    """A Response object, or the `response.compaction` object of `/responses/compact`."""

    def _from_object(self, obj: dict[str, Any]) -> Metering:
        if isinstance(obj.get("error"), dict) and "usage" not in obj and "object" not in obj:
            return Metering(
                source=UsageSource.NONE,
                error_type=as_str(get(obj, "error", "type")),
                error_code=as_str(get(obj, "error", "code")),
            )
        return _only_what_it_creates(_response_metering(obj), self.facts)


class ResponsesStreamMeter(SseMeter):
    """Responses stream events. States: OPEN -> TERMINAL (one terminal event seen)."""

    END_EVENTS = _TERMINAL
    # The bulk of a stream: text deltas (usage.common, quiet chunks).
    QUIET = re.compile(
        rb"(?:event: response\.(?:output_text|reasoning_summary_text)\.delta\ndata: \{[^\n]*\n\n)+"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._terminal: Metering | None = None
        self._error_code: str | None = None
        self._chars = 0
        self._model: str | None = None  # from response.created, for streams cut before the end
        self._tier: str | None = None
        self._id: str | None = None

    def _on_event(self, event: Event) -> None:
        kind = event_kind(event)
        if kind in _TEXT_DELTAS:
            self._chars += string_literal_chars(event.data, _DELTA)
        elif kind == "response.created":
            # Small (usage null, empty output): read once so a cut stream still names its model.
            response = get(self._decode(event), "response")
            self._model = as_str(get(response, "model"))
            self._tier = as_str(get(response, "service_tier"))
            self._id = as_str(get(response, "id"))
        elif kind in _TERMINAL:
            obj = self._decode(event)
            response = get(obj, "response")
            if isinstance(response, dict):
                self._terminal = _response_metering(response)
        elif kind == "error":
            obj = self._decode(event)
            if obj is not None:
                self._error_code = as_str(obj.get("code")) or as_str(get(obj, "error", "code"))

    def _on_quiet(self, data: bytes) -> None:
        self._chars += string_literal_chars(data, _DELTA)

    def _result(self, complete: bool) -> Metering:
        return _only_what_it_creates(self._read(), self.facts)

    def _read(self) -> Metering:
        error: dict[str, Any] = {}
        if self._error_code is not None:
            error = {"error_type": "error", "error_code": self._error_code}
        if self._terminal is not None:
            terminal = self._terminal
            if terminal.source is UsageSource.NONE and self._chars and not terminal.error_code:
                # response.incomplete with null usage after text was streamed: estimate.
                terminal = _estimated(terminal, self._chars)
            return _merge(terminal, error)
        known: dict[str, Any] = {
            "response_model": self._model,
            "service_tier": self._tier,
            "created_object_id": self._id,
        }
        if self._chars:
            return Metering(
                usage=Usage(output_tokens=estimate_output_tokens(self._chars)),
                source=UsageSource.ESTIMATED,
                **known,
                **error,
            )
        return self._no_usage(**known, **error)


def _only_what_it_creates(metering: Metering, facts: RequestFacts) -> Metering:
    """Report the response id as a created object only when the request creates one
    (`facts.creates`). `/responses/compact` answers with a `resp_...` id too, but it stores
    nothing a later request can name: an id without a kind must not reach the ownership store
    (it would register an object of no kind)."""
    if facts.creates is None and metering.created_object_id is not None:
        return attrs.evolve(metering, created_object_id=None)
    return metering


def _estimated(metering: Metering, chars: int) -> Metering:
    return Metering(
        usage=Usage(output_tokens=estimate_output_tokens(chars)),
        source=UsageSource.ESTIMATED,
        response_model=metering.response_model,
        service_tier=metering.service_tier,
        created_object_id=metering.created_object_id,
    )


def _merge(metering: Metering, error: dict[str, Any]) -> Metering:
    if not error or metering.error_type is not None:
        return metering
    return attrs.evolve(metering, **error)
