"""The fake upstream, driven with the official SDKs: as a subprocess (FakeUpstreamProcess) for the
synchronous clients, and in-process (FakeUpstream.running) for the async ones and raw sockets.

Every SDK client has a short timeout and no retries, and every async test runs under fail_after,
so a broken fake fails a test instead of hanging the suite.
"""

from __future__ import annotations

import gzip
import http.client
import json
import zlib
from collections.abc import Iterator
from typing import Any

import anthropic
import anyio
import h11
import openai
import pytest

from meshproxy.adapters.testing import (
    FakeUpstream,
    FakeUpstreamProcess,
    ReceivedRequest,
    Scripted,
    ServedExchange,
    expected_usage,
    recording,
    serve_simulated_provider,
)

OPENAI_KEY = "sk-test"
ANTHROPIC_KEY = "sk-ant-test"
MESSAGES = [{"role": "user", "content": "Say hello to the fake upstream."}]
CLAUDE = "claude-sonnet-4-5-20250929"
SDK_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def fake_process() -> Iterator[FakeUpstreamProcess]:
    with FakeUpstreamProcess() as process:
        yield process


@pytest.fixture
def fake(fake_process: FakeUpstreamProcess) -> FakeUpstreamProcess:
    fake_process.reset()
    return fake_process


def openai_client(base_url: str, *, timeout: float = SDK_TIMEOUT) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=base_url + "/v1", api_key=OPENAI_KEY, timeout=timeout, max_retries=0
    )


def anthropic_client(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=base_url, api_key=ANTHROPIC_KEY, timeout=SDK_TIMEOUT, max_retries=0
    )


