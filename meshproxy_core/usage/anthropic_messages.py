"""Anthropic Messages usage: `/v1/messages`, JSON and stream (WIRE.md §8, §9, §14, §16.1-4, §16.14).

Owns: normalising Anthropic `Usage`, the JSON meter and the stream meter.

Normalisation (Anthropic's input EXCLUDES cache, §16.5):
    input_tokens          = input_tokens
    cache_read_tokens     = cache_read_input_tokens
    cache_write_5m/1h     = cache_creation.ephemeral_5m/1h_input_tokens; all of
                            cache_creation_input_tokens at 5m when the split is missing; when the
                            flat count exceeds the split (a delta raised it, §9), the excess at 5m
    output_tokens         = output_tokens (thinking inside); reasoning_tokens = thinking_tokens
    web_search/web_fetch/code_execution_requests = server_tool_use.*
    + every `iterations[type=compaction]` entry: its tokens are NOT in the top-level usage (§8)

Stream: `message_start.message.usage` is the start; every `message_delta.usage` is CUMULATIVE
and is merged field by field by overwrite, a field absent or null keeping its earlier value (the
SDK accumulator, §9). The placeholder `output_tokens` of message_start is never billed: until a
message_delta arrives, output is ESTIMATED as ceil(characters / 4) over the `text`, `thinking`
and `partial_json` strings of the content_block_delta events seen (characters as written in the
JSON literals; see common).
Only message_start, message_delta and error are decoded; content deltas are scanned.

States:  WAITING --message_start--> STARTED --message_delta--> REPORTED
         any --error--> (error_type set; the usage so far is kept)

Does not own: batch result files (anthropic_batches), count_tokens (free, select).
"""

from __future__ import annotations

import re
from typing import Any

from ..records import Usage, UsageSource
from ..sse import Event
from . import Metering
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

__all__ = ["AnthropicJsonMeter", "AnthropicStreamMeter", "anthropic_usage", "merge_delta"]

_DELTA_TEXT = re.compile(rb'"(?:text|thinking|partial_json)"\s*:\s*"((?:[^"\\\n]|\\.)*)"')


def anthropic_usage(raw: dict[str, Any]) -> Usage:
    """Normalise one Anthropic usage object (module header)."""
    split = raw.get("cache_creation")
    write_5m = as_int(get(split, "ephemeral_5m_input_tokens"))
    write_1h = as_int(get(split, "ephemeral_1h_input_tokens"))
    flat = raw.get("cache_creation_input_tokens")
    if not isinstance(split, dict):
        write_5m, write_1h = as_int(flat), 0
    elif as_int(flat) > write_5m + write_1h:
        write_5m += as_int(flat) - (write_5m + write_1h)
    output = as_int(raw.get("output_tokens"))
    tools = raw.get("server_tool_use")
    usage = Usage(
        input_tokens=as_int(raw.get("input_tokens")),
        cache_read_tokens=as_int(raw.get("cache_read_input_tokens")),
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=output,
        reasoning_tokens=min(as_int(get(raw, "output_tokens_details", "thinking_tokens")), output),
        web_search_requests=as_int(get(tools, "web_search_requests")),
        web_fetch_requests=as_int(get(tools, "web_fetch_requests")),
        code_execution_requests=as_int(get(tools, "code_execution_requests")),
    )
    return _add_compaction(usage, raw.get("iterations"))


def _add_compaction(usage: Usage, iterations: Any) -> Usage:
    """Add the beta `iterations[type=compaction]` tokens, which top-level usage excludes (§8)."""
    if not isinstance(iterations, list):
        return usage
    for entry in iterations:
        if not isinstance(entry, dict) or entry.get("type") != "compaction":
            continue
        part = anthropic_usage({k: v for k, v in entry.items() if k != "iterations"})
        usage = Usage(
            input_tokens=usage.input_tokens + part.input_tokens,
            cache_read_tokens=usage.cache_read_tokens + part.cache_read_tokens,
            cache_write_5m_tokens=usage.cache_write_5m_tokens + part.cache_write_5m_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens + part.cache_write_1h_tokens,
            output_tokens=usage.output_tokens + part.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            web_search_requests=usage.web_search_requests,
            web_fetch_requests=usage.web_fetch_requests,
            code_execution_requests=usage.code_execution_requests,
        )
    return usage


