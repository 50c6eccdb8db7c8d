"""Stream meters beyond the fixtures: laziness, merging rules, framing variants, bounds."""

from __future__ import annotations

import json

from meshproxy_core.records import Usage, UsageSource
from meshproxy_core.usage import RequestFacts
from meshproxy_core.usage.errors import MAX_ERROR_BODY, ErrorMeter
from meshproxy_core.usage.select import meter_for

SSE = "text/event-stream"


def frame(name: str | None, payload: object) -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    head = b"event: %s\n" % name.encode() if name else b""
    return head + b"data: " + data + b"\n\n"


def meter_run(endpoint: str, body: bytes, provider: str = "anthropic", **facts: object):
    meter = meter_for(RequestFacts(provider, endpoint, **facts), 200, SSE)
    delivered = meter.feed(body)
    tail, metering = meter.finish(True)
    return delivered + tail, metering


def test_content_deltas_are_scanned_not_decoded() -> None:
    # The deltas are not valid JSON: a meter that decoded them would flag the stream garbled.
    bad_delta = b'{"type":"content_block_delta","delta":{"text":"abcd"} <not json'
    body = (
        frame("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 3}}})
        + frame("content_block_delta", bad_delta) * 3
    )
    _, m = meter_run("messages", body)
    assert m.source is UsageSource.ESTIMATED
    assert m.usage == Usage(input_tokens=3, output_tokens=3)  # 12 characters


def test_chat_content_chunks_are_not_decoded() -> None:
    bad = b'{"choices":[{"delta":{"content":"abcd"}}],"usage":null,<not json'
    usage = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    body = frame(None, bad) * 2 + frame(None, usage) + b"data: [DONE]\n\n"
    _, m = meter_run("chat.completions", body, provider="openai")
    assert m.source is UsageSource.REPORTED
    assert m.usage == Usage(input_tokens=1, output_tokens=2)


def test_chat_usage_null_with_spaces_is_not_usage() -> None:
    body = frame(None, b'{"choices": [], "usage": null}') + b"data: [DONE]\n\n"
    delivered, m = meter_run("chat.completions", body, provider="openai", strip_usage_chunk=True)
    # Not the usage chunk (usage is null): kept, with the null usage key removed.
    assert delivered == frame(None, b'{"choices": []}') + b"data: [DONE]\n\n"
    assert m.source is UsageSource.NONE


def test_chat_strip_with_crlf_framing() -> None:
    usage = b'{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}'
    body = (
        b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}\r\n\r\n'
        b"data: " + usage + b"\r\n\r\n"
        b"data: [DONE]\r\n\r\n"
    )
    delivered, m = meter_run("chat.completions", body, provider="openai", strip_usage_chunk=True)
    assert m.usage == Usage(input_tokens=4, output_tokens=1)
    assert b"prompt_tokens" not in delivered
    assert delivered.replace(b"\r", b"").replace(b"\n", b"") == (
        b'data: {"choices":[{"delta":{"content":"x"}}]}data: [DONE]'
    )


def test_anthropic_several_deltas_overwrite_and_null_keeps() -> None:
    start = {
        "type": "message_start",
        "message": {
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}
        },
    }
    body = (
        frame("message_start", start)
        + frame("ping", {"type": "ping"})
        + frame("message_delta", {"type": "message_delta", "usage": {"output_tokens": 7}})
        + frame("ping", {"type": "ping"})
        + frame(
            "message_delta",
            {"type": "message_delta", "usage": {"output_tokens": 9, "input_tokens": None}},
        )
    )
    _, m = meter_run("messages", body)
    # Overwrite, never add (7 + 9 would be wrong); a null input keeps the start's 10.
    assert m.usage == Usage(input_tokens=10, cache_read_tokens=5, output_tokens=9)
    assert m.raw_usage["output_tokens"] == 9


def test_anthropic_message_start_without_usage() -> None:
    body = frame("message_start", {"type": "message_start", "message": {"model": "claude-x"}})
    body += frame("message_delta", {"type": "message_delta", "usage": {"output_tokens": 12}})
    _, m = meter_run("messages", body)
    assert m.usage == Usage(output_tokens=12)
    assert m.response_model == "claude-x"