def raw_request(
    fake: FakeUpstreamProcess, method: str, path: str, body: Any = None, **headers: str
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection(fake.host, fake.port, timeout=SDK_TIMEOUT)
    payload = None if body is None else json.dumps(body).encode()
    all_headers = {"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"}
    all_headers.update({k.replace("_", "-"): v for k, v in headers.items()})
    conn.request(method, path, body=payload, headers=all_headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def sse_events(data: bytes) -> list[bytes]:
    """Split a body at blank lines; asserts it ends with one (WIRE.md §1 rule 1)."""
    assert data.endswith(b"\n\n")
    return data[:-2].split(b"\n\n")


# --- OpenAI through the SDK (subprocess) ----------------------------------------------------


def test_chat_plain_usage_matches_served(fake: FakeUpstreamProcess) -> None:
    client = openai_client(fake.base_url)
    completion = client.chat.completions.create(model="any-model-name", messages=MESSAGES)
    served = fake.last_served()
    assert served.kind == "openai.chat" and served.model == "any-model-name"
    assert completion.usage is not None
    assert completion.usage.model_dump(exclude_none=True) == served.usage
    assert served.usage is not None
    assert served.usage["total_tokens"] == (
        served.usage["prompt_tokens"] + served.usage["completion_tokens"]
    )
    assert completion.choices[0].message.content


def test_chat_stream_with_include_usage(fake: FakeUpstreamProcess) -> None:
    client = openai_client(fake.base_url)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    served = fake.last_served()
    assert served.stream and served.usage is not None
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == served.usage
    assert all(chunk.usage is None for chunk in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 8  # the default number of content chunks


def test_chat_stream_without_include_usage_has_no_usage_key(fake: FakeUpstreamProcess) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    response, data = raw_request(fake, "POST", "/v1/chat/completions", body)
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("text/event-stream")
    events = sse_events(data)
    assert events[-1] == b"data: [DONE]"
    for event in events[:-1]:
        assert event.startswith(b"data: ")
        assert "usage" not in json.loads(event[len(b"data: ") :])
    assert fake.last_served().usage is None


def test_chat_stream_raw_framing_with_include_usage(fake: FakeUpstreamProcess) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, data = raw_request(fake, "POST", "/v1/chat/completions", body)
    docs = [json.loads(e[len(b"data: ") :]) for e in sse_events(data)[:-1]]
    assert all("usage" in doc for doc in docs)
    assert [doc["usage"] is None for doc in docs] == [True] * (len(docs) - 1) + [False]
    assert docs[-1]["usage"] == fake.last_served().usage


def test_responses_plain_and_stream(fake: FakeUpstreamProcess) -> None:
    client = openai_client(fake.base_url)
    response = client.responses.create(model="gpt-5-mini", input="What is the capital?")
    plain = fake.last_served()
    assert response.usage is not None
    assert response.usage.model_dump(exclude_none=True) == plain.usage

    with client.responses.stream(model="gpt-5-mini", input="What is the capital?") as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    streamed = fake.last_served()
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert final.usage is not None
    assert final.usage.model_dump(exclude_none=True) == streamed.usage == plain.usage
    assert final.output_text == response.output_text


def test_responses_max_output_tokens_is_incomplete(fake: FakeUpstreamProcess) -> None:
    client = openai_client(fake.base_url)
    response = client.responses.create(model="gpt-5", input="long please", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.usage is not None and response.usage.output_tokens == 3


def test_embeddings_base64_by_default(fake: FakeUpstreamProcess) -> None:
    client = openai_client(fake.base_url)
    result = client.embeddings.create(model="text-embedding-3-small", input=["one", "two words"])
    sent = json.loads(fake.received()[-1].body)
    assert sent["encoding_format"] == "base64"  # the SDK's default, decoded client-side
    assert [len(item.embedding) for item in result.data] == [16, 16]
    assert result.usage.model_dump() == fake.last_served().usage

    floats = client.embeddings.create(
        model="text-embedding-3-small", input="one", encoding_format="float", dimensions=4
    )
    assert len(floats.data[0].embedding) == 4
    # Same input, same vector, whichever encoding carried it.
    assert floats.data[0].embedding[:4] == pytest.approx(result.data[0].embedding[:4], abs=1e-6)


def test_openai_models_list_and_retrieve(fake: FakeUpstreamProcess) -> None:
    client = openai_client(fake.base_url)
    assert "gpt-4o-mini" in [model.id for model in client.models.list()]
    assert client.models.retrieve("ft:made-up-model").id == "ft:made-up-model"


def test_images_and_audio_usage_rules(fake: FakeUpstreamProcess) -> None:
    client = openai_client(fake.base_url)
    gpt_image = client.images.generate(model="gpt-image-1", prompt="a cat", quality="low")
    assert gpt_image.usage is not None and gpt_image.usage.output_tokens == 272
    assert gpt_image.data and gpt_image.data[0].b64_json
    dalle = client.images.generate(model="dall-e-3", prompt="a cat")
    assert dalle.usage is None and dalle.data and dalle.data[0].url
    assert fake.last_served().usage is None

    speech = client.audio.speech.create(model="tts-1", voice="alloy", input="hello there")
    assert speech.content.startswith(b"ID3")
    whisper = client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", b"x" * 40_000))
    assert whisper.usage is not None and whisper.usage.type == "duration"
    assert whisper.usage.seconds == 3  # 40 kB at 16 kB/s, rounded up
    gpt4o = client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.mp3", b"x" * 40_000)
    )
    assert gpt4o.usage is not None and gpt4o.usage.type == "tokens"
    assert gpt4o.usage.model_dump(exclude_none=True) == fake.last_served().usage


def test_unknown_path_is_openai_shaped_404(fake: FakeUpstreamProcess) -> None:
    client = openai_client(fake.base_url)
    with pytest.raises(openai.NotFoundError):
        client.post("/does-not-exist", cast_to=object, body={})


ANTHROPIC_HEADERS = {"x_api_key": ANTHROPIC_KEY, "anthropic_version": "2023-06-01"}


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/responses", {"model": "m", "input": "hi", "stream": True}, {}),
        (
            "/v1/images/generations",
            {"model": "gpt-image-1", "prompt": "p", "stream": True, "partial_images": 2},
            {},
        ),
        (
            "/v1/messages",
            {"model": "c", "max_tokens": 9, "messages": MESSAGES, "stream": True},
            ANTHROPIC_HEADERS,
        ),
        (
            "/v1/complete",
            {
                "model": "claude-2.1",
                "prompt": "\n\nHuman: hi\n\nAssistant:",
                "max_tokens_to_sample": 20,
                "stream": True,
            },
            ANTHROPIC_HEADERS,
        ),
    ],
)
def test_event_streams_name_every_event_by_its_type(
    fake: FakeUpstreamProcess, path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    response, data = raw_request(fake, "POST", path, body, **headers)
    assert response.status == 200
    assert response.getheader("transfer-encoding") == "chunked"
    for event in sse_events(data):
        event_line, data_line = event.split(b"\n")
        name = event_line.removeprefix(b"event: ").decode()
        assert json.loads(data_line.removeprefix(b"data: "))["type"] == name
    served = fake.last_served()
    if path != "/v1/complete":  # legacy completions carry no usage (WIRE.md §12)
        assert served.usage is not None and str(served.usage["output_tokens"]) in data.decode()


def test_speech_sse_and_transcription_stream_are_data_only(fake: FakeUpstreamProcess) -> None:
    body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "hi", "stream_format": "sse"}
    _, data = raw_request(fake, "POST", "/v1/audio/speech", body)
    events = sse_events(data)
    assert all(e.startswith(b"data: {") for e in events)
    assert json.loads(events[-1][6:]) == {
        "type": "speech.audio.done",
        "usage": fake.last_served().usage,
    }

    client = openai_client(fake.base_url)
    stream = client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("a.wav", b"x" * 100), stream=True
    )
    events = list(stream)
    assert events[-1].type == "transcript.text.done"
    assert events[-1].usage is not None
    assert events[-1].usage.model_dump(exclude_none=True) == fake.last_served().usage