def merge_delta(merged: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """The cumulative merge of §9: each non-null field of `delta` overwrites; others are kept."""
    out = dict(merged)
    out.update({key: value for key, value in delta.items() if value is not None})
    return out


class AnthropicJsonMeter(JsonBodyMeter):
    """A non-streamed Message."""

    def _from_object(self, obj: dict[str, Any]) -> Metering:
        raw = obj.get("usage")
        model = as_str(obj.get("model"))
        if obj.get("type") == "error":
            return Metering(
                source=UsageSource.NONE,
                error_type=as_str(get(obj, "error", "type")),
                error_code=as_str(get(obj, "error", "code")),
            )
        if not isinstance(raw, dict):
            return Metering(source=UsageSource.NONE, response_model=model)
        return Metering(
            usage=anthropic_usage(raw),
            source=UsageSource.REPORTED,
            raw_usage=raw,
            response_model=model,
            service_tier=as_str(raw.get("service_tier")),
        )


class AnthropicStreamMeter(SseMeter):
    """Messages stream events (module header for the states and the merge rule)."""

    END_EVENTS = frozenset({"message_stop"})
    # The bulk of a stream: text, thinking and tool-input deltas (usage.common, quiet chunks).
    QUIET = re.compile(rb"(?:event: content_block_delta\ndata: \{[^\n]*\n\n)+")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._merged: dict[str, Any] = {}
        self._started = False  # message_start carried a usage object
        self._delta_seen = False  # a message_delta reported cumulative usage
        self._model: str | None = None
        self._tier: str | None = None
        self._error_type: str | None = None
        self._chars = 0

    def _on_event(self, event: Event) -> None:
        kind = event_kind(event)
        if kind == "content_block_delta":
            self._chars += string_literal_chars(event.data, _DELTA_TEXT)
        elif kind == "message_start":
            self._on_start(self._decode(event))
        elif kind == "message_delta":
            usage = get(self._decode(event), "usage")
            if isinstance(usage, dict):
                self._merged = merge_delta(self._merged, usage)
                self._delta_seen = True
        elif kind == "error":
            obj = self._decode(event)
            # The legacy shape has no top-level type (§12); both nest error.type.
            self._error_type = as_str(get(obj, "error", "type")) or "error"

    def _on_quiet(self, data: bytes) -> None:
        self._chars += string_literal_chars(data, _DELTA_TEXT)

    def _on_start(self, obj: dict[str, Any] | None) -> None:
        message = get(obj, "message")
        self._model = as_str(get(message, "model")) or self._model
        usage = get(message, "usage")
        if isinstance(usage, dict):
            self._merged = merge_delta(self._merged, usage)
            self._started = True
            self._tier = as_str(usage.get("service_tier")) or self._tier

    def _result(self, complete: bool) -> Metering:
        fields: dict[str, Any] = {
            "response_model": self._model,
            "service_tier": self._tier,
            "error_type": self._error_type,
        }
        if self._delta_seen:
            return Metering(
                usage=anthropic_usage(self._merged),
                source=UsageSource.REPORTED,
                raw_usage=self._merged,
                **fields,
            )
        if self._started or self._chars:
            # No message_delta: the real input counts, and an estimated output in place of the
            # placeholder (§9 "estimate output from the text received").
            known = dict(self._merged)
            known["output_tokens"] = estimate_output_tokens(self._chars)
            known.pop("output_tokens_details", None)
            return Metering(
                usage=anthropic_usage(known),
                source=UsageSource.ESTIMATED,
                raw_usage=self._merged or None,
                **fields,
            )
        return self._no_usage(**fields)
