"""Every example payload gives the usage WIRE.md says it should.

Expected numbers are worked out here by hand from the WIRE.md rules (§14 recipe), from the
numbers visible in each fixture, never by running the code under test.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from meshproxy_core.records import ImageCount, Usage, UsageSource
from meshproxy_core.usage import Metering, RequestFacts
from meshproxy_core.usage.select import meter_for

SSE = "text/event-stream"
JSON = "application/json"


def run(
    body: bytes,
    endpoint: str,
    content_type: str | None,
    *,
    provider: str = "openai",
    status: int = 200,
    complete: bool = True,
    **facts: object,
) -> tuple[bytes, Metering]:
    meter = meter_for(RequestFacts(provider, endpoint, **facts), status, content_type)
    delivered = meter.feed(body)
    tail, metering = meter.finish(complete)
    return delivered + tail, metering


# -- OpenAI chat (§2) ----------------------------------------------------------------------------


def test_chat_completion_json(fixture_bytes) -> None:
    body = fixture_bytes("openai_chat_completion.json")
    delivered, m = run(body, "chat.completions", JSON)
    assert delivered == body
    # prompt 1536 with 1024 cached -> 512 uncached; completion 412 incl. 320 reasoning.
    assert m.usage == Usage(
        input_tokens=512, cache_read_tokens=1024, output_tokens=412, reasoning_tokens=320
    )
    assert m.source is UsageSource.REPORTED
    assert m.response_model == "o4-mini-2025-04-16"
    assert m.service_tier == "default"
    assert m.raw_usage["total_tokens"] == 1948


def test_chat_completion_audio_json(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_chat_completion_audio.json"), "chat.completions", JSON)
    # prompt 180 = 142 audio + 38 text; completion 96 = 80 audio + 16 text.
    assert m.usage == Usage(
        input_tokens=38, input_audio_tokens=142, output_tokens=16, output_audio_tokens=80
    )


def test_chat_stream_include_usage(fixture_bytes) -> None:
    body = fixture_bytes("openai_chat_stream_include_usage.sse")
    delivered, m = run(body, "chat.completions", SSE, stream=True)
    assert delivered == body
    assert m.usage == Usage(input_tokens=10, output_tokens=5)
    assert m.source is UsageSource.REPORTED
    assert m.response_model == "gpt-3.5-turbo-0125"
    assert m.service_tier == "default"
    assert not m.rewritten


def test_chat_stream_strip_usage_chunk(fixture_bytes) -> None:
    body = fixture_bytes("openai_chat_stream_include_usage.sse")
    delivered, m = run(body, "chat.completions", SSE, stream=True, strip_usage_chunk=True)
    assert m.usage == Usage(input_tokens=10, output_tokens=5)
    assert m.rewritten
    frames = delivered.split(b"\n\n")
    # The usage chunk (choices [] and non-null usage) is gone, and so is the `"usage": null` of
    # every other chunk: the client sees the stream it would have got without include_usage.
    originals = [f for f in body.split(b"\n\n") if b'"choices":[],"usage":{' not in f]
    assert len(frames) == len(originals)
    for frame, original in zip(frames, originals, strict=True):
        if not original.startswith(b"data: {"):
            assert frame == original
            continue
        expected = json.loads(original[6:])
        expected.pop("usage", None)
        assert json.loads(frame[6:]) == expected
    assert delivered.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in delivered


def test_chat_stream_without_usage_is_estimated(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_chat_stream_no_usage.sse"), "chat.completions", SSE)
    # Content "" + "Hi" "," " how" " are" " you" "?" = 16 characters -> ceil(16 / 4) = 4.
    assert m.usage == Usage(output_tokens=4)
    assert m.source is UsageSource.ESTIMATED


def test_chat_stream_midstream_error(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_chat_stream_midstream_error.sse"), "chat.completions", SSE)
    assert m.error_type == "server_error"
    # "Once upon" = 9 characters -> 3 estimated tokens.
    assert m.usage == Usage(output_tokens=3)
    assert m.source is UsageSource.ESTIMATED


def test_azure_prompt_filter_chunk_is_not_the_usage_chunk() -> None:
    body = (
        b'data: {"choices":[],"prompt_filter_results":[{"prompt_index":0}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1,'
        b'"total_tokens":8}}\n\n'
        b"data: [DONE]\n\n"
    )
    delivered, m = run(body, "chat.completions", SSE, strip_usage_chunk=True)
    assert m.usage == Usage(input_tokens=7, output_tokens=1)
    assert delivered.startswith(b'data: {"choices":[],"prompt_filter_results"')
    assert b"prompt_tokens" not in delivered
    assert delivered.endswith(b"data: [DONE]\n\n")


# -- OpenAI Responses (§3) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("openai_responses.json", JSON), ("openai_responses_stream.sse", SSE)],
)
def test_responses(fixture_bytes, name: str, content_type: str) -> None:
    _, m = run(fixture_bytes(name), "responses", content_type)
    # input 1284 with 1152 cached -> 132; output 146 incl. 128 reasoning.
    assert m.usage == Usage(
        input_tokens=132, cache_read_tokens=1152, output_tokens=146, reasoning_tokens=128
    )
    assert m.source is UsageSource.REPORTED
    assert m.response_model == "gpt-5-mini-2025-08-07"
    assert m.service_tier == "default"


def test_responses_failed_stream(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_responses_stream_failed.sse"), "responses", SSE)
    assert m.usage == Usage()
    assert m.source is UsageSource.NONE
    assert m.error_code == "server_error"


def test_responses_error_event(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_responses_stream_error_event.sse"), "responses", SSE)
    assert m.usage == Usage()
    assert m.error_code == "ERR_SOMETHING"
    assert m.error_type is not None


def test_responses_incomplete_with_usage_is_billed() -> None:
    body = (
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","delta":"abcd"}\n\n'
        b"event: response.incomplete\n"
        b'data: {"type":"response.incomplete","response":{"status":"incomplete",'
        b'"incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-5",'
        b'"usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":0},'
        b'"output_tokens":64,"output_tokens_details":{"reasoning_tokens":60},'
        b'"total_tokens":114}}}\n\n'
    )
    _, m = run(body, "responses", SSE)
    assert m.usage == Usage(input_tokens=50, output_tokens=64, reasoning_tokens=60)
    assert m.source is UsageSource.REPORTED


def test_responses_incomplete_with_null_usage_is_estimated() -> None:
    body = (
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","delta":"abcdefgh"}\n\n'
        b"event: response.incomplete\n"
        b'data: {"type":"response.incomplete","response":{"status":"incomplete",'
        b'"usage":null}}\n\n'
    )
    _, m = run(body, "responses", SSE)
    assert m.usage == Usage(output_tokens=2)  # 8 characters / 4
    assert m.source is UsageSource.ESTIMATED


def test_responses_compact(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_responses_compact.json"), "responses.compact", JSON)
    # 48213 input with 40960 cached -> 7253; 2310 output incl. 1792 reasoning.
    assert m.usage == Usage(
        input_tokens=7253, cache_read_tokens=40960, output_tokens=2310, reasoning_tokens=1792
    )
    assert m.source is UsageSource.REPORTED


def test_responses_input_tokens_is_free(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_responses_input_tokens.json"), "responses.input_tokens", JSON)
    assert m.source is UsageSource.FREE
    assert m.usage == Usage()


# -- Embeddings, images, audio (§4-6) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tokens"), [("openai_embeddings.json", 17), ("openai_embeddings_base64.json", 8)]
)
def test_embeddings(fixture_bytes, name: str, tokens: int) -> None:
    _, m = run(fixture_bytes(name), "embeddings", JSON)
    assert m.usage == Usage(input_tokens=tokens)
    assert m.response_model == "text-embedding-3-small"


def test_images_gpt_image(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_images_gpt_image_1.json"), "images.generations", JSON)
    assert m.usage == Usage(input_tokens=27, output_image_tokens=1056)
    assert m.source is UsageSource.REPORTED


def test_images_edit_gpt_image(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_images_edit_gpt_image_1.json"), "images.edits", JSON)
    # input 429 = 41 text + 388 image (the source image); output 6240 image tokens.
    assert m.usage == Usage(input_tokens=41, input_image_tokens=388, output_image_tokens=6240)


def test_images_dalle3_counts_by_request(fixture_bytes) -> None:
    body = fixture_bytes("openai_images_dalle3.json")
    _, m = run(body, "images.generations", JSON, model="dall-e-3", size="1792x1024", quality="hd")
    assert m.usage == Usage(images=(ImageCount("1792x1024", "hd", 1),))
    assert m.source is UsageSource.COUNTED
    _, m = run(body, "images.generations", JSON, model="dall-e-3")
    assert m.usage == Usage(images=(ImageCount("1024x1024", "standard", 1),))


def test_images_variations_count_data_items() -> None:
    body = json.dumps({"created": 1, "data": [{"url": "u1"}, {"url": "u2"}]}).encode()
    _, m = run(body, "images.variations", JSON, n=2, size="512x512")
    assert m.usage == Usage(images=(ImageCount("512x512", "standard", 2),))


def test_images_stream_skips_partials_and_reads_completed() -> None:
    body = (
        b"event: image_generation.partial_image\n"
        b'data: {"type":"image_generation.partial_image","b64_json":"' + b"A" * 100000 + b'"}\n\n'
        b"event: image_generation.completed\n"
        b'data: {"type":"image_generation.completed","b64_json":"QQ==","size":"1024x1024",'
        b'"quality":"low","usage":{"input_tokens":20,"input_tokens_details":{"text_tokens":20,'
        b'"image_tokens":0},"output_tokens":272,"total_tokens":292}}\n\n'
    )
    _, m = run(body, "images.generations", SSE)
    assert m.usage == Usage(input_tokens=20, output_image_tokens=272)


def test_speech_raw_audio_counts_characters(fixture_bytes) -> None:
    request = json.loads(fixture_bytes("openai_speech_request.json"))
    chars = len(request["input"])
    assert chars == 56
    _, m = run(b"\xff\xfb\x90\x00" * 100, "audio.speech", "audio/mpeg", input_characters=chars)
    assert m.usage == Usage(input_characters=56)
    assert m.source is UsageSource.COUNTED


def test_speech_stream(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_speech_stream.sse"), "audio.speech", SSE)
    assert m.usage == Usage(input_tokens=14, output_audio_tokens=101)
    assert m.source is UsageSource.REPORTED


@pytest.mark.parametrize(
    "name", ["openai_transcription_whisper.json", "openai_transcription_whisper_json.json"]
)
def test_transcription_duration(fixture_bytes, name: str) -> None:
    _, m = run(fixture_bytes(name), "audio.transcriptions", JSON)
    assert m.usage == Usage(audio_seconds=Decimal(9))
    assert m.source is UsageSource.REPORTED


def test_transcription_tokens(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_transcription_gpt4o.json"), "audio.transcriptions", JSON)
    assert m.usage == Usage(input_audio_tokens=14, output_tokens=45)


def test_transcription_plain_text_has_no_usage() -> None:
    _, m = run(b"Hello there.\n", "audio.transcriptions", "text/plain; charset=utf-8")
    assert m.source is UsageSource.NONE


def test_transcription_stream_done_usage_without_type() -> None:
    body = (
        b'data: {"type":"transcript.text.delta","delta":"Hi"}\n\n'
        b'data: {"type":"transcript.text.done","text":"Hi","usage":{"input_tokens":14,'
        b'"input_token_details":{"text_tokens":2,"audio_tokens":12},"output_tokens":3,'
        b'"total_tokens":17}}\n\n'
        b"data: [DONE]\n\n"
    )
    _, m = run(body, "audio.transcriptions", SSE)
    assert m.usage == Usage(input_tokens=2, input_audio_tokens=12, output_tokens=3)


def test_translation_has_no_usage(fixture_bytes) -> None:
    _, m = run(fixture_bytes("openai_translation_whisper.json"), "audio.translations", JSON)
    assert m.source is UsageSource.NONE
    assert m.usage == Usage()


def test_translation_verbose_duration_is_estimated() -> None:
    body = b'{"language":"german","duration":8.47,"text":"Hello","segments":[]}'
    _, m = run(body, "audio.translations", JSON)
    assert m.usage == Usage(audio_seconds=Decimal(9))
    assert m.source is UsageSource.ESTIMATED


# -- Anthropic (§8-12) ---------------------------------------------------------------------------


def test_anthropic_message(fixture_bytes) -> None:
    _, m = run(fixture_bytes("anthropic_message.json"), "messages", JSON, provider="anthropic")
    # input excludes cache; 248 written = 148 (5m) + 100 (1h); 1800 read.
    assert m.usage == Usage(
        input_tokens=2048,
        cache_read_tokens=1800,
        cache_write_5m_tokens=148,
        cache_write_1h_tokens=100,
        output_tokens=503,
    )
    assert m.service_tier == "standard"
    assert m.response_model == "claude-sonnet-4-5-20250929"


def test_anthropic_message_web_search(fixture_bytes) -> None:
    body = fixture_bytes("anthropic_message_web_search.json")
    _, m = run(body, "messages", JSON, provider="anthropic")
    assert m.usage == Usage(input_tokens=10682, output_tokens=510, web_search_requests=1)


def test_anthropic_stream_minimal_delta(fixture_bytes) -> None:
    body = fixture_bytes("anthropic_messages_stream.sse")
    _, m = run(body, "messages", SSE, provider="anthropic")
    # message_start input 25 (placeholder output 1 not added); delta output 15.
    assert m.usage == Usage(input_tokens=25, output_tokens=15)
    assert m.source is UsageSource.REPORTED
    assert m.service_tier == "standard"


def test_anthropic_stream_with_cache(fixture_bytes) -> None:
    body = fixture_bytes("anthropic_messages_stream_with_cache.sse")
    _, m = run(body, "messages", SSE, provider="anthropic")
    assert m.usage == Usage(
        input_tokens=18,
        cache_read_tokens=1800,
        cache_write_5m_tokens=148,
        cache_write_1h_tokens=100,
        output_tokens=94,
        reasoning_tokens=61,
    )


def test_anthropic_stream_error_keeps_input_and_estimates_output(fixture_bytes) -> None:
    body = fixture_bytes("anthropic_messages_stream_error.sse")
    _, m = run(body, "messages", SSE, provider="anthropic")
    assert m.error_type == "overloaded_error"
    # "Here is the first part of" = 25 characters -> ceil(25 / 4) = 7 (not the placeholder 1).
    assert m.usage == Usage(input_tokens=312, output_tokens=7)
    assert m.source is UsageSource.ESTIMATED


def test_anthropic_stream_input_grows_and_cache_delta_excess_at_5m() -> None:
    start = {
        "type": "message_start",
        "message": {
            "model": "claude-x",
            "usage": {
                "input_tokens": 2679,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 0,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 40,
                    "ephemeral_1h_input_tokens": 60,
                },
                "output_tokens": 3,
            },
        },
    }
    delta = {
        "type": "message_delta",
        "usage": {
            "input_tokens": 10682,
            "cache_creation_input_tokens": 130,
            "output_tokens": 510,
            "server_tool_use": {"web_search_requests": 1},
        },
    }
    body = b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode())
        for e in (start, delta)
    )
    _, m = run(body, "messages", SSE, provider="anthropic")
    assert m.usage == Usage(
        input_tokens=10682,
        cache_write_5m_tokens=70,  # 40 + (130 - 100)
        cache_write_1h_tokens=60,
        output_tokens=510,
        web_search_requests=1,
    )


def test_anthropic_cut_after_start_only() -> None:
    body = (
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"usage":{"input_tokens":40,'
        b'"output_tokens":2}}}\n\n'
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
        b'"text":"12345"}}\n\n'
    )
    _, m = run(body, "messages", SSE, provider="anthropic", complete=False)
    assert m.usage == Usage(input_tokens=40, output_tokens=2)  # ceil(5 / 4)
    assert m.source is UsageSource.ESTIMATED


def test_anthropic_compaction_iterations_are_added() -> None:
    body = json.dumps(
        {
            "type": "message",
            "usage": {
                "input_tokens": 100,
                "output_tokens": 20,
                "iterations": [
                    {"type": "compaction", "input_tokens": 5000, "output_tokens": 300},
                    {"type": "message", "input_tokens": 100, "output_tokens": 20},
                ],
            },
        }
    ).encode()
    _, m = run(body, "messages", JSON, provider="anthropic")
    assert m.usage == Usage(input_tokens=5100, output_tokens=320)


def test_anthropic_count_tokens_is_free(fixture_bytes) -> None:
    body = fixture_bytes("anthropic_count_tokens.json")
    _, m = run(body, "messages.count_tokens", JSON, provider="anthropic")
    assert m.source is UsageSource.FREE


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("anthropic_complete_legacy.json", JSON), ("anthropic_complete_legacy_stream.sse", SSE)],
)
def test_anthropic_legacy_complete_has_no_usage(fixture_bytes, name, content_type) -> None:
    _, m = run(fixture_bytes(name), "complete", content_type, provider="anthropic")
    assert m.source is UsageSource.NONE
    assert m.usage == Usage()
    assert m.response_model in ("claude-2.1", "claude-2.0")


def test_anthropic_batch_results(fixture_bytes) -> None:
    body = fixture_bytes("anthropic_batch_results.jsonl")
    _, m = run(
        body, "messages.batches.results", "application/binary", provider="anthropic", batch_id="b1"
    )
    # Only the two succeeded lines: input 11 + 24, cache read 0 + 187352, output 19 + 812.
    assert m.usage == Usage(input_tokens=35, cache_read_tokens=187352, output_tokens=831)
    assert m.service_tier == "batch"
    assert m.batch_id == "b1"
    assert sorted(m.batch_custom_ids) == ["my-first-request", "my-second-request"]


def test_anthropic_batch_object_results_url_rewritten(fixture_bytes) -> None:
    body = fixture_bytes("anthropic_batch_retrieve_ended.json")
    base = "https://proxy.example/rooms/r1/anthropic/v1/"
    delivered, m = run(body, "messages.batches", JSON, provider="anthropic", public_base_url=base)
    batch = json.loads(delivered)
    assert batch["results_url"] == (
        "https://proxy.example/rooms/r1/anthropic/v1/messages/batches/"
        "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d/results"
    )
    assert {k: v for k, v in batch.items() if k != "results_url"} == {
        k: v for k, v in json.loads(body).items() if k != "results_url"
    }
    assert m.source is UsageSource.FREE
    assert m.rewritten


def test_anthropic_batch_list_results_urls_rewritten(fixture_bytes) -> None:
    one = json.loads(fixture_bytes("anthropic_batch_retrieve_ended.json"))
    two = dict(json.loads(fixture_bytes("anthropic_batch_create_response.json")), id="msgbatch_2")
    three = dict(one, id="msgbatch_3", results_url="https://elsewhere/x")
    body = json.dumps({"data": [one, two, three], "has_more": False}).encode()
    delivered, _ = run(
        body, "messages.batches", JSON, provider="anthropic", public_base_url="https://p/a"
    )
    urls = [item["results_url"] for item in json.loads(delivered)["data"]]
    assert urls == [
        f"https://p/a/messages/batches/{one['id']}/results",
        None,
        "https://p/a/messages/batches/msgbatch_3/results",
    ]


def test_anthropic_batch_object_untouched_without_base(fixture_bytes) -> None:
    body = fixture_bytes("anthropic_batch_create_response.json")
    delivered, m = run(body, "messages.batches", JSON, provider="anthropic")
    assert delivered == body
    assert m.source is UsageSource.FREE


# -- Error bodies (§7, §13) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "provider", "error_type", "code"),
    [
        ("openai_error_400_context_length.json", 400, "openai", "invalid_request_error",
         "context_length_exceeded"),
        ("openai_error_401_invalid_api_key.json", 401, "openai", "invalid_request_error",
         "invalid_api_key"),
        ("openai_error_429_rate_limit.json", 429, "openai", "tokens", "rate_limit_exceeded"),
        ("openai_error_429_insufficient_quota.json", 429, "openai", "insufficient_quota",
         "insufficient_quota"),
        ("anthropic_error_400_invalid_request.json", 400, "anthropic", "invalid_request_error",
         None),
        ("anthropic_error_401_authentication.json", 401, "anthropic", "authentication_error",
         None),
        ("anthropic_error_429_rate_limit.json", 429, "anthropic", "rate_limit_error", None),
        ("anthropic_error_529_overloaded.json", 529, "anthropic", "overloaded_error", None),
    ],
)  # fmt: skip
def test_error_bodies(fixture_bytes, name, status, provider, error_type, code) -> None:
    body = fixture_bytes(name)
    endpoint = "messages" if provider == "anthropic" else "chat.completions"
    delivered, m = run(body, endpoint, JSON, provider=provider, status=status)
    assert delivered == body
    assert m.error_type == error_type
    assert m.error_code == code
    assert m.usage == Usage()
    assert m.source is UsageSource.NONE


def test_models_is_free() -> None:
    _, m = run(b'{"object":"list","data":[]}', "models", JSON)
    assert m.source is UsageSource.FREE


def test_responses_stream_cut_before_terminal_is_estimated(fixture_bytes) -> None:
    body = fixture_bytes("openai_responses_stream.sse")
    cut = body[: body.index(b"event: response.output_text.done")]
    _, m = run(cut, "responses", SSE, complete=False)
    # "Paris" " is" " the" " capital" " of" " France" "." = 31 characters -> 8 tokens.
    assert m.usage == Usage(output_tokens=8)
    assert m.source is UsageSource.ESTIMATED
    assert m.response_model == "gpt-5-mini-2025-08-07"


def test_anthropic_stream_cut_after_delta_keeps_reported(fixture_bytes) -> None:
    body = fixture_bytes("anthropic_messages_stream.sse")
    cut = body[: body.index(b"event: message_stop")]
    _, m = run(cut, "messages", SSE, provider="anthropic", complete=False)
    assert m.usage == Usage(input_tokens=25, output_tokens=15)
    assert m.source is UsageSource.REPORTED


def test_chat_stream_cut_before_usage_chunk(fixture_bytes) -> None:
    body = fixture_bytes("openai_chat_stream_include_usage.sse")
    cut = body[: body.index(b'"choices":[],')]
    delivered, m = run(cut, "chat.completions", SSE, complete=False, strip_usage_chunk=True)
    assert m.source is UsageSource.ESTIMATED
    assert m.usage == Usage(output_tokens=4)  # "Hi, how are you?" = 16 characters
    # Every complete chunk is delivered (without its null usage key); the held-back partial
    # event is still delivered at the end, untouched.
    assert b'"usage"' not in delivered[: delivered.rindex(b"\n\n")]
    assert delivered.replace(b"\n\n", b"")[-40:] == cut.replace(b"\n\n", b"")[-40:]