# --- Anthropic through the SDK (subprocess) -------------------------------------------------


def test_anthropic_message_plain(fake: FakeUpstreamProcess) -> None:
    client = anthropic_client(fake.base_url)
    message = client.messages.create(model=CLAUDE, max_tokens=256, messages=MESSAGES)
    served = fake.last_served()
    assert served.provider == "anthropic" and served.kind == "anthropic.messages"
    assert message.usage.model_dump(exclude_none=True) == served.usage


def test_anthropic_stream_final_message_usage_equals_served(fake: FakeUpstreamProcess) -> None:
    client = anthropic_client(fake.base_url)
    with client.messages.stream(model=CLAUDE, max_tokens=256, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    served = fake.last_served()
    assert served.stream
    assert final.usage.model_dump(exclude_none=True) == served.usage
    assert served.usage is not None and served.usage["output_tokens"] > 1  # not the placeholder


def test_anthropic_max_tokens_caps_output(fake: FakeUpstreamProcess) -> None:
    client = anthropic_client(fake.base_url)
    message = client.messages.create(model=CLAUDE, max_tokens=2, messages=MESSAGES)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


def test_anthropic_count_tokens_matches_message_input(fake: FakeUpstreamProcess) -> None:
    client = anthropic_client(fake.base_url)
    count = client.messages.count_tokens(model=CLAUDE, messages=MESSAGES)
    message = client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    assert count.input_tokens == message.usage.input_tokens


def test_anthropic_models(fake: FakeUpstreamProcess) -> None:
    client = anthropic_client(fake.base_url)
    assert CLAUDE in [model.id for model in client.models.list()]
    assert client.models.retrieve("claude-anything").id == "claude-anything"


def test_anthropic_batches_results_url_points_at_the_fake(fake: FakeUpstreamProcess) -> None:
    client = anthropic_client(fake.base_url)
    params = {"model": CLAUDE, "max_tokens": 64, "messages": MESSAGES}
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "first", "params": params},
            {"custom_id": "second", "params": params},
        ]  # type: ignore[list-item]
    )
    assert batch.processing_status == "in_progress"
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.results_url == f"{fake.base_url}/v1/messages/batches/{batch.id}/results"
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    item_usage = fake.last_served().item_usage
    assert item_usage is not None and set(results) == set(item_usage) == {"first", "second"}
    for custom_id, result in results.items():
        assert result.type == "succeeded"
        assert result.message.usage.service_tier == "batch"
        assert result.message.usage.model_dump(exclude_none=True) == item_usage[custom_id]


