"""Hostile input: a corpus of paths, tokens and bodies. No crash, the right status in the
provider's shape, nothing forwarded that should not be; and an upstream that sends garbage."""

from __future__ import annotations

import base64
import http.client
import json
import socket

import anthropic
import openai
import pytest

from e2e.conftest import ProxyProcess, make_token
from meshproxy.adapters.testing import FakeUpstreamProcess, Scripted

pytestmark = pytest.mark.e2e

HOSTILE_PATHS = [
    "/openai/v1/chat/completions/..",
    "/openai/v1/./chat/completions",
    "/openai/v1/chat/completions%00",
    "/openai/v1/chat%2fcompletions",
    "/openai/v1/chat%252fcompletions",
    "/openai/v1/%2e%2e/admin",
    "/openai/v1/chat\\completions",
    "/openai/v1/chat/completions;jsessionid=1",
    "/openai/v1/files/../chat/completions",
    "/rooms/../openai/v1/chat/completions",
    "/rooms/%2e%2e/openai/v1/chat/completions",
    "/openai/v1/" + "a/" * 600 + "chat/completions",
    "//openai/v1/chat/completions",
    "/openai/v1/fine_tuning/jobs",
    "/openai/v1/responses/resp_123/cancel",
    "/anthropic/v1/messages/batches/x/y/z",
    "/anthropic/v1/files",
    "/anthropic/v2/messages",
]

HOSTILE_TOKENS = [
    "",
    "Bearer",
    "null",
    "e30.e30.",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    "a.b.c.d.e",
    "x" * 10000,
    "é" * 10,
    "../../etc/passwd",
    base64.urlsafe_b64encode(b'{"alg":"HS256"}').decode() + "..",
]


def send(
    proxy: ProxyProcess, method: str, target: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_hostile_paths(proxy: ProxyProcess, fake: FakeUpstreamProcess) -> None:
    token = make_token()
    body = json.dumps({"model": "gpt-4o-mini", "messages": []}).encode()
    for target in HOSTILE_PATHS:
        status, payload = send(proxy, "POST", target, {"authorization": f"Bearer {token}"}, body)
        assert status in (404, 405), target
        assert json.loads(payload)["error"]["code"] in ("path_not_allowed", "method_not_allowed")
    assert fake.received() == []


def test_hostile_tokens(proxy: ProxyProcess, fake: FakeUpstreamProcess) -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": []}).encode()
    for token in HOSTILE_TOKENS:
        try:
            header = f"Bearer {token}".encode().decode("latin-1")
        except UnicodeEncodeError:
            continue
        status, payload = send(
            proxy, "POST", "/v1/chat/completions", {"authorization": header}, body
        )
        assert status == 401, token[:20]
        error = json.loads(payload)["error"]
        assert error["code"] == "invalid_token"
        # The same words whatever was wrong: nothing of the token is echoed back.
        assert error["message"] == "Invalid or missing room token."
    assert fake.received() == []


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe\xfd not utf-8", b"[1, 2, 3]", b'"just a string"', b'{"model": ', b"\x00" * 64],
)
def test_bodies_that_are_not_json_objects(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, body: bytes
) -> None:
    status, payload = send(
        proxy,
        "POST",
        "/v1/chat/completions",
        {"authorization": f"Bearer {make_token()}", "content-type": "application/json"},
        body,
    )
    assert status == 400
    assert json.loads(payload)["error"]["type"] == "invalid_request_error"
    assert fake.received() == []


def test_raw_garbage_on_the_socket_does_not_hurt_the_next_client(proxy: ProxyProcess) -> None:
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00", b"\r\n" * 1000, b"GET / HTTP/1.1\r\n" * 50):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            while sock.recv(65536):
                pass
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=make_token(), max_retries=0)
    assert client.models.list().data


def test_upstream_garbage_is_relayed_and_recorded_unparseable(
    proxy: ProxyProcess, fake: FakeUpstreamProcess
) -> None:
    fake.script(
        Scripted(
            path="/v1/chat/completions",
            body=b"<html>oops</html>",
            headers={"content-type": "application/json"},
        )
    )
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=make_token(), max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.http_response.content == b"<html>oops</html>"  # relayed unchanged
    record = proxy.record(raw.headers["x-meshproxy-request-id"])
    assert record["usage_source"] == "unparseable"
    assert record["status"] == 200


def test_truncated_upstream_sse_ends_cleanly_for_the_client(
    proxy: ProxyProcess, fake: FakeUpstreamProcess
) -> None:
    start = {
        "type": "message_start",
        "message": {"id": "m", "type": "message", "role": "assistant",
                    "model": "claude-haiku-4-5", "content": [],
                    "usage": {"input_tokens": 42, "output_tokens": 1}},
    }  # fmt: skip
    fake.script(
        Scripted(
            path="/v1/messages",
            chunks=[
                b"event: message_start\n",
                b"data: " + json.dumps(start).encode() + b"\n\n"
                b'event: content_block_delta\ndata: {"type":"content_bl',
            ],
            reset_after_chunks=2,
        )
    )
    client = anthropic_client(proxy)
    # The SDK raises (the proxy ended the cut stream on an event boundary with an error event)
    # instead of failing to decode half an event or returning a silently truncated message.
    with pytest.raises(anthropic.APIStatusError):  # noqa: SIM117  (the stream must be named)
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            request_id = stream.response.headers["x-meshproxy-request-id"]
            stream.get_final_message()
    record = proxy.record(request_id)
    assert record["usage"]["input_tokens"] == 42
    assert record["partial"] is True and record["ending"] == "upstream_failed"


def anthropic_client(proxy: ProxyProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=proxy.url + "/anthropic", api_key=make_token(), max_retries=0, timeout=10
    )
