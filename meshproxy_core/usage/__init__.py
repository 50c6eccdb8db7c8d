"""Usage accounting: one incremental state machine per endpoint kind.

Owns: the `UsageMeter` seam the exchange feeds, the `RequestFacts` it needs from the request, the
`Metering` result, and the factory that picks the machine for an endpoint kind.

Does not own: content decoding (the exchange hands meters identity bytes), pricing, or records.
Every meter is sans-IO and deterministic: the same bytes split at any points give the same result.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from ..records import LineItem, Usage, UsageSource

__all__ = ["Metering", "RequestFacts", "UsageMeter"]


@attrs.frozen
class RequestFacts:
    """What the meters need to know about the request that the response answers."""

    provider: str  # "openai" | "anthropic"
    endpoint: str  # an EndpointKind value, e.g. "chat.completions"
    model: str | None = None
    stream: bool = False
    # The proxy added stream_options.include_usage to a chat request whose client did not ask for
    # it: the meter must remove the usage-only chunk (and the "usage" keys) from what it returns.
    strip_usage_chunk: bool = False
    n: int = 1  # images requested
    size: str | None = None  # images: request size
    quality: str | None = None  # images: request quality
    input_characters: int = 0  # speech: characters of `input`
    response_format: str | None = None  # transcription/translation/speech format
    stream_format: str | None = None  # speech: "sse" | "audio"
    batch_id: str | None = None  # anthropic batch results: the batch whose results these are
    # anthropic batches: the proxy's own base URL for the provider (e.g.
    # "https://proxy.example/anthropic/v1"); batch objects' results_url are rewritten onto it.
    public_base_url: str | None = None
    # Ownership (meshproxy_core.ownership): the object kind a success creates, the response a
    # Responses request continues, whether it names a conversation, and for a filtered batch
    # listing the caller's room's ids, the page size it asked for and its direction.
    batch_models: tuple[str, ...] = ()  # batch creation: the models its requests name
    creates: str | None = None
    previous_response_id: str | None = None
    names_conversation: bool = False
    owned_ids: frozenset[str] | None = None
    page_limit: int = 20
    page_backwards: bool = False

    def rewrites_response(self) -> bool:
        """Whether the meter may change the response bytes (it then needs identity bytes, and
        the upstream Content-Length no longer holds): the stripped chat usage chunk, and batch
        objects whose results_url is rewritten onto the proxy."""
        return self.strip_usage_chunk or (
            self.endpoint == "messages.batches"
            and (bool(self.public_base_url) or self.owned_ids is not None)
        )


@attrs.frozen
class Metering:
    """What a meter learned from one response."""

    usage: Usage = attrs.field(factory=Usage)
    source: UsageSource = UsageSource.NONE
    raw_usage: Any = None
    response_model: str | None = None
    service_tier: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    batch_id: str | None = None
    batch_custom_ids: tuple[str, ...] = ()
    # Separately billed units whose sum is `usage` (batch results: one per succeeded line).
    line_items: tuple[LineItem, ...] = ()
    created_object_id: str | None = None  # the id of the object a success created
    # The provider's own end of the answer was seen ([DONE], message_stop, the terminal
    # Responses event, a whole JSON body): the client has everything, even if the connection
    # closes before the upstream's end-of-body arrives (openai-python closes at [DONE]).
    terminated: bool = False
    rewritten: bool = False  # the meter changed the bytes the client received


class UsageMeter(Protocol):
    """An accounting state machine for one response body."""

    def feed(self, data: bytes) -> bytes:
        """Take the next decoded body bytes; return the bytes to deliver to the client.

        Returns `data` itself unless the meter must rewrite the stream (the injected chat usage
        chunk); a rewriting meter may hold back an incomplete event until its end arrives.
        """
        ...

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        """End of body. `complete` is False when the stream was cut (client gone, reset, timeout).

        Returns any held-back bytes still to deliver, and the metering.
        """
        ...
