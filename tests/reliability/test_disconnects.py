"""A client that leaves mid-stream: the upstream request is cancelled within a bound, and a
partial record keeps every token the provider had reported."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from e2e.conftest import ProxyProcess, make_token
from meshproxy.adapters.testing import FakeUpstreamProcess, Scripted

pytestmark = pytest.mark.e2e

CANCEL_BOUND = 2.0  # seconds from the client closing to the upstream connection closing


def wait_abandoned(fake: FakeUpstreamProcess, path: str, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for abandoned_path, at in fake.abandoned():
            if abandoned_path == path:
                return at
        time.sleep(0.02)
    raise AssertionError(f"the upstream request for {path} was never cancelled")


def test_anthropic_client_leaves_upstream_cancelled(
    proxy: ProxyProcess, fake: FakeUpstreamProcess
) -> None:
    fake.script(Scripted(path="/v1/messages", hang_after_chunks=3))
    client = anthropic.Anthropic(
        base_url=proxy.url + "/anthropic", api_key=make_token(), max_retries=0, timeout=10
    )
    with client.messages.with_streaming_response.create(
        model="claude-haiku-4-5",
        max_tokens=50,
        stream=True,
        messages=[{"role": "user", "content": "and then?"}],
    ) as response:
        request_id = response.headers["x-meshproxy-request-id"]
        first = next(iter(response.parse()))
        input_tokens = first.message.usage.input_tokens
    left_at = time.time()
    cancelled_at = wait_abandoned(fake, "/v1/messages")
    assert cancelled_at - left_at < CANCEL_BOUND
    record = proxy.record(request_id)
    assert (record["ending"], record["outcome"], record["partial"]) == (
        "client_gone",
        "partial",
        True,
    )
    assert record["usage"]["input_tokens"] == input_tokens


def test_openai_client_leaves_upstream_cancelled(
    proxy: ProxyProcess, fake: FakeUpstreamProcess
) -> None:
    fake.script(Scripted(path="/v1/chat/completions", hang_after_chunks=3))
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=make_token(), max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "go"}]
    ) as response:
        request_id = response.headers["x-meshproxy-request-id"]
        chunk = next(iter(response.parse()))
        assert chunk.choices
    left_at = time.time()
    assert wait_abandoned(fake, "/v1/chat/completions") - left_at < CANCEL_BOUND
    record = proxy.record(request_id)
    assert record["ending"] == "client_gone" and record["partial"] is True
    # No usage chunk arrived: the output is estimated from the text that did.
    assert record["usage_source"] == "estimated"
    assert record["usage"]["output_tokens"] > 0
