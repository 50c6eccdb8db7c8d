"""Usage accounting end to end when things go wrong, with the official SDKs as clients.

Upstream errors, mid-stream error events, resets, compressed bodies, hangs and an unreachable
upstream: in every case the client gets what its SDK expects (a normal exception, or a decoded
body) and the proxy still writes exactly one record that says what happened and keeps every
token the upstream had already reported.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import attrs
import httpx2
import openai
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess, Scripted
from meshproxy_core.records import Usage

from .conftest import ProxyProcess

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CLAUDE = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "Hello, Claude"}]
CHAT = [{"role": "user", "content": "Tell me a story"}]
READ_TIMEOUT = 1.0  # the upstream read timeout of the `slow_proxy`
FAIL_WITHIN = 8.0  # seconds: a hung upstream must have ended the client's call by then


def oai(proxy: ProxyProcess, token: str, timeout: float = 10) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=proxy.url + "/openai/v1", api_key=token, max_retries=0, timeout=timeout
    )


def ant(proxy: ProxyProcess, token: str, timeout: float = 10) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=proxy.url + "/anthropic", auth_token=token, max_retries=0, timeout=timeout
    )


def one_record(proxy: ProxyProcess, rid: str) -> dict[str, Any]:
    """The record of request `rid`, which must be the only one with that id."""
    record = proxy.record(rid)
    assert sum(r["request_id"] == rid for r in proxy.records()) == 1, rid
    return record


def usage(**fields: Any) -> dict[str, Any]:
    """A serialised `Usage` (as record_to_dict writes it): every field zero except `fields`."""
    out: dict[str, Any] = {field.name: 0 for field in attrs.fields(Usage)}
    out["images"] = []
    out["audio_seconds"] = "0"
    for name, value in fields.items():
        assert name in out, f"not a Usage field: {name}"
        out[name] = value
    return out


def estimate(text: str) -> int:
    """The documented output estimator for cut streams (meshproxy_core/usage/common.py):
    ceil(characters / 4) over the streamed text as written in the JSON literals (the texts
    used here have no escapes, so that is the plain length)."""
    return -(-len(text) // 4)


def header_id(exc: openai.APIStatusError | anthropic.APIStatusError) -> str:
    value = exc.response.headers.get("x-meshproxy-request-id")
    assert value, dict(exc.response.headers)
    return str(value)


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def assert_unbilled(record: dict[str, Any]) -> None:
    assert record["usage"] == usage()
    assert record["cost"] is None


# -- upstream answers with an error status ---------------------------------------------------------


@pytest.mark.parametrize(
    ("scripted", "exc_type", "status", "error_type", "error_code"),
    [
        (
            Scripted(path="/chat/completions", replay="openai_error_429_rate_limit.json"),
            openai.RateLimitError,
            429,
            "tokens",
            "rate_limit_exceeded",
        ),
        (
            Scripted(path="/chat/completions", replay="openai_error_429_insufficient_quota.json"),
            openai.RateLimitError,
            429,
            "insufficient_quota",
            "insufficient_quota",
        ),
        (
            Scripted(
                path="/chat/completions",
                status=500,
                json_body={
                    "error": {
                        "message": "The server had an error while processing your request.",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            ),
            openai.InternalServerError,
            500,
            "server_error",
            None,
        ),
    ],
    ids=["429-tokens", "429-quota", "500"],
)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_error_status(
    proxy: ProxyProcess,
    fake: FakeUpstreamProcess,
    token: str,
    scripted: Scripted,
    exc_type: type[openai.APIStatusError],
    status: int,
    error_type: str,
    error_code: str | None,
    stream: bool,
) -> None:
    fake.script(scripted)
    with pytest.raises(exc_type) as info:
        oai(proxy, token).chat.completions.create(model="gpt-4o-mini", messages=CHAT, stream=stream)
    assert info.value.status_code == status
    assert info.value.type == error_type
    record = one_record(proxy, header_id(info.value))
    assert record["outcome"] == "upstream_error"
    assert record["status"] == status
    assert record["ending"] == "complete"
    assert record["error_type"] == error_type
    assert record["error_code"] == error_code
    assert record["usage_source"] == "none"
    assert_unbilled(record)


@pytest.mark.parametrize(
    ("replay", "exc_type", "status", "error_type"),
    [
        ("anthropic_error_429_rate_limit.json", anthropic.RateLimitError, 429, "rate_limit_error"),
        ("anthropic_error_529_overloaded.json", anthropic.OverloadedError, 529, "overloaded_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_error_status(
    proxy: ProxyProcess,
    fake: FakeUpstreamProcess,
    token: str,
    replay: str,
    exc_type: type[anthropic.APIStatusError],
    status: int,
    error_type: str,
    stream: bool,
) -> None:
    fake.script(Scripted(path="/messages", replay=replay))
    client = ant(proxy, token)
    with pytest.raises(exc_type) as info:
        if stream:
            with client.messages.stream(model=CLAUDE, max_tokens=50, messages=MESSAGES) as s:
                s.get_final_message()
        else:
            client.messages.create(model=CLAUDE, max_tokens=50, messages=MESSAGES)
    assert info.value.status_code == status
    # The provider's own request id reaches the client unchanged.
    assert info.value.body["request_id"] == fixture_json(replay)["request_id"]  # type: ignore[index]
    record = one_record(proxy, header_id(info.value))
    assert record["outcome"] == "upstream_error"
    assert record["status"] == status
    assert record["error_type"] == error_type
    assert record["usage_source"] == "none"
    assert_unbilled(record)


def test_error_on_free_endpoint_is_still_an_upstream_error(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    fake.script(Scripted(path="/count_tokens", replay="anthropic_error_529_overloaded.json"))
    with pytest.raises(anthropic.OverloadedError) as info:
        ant(proxy, token).messages.count_tokens(model=CLAUDE, messages=MESSAGES)
    record = one_record(proxy, header_id(info.value))
    assert record["outcome"] == "upstream_error" and record["status"] == 529
    assert record["error_type"] == "overloaded_error"
    assert record["usage_source"] == "none"
    assert_unbilled(record)


# -- error event in the middle of a stream -------------------------------------------------------


def test_anthropic_midstream_error_keeps_usage_so_far(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    fake.script(Scripted(path="/messages", replay="anthropic_messages_stream_error.sse"))
    client = ant(proxy, token)
    text: list[str] = []
    with client.messages.with_streaming_response.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        with pytest.raises(anthropic.APIStatusError) as info:
            for event in response.parse():
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text.append(event.delta.text)
    assert "Overloaded" in str(info.value)
    assert "".join(text) == "Here is the first part of"
    record = one_record(proxy, rid)
    assert record["outcome"] == "upstream_error"
    assert record["status"] == 200
    assert record["error_type"] == "overloaded_error"
    # message_start's real input count is kept; output is estimated from the text, never the
    # placeholder output_tokens (1) of message_start.
    assert record["usage_source"] == "estimated"
    assert record["usage"] == usage(input_tokens=312, output_tokens=estimate("".join(text)))
    assert record["cost"] is not None and record["cost"]["incomplete"] is False


def test_openai_chat_midstream_error_keeps_usage_so_far(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    fake.script(Scripted(path="/chat/completions", replay="openai_chat_stream_midstream_error.sse"))
    text: list[str] = []
    with oai(proxy, token).chat.completions.with_streaming_response.create(
        model="gpt-3.5-turbo", messages=CHAT, stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        with pytest.raises(openai.APIError) as info:
            for chunk in response.parse():
                text.extend(c.delta.content or "" for c in chunk.choices)
    assert "The server had an error" in str(info.value)
    assert "".join(text) == "Once upon"
    record = one_record(proxy, rid)
    assert record["outcome"] == "upstream_error"
    assert record["error_type"] == "server_error"
    assert record["usage_source"] == "estimated"
    assert record["usage"] == usage(output_tokens=estimate("Once upon"))
    assert record["response_model"] == "gpt-3.5-turbo-0125"


@pytest.mark.parametrize(
    ("replay", "error_type", "error_code"),
    [
        ("openai_responses_stream_error_event.sse", "error", "ERR_SOMETHING"),
        ("openai_responses_stream_failed.sse", "response.failed", "server_error"),
    ],
)
def test_openai_responses_stream_error_events(
    proxy: ProxyProcess,
    fake: FakeUpstreamProcess,
    token: str,
    replay: str,
    error_type: str,
    error_code: str,
) -> None:
    fake.script(Scripted(path="/responses", replay=replay))
    with oai(proxy, token).responses.with_streaming_response.create(
        model="gpt-5-mini", input="fail please", stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        # openai-python 3.x yields `error` and `response.failed` as ordinary events (§3).
        kinds = [event.type for event in response.parse()]
    assert kinds[-1] in ("error", "response.failed")
    record = one_record(proxy, rid)
    assert record["outcome"] == "upstream_error"
    assert record["error_type"] == error_type
    assert record["error_code"] == error_code
    assert record["usage_source"] == "none"
    assert_unbilled(record)


# -- upstream resets the connection mid-stream -----------------------------------------------------


def test_anthropic_stream_reset_keeps_tokens_seen(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    # Generated stream: message_start, content_block_start, ping, then 2 text deltas; reset.
    fake.script(Scripted(path="/messages", reset_after_chunks=5))
    client = ant(proxy, token)
    text: list[str] = []
    started = time.monotonic()
    with client.messages.with_streaming_response.create(
        model=CLAUDE, max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        with pytest.raises(anthropic.APIError):
            for event in response.parse():
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text.append(event.delta.text)
    assert time.monotonic() - started < FAIL_WITHIN
    served = fake.last_served("anthropic.messages")
    assert served.fault == "reset"
    assert len(text) == 2
    record = one_record(proxy, rid)
    assert record["outcome"] == "partial"
    assert record["ending"] == "upstream_failed"
    assert record["partial"] is True
    assert record["usage_source"] == "estimated"
    assert record["usage"] == usage(
        input_tokens=served.usage["input_tokens"], output_tokens=estimate("".join(text))
    )
    assert record["cost"] is not None


def test_openai_chat_stream_reset_keeps_tokens_seen(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    # Generated stream: the role chunk, then 3 content chunks; reset.
    fake.script(Scripted(path="/chat/completions", reset_after_chunks=4))
    text: list[str] = []
    with oai(proxy, token).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=CHAT, stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        with pytest.raises(openai.APIError):
            for chunk in response.parse():
                text.extend(c.delta.content or "" for c in chunk.choices)
    assert len(text) == 4 and text[0] == ""
    assert fake.last_served("openai.chat").fault == "reset"
    record = one_record(proxy, rid)
    assert record["outcome"] == "partial"
    assert record["ending"] == "upstream_failed"
    assert record["usage_source"] == "estimated"
    assert record["usage"] == usage(output_tokens=estimate("".join(text)))


def test_openai_responses_stream_reset_keeps_tokens_seen(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    # created, in_progress, output_item.added, content_part.added, 3 text deltas; reset.
    fake.script(Scripted(path="/responses", reset_after_chunks=7))
    text: list[str] = []
    with oai(proxy, token).responses.with_streaming_response.create(
        model="gpt-4o-mini", input="stream then break", stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        with pytest.raises(openai.APIError):
            for event in response.parse():
                if event.type == "response.output_text.delta":
                    text.append(event.delta)
    assert len(text) == 3
    record = one_record(proxy, rid)
    assert record["outcome"] == "partial"
    assert record["ending"] == "upstream_failed"
    assert record["usage_source"] == "estimated"
    assert record["usage"] == usage(output_tokens=estimate("".join(text)))
    # The model named by response.created survives the cut.
    assert record["response_model"] == "gpt-4o-mini"


def test_json_body_reset_before_body(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    fake.script(Scripted(path="/chat/completions", reset_after_chunks=0))
    before = {r["request_id"] for r in proxy.records()}
    with pytest.raises(openai.APIConnectionError):
        oai(proxy, token).chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    record = _new_record(proxy, before)
    assert record["endpoint"] == "chat.completions"
    assert record["ending"] == "upstream_failed"
    # The head (200) had gone to the client before the body failed: a partial response.
    assert record["outcome"] == "partial" and record["status"] == 200
    assert_unbilled(record)


def _new_record(proxy: ProxyProcess, before: set[str], timeout: float = 10.0) -> dict[str, Any]:
    """The one record written since `before` (for failures where the client never saw a head)."""
    deadline = time.monotonic() + timeout
    while True:
        new = [r for r in proxy.records() if r["request_id"] not in before]
        if new:
            assert len(new) == 1, new
            return new[0]
        assert time.monotonic() < deadline, "no new record"
        time.sleep(0.02)


# -- compressed upstream bodies --------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_json(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, encoding: str
) -> None:
    fake.script(Scripted(path="/chat/completions", content_encoding=encoding))
    raw = oai(proxy, token).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=CHAT
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    served = fake.last_served("openai.chat")
    assert completion.usage is not None
    assert completion.usage.completion_tokens == served.usage["completion_tokens"]
    record = one_record(proxy, raw.headers["x-meshproxy-request-id"])
    assert record["outcome"] == "ok" and record["usage_source"] == "reported"
    assert record["usage"] == usage(
        input_tokens=served.usage["prompt_tokens"],
        output_tokens=served.usage["completion_tokens"],
    )


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_anthropic_stream(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, encoding: str
) -> None:
    fake.script(Scripted(path="/messages", content_encoding=encoding))
    with ant(proxy, token).messages.stream(model=CLAUDE, max_tokens=100, messages=MESSAGES) as s:
        final = s.get_final_message()
        rid = s.response.headers["x-meshproxy-request-id"]
    served = fake.last_served("anthropic.messages")
    assert final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == served.usage["output_tokens"]
    record = one_record(proxy, rid)
    assert record["outcome"] == "ok" and record["usage_source"] == "reported"
    assert record["usage"] == usage(
        input_tokens=served.usage["input_tokens"], output_tokens=served.usage["output_tokens"]
    )


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("include_usage", [False, True])
def test_compressed_chat_stream(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, encoding: str, include_usage: bool
) -> None:
    # Without include_usage the proxy rewrites the stream (it removes the usage chunk it asked
    # for), so it must decode a compressed upstream body and send it on decoded.
    fake.script(Scripted(path="/chat/completions", content_encoding=encoding))
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    with oai(proxy, token).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=CHAT, stream=True, **extra
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from the")
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == (1 if include_usage else 0)
    served = fake.last_served("openai.chat")
    record = one_record(proxy, rid)
    # openai-python closes at [DONE]; see test_done_then_late_end_of_body_is_complete.
    assert (record["outcome"], record["ending"]) in (("ok", "complete"), ("partial", "client_gone"))
    assert record["usage_source"] == "reported"
    assert record["usage"] == usage(
        input_tokens=served.usage["prompt_tokens"],
        output_tokens=served.usage["completion_tokens"],
    )


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_recorded_responses_stream(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, encoding: str
) -> None:
    fake.script(
        Scripted(path="/responses", replay="openai_responses_stream.sse", content_encoding=encoding)
    )
    with oai(proxy, token).responses.with_streaming_response.create(
        model="gpt-5-mini", input="zip", stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        events = list(response.parse())
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens == 146
    record = one_record(proxy, rid)
    assert record["outcome"] == "ok" and record["usage_source"] == "reported"
    assert record["usage"] == usage(
        input_tokens=1284 - 1152, cache_read_tokens=1152, output_tokens=146, reasoning_tokens=128
    )


# -- upstream hangs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_proxy(
    fake_upstream: FakeUpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """A proxy that gives up on an upstream that sends nothing for READ_TIMEOUT seconds."""
    workdir = tmp_path_factory.mktemp("slow-proxy")
    config = workdir / "meshproxy.toml"
    config.write_text(f"[upstream]\nread = {READ_TIMEOUT}\n", encoding="utf-8")
    with ProxyProcess(fake_upstream.base_url, workdir, extra_args=["--config", str(config)]) as p:
        yield p


def test_anthropic_stream_hang_times_out(
    slow_proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    fake.script(Scripted(path="/messages", hang_after_chunks=5))
    text: list[str] = []
    started = time.monotonic()
    with ant(slow_proxy, token, timeout=30).messages.with_streaming_response.create(
        model=CLAUDE, max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        with pytest.raises(anthropic.APIError):
            for event in response.parse():
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text.append(event.delta.text)
    elapsed = time.monotonic() - started
    assert READ_TIMEOUT * 0.9 <= elapsed < FAIL_WITHIN
    assert len(text) == 2
    served = fake.last_served("anthropic.messages")
    assert served.fault == "hang"
    record = one_record(slow_proxy, rid)
    assert record["ending"] == "timeout"
    assert record["outcome"] == "partial" and record["partial"] is True
    assert record["usage_source"] == "estimated"
    assert record["usage"] == usage(
        input_tokens=served.usage["input_tokens"], output_tokens=estimate("".join(text))
    )


def test_openai_chat_stream_hang_times_out(
    slow_proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    fake.script(Scripted(path="/chat/completions", hang_after_chunks=3))
    started = time.monotonic()
    text: list[str] = []
    with oai(slow_proxy, token, timeout=30).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=CHAT, stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        with pytest.raises(openai.APIError):
            for chunk in response.parse():
                text.extend(c.delta.content or "" for c in chunk.choices)
    assert time.monotonic() - started < FAIL_WITHIN
    record = one_record(slow_proxy, rid)
    assert record["ending"] == "timeout" and record["outcome"] == "partial"
    assert record["usage"] == usage(output_tokens=estimate("".join(text)))
    assert record["usage"]["output_tokens"] > 0


def test_json_hang_after_head_times_out(
    slow_proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    fake.script(Scripted(path="/messages", hang_after_chunks=0))
    before = {r["request_id"] for r in slow_proxy.records()}
    started = time.monotonic()
    with pytest.raises(anthropic.APIConnectionError):
        ant(slow_proxy, token, timeout=30).messages.create(
            model=CLAUDE, max_tokens=100, messages=MESSAGES
        )
    assert time.monotonic() - started < FAIL_WITHIN
    record = _new_record(slow_proxy, before)
    assert record["endpoint"] == "messages"
    assert record["ending"] == "timeout"
    assert record["outcome"] == "partial"
    assert_unbilled(record)


def test_hang_before_head_is_504(
    slow_proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    fake.script(Scripted(path="/chat/completions", delay_before_head=5.0))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        oai(slow_proxy, token, timeout=30).chat.completions.create(
            model="gpt-4o-mini", messages=CHAT
        )
    assert time.monotonic() - started < FAIL_WITHIN
    assert info.value.status_code == 504
    assert isinstance(info.value.body, dict) and "message" in info.value.body
    record = one_record(slow_proxy, header_id(info.value))
    assert record["outcome"] == "failed"
    assert record["ending"] == "timeout"
    assert record["status"] == 504
    assert_unbilled(record)


# -- upstream unreachable --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_upstream_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """A proxy whose upstream refuses connections (nothing listens on port 1)."""
    workdir = tmp_path_factory.mktemp("dead-upstream")
    with ProxyProcess("http://127.0.0.1:1", workdir) as p:
        yield p


def test_openai_upstream_refused_is_502(dead_upstream_proxy: ProxyProcess, token: str) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        oai(dead_upstream_proxy, token).chat.completions.create(
            model="gpt-4o-mini", messages=CHAT, stream=True
        )
    assert time.monotonic() - started < FAIL_WITHIN
    assert info.value.status_code == 502
    # OpenAI's error shape: the SDK found message/type/code in it.
    assert info.value.type and info.value.code
    record = one_record(dead_upstream_proxy, header_id(info.value))
    assert record["outcome"] == "failed"
    assert record["ending"] == "upstream_failed"
    assert record["status"] == 502
    assert record["error_code"] == info.value.code
    assert_unbilled(record)


def test_anthropic_upstream_refused_is_502(dead_upstream_proxy: ProxyProcess, token: str) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        ant(dead_upstream_proxy, token).messages.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES
        )
    assert info.value.status_code == 502
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"]
    record = one_record(dead_upstream_proxy, header_id(info.value))
    assert record["outcome"] == "failed"
    assert record["ending"] == "upstream_failed"
    assert record["provider"] == "anthropic" and record["endpoint"] == "messages"
    assert_unbilled(record)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_speech_sse(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, encoding: str
) -> None:
    fake.script(Scripted(path="/audio/speech", content_encoding=encoding))
    with oai(proxy, token).audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="coral", input="Compressed speech", stream_format="sse"
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        body = response.read()
    assert b"speech.audio.done" in body
    served = fake.last_served("openai.speech")
    record = one_record(proxy, rid)
    assert record["outcome"] == "ok" and record["usage_source"] == "reported"
    assert record["usage"] == usage(
        input_tokens=served.usage["input_tokens"],
        output_audio_tokens=served.usage["output_tokens"],
    )


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_transcription_json(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, encoding: str
) -> None:
    fake.script(Scripted(path="/audio/transcriptions", content_encoding=encoding))
    raw = oai(proxy, token).audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("a.mp3", b"\x00" * 48_000, "audio/mpeg")
    )
    assert raw.parse().text
    record = one_record(proxy, raw.headers["x-meshproxy-request-id"])
    assert record["outcome"] == "ok" and record["usage_source"] == "reported"
    assert record["usage"] == usage(audio_seconds="3")


# -- cut bodies that carry no usage of their own ---------------------------------------------------


def test_speech_audio_reset_still_counts_characters(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    # The provider bills a TTS request once accepted: a cut audio body is counted in full.
    text = "Characters are billed even when the audio is cut short."
    fake.script(Scripted(path="/audio/speech", reset_after_chunks=2))
    with oai(proxy, token).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        # A raw body read is not wrapped by the SDK: the HTTP client's own error surfaces.
        with pytest.raises(httpx2.RemoteProtocolError):
            response.read()
    record = one_record(proxy, rid)
    assert record["ending"] == "upstream_failed"
    assert record["outcome"] == "partial"
    assert record["usage_source"] == "counted"
    assert record["usage"] == usage(input_characters=len(text))
    assert record["cost"] is not None and record["cost"]["incomplete"] is False


def test_anthropic_error_after_message_delta_keeps_reported_usage(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_err",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 40, "cache_read_input_tokens": 8, "output_tokens": 1},
        },
    }
    frames = [
        ("message_start", start),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        ),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": None},
                "usage": {"output_tokens": 12},
            },
        ),
        ("error", {"type": "error", "error": {"type": "api_error", "message": "Internal"}}),
    ]
    body = b"".join(f"event: {name}\ndata: {json.dumps(doc)}\n\n".encode() for name, doc in frames)
    fake.script(Scripted(path="/messages", chunks=[body]))
    with ant(proxy, token).messages.with_streaming_response.create(
        model=CLAUDE, max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        with pytest.raises(anthropic.APIStatusError):
            list(response.parse())
    record = one_record(proxy, rid)
    assert record["outcome"] == "upstream_error"
    assert record["error_type"] == "api_error"
    assert record["usage_source"] == "reported"
    assert record["usage"] == usage(input_tokens=40, cache_read_tokens=8, output_tokens=12)


def test_legacy_complete_stream_error_event(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    def frame(name: str, doc: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(doc)}\n\n".encode()

    body = frame(
        "completion",
        {"type": "completion", "completion": " Hello", "stop_reason": None, "model": "claude-2.1"},
    ) + frame("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
    fake.script(Scripted(path="/complete", chunks=[body]))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        payload = {
            "model": "claude-3-haiku",
            "prompt": "\n\nHuman: Hi\n\nAssistant:",
            "max_tokens_to_sample": 20,
            "stream": True,
        }
        conn.request(
            "POST",
            "/anthropic/v1/complete",
            body=json.dumps(payload),
            headers={"content-type": "application/json", "x-api-key": token},
        )
        response = conn.getresponse()
        data = response.read()
        rid = response.getheader("x-meshproxy-request-id")
    finally:
        conn.close()
    assert response.status == 200 and data == body
    assert rid
    record = one_record(proxy, rid)
    assert record["endpoint"] == "complete"
    assert record["outcome"] == "upstream_error"
    assert record["error_type"] == "overloaded_error"
    assert record["usage_source"] == "none"
    assert_unbilled(record)


# -- combinations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_stream_reset_keeps_tokens_seen(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, encoding: str
) -> None:
    """A compressed stream cut mid-way cannot end its compressed body: that is a cut, not an
    unreadable body, so the usage seen so far is kept (not flagged unparseable)."""
    fake.script(Scripted(path="/messages", reset_after_chunks=5, content_encoding=encoding))
    text: list[str] = []
    with ant(proxy, token).messages.with_streaming_response.create(
        model=CLAUDE, max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        with pytest.raises((anthropic.APIError, httpx2.HTTPError)):
            for event in response.parse():
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text.append(event.delta.text)
    assert len(text) == 2
    served = fake.last_served("anthropic.messages")
    record = one_record(proxy, rid)
    assert record["ending"] == "upstream_failed" and record["outcome"] == "partial"
    assert record["usage_source"] == "estimated"
    assert record["usage"] == usage(
        input_tokens=served.usage["input_tokens"], output_tokens=estimate("".join(text))
    )


def test_client_gone_mid_stream(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    """The client hangs up after two text deltas of a slow stream: the upstream request is
    dropped and the record says so, with the input already reported."""
    fake.script(Scripted(path="/messages", delay_between_chunks=0.5))
    text: list[str] = []
    started = time.monotonic()
    with ant(proxy, token).messages.with_streaming_response.create(
        model=CLAUDE, max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        for event in response.parse():
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text.append(event.delta.text)
                if len(text) == 2:
                    break
    served = fake.last_served("anthropic.messages")
    record = one_record(proxy, rid)
    # 13 pieces 0.5 s apart would take 6 s; the client left after ~2 s, and the record must
    # come well before the stream would have ended.
    assert time.monotonic() - started < 5.0
    assert record["ending"] == "client_gone"
    assert record["outcome"] == "partial" and record["partial"] is True
    assert record["usage_source"] == "estimated"
    assert record["usage"]["input_tokens"] == served.usage["input_tokens"]
    # What the proxy had forwarded when it noticed: at least what the client read, never the
    # full answer (the last message_delta never came).
    assert estimate("".join(text)) <= record["usage"]["output_tokens"]
    assert record["usage"]["output_tokens"] < served.usage["output_tokens"]


# -- a client that closes right after [DONE] -------------------------------------------------


def test_done_then_late_end_of_body_is_complete(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    chunk = {
        "id": "chatcmpl-late",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}],
    }
    raw_usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    body = (
        f"data: {json.dumps(chunk)}\n\n"
        f"data: {json.dumps({**chunk, 'choices': [], 'usage': raw_usage})}\n\n"
        "data: [DONE]\n\n"
    ).encode()
    # The whole body, then 0.5 s before the chunked end-of-body (an empty piece is not sent;
    # the delay before it still applies): as when [DONE] and the terminator travel in two
    # TCP segments.
    fake.script(Scripted(path="/chat/completions", chunks=[body, b""], delay_between_chunks=0.5))
    with oai(proxy, token).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=CHAT, stream=True, stream_options={"include_usage": True}
    ) as response:
        rid = response.headers["x-meshproxy-request-id"]
        chunks = list(response.parse())
    assert chunks[-1].usage is not None  # the client got everything, usage included
    record = one_record(proxy, rid)
    assert record["usage"] == usage(input_tokens=5, output_tokens=1)
    assert record["usage_source"] == "reported"
    assert record["ending"] == "complete"
    assert record["outcome"] == "ok"