def test_anthropic_data_only_frames_are_recognised_by_type() -> None:
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 4, "output_tokens": 1}}}
    delta = {"type": "message_delta", "usage": {"output_tokens": 6}}
    _, m = meter_run("messages", frame(None, start) + frame(None, delta))
    assert m.usage == Usage(input_tokens=4, output_tokens=6)


def test_responses_without_event_lines() -> None:
    done = {
        "type": "response.completed",
        "response": {"usage": {"input_tokens": 9, "output_tokens": 2}, "service_tier": "flex"},
    }
    _, m = meter_run("responses", frame(None, done), provider="openai")
    assert m.usage == Usage(input_tokens=9, output_tokens=2)
    assert m.service_tier == "flex"


def test_responses_web_search_tool_usage() -> None:
    body = json.dumps(
        {
            "object": "response",
            "usage": {"input_tokens": 10, "output_tokens": 1},
            "tool_usage": {"web_search": {"num_requests": 2}},
        }
    ).encode()
    meter = meter_for(RequestFacts("openai", "responses"), 200, "application/json")
    meter.feed(body)
    _, m = meter.finish(True)
    assert m.usage == Usage(input_tokens=10, output_tokens=1, web_search_requests=2)


def test_error_meter_keeps_a_bounded_copy() -> None:
    meter = ErrorMeter(RequestFacts("openai", "chat.completions"))
    big = b'{"error":{"type":"server_error","code":null,"message":"' + b"x" * 200_000 + b'"}}'
    for i in range(0, len(big), 1000):
        assert meter.feed(big[i : i + 1000]) == big[i : i + 1000]
    assert len(meter._kept) == MAX_ERROR_BODY
    _, m = meter.finish(True)
    assert m.source is UsageSource.NONE
    assert m.error_type is None  # the truncated copy is not JSON; no exception either


def test_feed_returns_the_same_object_when_not_rewriting() -> None:
    chunk = b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}\n\n'
    for endpoint, provider in [("chat.completions", "openai"), ("messages", "anthropic")]:
        meter = meter_for(RequestFacts(provider, endpoint), 200, SSE)
        assert meter.feed(chunk) is chunk


def test_rewrites_response() -> None:
    assert RequestFacts("openai", "chat.completions", strip_usage_chunk=True).rewrites_response()
    assert RequestFacts("anthropic", "messages.batches", public_base_url="u").rewrites_response()
    assert not RequestFacts("anthropic", "messages.batches").rewrites_response()
    assert not RequestFacts("openai", "chat.completions").rewrites_response()


def test_responses_compact_reports_no_created_object() -> None:
    # /responses/compact answers with a resp_... id but creates nothing a later request may
    # name: only a request that creates a response (facts.creates) reports the id.
    body = json.dumps(
        {
            "id": "resp_compacted",
            "object": "response.compaction",
            "output": [],
            "usage": {"input_tokens": 10, "output_tokens": 2},
        }
    ).encode()
    compact = meter_for(RequestFacts("openai", "responses.compact"), 200, "application/json")
    compact.feed(body)
    _, m = compact.finish(True)
    assert m.created_object_id is None
    assert m.usage == Usage(input_tokens=10, output_tokens=2)
    create = meter_for(
        RequestFacts("openai", "responses", creates="openai.response"), 200, "application/json"
    )
    create.feed(body)
    _, m = create.finish(True)
    assert m.created_object_id == "resp_compacted"


def test_responses_stream_created_object_only_when_creating() -> None:
    created = {"type": "response.created", "response": {"id": "resp_s1", "model": "m"}}
    completed = {
        "type": "response.completed",
        "response": {"id": "resp_s1", "model": "m", "usage": {"input_tokens": 3}},
    }
    body = frame("response.created", created) + frame("response.completed", completed)
    _, m = meter_run("responses", body, provider="openai")
    assert m.created_object_id is None
    _, m = meter_run("responses", body, provider="openai", creates="openai.response")
    assert m.created_object_id == "resp_s1"
    cut = frame("response.created", created)  # cut before the terminal event
    meter = meter_for(RequestFacts("openai", "responses", creates="openai.response"), 200, SSE)
    meter.feed(cut)
    _, m = meter.finish(False)
    assert m.created_object_id == "resp_s1"
