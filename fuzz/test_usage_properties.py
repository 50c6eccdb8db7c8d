"""Properties of the usage meters: split-invariance, cumulative merging, known totals, no
negative counts, and no exception on any input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from meshproxy_core.records import Usage, UsageSource
from meshproxy_core.usage import Metering, RequestFacts
from meshproxy_core.usage.openai_chat import _USAGE_NULL, _without_usage_null
from meshproxy_core.usage.select import meter_for

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"

# (fixture, provider, endpoint, content type, extra facts)
CASES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("openai_chat_completion.json", "openai", "chat.completions", "application/json", {}),
    ("openai_chat_stream_include_usage.sse", "openai", "chat.completions", "text/event-stream",
     {}),
    ("openai_chat_stream_include_usage.sse", "openai", "chat.completions", "text/event-stream",
     {"strip_usage_chunk": True}),
    ("openai_chat_stream_no_usage.sse", "openai", "chat.completions", "text/event-stream", {}),
    ("openai_chat_stream_midstream_error.sse", "openai", "chat.completions",
     "text/event-stream", {"strip_usage_chunk": True}),
    ("openai_responses_stream.sse", "openai", "responses", "text/event-stream", {}),
    ("openai_responses_stream_failed.sse", "openai", "responses", "text/event-stream", {}),
    ("openai_speech_stream.sse", "openai", "audio.speech", "text/event-stream", {}),
    ("anthropic_messages_stream.sse", "anthropic", "messages", "text/event-stream", {}),
    ("anthropic_messages_stream_with_cache.sse", "anthropic", "messages", "text/event-stream",
     {}),
    ("anthropic_messages_stream_error.sse", "anthropic", "messages", "text/event-stream", {}),
    ("anthropic_complete_legacy_stream.sse", "anthropic", "complete", "text/event-stream", {}),
    ("anthropic_batch_results.jsonl", "anthropic", "messages.batches.results",
     "application/binary", {"batch_id": "b"}),
    ("anthropic_batch_retrieve_ended.json", "anthropic", "messages.batches", "application/json",
     {"public_base_url": "https://p/a"}),
    ("sse_framing_edge_cases.sse", "anthropic", "messages", "text/event-stream", {}),
]  # fmt: skip

ENDPOINTS = [
    "chat.completions", "responses", "responses.compact", "responses.input_tokens",
    "embeddings", "audio.speech", "audio.transcriptions", "audio.translations",
    "images.generations", "images.edits", "images.variations", "models", "messages",
    "messages.count_tokens", "messages.batches", "messages.batches.results", "complete",
]  # fmt: skip
CONTENT_TYPES = [
    "text/event-stream",
    "application/json",
    "audio/mpeg",
    "text/plain",
    "application/binary",
    None,
]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


def run(
    facts: RequestFacts,
    pieces: list[bytes],
    *,
    status: int = 200,
    content_type: str | None = "text/event-stream",
    complete: bool = True,
) -> tuple[bytes, Metering]:
    meter = meter_for(facts, status, content_type)
    out = [meter.feed(piece) for piece in pieces]
    tail, metering = meter.finish(complete)
    return b"".join(out) + tail, metering


def no_negative(usage: Usage) -> bool:
    values = attrs.asdict(usage, recurse=False)
    images = values.pop("images")
    return all(v >= 0 for v in values.values()) and all(i.count >= 0 for i in images)


@given(
    st.sampled_from(CASES),
    st.lists(st.integers(min_value=0, max_value=6000), max_size=20),
    st.booleans(),
)
def test_any_chunking_gives_the_same_metering_and_bytes(case, cuts, complete) -> None:
    name, provider, endpoint, content_type, extra = case
    body = (FIXTURES / name).read_bytes()
    facts = RequestFacts(provider, endpoint, **extra)
    whole = run(facts, [body], content_type=content_type, complete=complete)
    pieces = run(facts, split(body, cuts), content_type=content_type, complete=complete)
    assert pieces == whole


# -- Anthropic cumulative deltas -----------------------------------------------------------------

_count = st.integers(min_value=0, max_value=10**7)
_delta_usage = st.fixed_dictionaries(
    {"output_tokens": _count},
    optional={
        "input_tokens": st.one_of(st.none(), _count),
        "cache_read_input_tokens": st.one_of(st.none(), _count),
        "cache_creation_input_tokens": st.one_of(st.none(), _count),
        "server_tool_use": st.fixed_dictionaries({"web_search_requests": _count}),
    },
)


def _frame(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), json.dumps(payload).encode())


@given(
    st.fixed_dictionaries(
        {"input_tokens": _count, "cache_read_input_tokens": _count, "output_tokens": _count}
    ),
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=1000),
    st.lists(_delta_usage, min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=3000), max_size=8),
)
def test_anthropic_deltas_are_last_seen_field_by_field(start, m5, h1, deltas, cuts) -> None:
    start = dict(start, cache_creation_input_tokens=m5 + h1)
    start["cache_creation"] = {"ephemeral_5m_input_tokens": m5, "ephemeral_1h_input_tokens": h1}
    body = _frame("message_start", {"type": "message_start", "message": {"usage": start}})
    body += _frame("ping", {"type": "ping"})
    for delta in deltas:
        body += _frame("message_delta", {"type": "message_delta", "usage": delta})
    body += _frame("message_stop", {"type": "message_stop"})
    _, m = run(RequestFacts("anthropic", "messages"), split(body, cuts))

    # The expected values, field by field: the last non-null value seen wins.
    last: dict[str, Any] = dict(start)
    for delta in deltas:
        last.update({k: v for k, v in delta.items() if v is not None})
    flat = last["cache_creation_input_tokens"]
    assert m.usage.input_tokens == last["input_tokens"]
    assert m.usage.cache_read_tokens == last["cache_read_input_tokens"]
    assert m.usage.output_tokens == deltas[-1]["output_tokens"]
    assert m.usage.cache_write_1h_tokens == h1
    assert m.usage.cache_write_5m_tokens == m5 + max(0, flat - (m5 + h1))
    tools = last.get("server_tool_use") or {}
    assert m.usage.web_search_requests == tools.get("web_search_requests", 0)
    assert m.source is UsageSource.REPORTED


# -- Generated chat streams with known totals ----------------------------------------------------


@given(
    st.lists(st.text(max_size=20), max_size=15),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=5000), max_size=10),
)
def test_chat_stream_known_totals(texts, prompt, cached, completion, strip, cuts) -> None:
    cached = min(cached, prompt)
    frames = [
        b"data: "
        + json.dumps({"choices": [{"index": 0, "delta": {"content": t}}], "usage": None}).encode()
        + b"\n\n"
        for t in texts
    ]
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip
    usage_frame = b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n"
    body = b"".join(frames) + usage_frame + b"data: [DONE]\n\n"
    facts = RequestFacts("openai", "chat.completions", stream=True, strip_usage_chunk=strip)
    delivered, m = run(facts, split(body, cuts))
    assert m.usage == Usage(
        input_tokens=prompt - cached, cache_read_tokens=cached, output_tokens=completion
    )
    # Stripped: the client gets the stream it would have got without include_usage, i.e. no
    # usage chunk and no "usage" key at all (WIRE.md §2).
    plain = b"".join(
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": t}}]}).encode()
        + b"\n\n"
        for t in texts
    )  # fmt: skip
    assert delivered == (plain + b"data: [DONE]\n\n" if strip else body)


# -- Robustness ----------------------------------------------------------------------------------

_garbage_json = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(10**6), max_value=10**6),
        st.floats(allow_nan=True), st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=30), inner, max_size=4)
    ),
    max_leaves=12,
)  # fmt: skip
_usage_keys = [
    "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "cached_tokens",
    "audio_tokens", "image_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
    "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens", "seconds", "type",
    "prompt_tokens_details", "completion_tokens_details", "input_tokens_details",
    "output_tokens_details", "cache_creation", "server_tool_use", "iterations",
]  # fmt: skip
_usage_like = st.recursive(
    st.one_of(st.integers(min_value=-(10**9), max_value=10**9), st.none(), st.floats()),
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(_usage_keys), inner, max_size=6),
        st.lists(inner, max_size=3),
    ),
    max_leaves=20,
)


@given(_usage_like, st.sampled_from(ENDPOINTS), st.sampled_from(["openai", "anthropic"]))
def test_no_field_is_ever_negative(raw, endpoint, provider) -> None:
    bodies = [
        json.dumps({"usage": raw, "data": [1], "duration": raw}).encode(),
        _frame("message_start", {"type": "message_start", "message": {"usage": raw}})
        + _frame("message_delta", {"type": "message_delta", "usage": raw}),
        b"data: " + json.dumps({"choices": [], "usage": raw}).encode() + b"\n\n",
        _frame("response.completed", {"type": "response.completed", "response": {"usage": raw}}),
        json.dumps({"custom_id": "c", "result": {"type": "succeeded",
                                                 "message": {"usage": raw}}}).encode(),
    ]  # fmt: skip
    for body in bodies:
        for content_type in ("application/json", "text/event-stream"):
            _, m = run(RequestFacts(provider, endpoint), [body], content_type=content_type)
            assert no_negative(m.usage)


@given(
    st.one_of(st.binary(max_size=400), _garbage_json.map(lambda v: json.dumps(v).encode())),
    st.sampled_from(ENDPOINTS),
    st.sampled_from(CONTENT_TYPES),
    st.sampled_from([200, 400, 429, 500, 529]),
    st.booleans(),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_garbage_never_raises(body, endpoint, content_type, status, strip, complete, cuts):
    facts = RequestFacts("openai", endpoint, strip_usage_chunk=strip, public_base_url="https://p")
    whole = run(facts, [body], status=status, content_type=content_type, complete=complete)
    pieces = run(facts, split(body, cuts), status=status, content_type=content_type,
                 complete=complete)  # fmt: skip
    assert pieces == whole
    assert no_negative(whole[1].usage)


@given(
    st.binary(min_size=1, max_size=400).filter(lambda b: b'"' not in b),
    st.sampled_from(ENDPOINTS),
    st.sampled_from(CONTENT_TYPES),
    st.booleans(),
)
def test_random_bytes_give_no_usage(body, endpoint, content_type, complete) -> None:
    # Without a single quote character no JSON string, hence no usage key, can appear.
    _, m = run(RequestFacts("openai", endpoint), [body], content_type=content_type,
               complete=complete)  # fmt: skip
    assert m.usage == Usage()
    assert m.source in (UsageSource.NONE, UsageSource.UNPARSEABLE, UsageSource.FREE)


# -- quiet chunks: the one-scan fast path equals event-by-event parsing --------------------------

# Pieces chosen to sit on the fast path's edges: quotes, escapes, unterminated literals, the
# usage and error keys in compact and spaced forms, [DONE], non-ASCII text.
_PIECES = [
    b'{"choices":[{"delta":{"content":"', b'{"type":"content_block_delta","delta":{"text":"',
    b'{"type":"response.output_text.delta","delta":"', b"hi there", b'\\"', b'"', b"}}]",
    b'"}}', b",", b',"usage":null', b',"usage":null}', b', "usage" : null', b"}",
    b',"usage":{"prompt_tokens":3,"completion_tokens":4}', b'"error":{"type":"x"}',
    b"[DONE]", b"\xc3\xa9t\xc3\xa9", b"\\n", b'"content":"', b'"refusal":"no', b" ", b"\xff",
    b'"partial_json":"{\\"a', b'"thinking":"hm',
]  # fmt: skip
_NAMES = [
    None, "content_block_delta", "ping", "message_delta", "message_start",
    "response.output_text.delta", "response.completed", "error",
]  # fmt: skip
_event = st.tuples(
    st.sampled_from(_NAMES),
    st.lists(st.lists(st.sampled_from(_PIECES), max_size=8).map(b"".join), min_size=1,
             max_size=2),
)  # fmt: skip


def _event_bytes(name: str | None, lines: list[bytes]) -> bytes:
    head = b"event: %s\n" % name.encode() if name else b""
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


@given(
    st.sampled_from([
        ("openai", "chat.completions", {}),
        ("openai", "chat.completions", {"strip_usage_chunk": True}),
        ("openai", "responses", {}),
        ("anthropic", "messages", {}),
    ]),
    st.lists(_event, min_size=1, max_size=12),
    st.lists(st.booleans(), max_size=12),
    st.booleans(),
)  # fmt: skip
def test_quiet_chunks_meter_like_event_by_event(case, events, cut_after, complete) -> None:
    provider, endpoint, extra = case
    facts = RequestFacts(provider, endpoint, **extra)
    frames = [_event_bytes(name, lines) for name, lines in events]
    # Chunks of whole events (the fast path may take them) against single bytes (it never can).
    grouped: list[bytes] = []
    current = b""
    for i, frame in enumerate(frames):
        current += frame
        if i < len(cut_after) and cut_after[i]:
            grouped.append(current)
            current = b""
    grouped.append(current)
    body = b"".join(frames)
    bytewise = [body[i : i + 1] for i in range(len(body))]
    assert run(facts, grouped, complete=complete) == run(facts, bytewise, complete=complete)


@given(st.lists(st.sampled_from(_PIECES), max_size=16).map(b"".join))
def test_usage_null_removal_equals_the_pattern(data: bytes) -> None:
    assert _without_usage_null(data) == _USAGE_NULL.sub(b"", data)