def test_anthropic_unknown_path_is_anthropic_shaped_404(fake: FakeUpstreamProcess) -> None:
    response, data = raw_request(
        fake, "GET", "/v1/nowhere", x_api_key=ANTHROPIC_KEY, anthropic_version="2023-06-01"
    )
    assert response.status == 404
    body = json.loads(data)
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert response.getheader("request-id") == body["request_id"]


# --- The received log -----------------------------------------------------------------------


def test_received_log_captures_credentials(fake: FakeUpstreamProcess) -> None:
    openai_client(fake.base_url).chat.completions.create(model="m", messages=MESSAGES)
    anthropic_client(fake.base_url).messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)
    first, second = fake.received()
    assert isinstance(first, ReceivedRequest)
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.header("Authorization") == f"Bearer {OPENAI_KEY}"
    assert all(name == name.lower() for name, _ in first.headers)
    assert json.loads(first.body)["model"] == "m"
    # anthropic 2.x sends its key as a Bearer token; older SDKs used x-api-key.
    anthropic_creds = {second.header("x-api-key"), second.header("authorization")}
    assert anthropic_creds & {ANTHROPIC_KEY, f"Bearer {ANTHROPIC_KEY}"}
    assert second.header("anthropic-version")
    assert not any("room-token" in value for _, value in first.headers + second.headers)
    assert [s.provider for s in fake.served()] == ["openai", "anthropic"]


def test_reset_clears_logs(fake: FakeUpstreamProcess) -> None:
    openai_client(fake.base_url).models.list()
    assert fake.received() and fake.served()
    fake.reset()
    assert fake.received() == [] and fake.served() == []


# --- Scripting (subprocess, through the control endpoint) -----------------------------------


def test_scripted_reset_mid_stream(fake: FakeUpstreamProcess) -> None:
    fake.script(
        Scripted(
            path="/chat/completions",
            replay="openai_chat_stream_include_usage.sse",
            reset_after_chunks=3,
        )
    )
    client = openai_client(fake.base_url)
    stream = client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    seen = []
    with pytest.raises(Exception):  # noqa: B017 - the transport's error, not an SDK class
        seen.extend(stream)
    assert len(seen) == 3
    served = fake.last_served()
    assert served.scripted and served.fault == "reset"


def test_scripted_gzip_body(fake: FakeUpstreamProcess) -> None:
    doc = json.loads(recording("openai_chat_completion.json"))
    fake.script(Scripted(path="/chat/completions", json_body=doc, content_encoding="gzip"))
    response, data = raw_request(
        fake, "POST", "/v1/chat/completions", {"model": "m"}, accept_encoding="gzip"
    )
    assert response.getheader("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(data)) == doc

    fake.script(Scripted(path="/chat/completions", json_body=doc, content_encoding="gzip"))
    completion = openai_client(fake.base_url).chat.completions.create(model="m", messages=[])
    assert completion.usage is not None and completion.usage.prompt_tokens == 1536


def test_scripted_replay_error_status_is_inferred(fake: FakeUpstreamProcess) -> None:
    fake.script(Scripted(replay="openai_error_429_rate_limit.json"))
    with pytest.raises(openai.RateLimitError):
        openai_client(fake.base_url).chat.completions.create(model="m", messages=MESSAGES)


def test_scripted_hang_times_out(fake: FakeUpstreamProcess) -> None:
    fake.script(Scripted(path="/v1/messages", hang_after_chunks=2))
    client = anthropic.Anthropic(
        base_url=fake.base_url, api_key=ANTHROPIC_KEY, timeout=1.0, max_retries=0
    )
    with (
        pytest.raises((anthropic.APITimeoutError, Exception)),
        client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream,
    ):
        stream.get_final_message()
    assert fake.last_served().fault == "hang"
    # The fake is still healthy afterwards.
    assert anthropic_client(fake.base_url).messages.count_tokens(model=CLAUDE, messages=MESSAGES)


def test_scripted_only_matches_its_path(fake: FakeUpstreamProcess) -> None:
    fake.script(Scripted(path="/embeddings", status=500, json_body={"error": {"message": "x"}}))
    client = openai_client(fake.base_url)
    client.chat.completions.create(model="m", messages=MESSAGES)  # not consumed
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="e", input="x")


