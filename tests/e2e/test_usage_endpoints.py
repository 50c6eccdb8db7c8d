"""Usage accounting end to end, for every endpoint kind, with the official SDKs as clients.

Each test makes one call through `meshproxy serve` to the fake upstream and compares the record
the proxy wrote with what the fake actually served. The fake reports provider-shaped raw usage
(`fake.last_served(kind).usage`); the expected normalised numbers are computed HERE, from the
rules of WIRE.md §14, independently of meshproxy_core.usage:

    OpenAI chat:      input = prompt - cached - audio - image; cache_read = cached;
                      output = completion - completion audio (reasoning stays inside)
    OpenAI responses: input = input - cached; cache_read = cached; output = output
    Anthropic:        input = input_tokens (excludes cache); cache_read; 5m/1h writes from
                      cache_creation; output = output_tokens (thinking inside)

Scripted replays of recorded provider bodies cover what the generated replies never report
(cache reads, cache writes with a 5m/1h split, reasoning, audio tokens).
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import struct
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import attrs
import openai
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess, Scripted
from meshproxy_core.records import Usage

from .conftest import ProxyProcess

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CLAUDE = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "Hello, Claude"}]


# -- clients -----------------------------------------------------------------------------------


def oai(proxy: ProxyProcess, token: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=proxy.url + "/openai/v1", api_key=token, max_retries=0, timeout=10
    )


def ant(proxy: ProxyProcess, token: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=proxy.url + "/anthropic", auth_token=token, max_retries=0, timeout=10
    )


def one_record(proxy: ProxyProcess, rid: str) -> dict[str, Any]:
    """The record of request `rid`, which must be the only one with that id."""
    record = proxy.record(rid)
    assert sum(r["request_id"] == rid for r in proxy.records()) == 1, rid
    return record


def request_id(raw: Any) -> str:
    value = raw.headers["x-meshproxy-request-id"]
    assert value
    return str(value)


# -- expected values, from WIRE.md §14 -----------------------------------------------------------


def usage(**fields: Any) -> dict[str, Any]:
    """A serialised `Usage` (as record_to_dict writes it): every field zero except `fields`."""
    out: dict[str, Any] = {field.name: 0 for field in attrs.fields(Usage)}
    out["images"] = []
    out["audio_seconds"] = "0"
    for name, value in fields.items():
        assert name in out, f"not a Usage field: {name}"
        out[name] = value
    return out


def _n(obj: Any, *keys: str) -> int:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, int) else 0


def chat_expected(raw: dict[str, Any]) -> dict[str, Any]:
    cached = _n(raw, "prompt_tokens_details", "cached_tokens")
    audio_in = _n(raw, "prompt_tokens_details", "audio_tokens")
    image_in = _n(raw, "prompt_tokens_details", "image_tokens")
    audio_out = _n(raw, "completion_tokens_details", "audio_tokens")
    return usage(
        input_tokens=raw["prompt_tokens"] - cached - audio_in - image_in,
        cache_read_tokens=cached,
        input_audio_tokens=audio_in,
        input_image_tokens=image_in,
        output_tokens=raw["completion_tokens"] - audio_out,
        reasoning_tokens=_n(raw, "completion_tokens_details", "reasoning_tokens"),
        output_audio_tokens=audio_out,
    )


def responses_expected(raw: dict[str, Any]) -> dict[str, Any]:
    cached = _n(raw, "input_tokens_details", "cached_tokens")
    return usage(
        input_tokens=raw["input_tokens"] - cached,
        cache_read_tokens=cached,
        output_tokens=raw["output_tokens"],
        reasoning_tokens=_n(raw, "output_tokens_details", "reasoning_tokens"),
    )


def anthropic_expected(raw: dict[str, Any]) -> dict[str, Any]:
    split = raw.get("cache_creation")
    if isinstance(split, dict):
        write_5m = _n(split, "ephemeral_5m_input_tokens")
        write_1h = _n(split, "ephemeral_1h_input_tokens")
    else:
        write_5m, write_1h = _n(raw, "cache_creation_input_tokens"), 0
    return usage(
        input_tokens=raw["input_tokens"],
        cache_read_tokens=_n(raw, "cache_read_input_tokens"),
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=raw["output_tokens"],
        reasoning_tokens=_n(raw, "output_tokens_details", "thinking_tokens"),
        web_search_requests=_n(raw, "server_tool_use", "web_search_requests"),
    )


def image_expected(raw: dict[str, Any]) -> dict[str, Any]:
    # GPT-image usage: input = text + image tokens; output tokens are image tokens unless the
    # details split them (WIRE.md §5).
    details = raw.get("output_tokens_details")
    image_out = _n(details, "image_tokens") if details else raw["output_tokens"]
    return usage(
        input_tokens=_n(raw, "input_tokens_details", "text_tokens"),
        input_image_tokens=_n(raw, "input_tokens_details", "image_tokens"),
        output_tokens=_n(details, "text_tokens"),
        output_image_tokens=image_out,
    )


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def fixture_events(name: str) -> list[dict[str, Any]]:
    """The JSON data of every event of a recorded SSE file (LF framing)."""
    events = []
    for block in (FIXTURES / name).read_text(encoding="utf-8").split("\n\n"):
        data = [line[5:].lstrip(" ") for line in block.splitlines() if line.startswith("data:")]
        if data and data[0] != "[DONE]":
            events.append(json.loads("\n".join(data)))
    return events


def anthropic_stream_usage(name: str) -> dict[str, Any]:
    """The usage a client holds at the end of a recorded Anthropic stream: message_start's usage,
    then every non-null field of each message_delta's usage overwriting it (WIRE.md §9)."""
    merged: dict[str, Any] = {}
    for event in fixture_events(name):
        if event["type"] == "message_start":
            merged.update(event["message"].get("usage") or {})
        elif event["type"] == "message_delta":
            merged.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
    return merged


