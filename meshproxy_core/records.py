"""Usage and UsageRecord: the normalised facts a finished exchange produces.

Owns: the shape of what sinks (OpenTelemetry, ledgers, logs) ever see. Every field of `Usage`
counts something disjoint from every other field, so pricing can multiply each field by one rate
and add, and never double counts. Both providers' conventions are normalised here by the usage
machines (OpenAI's cached tokens sit inside prompt tokens; Anthropic's input excludes cache).

Does not own: parsing (usage/), pricing (pricing), or where records go (adapters, contrib).
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any, Protocol

import attrs

__all__ = [
    "Cost",
    "Ending",
    "ImageCount",
    "LineItem",
    "Outcome",
    "Principal",
    "Usage",
    "UsageRecord",
    "UsageSink",
    "UsageSource",
]


class Ending(enum.Enum):
    """How the response stream ended, from the adapter's point of view."""

    COMPLETE = "complete"
    CLIENT_GONE = "client_gone"
    UPSTREAM_FAILED = "upstream_failed"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"


class Outcome(enum.Enum):
    """What happened to the request, for counting requests by outcome."""

    OK = "ok"
    REJECTED = "rejected"  # refused by the proxy, never forwarded
    UPSTREAM_ERROR = "upstream_error"  # upstream answered 4xx/5xx or an error event
    PARTIAL = "partial"  # forwarded, but the response did not end cleanly
    FAILED = "failed"  # forwarded, upstream unreachable or reset before any response


class UsageSource(enum.Enum):
    """Where the numbers in `Usage` came from."""

    REPORTED = "reported"  # the provider reported them (JSON body or stream event)
    COUNTED = "counted"  # the proxy counted a billed unit itself (speech characters, images)
    ESTIMATED = "estimated"  # derived from partial information; flagged for reconciliation
    NONE = "none"  # the endpoint reports no usage and none could be counted
    FREE = "free"  # the endpoint is free (count_tokens, input_tokens, models)
    UNPARSEABLE = "unparseable"  # the response could not be read; usage unknown


@attrs.frozen
class ImageCount:
    """Images of one (size, quality) returned by an image endpoint."""

    size: str
    quality: str
    count: int


@attrs.frozen
class Usage:
    """Billable quantities of one request. Fields are disjoint: no field is a subset of another,
    except `reasoning_tokens`, which is a detail of `output_tokens` and is never priced."""

    input_tokens: int = 0  # uncached text input
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    input_audio_tokens: int = 0  # uncached audio input
    input_image_tokens: int = 0  # uncached image input (GPT image models)
    output_tokens: int = 0  # text output, reasoning included
    reasoning_tokens: int = 0  # detail: already inside output_tokens
    output_audio_tokens: int = 0
    output_image_tokens: int = 0
    images: tuple[ImageCount, ...] = ()
    input_characters: int = 0  # speech (TTS) input characters
    audio_seconds: Decimal = Decimal(0)  # transcription / translation audio length
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    code_execution_requests: int = 0

    def is_zero(self) -> bool:
        return self == _ZERO_USAGE

    def token_total(self) -> int:
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.input_audio_tokens
            + self.input_image_tokens
            + self.output_tokens
            + self.output_audio_tokens
            + self.output_image_tokens
        )

    def image_total(self) -> int:
        return sum(image.count for image in self.images)


_ZERO_USAGE = Usage()


@attrs.frozen
class Cost:
    """Exact money in USD, broken down by priced component (component name -> amount)."""

    total: Decimal
    components: tuple[tuple[str, Decimal], ...] = ()
    currency: str = "USD"
    price_version: str = ""
    incomplete: bool = False  # some usage came in a unit the price book lacks for the model
    missing_units: tuple[str, ...] = ()


@attrs.frozen
class LineItem:
    """One billed unit inside a response that bills several (an Anthropic batch results file
    holds one request per line, possibly of different models). `key` identifies it for
    de-duplication (the batch request's custom_id)."""

    key: str
    model: str | None
    usage: Usage
    cost: Cost | None = None


@attrs.frozen
class Principal:
    """Who is calling: the verified identity behind a room token."""

    project: str
    room: str
    participant: str
    session: str | None = None
    role: str | None = None
    api_key_id: str | None = None
    models: tuple[str, ...] | None = None  # `provider/model` patterns; None: every model


@attrs.frozen
class UsageRecord:
    """One record per client request that reached the proxy's decision, forwarded or not."""

    id: str
    request_id: str
    provider: str  # "openai" | "anthropic" | "" when the path matched no provider
    endpoint: str  # endpoint kind, e.g. "chat.completions", "messages"
    method: str
    path: str  # normalised upstream path, without query
    status: int  # status sent to the client (0 when no response head was ever sent)
    outcome: Outcome
    ending: Ending
    started_at: float
    ended_at: float
    principal: Principal | None = None
    model: str | None = None  # the model the request asked for
    response_model: str | None = None  # the model the provider says it used
    stream: bool = False
    usage: Usage = attrs.field(factory=Usage)
    usage_source: UsageSource = UsageSource.NONE
    partial: bool = False
    service_tier: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    reject_reason: str | None = None  # stable code when the proxy refused the request
    raw_usage: Any = None  # the provider's own usage object(s), as decoded JSON
    cost: Cost | None = None
    upstream_request_id: str | None = None
    batch_id: str | None = None
    batch_custom_ids: tuple[str, ...] = ()
    line_items: tuple[LineItem, ...] = ()
    created_object_kind: str | None = None  # a stored object this request created, to be
    created_object_id: str | None = None  # registered to the caller's room (ownership)


class UsageSink(Protocol):
    """Where finished records go. `emit` must not block: a sink that writes somewhere slow
    queues the record and writes it off the request path."""

    def emit(self, record: UsageRecord) -> None: ...


def record_to_dict(record: UsageRecord) -> dict[str, Any]:
    """A JSON-ready dict of every field of `record`: enums as their values, money and seconds
    as decimal strings (never floats, which would lose cents)."""
    return attrs.asdict(record, recurse=True, value_serializer=_json_value)


def _json_value(_instance: Any, _field: Any, value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    return value
