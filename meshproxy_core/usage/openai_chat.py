"""OpenAI Chat Completions usage (WIRE.md §2, §14, §16.6).

Owns: normalising `CompletionUsage`, the JSON meter, and the stream meter, including removing the
usage-only chunk when the proxy injected `stream_options.include_usage` for a client that did not
ask for it.

Normalisation (details are subsets of the main counts, §2):
    cache_read_tokens   = prompt_tokens_details.cached_tokens
    input_audio_tokens  = prompt_tokens_details.audio_tokens
    input_image_tokens  = prompt_tokens_details.image_tokens
    input_tokens        = prompt_tokens - cached - audio - image        (clamped at 0)
    output_audio_tokens = completion_tokens_details.audio_tokens
    output_tokens       = completion_tokens - completion audio          (reasoning stays inside)
    reasoning_tokens    = completion_tokens_details.reasoning_tokens    (detail only)
`cache_write_tokens` (new in SDK 3.x) stays inside input_tokens: its TTL is not one of the
Anthropic 5m/1h classes and OpenAI does not price it separately; the raw object keeps it.

Stream (lazy): a chunk is JSON-decoded only when it has a non-null `"usage":` or an `"error":`
key; a run of whole content chunks with neither is counted with one scan (usage.common, quiet
chunks). The usage chunk is recognised by `usage != null`, never by empty `choices`: Azure's first
prompt-filter chunk has empty choices and no usage (§2).

Does not own: asking for the usage chunk (request_facts rewrites the request).
"""

from __future__ import annotations

import re
from typing import Any

from ..records import Usage, UsageSource
from ..sse import Event, SSEParser
from . import Metering, RequestFacts
from .common import (
    JsonBodyMeter,
    as_int,
    as_str,
    estimate_output_tokens,
    get,
    loads_object,
    string_literal_chars,
)

__all__ = ["ChatJsonMeter", "ChatStreamMeter", "chat_usage"]

# Whole data-only events whose data is an object: content chunks, unless a search below finds
# a usage or error key in them.
_QUIET = re.compile(rb"(?:data: \{[^\n]*\n\n)+")
_USAGE_NOT_NULL = re.compile(rb'"usage"\s*:\s*+(?!null)')
_ERROR_KEY = re.compile(rb'"error"\s*:')
# The text of a delta: `"content":"..."` (and refusals), for the output estimator.
_CONTENT = re.compile(rb'"(?:content|refusal)"\s*:\s*"((?:[^"\\\n]|\\.)*)"')


def chat_usage(raw: dict[str, Any]) -> Usage:
    """Normalise one `CompletionUsage` object (module header)."""
    prompt = as_int(raw.get("prompt_tokens"))
    completion = as_int(raw.get("completion_tokens"))
    cached = as_int(get(raw, "prompt_tokens_details", "cached_tokens"))
    audio_in = as_int(get(raw, "prompt_tokens_details", "audio_tokens"))
    image_in = as_int(get(raw, "prompt_tokens_details", "image_tokens"))
    audio_out = as_int(get(raw, "completion_tokens_details", "audio_tokens"))
    reasoning = as_int(get(raw, "completion_tokens_details", "reasoning_tokens"))
    # Clamp the parts so the normalised fields never add up to more than the prompt.
    cached = min(cached, prompt)
    audio_in = min(audio_in, prompt - cached)
    image_in = min(image_in, prompt - cached - audio_in)
    audio_out = min(audio_out, completion)
    return Usage(
        input_tokens=prompt - cached - audio_in - image_in,
        cache_read_tokens=cached,
        input_audio_tokens=audio_in,
        input_image_tokens=image_in,
        output_tokens=completion - audio_out,
        reasoning_tokens=min(reasoning, completion),
        output_audio_tokens=audio_out,
    )


def _error_fields(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "error_type": as_str(get(obj, "error", "type")),
        "error_code": as_str(get(obj, "error", "code")),
    }


class ChatJsonMeter(JsonBodyMeter):
    """A non-streamed `chat.completion` (or a JSON answer to a streamed request)."""

    def _from_object(self, obj: dict[str, Any]) -> Metering:
        raw = obj.get("usage")
        model = as_str(obj.get("model"))
        tier = as_str(obj.get("service_tier"))
        if isinstance(obj.get("error"), dict):
            return Metering(source=UsageSource.NONE, **_error_fields(obj))
        if not isinstance(raw, dict):
            return Metering(source=UsageSource.NONE, response_model=model, service_tier=tier)
        return Metering(
            usage=chat_usage(raw),
            source=UsageSource.REPORTED,
            raw_usage=raw,
            response_model=model,
            service_tier=tier,
        )


_USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,')


def _without_usage_null(data: bytes) -> bytes:
    """The client did not ask for usage: without include_usage the key is absent from every
    chunk (WIRE.md §2), so the `"usage":null` the proxy's option added is removed too. The
    pattern cannot match inside a JSON string, where quotes are escaped.

    Faster for OpenAI's compact form: two replaces remove each `,"usage":null` followed by `,`
    or `}`, keeping the follower, so each removal is one the pattern makes too. If that removed
    every `"usage"`, the pattern has nothing else to match and the results are equal."""
    if b'"usage"' not in data:
        return data
    out = data.replace(b',"usage":null,', b",").replace(b',"usage":null}', b"}")
    if b'"usage"' not in out:
        return out
    return _USAGE_NULL.sub(b"", data)


class ChatStreamMeter:
    """`chat.completion.chunk` events; optionally removes the injected usage-only chunk.

    States: STREAMING (no usage yet) -> USAGE_SEEN (the last non-null usage is kept). An error
    frame records error_type/code in either state.
    """

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self._strip = facts.strip_usage_chunk
        self._parser = SSEParser(keep_raw=self._strip)
        self._raw_usage: dict[str, Any] | None = None
        self._model: str | None = None
        self._tier: str | None = None
        self._error: dict[str, Any] = {}
        self._chars = 0
        self._garbled = False
        self._dropped = False
        self._sniffed = False  # the first content chunk was decoded once for model and tier
        self._terminated = False

    def feed(self, data: bytes) -> bytes:
        if self._quiet(data):
            self._chars += string_literal_chars(data, _CONTENT)
            return _without_usage_null(data) if self._strip else data
        events = self._parser.feed(data)
        if not self._strip:
            for event in events:
                self._on_event(event)
            return data
        kept = [event.raw for event in events if not self._on_event(event)]
        return _without_usage_null(b"".join(kept))

    def _quiet(self, data: bytes) -> bool:
        """Content chunks only, after the first (read once for model and tier)."""
        return (
            self._sniffed
            and self._parser.at_event_boundary()
            and _QUIET.fullmatch(data) is not None
            and _USAGE_NOT_NULL.search(data) is None
            and _ERROR_KEY.search(data) is None
        )

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        tail = self._parser.pending_raw() if self._strip else b""
        self._parser.close()
        return tail, self._result()

    def _on_event(self, event: Event) -> bool:
        """Account for one event; True when it is the usage chunk to remove from the stream."""
        data = event.data
        if data[:6] == b"[DONE]":
            self._terminated = True
            return False
        if _USAGE_NOT_NULL.search(data) is None and _ERROR_KEY.search(data) is None:
            # A content chunk: scanned, not decoded.
            self._chars += string_literal_chars(data, _CONTENT)
            if not self._sniffed:
                self._sniffed = True
                self._sniff_model(data)
            return False
        obj = loads_object(data)
        if obj is None:
            self._garbled = True
            return False
        if isinstance(obj.get("error"), dict):
            self._error = _error_fields(obj)
            return False
        self._model = as_str(obj.get("model")) or self._model
        self._tier = as_str(obj.get("service_tier")) or self._tier
        raw = obj.get("usage")
        if not isinstance(raw, dict):
            self._chars += string_literal_chars(data, _CONTENT)
            return False
        self._raw_usage = raw
        choices = obj.get("choices")
        drop = self._strip and not choices
        self._dropped = self._dropped or drop
        if not drop:
            self._chars += string_literal_chars(data, _CONTENT)
        return drop

    def _sniff_model(self, data: bytes) -> None:
        obj = loads_object(data)
        if obj is not None:
            self._model = as_str(obj.get("model"))
            self._tier = as_str(obj.get("service_tier"))

    def _result(self) -> Metering:
        common: dict[str, Any] = {
            "response_model": self._model,
            "service_tier": self._tier,
            "rewritten": self._dropped,
            "terminated": self._terminated,
            **self._error,
        }
        if self._raw_usage is not None:
            usage = chat_usage(self._raw_usage)
            return Metering(
                usage=usage, source=UsageSource.REPORTED, raw_usage=self._raw_usage, **common
            )
        if self._chars:
            # No usage chunk (cut stream, error, or no include_usage): estimate the output only.
            usage = Usage(output_tokens=estimate_output_tokens(self._chars))
            return Metering(usage=usage, source=UsageSource.ESTIMATED, **common)
        source = UsageSource.UNPARSEABLE if self._garbled else UsageSource.NONE
        return Metering(source=source, **common)
