"""Building blocks shared by the usage meters.

Owns: lenient readers for provider JSON (every field optional, wrong types read as absent, never
negative), the output estimator used when a stream ends before its usage, the two base meters
(`JsonBodyMeter` for bodies read whole, `SseMeter` for event streams), and adding `Usage`s.

The output estimator: when a stream is cut (or errors) before the provider reports output, the
output is estimated as ceil(characters / 4), counting the characters of the streamed text deltas
as they appear in the JSON string literals on the wire (escapes such as `\\n` count as written, so
the estimate errs high). It is always flagged `UsageSource.ESTIMATED` for reconciliation. A string
literal never spans a raw newline (JSON forbids one inside a string), so a literal is always
inside one SSE line.

Quiet chunks (the streaming fast path): most of a stream is text deltas, and all a text delta
changes is the character count. A meter declares `QUIET`, a pattern that only a run of whole
events of that harmless kind can match in full, in its exact wire form (`event:` line, one
`data: {` line, blank line). When the parser is at an event boundary and a chunk matches `QUIET`,
the meter counts the chunk's characters with one scan instead of parsing its events one by one.
The result is the same by construction: the parser would end at the same boundary with the same
state, and the literals counted are the same ones (none can start on an `event:` line or cross
a line). The fuzz properties check it against byte-by-byte feeding.

Does not own: any one endpoint's fields (one module per endpoint), or SSE framing (sse).
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

import attrs

from ..records import ImageCount, Usage, UsageSource
from ..sse import Event, SSEParser
from . import Metering, RequestFacts

__all__ = [
    "MAX_JSON_BODY",
    "JsonBodyMeter",
    "SseMeter",
    "add_usage",
    "as_int",
    "as_str",
    "ceil_seconds",
    "estimate_output_tokens",
    "event_kind",
    "get",
    "loads_object",
    "string_literal_chars",
]

# A JSON body larger than this is not decoded (it is still delivered): usage is UNPARSEABLE.
# Image responses with several multi-MB base64 images stay well below it.
MAX_JSON_BODY = 256 * 1024 * 1024


def get(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... or None when any step is missing or not an object."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def as_int(value: Any) -> int:
    """A count as an int >= 0; anything else (missing, null, bool, string, negative) is 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return max(0, int(value))


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def loads_object(data: bytes) -> dict[str, Any] | None:
    """A JSON object from bytes, or None for invalid JSON or a non-object."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def estimate_output_tokens(chars: int) -> int:
    """The documented estimator (module header): ceil(characters / 4)."""
    return -(-chars // 4)


def string_literal_chars(data: bytes, pattern: re.Pattern[bytes]) -> int:
    """Characters of the string literals `pattern` captures (group 1), without JSON-decoding."""
    if data.isascii():  # one byte, one character
        return sum(match.end(1) - match.start(1) for match in pattern.finditer(data))
    total = 0
    for match in pattern.finditer(data):
        total += len(match.group(1).decode("utf-8", "replace"))
    return total


def add_usage(a: Usage, b: Usage) -> Usage:
    """Field-wise sum of two usages (images merged by size and quality)."""
    counts: dict[tuple[str, str], int] = {}
    for image in (*a.images, *b.images):
        key = (image.size, image.quality)
        counts[key] = counts.get(key, 0) + image.count
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
        cache_write_5m_tokens=a.cache_write_5m_tokens + b.cache_write_5m_tokens,
        cache_write_1h_tokens=a.cache_write_1h_tokens + b.cache_write_1h_tokens,
        input_audio_tokens=a.input_audio_tokens + b.input_audio_tokens,
        input_image_tokens=a.input_image_tokens + b.input_image_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        output_audio_tokens=a.output_audio_tokens + b.output_audio_tokens,
        output_image_tokens=a.output_image_tokens + b.output_image_tokens,
        images=tuple(ImageCount(size, quality, n) for (size, quality), n in counts.items()),
        input_characters=a.input_characters + b.input_characters,
        audio_seconds=a.audio_seconds + b.audio_seconds,
        web_search_requests=a.web_search_requests + b.web_search_requests,
        web_fetch_requests=a.web_fetch_requests + b.web_fetch_requests,
        code_execution_requests=a.code_execution_requests + b.code_execution_requests,
    )


def ceil_seconds(value: Any) -> Decimal:
    """Audio length in whole seconds, rounded up as OpenAI reports it (WIRE.md §6: 8.47 -> 9)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Decimal(0)
    if not math.isfinite(value) or value <= 0:
        return Decimal(0)
    return Decimal(math.ceil(value))


