"""The official anthropic SDK, unmodified, through `meshproxy serve`."""

from __future__ import annotations

import anthropic
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess

from .conftest import ANTHROPIC_KEY, ProxyProcess

pytestmark = pytest.mark.e2e

MODEL = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "Hello, Claude"}]


def bearer_client(proxy: ProxyProcess, token: str) -> anthropic.Anthropic:
    # auth_token makes the SDK send `Authorization: Bearer`; api_key sends `x-api-key`.
    return anthropic.Anthropic(
        base_url=proxy.url + "/anthropic", auth_token=token, max_retries=0, timeout=10
    )


def key_client(proxy: ProxyProcess, token: str) -> anthropic.Anthropic:
    # anthropic 2.x sends even `api_key` as a Bearer token; the `x-api-key` header that older
    # SDKs and other clients send is exercised explicitly here.
    client = anthropic.Anthropic(
        base_url=proxy.url + "/anthropic",
        api_key=None,
        default_headers={"X-Api-Key": token},
        max_retries=0,
        timeout=10,
    )
    assert "authorization" not in {k.lower() for k in client.auth_headers}
    return client


def assert_provider_key_only(fake: FakeUpstreamProcess, token: str) -> None:
    received = fake.received()
    assert received
    for request in received:
        headers = dict(request.headers)
        assert headers.get("x-api-key") == ANTHROPIC_KEY
        assert "authorization" not in headers
        assert token not in repr(request.headers) + request.body.decode("utf-8", "replace")


@pytest.mark.parametrize("make_client", [bearer_client, key_client])
def test_messages_create(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, make_client
) -> None:  # type: ignore[no-untyped-def]
    raw = make_client(proxy, token).messages.with_raw_response.create(
        model=MODEL, max_tokens=100, messages=MESSAGES
    )
    message = raw.parse()
    assert message.content[0].text
    record = proxy.record(raw.headers["x-meshproxy-request-id"])
    assert record["provider"] == "anthropic" and record["endpoint"] == "messages"
    assert record["usage"]["input_tokens"] == message.usage.input_tokens
    assert record["usage"]["output_tokens"] == message.usage.output_tokens
    assert_provider_key_only(fake, token)
    # The client sent none, so the proxy supplied the default version header.
    assert dict(fake.received()[-1].headers)["anthropic-version"]


def test_messages_stream(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    client = key_client(proxy, token)
    with client.messages.with_streaming_response.create(
        model=MODEL, max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        request_id = response.headers["x-meshproxy-request-id"]
        events = list(response.parse())
    assert events[-1].type == "message_stop"
    with client.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    served = fake.last_served("anthropic.messages")
    assert final.usage.output_tokens == served.usage["output_tokens"]
    assert final.usage.input_tokens == served.usage["input_tokens"]
    record = proxy.record(request_id)
    assert record["stream"] is True
    assert record["usage"]["output_tokens"] == final.usage.output_tokens
    assert record["usage"]["input_tokens"] == final.usage.input_tokens


def test_count_tokens_is_free(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    raw = bearer_client(proxy, token).messages.with_raw_response.count_tokens(
        model=MODEL, messages=MESSAGES
    )
    assert raw.parse().input_tokens > 0
    record = proxy.record(raw.headers["x-meshproxy-request-id"])
    assert record["usage_source"] == "free"
    assert record["usage"]["input_tokens"] == 0


def test_models(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    client = key_client(proxy, token)
    page = client.models.list()
    assert page.data
    assert client.models.retrieve(page.data[0].id).id == page.data[0].id


@pytest.mark.anyio
async def test_async_client(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=proxy.url + "/anthropic", api_key=token, max_retries=0, timeout=10
    ) as client:
        message = await client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
        assert message.usage.output_tokens > 0
        async with client.messages.stream(model=MODEL, max_tokens=50, messages=MESSAGES) as s:
            final = await s.get_final_message()
        assert final.usage.output_tokens > 0
