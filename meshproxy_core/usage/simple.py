"""Meters for responses that carry nothing billable.

Owns: `FreeMeter` (models, Anthropic count_tokens, OpenAI responses/input_tokens: free, §10, §3)
and `NoUsageMeter` (endpoints that report no usage and where nothing can be counted: legacy
`/v1/complete` (§12), plain-text transcriptions, translations without a duration; §16.9). Both
pass the body through untouched; `NoUsageMeter` still reads the model name (JSON body or the
first SSE event) and a mid-stream `error` event's type, lazily.

Does not own: counting what such endpoints could be billed by (that needs a tokenizer).
"""

from __future__ import annotations

import re

from ..records import UsageSource
from . import Metering, RequestFacts

__all__ = ["FreeMeter", "NoUsageMeter"]

_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_ERROR_TYPE = re.compile(rb'"error"\s*:\s*\{[^{}]*?"type"\s*:\s*"([^"\\]{1,100})"')
_SNIFF_LIMIT = 64 * 1024  # only the start of the body is scanned for the model name


class FreeMeter:
    """A free endpoint: zero usage, source FREE, bytes untouched."""

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        return b"", Metering(source=UsageSource.FREE)


class NoUsageMeter:
    """No usage reported: source NONE; the model and an error type are read if present."""

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self._head = bytearray()
        self._tail = b""  # the last bytes seen, to find an error event at the end of a stream

    def feed(self, data: bytes) -> bytes:
        if len(self._head) < _SNIFF_LIMIT:
            self._head += data[: _SNIFF_LIMIT - len(self._head)]
        self._tail = (self._tail + data)[-4096:]
        return data

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        model = _MODEL.search(self._head)
        error = _ERROR_TYPE.search(self._tail)
        return b"", Metering(
            source=UsageSource.NONE,
            response_model=model.group(1).decode("utf-8", "replace") if model else None,
            error_type=error.group(1).decode("utf-8", "replace") if error else None,
        )