class JsonBodyMeter:
    """A meter for a JSON body: delivers bytes untouched, decodes the whole body at the end.

    Subclasses implement `_from_object(obj)`. Invalid JSON, a non-object, or a body over
    `MAX_JSON_BODY` gives UNPARSEABLE; an empty body gives NONE.
    """

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> bytes:
        if self._size <= MAX_JSON_BODY:
            self._chunks.append(data)
            self._size += len(data)
        return data

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        if self._size == 0:
            return b"", Metering(source=UsageSource.NONE)
        if self._size > MAX_JSON_BODY:
            return b"", Metering(source=UsageSource.UNPARSEABLE)
        obj = loads_object(b"".join(self._chunks))
        self._chunks = []
        if obj is None:
            return b"", Metering(source=UsageSource.UNPARSEABLE)
        return b"", attrs.evolve(self._from_object(obj), terminated=True)

    def _from_object(self, obj: dict[str, Any]) -> Metering:
        raise NotImplementedError


class SseMeter:
    """A meter for an event stream: delivers bytes untouched, hands each event to `_on_event`.

    Subclasses implement `_on_event(event)` and `_result(complete)`. A usage event whose data
    is not valid JSON sets `_garbled`, which turns "no usage" into UNPARSEABLE.
    """

    # Named events that end the provider's answer (subclasses); `data: [DONE]` always does.
    END_EVENTS: frozenset[str] = frozenset()
    # Whole events that only `_on_quiet` needs to see (module header); None: no fast path.
    QUIET: re.Pattern[bytes] | None = None

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self._parser = SSEParser()
        self._garbled = False
        self._terminated = False

    def feed(self, data: bytes) -> bytes:
        quiet = self.QUIET
        if quiet is not None and self._parser.at_event_boundary() and quiet.fullmatch(data):
            self._on_quiet(data)
            return data
        for event in self._parser.feed(data):
            self._on_event(event)
            if event.event in self.END_EVENTS or event.data[:6] == b"[DONE]":
                self._terminated = True
        return data

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        self._parser.close()
        metering = self._result(complete)
        if self._terminated:
            metering = attrs.evolve(metering, terminated=True)
        return b"", metering

    def _decode(self, event: Event) -> dict[str, Any] | None:
        obj = loads_object(event.data)
        if obj is None:
            self._garbled = True
        return obj

    def _no_usage(self, **fields: Any) -> Metering:
        source = UsageSource.UNPARSEABLE if self._garbled else UsageSource.NONE
        return Metering(source=source, **fields)

    def _on_event(self, event: Event) -> None:
        raise NotImplementedError

    def _on_quiet(self, data: bytes) -> None:
        """A chunk of whole events matching `QUIET` (module header)."""
        raise NotImplementedError

    def _result(self, complete: bool) -> Metering:
        raise NotImplementedError


_TYPE = re.compile(rb'"type"\s*:\s*"([^"\\]{1,200})"')


def event_kind(event: Event) -> str:
    """The event's type: its `event:` name, or else the first JSON `"type"` in its data.

    Providers name events after their JSON `type` (WIRE.md §1.6); data-only frames (chat,
    transcription, speech, or a gateway that drops `event:` lines) are recognised by the sniffed
    `type` without decoding the JSON.
    """
    if event.event != "message":
        return event.event
    match = _TYPE.search(event.data, 0, 400)
    return match.group(1).decode("ascii", "replace") if match else "message"