def test_scripted_replay_of_an_anthropic_stream(fake: FakeUpstreamProcess) -> None:
    fake.script(Scripted(path="/v1/messages", replay="anthropic_messages_stream_with_cache.sse"))
    client = anthropic_client(fake.base_url)
    with client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_creation_input_tokens == (
        final.usage.cache_creation.ephemeral_5m_input_tokens  # type: ignore[union-attr]
        + final.usage.cache_creation.ephemeral_1h_input_tokens  # type: ignore[union-attr]
    )
    assert fake.last_served().scripted


def test_bad_scripts_fail_where_written(fake: FakeUpstreamProcess) -> None:
    with pytest.raises(FileNotFoundError):
        Scripted(replay="no_such_recording.sse")
    with pytest.raises(ValueError):
        Scripted(content_encoding="br")
    with pytest.raises(RuntimeError, match="bad script"):
        fake._call("POST", "script", {"replay": "no_such_recording.sse"})


def test_served_records_round_trip_as_json() -> None:
    record = ServedExchange(
        index=0,
        provider="openai",
        kind="openai.chat",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        model="m",
        stream=True,
        usage={"prompt_tokens": 1},
    )
    assert ServedExchange.from_json(json.loads(json.dumps(record.to_json()))) == record
    scripted = Scripted(chunks=["data: {}\n\n", b"\xff"], headers={"X-A": "1"}, body="b")
    assert Scripted.from_json(json.loads(json.dumps(scripted.to_json()))) == scripted


# --- In-process (anyio) ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_in_process_async_sdk_and_received() -> None:
    with anyio.fail_after(10):
        async with FakeUpstream.running(host="127.0.0.1", port=0, chunks=3) as fake:
            client = openai.AsyncOpenAI(
                base_url=fake.base_url + "/v1", api_key=OPENAI_KEY, timeout=5, max_retries=0
            )
            stream = await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]
            await client.close()
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 3
    assert fake.received[0].header("authorization") == f"Bearer {OPENAI_KEY}"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == fake.expected_usage("openai.chat")


@pytest.mark.anyio
async def test_generated_stream_reset_is_recorded_with_usage() -> None:
    with anyio.fail_after(10):
        async with FakeUpstream.running() as fake:
            fake.script(Scripted(path="/v1/messages", reset_after_chunks=1))
            client = anthropic.AsyncAnthropic(
                base_url=fake.base_url, api_key=ANTHROPIC_KEY, timeout=5, max_retries=0
            )
            events = []
            with pytest.raises(Exception):  # noqa: B017 - a transport error
                stream = await client.messages.create(
                    model=CLAUDE, max_tokens=64, messages=MESSAGES, stream=True
                )
                async for event in stream:
                    events.append(event.type)
            await client.close()
    assert events == ["message_start"]
    served = fake.last_served()
    assert served.fault == "reset" and served.usage is not None  # what a full stream reports


RawRequest = tuple[str, list[tuple[str, str]], list[bytes]]


async def _raw_exchange(port: int, requests: list[RawRequest]) -> list[tuple[h11.Response, bytes]]:
    """Send requests over ONE connection with an h11 client (which frames the body as chunked
    or sized from the headers given) and collect the responses."""
    conn = h11.Connection(h11.CLIENT)
    out = []
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        for target, headers, parts in requests:
            await stream.send(conn.send(h11.Request(method="POST", target=target, headers=headers)))
            for part in parts:
                await stream.send(conn.send(h11.Data(data=part)))
            await stream.send(conn.send(h11.EndOfMessage()))
            head, body = None, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive())
                elif isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert head is not None
            out.append((head, body))
            conn.start_next_cycle()  # raises unless the server kept the connection alive
    return out


