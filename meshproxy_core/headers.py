"""Header rewriting in both directions.

Owns: which client headers may travel upstream (every credential and hop-by-hop header is
stripped, whatever its case and however many copies), which credentials the proxy injects, which
encodings it offers upstream, and which upstream headers reach the client.

Rules and their reasons:
- Client credentials (`authorization`, `x-api-key`, `api-key`, `cookie`, `proxy-authorization`)
  never go upstream: the room token is not the provider's business, and a client must not be
  able to substitute its own provider key for the project's.
- `openai-organization` / `openai-project` choose whose account is billed; only the operator
  sets them.
- Hop-by-hop headers (RFC 9110 §7.6.1), and any header the client named in `Connection`, belong
  to one connection only.
- `accept-encoding` upstream is limited to what the usage machines can read (gzip, deflate), and
  to identity when the proxy must rewrite the stream; the client then receives the encoding it
  negotiated, or identity.
- Upstream `set-cookie` is dropped: cookies set by the provider would be shared by every room.

Does not own: where the provider key comes from (config) or request bodies (usage, exchange).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "SESSION_HEADER",
    "content_length",
    "header_value",
    "redacted",
    "request_headers_upstream",
    "response_headers_to_client",
]

Headers = Sequence[tuple[bytes, bytes]]

SESSION_HEADER = b"meshagent-session-id"
PROXY_REQUEST_ID_HEADER = b"x-meshproxy-request-id"

_CREDENTIALS = frozenset(
    {b"authorization", b"x-api-key", b"api-key", b"cookie", b"proxy-authorization"}
)
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the adapter for the upstream connection, or recomputed from the body sent.
_CONNECTION_SPECIFIC = frozenset({b"host", b"content-length", b"expect", b"accept-encoding"})
_OPERATOR_ONLY = frozenset({b"openai-organization", b"openai-project"})
# Where the client is on the network is nobody's business upstream.
_FORWARDING = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})
_PROXY_CONTROL_PREFIX = b"x-meshproxy-"

_DROP_UPSTREAM = (
    _CREDENTIALS | _HOP_BY_HOP | _CONNECTION_SPECIFIC | _OPERATOR_ONLY | _FORWARDING
) | {SESSION_HEADER}

_DROP_DOWNSTREAM = _HOP_BY_HOP | {b"set-cookie", b"set-cookie2"}

_READABLE_ENCODINGS = (b"gzip", b"deflate")


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header `name` (lowercase), or None."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def content_length(headers: Headers) -> int | None:
    """The declared Content-Length, or None when absent or not a non-negative integer."""
    value = header_value(headers, b"content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _connection_tokens(headers: Headers) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def request_headers_upstream(
    headers: Headers,
    *,
    credentials: Iterable[tuple[bytes, bytes]],
    defaults: Iterable[tuple[bytes, bytes]] = (),
    identity_only: bool = False,
) -> list[tuple[bytes, bytes]]:
    """The headers to send upstream: the client's, minus everything stripped, plus `credentials`
    (e.g. the provider key) and `defaults` (added only when the client sent no such header)."""
    named = _connection_tokens(headers)
    kept: list[tuple[bytes, bytes]] = []
    for key, value in headers:
        lowered = key.lower()
        if lowered in _DROP_UPSTREAM or lowered in named:
            continue
        if lowered.startswith(_PROXY_CONTROL_PREFIX):
            continue
        kept.append((lowered, value))
    present = {key for key, _ in kept}
    for key, value in defaults:
        if key not in present:
            kept.append((key, value))
    kept.extend(credentials)
    kept.append((b"accept-encoding", _accept_encoding(headers, identity_only)))
    return kept


def _accept_encoding(headers: Headers, identity_only: bool) -> bytes:
    """Offer upstream only the encodings both the client and the usage machines can read."""
    if identity_only:
        return b"identity"
    client = header_value(headers, b"accept-encoding")
    if client is None:
        return b"identity"
    offered = {part.split(b";")[0].strip().lower() for part in client.split(b",")}
    common = [enc for enc in _READABLE_ENCODINGS if enc in offered]
    return b", ".join(common) if common else b"identity"


def response_headers_to_client(
    headers: Headers,
    *,
    request_id: str,
    body_rewritten: bool,
) -> list[tuple[bytes, bytes]]:
    """Upstream response headers as the client should see them."""
    named = _connection_tokens(headers)
    kept: list[tuple[bytes, bytes]] = []
    has_request_id = False
    for key, value in headers:
        lowered = key.lower()
        if lowered in _DROP_DOWNSTREAM or lowered in named:
            continue
        if body_rewritten and lowered == b"content-length":
            continue
        if lowered == b"x-request-id":
            has_request_id = True
        kept.append((lowered, value))
    if not has_request_id:
        kept.append((b"x-request-id", request_id.encode()))
    # Always present, so a client can quote the proxy's id (the key of its usage record) even
    # when the provider's own x-request-id is kept.
    kept.append((PROXY_REQUEST_ID_HEADER, request_id.encode()))
    return kept


_REDACTED_VALUE = "[redacted]"


def redacted(headers: Headers) -> list[tuple[str, str]]:
    """Headers for a log line: every credential's value replaced, whatever its case."""
    shown: list[tuple[str, str]] = []
    for key, value in headers:
        lowered = key.lower()
        sensitive = lowered in _CREDENTIALS or lowered in (b"set-cookie", b"openai-project")
        shown.append(
            (lowered.decode("latin-1"), _REDACTED_VALUE if sensitive else value.decode("latin-1"))
        )
    return shown
