"""The official openai SDK, unmodified, through `meshproxy serve` in front of the fake upstream."""

from __future__ import annotations

import openai
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess

from .conftest import OPENAI_KEY, ProxyProcess

pytestmark = pytest.mark.e2e


def client(proxy: ProxyProcess, token: str, base: str = "/openai/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + base, api_key=token, max_retries=0, timeout=10)


def assert_provider_key_only(fake: FakeUpstreamProcess, token: str) -> None:
    received = fake.received()
    assert received, "the upstream saw nothing"
    for request in received:
        headers = dict(request.headers)
        assert headers.get("authorization") == f"Bearer {OPENAI_KEY}"
        flat = repr(request.headers) + request.body.decode("utf-8", "replace")
        assert token not in flat


def test_chat_completion(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    raw = client(proxy, token).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    record = proxy.record(raw.headers["x-meshproxy-request-id"])
    served = fake.last_served("openai.chat")
    assert record["outcome"] == "ok" and record["status"] == 200
    assert record["principal"]["room"] == "room-1"
    assert record["principal"]["participant"] == "alice"
    assert record["principal"]["project"] == "proj-1"
    assert record["model"] == "gpt-4o-mini"
    assert completion.usage is not None
    assert served.usage["prompt_tokens"] == completion.usage.prompt_tokens
    cached = (served.usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    assert record["usage"]["input_tokens"] + record["usage"]["cache_read_tokens"] == (
        completion.usage.prompt_tokens
    )
    assert record["usage"]["cache_read_tokens"] == cached
    assert record["usage"]["output_tokens"] == completion.usage.completion_tokens
    assert_provider_key_only(fake, token)


def test_chat_stream_without_include_usage_is_still_counted(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    with client(proxy, token).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream please"}], stream=True
    ) as response:
        request_id = response.headers["x-meshproxy-request-id"]
        chunks = list(response.parse())
    # The client asked for no usage, so it sees none: the proxy removed the injected chunk.
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    upstream_body = fake.received()[-1].json()
    assert upstream_body["stream_options"]["include_usage"] is True
    served = fake.last_served("openai.chat")
    record = proxy.record(request_id)
    assert record["stream"] is True
    assert record["usage"]["output_tokens"] == served.usage["completion_tokens"]
    assert record["usage_source"] == "reported"


def test_chat_stream_with_include_usage(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    stream = client(proxy, token).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Stream with usage"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    served = fake.last_served("openai.chat")
    assert served.usage["completion_tokens"] == usage.completion_tokens


@pytest.mark.anyio
async def test_async_client_chat_and_stream(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    async with openai.AsyncOpenAI(
        base_url=proxy.url + "/v1", api_key=token, max_retries=0, timeout=10
    ) as aclient:
        completion = await aclient.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "async"}]
        )
        assert completion.usage is not None
        stream = await aclient.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "async"}], stream=True
        )
        texts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(texts)


def test_responses_plain_and_stream(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    oa = client(proxy, token)
    raw = oa.responses.with_raw_response.create(model="gpt-4o-mini", input="Say hi")
    response = raw.parse()
    assert response.output_text
    record = proxy.record(raw.headers["x-meshproxy-request-id"])
    assert response.usage is not None
    assert record["usage"]["output_tokens"] == response.usage.output_tokens
    with oa.responses.stream(model="gpt-4o-mini", input="Stream hi") as stream:
        final = stream.get_final_response()
    assert final.usage is not None
    served = fake.last_served("openai.responses")
    assert served.usage["output_tokens"] == final.usage.output_tokens


def test_embeddings_base64_default(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    raw = client(proxy, token).embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["one", "two"]
    )
    result = raw.parse()
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    assert fake.received()[-1].json()["encoding_format"] == "base64"
    record = proxy.record(raw.headers["x-meshproxy-request-id"])
    assert record["usage"]["input_tokens"] == result.usage.prompt_tokens


def test_models_list_and_retrieve(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    oa = client(proxy, token, base="/v1")
    models = oa.models.list()
    assert len(models.data) > 0
    model = oa.models.retrieve(models.data[0].id)
    assert model.id == models.data[0].id


def test_room_mount(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    oa = client(proxy, token, base="/rooms/room-1/openai/v1")
    oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.PermissionDeniedError) as info:
        client(proxy, token, base="/rooms/other-room/openai/v1").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "room_mismatch"


def test_session_header_attributes_record(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    oa = openai.OpenAI(
        base_url=proxy.url + "/v1",
        api_key=token,
        max_retries=0,
        default_headers={"Meshagent-Session-Id": "sess-42"},
    )
    raw = oa.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
    record = proxy.record(raw.headers["x-meshproxy-request-id"])
    assert record["principal"]["session"] == "sess-42"
    assert all("meshagent-session-id" not in dict(r.headers) for r in fake.received())


def test_many_requests_share_keepalive(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    oa = client(proxy, token)
    ids = set()
    for _ in range(20):
        raw = oa.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "k"}]
        )
        ids.add(raw.headers["x-meshproxy-request-id"])
    assert len(fake.received()) == 20
    assert len(ids) == 20
    assert all(proxy.record(i)["outcome"] == "ok" for i in ids)