def assert_priced(record: dict[str, Any]) -> None:
    cost = record["cost"]
    assert cost is not None, record
    assert Decimal(cost["total"]) > 0, cost
    assert cost["incomplete"] is False, cost


def assert_ok(record: dict[str, Any], endpoint: str, source: str = "reported") -> None:
    """A clean, successful exchange. (A stream whose client closed right after `data: [DONE]`,
    as openai-python does, is complete too: the provider's answer had ended.)"""
    assert record["endpoint"] == endpoint
    summary = {k: record[k] for k in ("outcome", "ending", "status", "usage_source", "error_type")}
    assert record["outcome"] == "ok", summary
    assert record["ending"] == "complete", summary
    assert record["partial"] is False
    assert record["status"] == 200
    assert record["usage_source"] == source
    assert record["error_type"] is None


def tiny_png() -> bytes:
    """A valid 1x1 RGBA PNG, built here so no file is read."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00\xff")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def audio_file(seconds: int) -> tuple[str, bytes, str]:
    # The fake counts 16,000 bytes of upload as one second of audio.
    return ("speech.mp3", b"ID3" + b"\x00" * (16_000 * seconds - 3), "audio/mpeg")


# -- OpenAI chat completions ---------------------------------------------------------------------


def test_chat_completion(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    raw = oai(proxy, token).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Count my tokens"}]
    )
    completion = raw.parse()
    record = one_record(proxy, request_id(raw))
    served = fake.last_served("openai.chat")
    assert served.usage is not None
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == served.usage["prompt_tokens"]
    assert_ok(record, "chat.completions")
    assert record["usage"] == chat_expected(served.usage)
    assert record["raw_usage"] == served.usage
    assert record["response_model"] == "gpt-4o-mini"
    assert record["service_tier"] == "default"
    assert_priced(record)


def test_chat_completion_n_choices(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", n=3, messages=[{"role": "user", "content": "three answers"}]
    )
    completion = raw.parse()
    assert len(completion.choices) == 3
    served = fake.last_served("openai.chat")
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "chat.completions")
    # completion_tokens covers all three choices; the record must not be per choice.
    assert record["usage"] == chat_expected(served.usage)
    single = oai(proxy, token).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "three answers"}]
    )
    assert single.usage is not None
    assert record["usage"]["output_tokens"] == 3 * single.usage.completion_tokens
    assert_priced(record)


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_n_choices(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, include_usage: bool
) -> None:
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    with oai(proxy, token).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        n=2,
        messages=[{"role": "user", "content": "stream two answers"}],
        stream=True,
        **extra,
    ) as response:
        rid = request_id(response)
        chunks = list(response.parse())
    indexes = {choice.index for chunk in chunks for choice in chunk.choices}
    assert indexes == {0, 1}
    usage_chunks = [c for c in chunks if c.usage is not None]
    served = fake.last_served("openai.chat")
    assert served.usage is not None  # the proxy asked upstream for the usage chunk either way
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
        assert usage_chunks[0].usage.completion_tokens == served.usage["completion_tokens"]
    else:
        assert usage_chunks == [] and all(c.choices for c in chunks)
    record = one_record(proxy, rid)
    assert_ok(record, "chat.completions")
    assert record["stream"] is True
    assert record["usage"] == chat_expected(served.usage)
    assert_priced(record)


@pytest.mark.parametrize(
    ("fixture", "model"),
    [
        ("openai_chat_completion.json", "o4-mini"),
        ("openai_chat_completion_audio.json", "gpt-4o-audio-preview"),
    ],
)
def test_chat_completion_cached_reasoning_and_audio_details(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, fixture: str, model: str
) -> None:
    raw_usage = fixture_json(fixture)["usage"]
    fake.script(Scripted(path="/chat/completions", replay=fixture, usage=raw_usage))
    raw = oai(proxy, token).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "details"}]
    )
    assert raw.parse().usage is not None
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "chat.completions")
    expected = chat_expected(fake.last_served().usage)
    assert record["usage"] == expected
    # The subsets never leak into the plain counts (WIRE.md §16.5).
    assert expected["cache_read_tokens"] + expected["input_audio_tokens"] > 0
    assert_priced(record)


def test_chat_stream_recorded_include_usage(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    name = "openai_chat_stream_include_usage.sse"
    raw_usage = next(e["usage"] for e in fixture_events(name) if e.get("usage"))
    fake.script(Scripted(path="/chat/completions", replay=name, usage=raw_usage))
    with oai(proxy, token).chat.completions.with_streaming_response.create(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "recorded"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        rid = request_id(response)
        chunks = list(response.parse())
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 15
    record = one_record(proxy, rid)
    assert_ok(record, "chat.completions")
    assert record["usage"] == chat_expected(raw_usage)
    assert_priced(record)


# -- OpenAI responses ----------------------------------------------------------------------------


def test_responses_plain(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    raw = oai(proxy, token).responses.with_raw_response.create(model="gpt-4o-mini", input="Say hi")
    assert raw.parse().output_text
    served = fake.last_served("openai.responses")
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "responses")
    assert record["usage"] == responses_expected(served.usage)
    assert_priced(record)


def test_responses_stream(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    with oai(proxy, token).responses.with_streaming_response.create(
        model="gpt-4o-mini", input="Stream hi", stream=True
    ) as response:
        rid = request_id(response)
        events = list(response.parse())
    assert events[-1].type == "response.completed"
    served = fake.last_served("openai.responses")
    assert events[-1].response.usage.output_tokens == served.usage["output_tokens"]
    record = one_record(proxy, rid)
    assert_ok(record, "responses")
    assert record["stream"] is True
    assert record["usage"] == responses_expected(served.usage)
    assert_priced(record)


def test_responses_recorded_stream_with_cache_and_reasoning(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    name = "openai_responses_stream.sse"
    terminal = [e for e in fixture_events(name) if e["type"] == "response.completed"]
    raw_usage = terminal[-1]["response"]["usage"]
    fake.script(Scripted(path="/responses", replay=name, usage=raw_usage))
    with oai(proxy, token).responses.with_streaming_response.create(
        model="gpt-5-mini", input="recorded", stream=True
    ) as response:
        rid = request_id(response)
        events = list(response.parse())
    final = events[-1].response
    assert final.usage is not None and final.usage.input_tokens == raw_usage["input_tokens"]
    record = one_record(proxy, rid)
    assert_ok(record, "responses")
    assert record["usage"] == responses_expected(raw_usage)
    assert record["usage"]["cache_read_tokens"] > 0 and record["usage"]["reasoning_tokens"] > 0
    assert_priced(record)


def test_responses_compact(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    raw = oai(proxy, token).responses.with_raw_response.compact(
        model="gpt-4o-mini", input="A long conversation to compact"
    )
    compacted = raw.parse()
    assert compacted.usage.input_tokens > 0
    served = fake.last_served("openai.responses_compact")
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "responses.compact")
    assert record["usage"] == responses_expected(served.usage)
    assert_priced(record)


def test_responses_compact_recorded(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    name = "openai_responses_compact.json"
    raw_usage = fixture_json(name)["usage"]
    fake.script(Scripted(path="/responses/compact", replay=name, usage=raw_usage))
    raw = oai(proxy, token).responses.with_raw_response.compact(model="gpt-5", input="compact")
    assert raw.parse().usage.total_tokens == raw_usage["total_tokens"]
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "responses.compact")
    assert record["usage"] == usage(
        input_tokens=48213 - 40960,
        cache_read_tokens=40960,
        output_tokens=2310,
        reasoning_tokens=1792,
    )
    assert record["usage"] == responses_expected(raw_usage)
    assert_priced(record)


def test_responses_input_tokens_is_free(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).responses.input_tokens.with_raw_response.count(
        model="gpt-4o-mini", input="How many tokens is this?"
    )
    assert raw.parse().input_tokens > 0
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "responses.input_tokens", source="free")
    assert record["usage"] == usage()
    assert record["cost"] is None


# -- OpenAI embeddings ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding_format", ["float", None])
def test_embeddings(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, encoding_format: str | None
) -> None:
    # None: the SDK default, which asks for base64 on the wire and decodes it (WIRE.md §16.11).
    options: dict[str, Any] = {"encoding_format": encoding_format} if encoding_format else {}
    raw = oai(proxy, token).embeddings.with_raw_response.create(
        model="text-embedding-3-small",
        input=["first text", "a second, longer text to embed"],
        **options,
    )
    result = raw.parse()
    assert len(result.data) == 2 and all(len(d.embedding) == 16 for d in result.data)
    assert fake.received()[-1].json()["encoding_format"] == (encoding_format or "base64")
    served = fake.last_served("openai.embeddings")
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "embeddings")
    assert record["usage"] == usage(input_tokens=served.usage["prompt_tokens"])
    assert record["usage"]["input_tokens"] == result.usage.prompt_tokens > 0
    assert_priced(record)


# -- OpenAI images -------------------------------------------------------------------------------


def test_images_gpt_image_tokens(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).images.with_raw_response.generate(
        model="gpt-image-1", prompt="a red square", size="1024x1536", quality="high", n=2
    )
    assert len(raw.parse().data or []) == 2
    served = fake.last_served("openai.images_generations")
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "images.generations")
    assert record["usage"] == image_expected(served.usage)
    assert record["usage"]["output_image_tokens"] == 2 * 6240  # WIRE.md §5 table
    assert_priced(record)


@pytest.mark.parametrize(
    ("model", "size", "quality", "n", "expected_quality"),
    [
        ("dall-e-3", "1024x1792", "hd", 1, "hd"),
        ("dall-e-3", None, None, 1, "standard"),
        ("dall-e-2", "512x512", None, 3, "standard"),
    ],
)
def test_images_dalle_counted(
    proxy: ProxyProcess,
    fake: FakeUpstreamProcess,
    token: str,
    model: str,
    size: str | None,
    quality: str | None,
    n: int,
    expected_quality: str,
) -> None:
    options: dict[str, Any] = {}
    if size:
        options["size"] = size
    if quality:
        options["quality"] = quality
    raw = oai(proxy, token).images.with_raw_response.generate(
        model=model, prompt="an otter", n=n, **options
    )
    assert len(raw.parse().data or []) == n
    assert fake.last_served("openai.images_generations").usage is None
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "images.generations", source="counted")
    images = [{"size": size or "1024x1024", "quality": expected_quality, "count": n}]
    assert record["usage"] == usage(images=images)
    assert_priced(record)


def test_images_dalle3_recorded_body_counted(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    fake.script(Scripted(path="/images/generations", replay="openai_images_dalle3.json"))
    raw = oai(proxy, token).images.with_raw_response.generate(
        model="dall-e-3", prompt="an otter", size="1792x1024", quality="hd"
    )
    assert raw.parse().data[0].revised_prompt  # type: ignore[index]
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "images.generations", source="counted")
    assert record["usage"] == usage(images=[{"size": "1792x1024", "quality": "hd", "count": 1}])
    assert Decimal(record["cost"]["total"]) == Decimal("0.120")


def test_images_gpt_image_stream_with_partials(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    with oai(proxy, token).images.with_streaming_response.generate(
        model="gpt-image-1", prompt="a blue circle", stream=True, partial_images=2, quality="low"
    ) as response:
        rid = request_id(response)
        events = list(response.parse())
    kinds = [e.type for e in events]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    served = fake.last_served("openai.images_generations")
    assert events[-1].usage.output_tokens == served.usage["output_tokens"]
    record = one_record(proxy, rid)
    assert_ok(record, "images.generations")
    assert record["stream"] is True
    assert record["usage"] == image_expected(served.usage)
    assert_priced(record)


def test_images_edit_multipart(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    raw = oai(proxy, token).images.with_raw_response.edit(
        model="gpt-image-1",
        image=("square.png", tiny_png(), "image/png"),
        prompt="make it green",
        quality="medium",
    )
    assert len(raw.parse().data or []) == 1
    assert fake.received()[-1].header("content-type").startswith("multipart/form-data")
    served = fake.last_served("openai.images_edits")
    assert served.usage["input_tokens_details"]["image_tokens"] > 0
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "images.edits")
    assert record["usage"] == image_expected(served.usage)
    assert_priced(record)


def test_images_edit_stream(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    with oai(proxy, token).images.with_streaming_response.edit(
        model="gpt-image-1",
        image=io.BytesIO(tiny_png()),
        prompt="make it green",
        stream=True,
        partial_images=1,
    ) as response:
        rid = request_id(response)
        events = list(response.parse())
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    served = fake.last_served("openai.images_edits")
    record = one_record(proxy, rid)
    assert_ok(record, "images.edits")
    assert record["usage"] == image_expected(served.usage)
    assert_priced(record)


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # SDK marks it deprecated
def test_images_variation_counted(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).images.with_raw_response.create_variation(
        model="dall-e-2", image=("square.png", tiny_png(), "image/png"), n=2, size="256x256"
    )
    assert len(raw.parse().data or []) == 2
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "images.variations", source="counted")
    assert record["usage"] == usage(images=[{"size": "256x256", "quality": "standard", "count": 2}])
    assert Decimal(record["cost"]["total"]) == 2 * Decimal("0.016")


# -- OpenAI audio --------------------------------------------------------------------------------


def test_speech_tts1_counts_characters(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    text = "Today is a wonderful day — to build something people love! ✨"
    raw = oai(proxy, token).audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input=text
    )
    audio = raw.parse().read()
    assert audio.startswith(b"ID3")
    assert fake.last_served("openai.speech").usage is None
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "audio.speech", source="counted")
    # Characters, not UTF-8 bytes: the dash and the sparkle are one character each.
    assert len(text) != len(text.encode())
    assert record["usage"] == usage(input_characters=len(text))
    assert_priced(record)


def test_speech_sse_token_usage(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    with oai(proxy, token).audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="coral", input="Stream this speech", stream_format="sse"
    ) as response:
        rid = request_id(response)
        body = response.read()
    done = [json.loads(line[5:]) for line in body.splitlines() if b"speech.audio.done" in line]
    served = fake.last_served("openai.speech")
    assert done and done[0]["usage"] == served.usage
    record = one_record(proxy, rid)
    assert_ok(record, "audio.speech")
    assert record["usage"] == usage(
        input_tokens=served.usage["input_tokens"],
        output_audio_tokens=served.usage["output_tokens"],
    )
    assert_priced(record)


def test_transcription_whisper_duration(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=audio_file(3)
    )
    assert raw.parse().text
    served = fake.last_served("openai.transcription")
    assert served.usage == {"type": "duration", "seconds": 3}
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "audio.transcriptions")
    assert record["usage"] == usage(audio_seconds="3")
    # whisper-1: $0.006 per minute, per second: 3 s -> 0.0003.
    assert Decimal(record["cost"]["total"]) == Decimal("0.006") * 3 / 60


def test_transcription_whisper_recorded_verbose(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    name = "openai_transcription_whisper.json"
    fake.script(Scripted(path="/audio/transcriptions", replay=name))
    raw = oai(proxy, token).audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=audio_file(1), response_format="verbose_json"
    )
    assert raw.parse().duration == pytest.approx(8.47)
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "audio.transcriptions")
    # The reported usage (9 s) wins over the float duration.
    assert record["usage"] == usage(audio_seconds="9")
    assert_priced(record)


def test_transcription_gpt4o_tokens(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).audio.transcriptions.with_raw_response.create(
        model="gpt-4o-transcribe", file=audio_file(2), prompt="A short prompt for context"
    )
    assert raw.parse().text
    served = fake.last_served("openai.transcription")
    details = served.usage["input_token_details"]
    assert details["text_tokens"] > 0 and details["audio_tokens"] == 20
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "audio.transcriptions")
    assert record["usage"] == usage(
        input_tokens=details["text_tokens"],
        input_audio_tokens=details["audio_tokens"],
        output_tokens=served.usage["output_tokens"],
    )
    assert_priced(record)


def test_transcription_text_format_has_no_usage(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).audio.transcriptions.with_raw_response.create(
        model="gpt-4o-transcribe", file=audio_file(1), response_format="text"
    )
    assert isinstance(raw.parse(), str) and raw.parse().strip()
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "audio.transcriptions", source="none")
    assert record["usage"] == usage()
    assert record["cost"] is None


def test_transcription_stream(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    with oai(proxy, token).audio.transcriptions.with_streaming_response.create(
        model="gpt-4o-mini-transcribe", file=audio_file(4), stream=True
    ) as response:
        rid = request_id(response)
        events = list(response.parse())
    assert events[-1].type == "transcript.text.done"
    served = fake.last_served("openai.transcription")
    record = one_record(proxy, rid)
    assert_ok(record, "audio.transcriptions")
    assert record["stream"] is True
    assert record["usage"] == usage(
        input_tokens=served.usage["input_token_details"]["text_tokens"],
        input_audio_tokens=served.usage["input_token_details"]["audio_tokens"],
        output_tokens=served.usage["output_tokens"],
    )
    assert record["usage"]["input_audio_tokens"] == 40
    assert_priced(record)


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # SDK marks it deprecated
def test_translation_json_has_no_usage(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).audio.translations.with_raw_response.create(
        model="whisper-1", file=audio_file(2)
    )
    assert raw.parse().text
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "audio.translations", source="none")
    assert record["usage"] == usage()


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # SDK marks it deprecated
def test_translation_verbose_duration_estimated(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).audio.translations.with_raw_response.create(
        model="whisper-1", file=audio_file(2), response_format="verbose_json"
    )
    assert raw.parse().duration == 2.0  # type: ignore[union-attr]
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "audio.translations", source="estimated")
    assert record["usage"] == usage(audio_seconds="2")
    assert_priced(record)


# -- Anthropic messages --------------------------------------------------------------------------


def test_anthropic_message(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    raw = ant(proxy, token).messages.with_raw_response.create(
        model=CLAUDE, max_tokens=100, messages=MESSAGES
    )
    message = raw.parse()
    served = fake.last_served("anthropic.messages")
    assert message.usage.output_tokens == served.usage["output_tokens"]
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "messages")
    assert record["usage"] == anthropic_expected(served.usage)
    assert record["service_tier"] == "standard"
    assert_priced(record)


def test_anthropic_message_stream(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    with ant(proxy, token).messages.stream(
        model=CLAUDE, max_tokens=100, messages=MESSAGES
    ) as stream:
        final = stream.get_final_message()
        rid = stream.response.headers["x-meshproxy-request-id"]
    served = fake.last_served("anthropic.messages")
    assert final.usage.output_tokens == served.usage["output_tokens"]
    record = one_record(proxy, rid)
    assert_ok(record, "messages")
    assert record["stream"] is True
    # The placeholder output_tokens of message_start (1) is overwritten, never added.
    assert record["usage"] == anthropic_expected(served.usage)
    assert_priced(record)


def test_anthropic_message_recorded_cache_split(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    name = "anthropic_message.json"
    raw_usage = fixture_json(name)["usage"]
    fake.script(Scripted(path="/messages", replay=name, usage=raw_usage))
    raw = ant(proxy, token).messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=1024, messages=MESSAGES
    )
    assert raw.parse().usage.cache_read_input_tokens == 1800
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "messages")
    assert record["usage"] == anthropic_expected(raw_usage)
    assert record["usage"] == usage(
        input_tokens=2048,
        cache_read_tokens=1800,
        cache_write_5m_tokens=148,
        cache_write_1h_tokens=100,
        output_tokens=503,
    )
    assert record["response_model"] == "claude-sonnet-4-5-20250929"
    assert_priced(record)
    components = dict(record["cost"]["components"])
    for part in ("cache_read", "cache_write_5m", "cache_write_1h"):
        assert Decimal(components[part]) > 0, components


def test_anthropic_stream_recorded_cache_split_and_thinking(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    name = "anthropic_messages_stream_with_cache.sse"
    merged = anthropic_stream_usage(name)
    fake.script(Scripted(path="/messages", replay=name, usage=merged))
    with ant(proxy, token).messages.stream(
        model="claude-sonnet-4-5", max_tokens=1024, messages=MESSAGES
    ) as stream:
        final = stream.get_final_message()
        rid = stream.response.headers["x-meshproxy-request-id"]
    assert final.usage.output_tokens == merged["output_tokens"] == 94
    record = one_record(proxy, rid)
    assert_ok(record, "messages")
    assert record["usage"] == anthropic_expected(merged)
    assert record["usage"] == usage(
        input_tokens=18,
        cache_read_tokens=1800,
        cache_write_5m_tokens=148,
        cache_write_1h_tokens=100,
        output_tokens=94,
        reasoning_tokens=61,
    )
    assert_priced(record)


def test_anthropic_message_web_search(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    name = "anthropic_message_web_search.json"
    raw_usage = fixture_json(name)["usage"]
    fake.script(Scripted(path="/messages", replay=name, usage=raw_usage))
    raw = ant(proxy, token).messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=1024, messages=MESSAGES
    )
    raw.parse()
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "messages")
    assert record["usage"] == anthropic_expected(raw_usage)
    assert record["usage"]["web_search_requests"] > 0
    assert_priced(record)


def test_anthropic_count_tokens_is_free(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = ant(proxy, token).messages.with_raw_response.count_tokens(model=CLAUDE, messages=MESSAGES)
    assert raw.parse().input_tokens > 0
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "messages.count_tokens", source="free")
    assert record["usage"] == usage()
    assert record["cost"] is None


# -- Anthropic batches ---------------------------------------------------------------------------


BATCH_REQUESTS = [
    {
        "custom_id": "first-request",
        "params": {"model": CLAUDE, "max_tokens": 50, "messages": MESSAGES},
    },
    {
        "custom_id": "second-request",
        "params": {
            "model": "claude-sonnet-4-5",
            "max_tokens": 80,
            "messages": [{"role": "user", "content": "A longer second question, please"}],
        },
    },
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def public_proxy(
    fake_upstream: FakeUpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """A proxy that knows the URL clients reach it at, so it rewrites batch results_url."""
    port = _free_port()
    public_url = f"http://127.0.0.1:{port}"
    args = ["--port", str(port), "--public-url", public_url]
    workdir = tmp_path_factory.mktemp("public-proxy")
    with ProxyProcess(fake_upstream.base_url, workdir, extra_args=args) as process:
        assert process.url == public_url
        yield process


def test_batch_create_is_free(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    raw = ant(proxy, token).messages.batches.with_raw_response.create(
        requests=BATCH_REQUESTS  # type: ignore[arg-type]
    )
    batch = raw.parse()
    assert batch.processing_status == "in_progress" and batch.results_url is None
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "messages.batches", source="free")
    assert record["usage"] == usage()
    assert record["cost"] is None


def test_batch_retrieve_results_url_points_at_proxy(
    public_proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    client = ant(public_proxy, token)
    batch = client.messages.batches.create(requests=BATCH_REQUESTS)  # type: ignore[arg-type]
    raw = client.messages.batches.with_raw_response.retrieve(batch.id)
    ended = raw.parse()
    assert ended.processing_status == "ended"
    assert (
        ended.results_url == f"{public_proxy.url}/anthropic/v1/messages/batches/{batch.id}/results"
    )
    # What the fake sent pointed at itself; the client never sees that.
    assert fake.base_url not in (ended.results_url or "")
    record = one_record(public_proxy, request_id(raw))
    assert_ok(record, "messages.batches", source="free")
    assert record["usage"] == usage()
    listed = client.messages.batches.list()
    urls = {b.id: b.results_url for b in listed.data}
    assert urls[batch.id] == ended.results_url


def test_batch_results_through_sdk(
    public_proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    client = ant(public_proxy, token)
    batch = client.messages.batches.create(requests=BATCH_REQUESTS)  # type: ignore[arg-type]
    raw = client.messages.batches.with_raw_response.results(batch.id)
    rid = request_id(raw)
    lines = list(raw.parse())
    assert {line.custom_id for line in lines} == {"first-request", "second-request"}
    assert all(line.result.type == "succeeded" for line in lines)
    # The results were fetched through the proxy (with the room token), not from upstream.
    results_requests = [r for r in fake.received() if r.path.endswith("/results")]
    assert len(results_requests) == 1
    served = fake.last_served("anthropic.batch_results")
    assert served.item_usage is not None and set(served.item_usage) == {
        "first-request",
        "second-request",
    }
    record = one_record(public_proxy, rid)
    assert_ok(record, "messages.batches.results")
    assert record["batch_id"] == batch.id
    assert sorted(record["batch_custom_ids"]) == ["first-request", "second-request"]
    assert record["service_tier"] == "batch"
    per_line = {key: anthropic_expected(value) for key, value in served.item_usage.items()}
    total = usage()
    for expected in per_line.values():
        for name, value in expected.items():
            if isinstance(value, int):
                total[name] += value
    assert record["usage"] == total
    items = {item["key"]: item for item in record["line_items"]}
    assert set(items) == set(per_line)
    for key, item in items.items():
        assert item["usage"] == per_line[key]
        assert Decimal(item["cost"]["total"]) > 0
    assert items["second-request"]["model"] == "claude-sonnet-4-5"
    assert_priced(record)
    line_costs = sum(Decimal(item["cost"]["total"]) for item in items.values())
    assert Decimal(record["cost"]["total"]) == line_costs


def test_batch_results_recorded_mixed_lines(
    public_proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    """A recorded results file with succeeded, errored and expired lines: only the succeeded
    ones are billed."""
    batch_id = "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"
    fake.script(
        # Created through the proxy (the recorded create answer has the same id), so the batch
        # is the caller's room's: a proxy that checks ownership lets the room read it.
        Scripted(path="/messages/batches", replay="anthropic_batch_create_response.json"),
        Scripted(path=f"/batches/{batch_id}", replay="anthropic_batch_retrieve_ended.json"),
        Scripted(path="/results", replay="anthropic_batch_results.jsonl"),
    )
    client = ant(public_proxy, token)
    created = client.messages.batches.create(requests=BATCH_REQUESTS)  # type: ignore[arg-type]
    assert created.id == batch_id
    raw = client.messages.batches.with_raw_response.results(batch_id)
    rid = request_id(raw)
    lines = list(raw.parse())
    assert fake.received()[-1].path == f"/v1/messages/batches/{batch_id}/results"
    succeeded = {}
    for line in (FIXTURES / "anthropic_batch_results.jsonl").read_text().splitlines():
        doc = json.loads(line)
        if doc["result"]["type"] == "succeeded":
            succeeded[doc["custom_id"]] = doc["result"]["message"]["usage"]
    assert len(lines) > len(succeeded) >= 2
    record = one_record(public_proxy, rid)
    assert_ok(record, "messages.batches.results")
    assert record["batch_id"] == batch_id
    assert sorted(record["batch_custom_ids"]) == sorted(succeeded)
    total = usage()
    for raw_usage in succeeded.values():
        for name, value in anthropic_expected(raw_usage).items():
            if isinstance(value, int):
                total[name] += value
    assert record["usage"] == total
    assert_priced(record)


# -- Anthropic legacy text completions ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_legacy_complete_has_no_usage(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, stream: bool
) -> None:
    body = {
        "model": "claude-3-haiku",
        "prompt": "\n\nHuman: Hello there\n\nAssistant:",
        "max_tokens_to_sample": 50,
        "stream": stream,
    }
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/anthropic/v1/complete",
            body=json.dumps(body),
            headers={
                "content-type": "application/json",
                "x-api-key": token,
                "anthropic-version": "2023-06-01",
            },
        )
        response = conn.getresponse()
        data = response.read()
        rid = response.getheader("x-meshproxy-request-id")
    finally:
        conn.close()
    assert response.status == 200, data
    if stream:
        assert b'"stop_reason":"stop_sequence"' in data
    else:
        assert json.loads(data)["completion"]
    assert rid
    record = one_record(proxy, rid)
    assert_ok(record, "complete", source="none")
    assert record["stream"] is stream
    assert record["usage"] == usage()
    assert record["cost"] is None
    assert record["response_model"] == "claude-3-haiku"


# -- wire variants a real provider or gateway sends ------------------------------------------------


def split_every(data: bytes, size: int) -> list[bytes]:
    """`data` in pieces of `size` bytes: events, lines and CRLF pairs cut at arbitrary points."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def chat_chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-wire",
        "object": "chat.completion.chunk",
        "created": 1761564674,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": choices,
        "usage": usage_value,
    }


