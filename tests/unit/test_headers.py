"""Header rewriting: credentials never travel, the provider key is injected, encodings offered."""

from __future__ import annotations

from meshproxy_core.headers import redacted, request_headers_upstream, response_headers_to_client

KEY = [(b"authorization", b"Bearer sk-provider")]


def test_client_credentials_stripped_in_any_case_and_number() -> None:
    headers = [
        (b"Authorization", b"Bearer room-token"),
        (b"AUTHORIZATION", b"Bearer second"),
        (b"X-Api-Key", b"room-token"),
        (b"api-key", b"azure-style"),
        (b"Cookie", b"session=1"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"OpenAI-Organization", b"org-client"),
        (b"content-type", b"application/json"),
    ]
    out = request_headers_upstream(headers, credentials=KEY)
    names = [k for k, _ in out]
    values = b" ".join(v for _, v in out)
    assert b"room-token" not in values and b"second" not in values and b"azure" not in values
    assert b"cookie" not in names and b"openai-organization" not in names
    assert (b"authorization", b"Bearer sk-provider") in out
    assert names.count(b"authorization") == 1
    assert (b"content-type", b"application/json") in out


def test_hop_by_hop_and_connection_named_headers_stripped() -> None:
    headers = [
        (b"connection", b"keep-alive, X-Secret-Hop"),
        (b"x-secret-hop", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"te", b"trailers"),
        (b"upgrade", b"h2c"),
        (b"host", b"proxy.local"),
        (b"content-length", b"10"),
        (b"meshagent-session-id", b"s1"),
        (b"x-meshproxy-debug", b"1"),
        (b"x-forwarded-for", b"10.0.0.1"),
    ]
    out = request_headers_upstream(headers, credentials=KEY)
    assert {k for k, _ in out} == {b"authorization", b"accept-encoding"}


def test_provider_feature_headers_kept_and_defaults_added_once() -> None:
    headers = [
        (b"anthropic-beta", b"prompt-caching-2024-07-31"),
        (b"anthropic-version", b"2023-06-01"),
        (b"openai-beta", b"assistants=v2"),
        (b"idempotency-key", b"abc"),
    ]
    out = request_headers_upstream(
        headers,
        credentials=[(b"x-api-key", b"sk-ant")],
        defaults=[(b"anthropic-version", b"2099-01-01")],
    )
    assert (b"anthropic-beta", b"prompt-caching-2024-07-31") in out
    assert (b"anthropic-version", b"2023-06-01") in out
    assert (b"anthropic-version", b"2099-01-01") not in out
    assert (b"idempotency-key", b"abc") in out
    assert (b"openai-beta", b"assistants=v2") in out
    none_sent = request_headers_upstream(
        [], credentials=[], defaults=[(b"anthropic-version", b"v")]
    )
    assert (b"anthropic-version", b"v") in none_sent


def test_accept_encoding_limited_to_readable() -> None:
    def offered(value: bytes | None, identity_only: bool = False) -> bytes:
        headers = [] if value is None else [(b"accept-encoding", value)]
        out = request_headers_upstream(headers, credentials=[], identity_only=identity_only)
        return dict(out)[b"accept-encoding"]

    assert offered(b"gzip, deflate, br, zstd") == b"gzip, deflate"
    assert offered(b"br") == b"identity"
    assert offered(None) == b"identity"
    assert offered(b"gzip;q=1.0") == b"gzip"
    assert offered(b"gzip", identity_only=True) == b"identity"


def test_response_headers() -> None:
    upstream = [
        (b"Content-Type", b"text/event-stream"),
        (b"Set-Cookie", b"__cf_bm=abc"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"100"),
        (b"anthropic-ratelimit-requests-remaining", b"10"),
    ]
    out = response_headers_to_client(upstream, request_id="req_1", body_rewritten=True)
    names = [k for k, _ in out]
    assert b"set-cookie" not in names and b"transfer-encoding" not in names
    assert b"content-length" not in names
    assert (b"x-request-id", b"req_1") in out
    assert (b"x-meshproxy-request-id", b"req_1") in out
    kept = response_headers_to_client(
        [*upstream, (b"x-request-id", b"up")], request_id="req_1", body_rewritten=False
    )
    assert (b"content-length", b"100") in kept
    assert [v for k, v in kept if k == b"x-request-id"] == [b"up"]


def test_redacted_log_headers() -> None:
    shown = redacted([(b"Authorization", b"Bearer t"), (b"X-API-KEY", b"k"), (b"accept", b"*/*")])
    assert shown == [
        ("authorization", "[redacted]"),
        ("x-api-key", "[redacted]"),
        ("accept", "*/*"),
    ]
