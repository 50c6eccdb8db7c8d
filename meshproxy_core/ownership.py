"""Ownership of stored objects: one room can never reach another room's.

Every room of a project shares the provider key, so the provider cannot tell rooms apart; the
proxy must. Owns the rules:

- which requests create an object that must be registered to the caller's room
  (`creates`): an Anthropic message batch (`POST /messages/batches`), an OpenAI stored
  response (`POST /responses`);
- which requests name an object, and so must prove the caller's room owns it (`check_for`):
  a batch's retrieve, cancel, delete and results; a Responses request whose
  `previous_response_id` names an earlier response;
- listings (`GET /messages/batches`) are filtered to the caller's room's objects;
- `conversation` ids cannot be created through the proxy at all (the Conversations API is not
  an allowed path), so a request naming one is refused outright.

The answer to "who owns X" lives in a store (the ledger, shared by replicas); the exchange asks
for it with a `CheckOwnership` decision and the adapter looks it up. Without a store an adapter
answers "nobody", so by-id access is refused: closed by default.

Does not own: the store (contrib.ledger) or the refusal's shape (errors).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import attrs

from .routes import EndpointKind, Route

__all__ = [
    "KIND_ANTHROPIC_BATCH",
    "KIND_OPENAI_RESPONSE",
    "UPSTREAM_PAGE_LIMIT",
    "OwnershipCheck",
    "check_for",
    "creates",
]

KIND_ANTHROPIC_BATCH = "anthropic.message_batch"
KIND_OPENAI_RESPONSE = "openai.response"

_RESPONSES_KINDS = frozenset(
    {
        EndpointKind.RESPONSES,
        EndpointKind.RESPONSES_COMPACT,
        EndpointKind.RESPONSES_INPUT_TOKENS,
    }
)
_BATCH_KINDS = frozenset({EndpointKind.MESSAGE_BATCHES, EndpointKind.MESSAGE_BATCH_RESULTS})


@attrs.frozen
class OwnershipCheck:
    """What the adapter must look up before the request may be forwarded."""

    kind: str
    object_id: str | None = None  # this object must belong to the caller's room
    list_owned: bool = False  # the ids the caller's room owns are needed (to filter a list)


def creates(route: Route) -> str | None:
    """The kind of object a successful answer to this request creates, if any."""
    if (
        route.kind is EndpointKind.MESSAGE_BATCHES
        and route.method == "POST"
        and not route.object_id
    ):
        return KIND_ANTHROPIC_BATCH
    if route.kind is EndpointKind.RESPONSES:
        return KIND_OPENAI_RESPONSE
    return None


def check_for(route: Route, previous_response_id: str | None) -> OwnershipCheck | None:
    """The ownership a request needs proven before it is forwarded, if any."""
    if route.kind in _BATCH_KINDS:
        if route.object_id is not None:
            return OwnershipCheck(KIND_ANTHROPIC_BATCH, object_id=route.object_id)
        if route.method == "GET":
            return OwnershipCheck(KIND_ANTHROPIC_BATCH, list_owned=True)
        return None
    if route.kind in _RESPONSES_KINDS and previous_response_id is not None:
        return OwnershipCheck(KIND_OPENAI_RESPONSE, object_id=previous_response_id)
    return None


# Anthropic's largest page. A filtered listing asks upstream for this many, so a room's page is
# full unless more than this many other rooms' batches lie between two of its own.
UPSTREAM_PAGE_LIMIT = 1000
_DEFAULT_PAGE_LIMIT = 20  # Anthropic's default `limit`


def list_query(query: str) -> tuple[str, int, bool]:
    """For a filtered listing: the query to send upstream (the largest page, same cursor), the
    page size the client asked for, and whether it pages backwards (`before_id`)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    limit = _DEFAULT_PAGE_LIMIT
    for key, value in pairs:
        if key == "limit" and value.isdigit():
            limit = max(1, min(int(value), UPSTREAM_PAGE_LIMIT))
    backwards = any(key == "before_id" for key, _ in pairs)
    upstream = [(k, v) for k, v in pairs if k != "limit"] + [("limit", str(UPSTREAM_PAGE_LIMIT))]
    return urlencode(upstream), limit, backwards