CHAT_WIRE_USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 9,
    "total_tokens": 49,
    "prompt_tokens_details": {"cached_tokens": 32, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"], ids=["crlf", "cr", "lf"])
@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_framing_variants_split_anywhere(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, newline: bytes, include_usage: bool
) -> None:
    """CRLF, CR and LF framing, a keep-alive comment, and pieces cut through lines and events:
    the client sees every content chunk (and the usage chunk only if it asked), and the proxy
    reads the usage."""

    def event(doc: Any) -> bytes:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        return b"data: " + data + newline + newline

    deltas = ["Hello", " from", " a", " gateway"]
    body = event(chat_chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}]))
    body += b": keep-alive" + newline + newline
    for text in deltas:
        body += event(chat_chunk([{"index": 0, "delta": {"content": text}}]))
    body += event(chat_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    body += event(chat_chunk([], CHAT_WIRE_USAGE))
    body += event(b"[DONE]")
    fake.script(Scripted(path="/chat/completions", chunks=split_every(body, 7)))
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    with oai(proxy, token).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True, **extra
    ) as response:
        rid = request_id(response)
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(deltas)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == (1 if include_usage else 0)
    assert len(chunks) == 6 + (1 if include_usage else 0)
    record = one_record(proxy, rid)
    assert_ok(record, "chat.completions")
    assert record["usage"] == chat_expected(CHAT_WIRE_USAGE)
    assert record["usage"]["cache_read_tokens"] == 32
    assert record["response_model"] == "gpt-4o-mini-2024-07-18"
    assert_priced(record)


