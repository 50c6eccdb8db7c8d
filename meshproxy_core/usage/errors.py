"""Error responses (HTTP status >= 400): no usage, but the provider's error type and code.

Owns: reading both error shapes (WIRE.md §7, §13) from a bounded copy of the body:
    OpenAI:    {"error": {"message", "type", "param", "code"}}
    Anthropic: {"type": "error", "error": {"type", "message"}, "request_id"}
The body is delivered untouched; only its first `MAX_ERROR_BODY` bytes are kept for reading.
An error is never billed, so the source is NONE even when the body cannot be read.

Does not own: the proxy's own refusals (meshproxy_core.errors).
"""

from __future__ import annotations

from ..records import UsageSource
from . import Metering, RequestFacts
from .common import as_str, get, loads_object

__all__ = ["MAX_ERROR_BODY", "ErrorMeter"]

MAX_ERROR_BODY = 64 * 1024


class ErrorMeter:
    """Keeps up to 64 KiB of an error body and reads error.type / error.code from it."""

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self._kept = bytearray()

    def feed(self, data: bytes) -> bytes:
        room = MAX_ERROR_BODY - len(self._kept)
        if room > 0:
            self._kept += data[:room]
        return data

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        obj = loads_object(bytes(self._kept))
        error = get(obj, "error")
        # Both shapes nest the details under "error"; a bare string error is read as its type.
        if isinstance(error, str):
            return b"", Metering(source=UsageSource.NONE, error_type=error)
        return b"", Metering(
            source=UsageSource.NONE,
            error_type=as_str(get(error, "type")),
            error_code=_code(get(error, "code")),
        )


def _code(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):  # some gateways send numeric codes
        return str(value)
    return as_str(value)