@pytest.mark.anyio
async def test_chunked_request_body_and_keep_alive() -> None:
    body = json.dumps({"model": "claude-x", "messages": MESSAGES}).encode()
    common = [("host", "x"), ("x-api-key", "k"), ("anthropic-version", "2023-06-01")]
    chunked = [*common, ("transfer-encoding", "chunked")]
    sized = [*common, ("content-length", str(len(body)))]
    target = "/v1/messages/count_tokens"
    with anyio.fail_after(10):
        async with FakeUpstream.running() as fake:
            (head1, body1), (head2, body2) = await _raw_exchange(
                fake.port, [(target, chunked, [body[:10], body[10:]]), (target, sized, [body])]
            )
    assert head1.status_code == head2.status_code == 200
    assert body1 == body2
    assert json.loads(body1)["input_tokens"] > 0
    assert [r.body for r in fake.received] == [body, body]
    assert fake.received[0].header("transfer-encoding") == "chunked"


@pytest.mark.anyio
async def test_deflate_stream_decodes_incrementally() -> None:
    chunks = [b"event: a\ndata: {}\n\n", b"event: b\ndata: {}\n\n"]
    request = ("/v1/responses", [("host", "x"), ("content-length", "0")], [])
    with anyio.fail_after(10):
        async with FakeUpstream.running() as fake:
            fake.script(Scripted(chunks=chunks, content_encoding="deflate"))
            [(head, data)] = await _raw_exchange(fake.port, [request])
    headers = dict((k.decode(), v.decode()) for k, v in head.headers)
    assert headers["content-encoding"] == "deflate"
    assert headers["transfer-encoding"] == "chunked"
    assert zlib.decompress(data) == b"".join(chunks)


@pytest.mark.anyio
async def test_required_key_gives_provider_401() -> None:
    with anyio.fail_after(10):
        async with FakeUpstream.running(openai_key="sk-right") as fake:
            client = openai.AsyncOpenAI(
                base_url=fake.base_url + "/v1", api_key="sk-wrong", timeout=5, max_retries=0
            )
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
            await client.close()


@pytest.mark.anyio
async def test_serve_simulated_provider_in_task_group() -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            fake = await tg.start(serve_simulated_provider, "127.0.0.1", 0)
            client = anthropic.AsyncAnthropic(
                base_url=fake.base_url, api_key=ANTHROPIC_KEY, timeout=5, max_retries=0
            )
            message = await client.messages.create(model="any", max_tokens=32, messages=MESSAGES)
            await client.close()
            tg.cancel_scope.cancel()
    body = fake.received[0].body
    predicted = expected_usage("POST", "/v1/messages", [("anthropic-version", "2023-06-01")], body)
    assert message.usage.model_dump(exclude_none=True) == predicted


@pytest.mark.anyio
async def test_delays_before_head_and_between_chunks() -> None:
    chunks = [f"data: {i}\n\n" for i in range(3)]
    request = ("/v1/chat/completions", [("host", "x"), ("content-length", "0")], [])
    with anyio.fail_after(10):
        async with FakeUpstream.running() as fake:
            fake.script(Scripted(chunks=chunks, delay_before_head=0.2, delay_between_chunks=0.1))
            started = anyio.current_time()
            [(head, data)] = await _raw_exchange(fake.port, [request])
            elapsed = anyio.current_time() - started
    assert head.status_code == 200 and data == "".join(chunks).encode()
    assert elapsed >= 0.4


@pytest.mark.anyio
async def test_log_limit_keeps_the_latest() -> None:
    with anyio.fail_after(10):
        async with FakeUpstream.running(log_limit=2) as fake:
            client = openai.AsyncOpenAI(
                base_url=fake.base_url + "/v1", api_key=OPENAI_KEY, timeout=5, max_retries=0
            )
            for _ in range(3):
                await client.models.list()
            await client.close()
    assert len(fake.received) == 2
    assert [s.index for s in fake.served] == [1, 2]


def test_process_exits_cleanly_on_sigterm() -> None:
    with FakeUpstreamProcess() as fake:
        process = fake.process
        assert process is not None
    assert process.returncode == 0


@pytest.mark.anyio
async def test_running_reraises_the_callers_own_exception() -> None:
    with anyio.fail_after(10), pytest.raises(KeyError):
        async with FakeUpstream.running():
            raise KeyError("not wrapped in an ExceptionGroup")


def test_only_loopback() -> None:
    with pytest.raises(ValueError):
        FakeUpstreamProcess(host="0.0.0.0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