def sse_event(name: str | None, doc: dict[str, Any]) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + json.dumps(doc).encode() + b"\n\n"


def test_anthropic_stream_server_tool_input_grows(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    """WIRE.md §9, §16.1-4: message_delta usage is cumulative and can RAISE input and cache
    counts (server tools re-sample); several deltas overwrite; the 5m/1h split exists only in
    message_start, so extra cache writes reported later are charged at the 5m rate."""
    start_usage = {
        "input_tokens": 2679,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 60, "ephemeral_1h_input_tokens": 40},
        "output_tokens": 3,
        "service_tier": "standard",
    }
    message = {
        "id": "msg_servertool",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    first_delta = {
        "input_tokens": 10682,
        "cache_creation_input_tokens": 250,
        "cache_read_input_tokens": 500,
        "output_tokens": 40,
        "server_tool_use": {"web_search_requests": 1},
    }
    body = b"".join(
        [
            sse_event("message_start", {"type": "message_start", "message": message}),
            sse_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            sse_event("ping", {"type": "ping"}),
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Found it."},
                },
            ),
            sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse_event(
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": None}, "usage": first_delta},
            ),
            sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 57, "input_tokens": None},
                },
            ),
            sse_event("message_stop", {"type": "message_stop"}),
        ]
    )
    fake.script(Scripted(path="/messages", chunks=split_every(body, 61)))
    with ant(proxy, token).messages.stream(
        model="claude-sonnet-4-5", max_tokens=1024, messages=MESSAGES
    ) as stream:
        final = stream.get_final_message()
        rid = stream.response.headers["x-meshproxy-request-id"]
    # The SDK's own accumulator agrees on the cumulative numbers.
    assert final.usage.input_tokens == 10682 and final.usage.output_tokens == 57
    record = one_record(proxy, rid)
    assert_ok(record, "messages")
    assert record["usage"] == usage(
        input_tokens=10682,
        cache_read_tokens=500,
        cache_write_5m_tokens=60 + (250 - 100),
        cache_write_1h_tokens=40,
        output_tokens=57,
        web_search_requests=1,
    )
    assert record["service_tier"] == "standard"
    assert_priced(record)


