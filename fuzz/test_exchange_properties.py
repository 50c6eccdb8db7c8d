"""Properties of the whole exchange: the client receives exactly the upstream's bytes, however
they were chunked, and the record does not depend on the chunking either."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from meshproxy_core.auth import mint_token
from meshproxy_core.config import ProxyConfig
from meshproxy_core.exchange import NeedBody, Proxy
from meshproxy_core.pricing import PriceBook
from meshproxy_core.records import Ending

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
SECRET = "fuzz-exchange-" + "f" * 40
NOW = 1_900_000_000.0
PROXY = Proxy(
    ProxyConfig.from_mapping(
        {}, {"MESHAGENT_SECRET": SECRET, "OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"}
    ),
    prices=PriceBook.default(),
    ids=lambda: "req_fuzz",
)
TOKEN = mint_token(SECRET, project="p", room="r", participant="u", now=NOW)
STREAMS = {
    "anthropic": ("/anthropic/v1/messages", "anthropic_messages_stream_with_cache.sse",
                  {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": True,
                   "messages": []}),
    "responses": ("/v1/responses", "openai_responses_stream.sse",
                  {"model": "gpt-4o-mini", "input": "x", "stream": True}),
    "chat": ("/v1/chat/completions", "openai_chat_stream_include_usage.sse",
             {"model": "gpt-4o-mini", "stream": True, "messages": [],
              "stream_options": {"include_usage": True}}),
}  # fmt: skip


def run(name: str, cuts: list[int], ending: Ending) -> tuple[bytes, object]:
    target, fixture, request = STREAMS[name]
    body = (FIXTURES / fixture).read_bytes()
    ex = PROXY.exchange(now=NOW)
    headers = [(b"authorization", f"Bearer {TOKEN}".encode()),
               (b"content-type", b"application/json")]  # fmt: skip
    raw = json.dumps(request).encode()
    assert isinstance(ex.request_head("POST", target, headers, content_length=len(raw)), NeedBody)
    ex.request_body(raw)
    ex.response_head(200, [(b"content-type", b"text/event-stream")])
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    delivered = b"".join(ex.response_data(piece) for piece in pieces)
    delivered += ex.finish(ending, now=NOW + 1)
    return delivered, ex.record


@given(st.sampled_from(sorted(STREAMS)), st.lists(st.integers(min_value=0), max_size=12))
def test_any_chunking_delivers_the_same_bytes_and_record(name: str, cuts: list[int]) -> None:
    whole, whole_record = run(name, [], Ending.COMPLETE)
    chunked, chunked_record = run(name, cuts, Ending.COMPLETE)
    assert chunked == whole
    assert whole == (FIXTURES / STREAMS[name][1]).read_bytes()
    assert chunked_record == whole_record


@given(st.sampled_from(sorted(STREAMS)), st.integers(min_value=0, max_value=10**6))
def test_a_cut_stream_ends_on_an_event_boundary_with_an_error_event(name: str, cut: int) -> None:
    target, fixture, request = STREAMS[name]
    body = (FIXTURES / fixture).read_bytes()
    cut %= len(body)
    ex = PROXY.exchange(now=NOW)
    raw = json.dumps(request).encode()
    headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
    ex.request_head("POST", target, headers, content_length=len(raw))
    ex.request_body(raw)
    ex.response_head(200, [(b"content-type", b"text/event-stream")])
    delivered = ex.response_data(body[:cut]) + ex.finish(Ending.UPSTREAM_FAILED, now=NOW)
    record = ex.record
    assert record is not None
    if record.ending is Ending.COMPLETE:  # the provider's answer had already ended
        return
    # Every byte before the error event is a prefix of the upstream's, ending with a blank line;
    # the error event is whole.
    error_at = delivered.rindex(b"data: {")
    prefix = delivered[: delivered.rfind(b"\n\n", 0, error_at) + 2] if error_at else b""
    assert body.startswith(prefix)
    assert delivered.endswith(b"}\n\n")
    assert b'"upstream_unavailable"' in delivered[error_at:]