def test_anthropic_stream_message_start_without_usage(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    message = {
        "id": "msg_nousage",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    body = b"".join(
        [
            sse_event("message_start", {"type": "message_start", "message": message}),
            sse_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Hi"},
                },
            ),
            sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"input_tokens": 21, "output_tokens": 4},
                },
            ),
            sse_event("message_stop", {"type": "message_stop"}),
        ]
    )
    fake.script(Scripted(path="/messages", chunks=[body]))
    with ant(proxy, token).messages.with_streaming_response.create(
        model=CLAUDE, max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        rid = request_id(response)
        events = list(response.parse())
    assert events[-1].type == "message_stop"
    record = one_record(proxy, rid)
    assert_ok(record, "messages")
    assert record["usage"] == usage(input_tokens=21, output_tokens=4)
    assert_priced(record)


@pytest.mark.parametrize("stream", [False, True])
def test_responses_incomplete_max_output_tokens_is_billed(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, stream: bool
) -> None:
    client = oai(proxy, token)
    if stream:
        with client.responses.with_streaming_response.create(
            model="gpt-4o-mini", input="a long answer", max_output_tokens=3, stream=True
        ) as response:
            rid = request_id(response)
            events = list(response.parse())
        assert events[-1].type == "response.incomplete"
    else:
        raw = client.responses.with_raw_response.create(
            model="gpt-4o-mini", input="a long answer", max_output_tokens=3
        )
        assert raw.parse().status == "incomplete"
        rid = request_id(raw)
    served = fake.last_served("openai.responses")
    assert served.usage["output_tokens"] == 3
    record = one_record(proxy, rid)
    assert_ok(record, "responses")
    assert record["usage"] == responses_expected(served.usage)
    assert_priced(record)


def test_transcription_stream_done_usage_without_type(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    """The docs' streamed `transcript.text.done` usage omits `"type":"tokens"` (WIRE.md §6)."""
    done_usage = {
        "input_tokens": 14,
        "input_token_details": {"text_tokens": 4, "audio_tokens": 10},
        "output_tokens": 45,
        "total_tokens": 59,
    }
    body = b"".join(
        [
            sse_event(None, {"type": "transcript.text.delta", "delta": "Imagine"}),
            sse_event(None, {"type": "transcript.text.delta", "delta": " the wildest idea"}),
            sse_event(
                None,
                {
                    "type": "transcript.text.done",
                    "text": "Imagine the wildest idea",
                    "usage": done_usage,
                },
            ),
        ]
    )
    fake.script(Scripted(path="/audio/transcriptions", chunks=[body]))  # no [DONE]: optional
    with oai(proxy, token).audio.transcriptions.with_streaming_response.create(
        model="gpt-4o-transcribe", file=audio_file(1), stream=True
    ) as response:
        rid = request_id(response)
        events = list(response.parse())
    assert events[-1].type == "transcript.text.done"
    record = one_record(proxy, rid)
    assert_ok(record, "audio.transcriptions")
    assert record["usage"] == usage(input_tokens=4, input_audio_tokens=10, output_tokens=45)
    assert_priced(record)


def test_images_stream_multi_megabyte_partial(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    """A partial image carries megabytes of base64 on one `data:` line (WIRE.md §1.5)."""
    big = "A" * (3 * 1024 * 1024)
    image_usage = {
        "input_tokens": 50,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
        "output_tokens": 4160,
        "total_tokens": 4210,
    }
    meta = {"background": "opaque", "output_format": "png", "quality": "high", "size": "1024x1024"}
    body = sse_event(
        "image_generation.partial_image",
        {
            "type": "image_generation.partial_image",
            "b64_json": big,
            "partial_image_index": 0,
            "created_at": 1,
            **meta,
        },
    ) + sse_event(
        "image_generation.completed",
        {
            "type": "image_generation.completed",
            "b64_json": big,
            "created_at": 1,
            **meta,
            "usage": image_usage,
        },
    )
    fake.script(Scripted(path="/images/generations", chunks=split_every(body, 256 * 1024)))
    with oai(proxy, token).images.with_streaming_response.generate(
        model="gpt-image-1", prompt="big", stream=True, partial_images=1, quality="high"
    ) as response:
        rid = request_id(response)
        events = list(response.parse())
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert len(events[0].b64_json) == len(big)
    record = one_record(proxy, rid)
    assert_ok(record, "images.generations")
    assert record["usage"] == image_expected(image_usage)
    assert_priced(record)


def test_batch_results_url_under_room_mount(
    public_proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    client = anthropic.Anthropic(
        base_url=public_proxy.url + "/rooms/room-1/anthropic",
        auth_token=token,
        max_retries=0,
        timeout=10,
    )
    batch = client.messages.batches.create(requests=BATCH_REQUESTS)  # type: ignore[arg-type]
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.results_url == (
        f"{public_proxy.url}/rooms/room-1/anthropic/v1/messages/batches/{batch.id}/results"
    )
    raw = client.messages.batches.with_raw_response.results(batch.id)
    assert len(list(raw.parse())) == 2
    record = one_record(public_proxy, request_id(raw))
    assert_ok(record, "messages.batches.results")
    assert record["batch_id"] == batch.id
    assert record["principal"]["room"] == "room-1"
    assert sorted(record["batch_custom_ids"]) == ["first-request", "second-request"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_batch_compressed_upstream(
    public_proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, encoding: str
) -> None:
    """The proxy asks for identity when it rewrites results_url; an upstream that compresses
    anyway is decoded, rewritten and sent on decoded. Results are read through the coding."""
    client = ant(public_proxy, token)
    batch = client.messages.batches.create(requests=BATCH_REQUESTS)  # type: ignore[arg-type]
    fake.script(
        Scripted(path=f"/batches/{batch.id}", content_encoding=encoding),
        Scripted(path="/results", content_encoding=encoding),
    )
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.results_url == (
        f"{public_proxy.url}/anthropic/v1/messages/batches/{batch.id}/results"
    )
    raw = client.messages.batches.with_raw_response.results(batch.id)
    assert len(list(raw.parse())) == 2
    served = fake.last_served("anthropic.batch_results")
    assert served.item_usage is not None
    record = one_record(public_proxy, request_id(raw))
    assert_ok(record, "messages.batches.results")
    total = usage()
    for raw_usage in served.item_usage.values():
        for name, value in anthropic_expected(raw_usage).items():
            if isinstance(value, int):
                total[name] += value
    assert record["usage"] == total


def test_images_dalle2_edit_with_mask_counted(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).images.with_raw_response.edit(
        model="dall-e-2",
        image=("square.png", tiny_png(), "image/png"),
        mask=("mask.png", tiny_png(), "image/png"),
        prompt="add a hat",
        n=2,
        size="512x512",
    )
    assert len(raw.parse().data or []) == 2
    assert fake.last_served("openai.images_edits").usage is None
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "images.edits", source="counted")
    assert record["usage"] == usage(images=[{"size": "512x512", "quality": "standard", "count": 2}])
    assert Decimal(record["cost"]["total"]) == 2 * Decimal("0.018")


def test_transcription_diarize_duration_is_priced(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = oai(proxy, token).audio.transcriptions.with_raw_response.create(
        model="gpt-4o-transcribe-diarize", file=audio_file(2), response_format="diarized_json"
    )
    raw.parse()
    served = fake.last_served("openai.transcription")
    assert served.usage == {"type": "duration", "seconds": 2}
    record = one_record(proxy, request_id(raw))
    assert_ok(record, "audio.transcriptions")
    assert record["usage"] == usage(audio_seconds="2")
    assert_priced(record)
