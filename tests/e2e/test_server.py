"""The anyio + h11 server under limits: malformed and hostile clients, pipelining, keep-alive,
client disconnects and graceful shutdown. Each case is bounded in time."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess, Scripted

from .conftest import ProxyProcess, make_token

pytestmark = pytest.mark.e2e

FAST_LIMITS = """
[server]
header_timeout = 0.5
idle_timeout = 1.0
max_header_bytes = 8192
shutdown_grace = 5.0
"""


@pytest.fixture
def tight_proxy(fake: FakeUpstreamProcess, tmp_path: Path) -> Iterator[ProxyProcess]:
    config = tmp_path / "meshproxy.toml"
    config.write_text(FAST_LIMITS)
    with ProxyProcess(fake.base_url, tmp_path, ["--config", str(config)]) as proxy:
        yield proxy


def connect(proxy: ProxyProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    return sock


def read_until_closed(sock: socket.socket, limit: float = 5.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server did not close the connection in time")


def test_oversized_headers_get_431(tight_proxy: ProxyProcess) -> None:
    sock = connect(tight_proxy)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n")
    response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\n\r\n",
    ],
)
def test_malformed_requests_get_400(tight_proxy: ProxyProcess, garbage: bytes) -> None:
    sock = connect(tight_proxy)
    sock.sendall(garbage)
    response = read_until_closed(sock)
    # The last one lacks the Host header that HTTP/1.1 requires.
    assert response.startswith(b"HTTP/1.1 400 ") or response.startswith(b"HTTP/1.1 505 ")


def test_slow_loris_head_is_cut_off(tight_proxy: ProxyProcess) -> None:
    sock = connect(tight_proxy)
    started = time.monotonic()
    sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
    try:
        for _ in range(20):
            sock.sendall(b"x-drip: 1\r\n")
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert read_until_closed(sock) == b""
    assert time.monotonic() - started < 4.0


def test_idle_keepalive_connection_is_closed(tight_proxy: ProxyProcess) -> None:
    sock = connect(tight_proxy)
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert 0.8 < time.monotonic() - started < 4.0


def test_pipelined_requests(tight_proxy: ProxyProcess, fake: FakeUpstreamProcess) -> None:
    token = make_token()
    request = (
        f"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n".encode()
    )
    sock = connect(tight_proxy)
    sock.sendall(request * 3)
    data = read_until_closed(sock)  # the idle timeout closes it after the third answer
    assert data.count(b"HTTP/1.1 200 ") == 3
    assert len(fake.received()) == 3


def _slow_stream(fake: FakeUpstreamProcess, delay: float, **faults: int) -> None:
    fake.script(Scripted(path="/v1/messages", delay_between_chunks=delay, **faults))


def test_client_disconnect_mid_stream_gives_partial_record(
    proxy: ProxyProcess, fake: FakeUpstreamProcess
) -> None:
    _slow_stream(fake, 0.3)
    client = anthropic.Anthropic(
        base_url=proxy.url + "/anthropic", api_key=make_token(), max_retries=0, timeout=10
    )
    with client.messages.with_streaming_response.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "go slowly"}],
        stream=True,
    ) as response:
        request_id = response.headers["x-meshproxy-request-id"]
        events = response.parse()
        first = next(iter(events))
        assert first.type == "message_start"
        input_tokens = first.message.usage.input_tokens
    # Leaving the block closed the connection mid-stream.
    record = proxy.record(request_id)
    assert record["ending"] == "client_gone"
    assert record["partial"] is True
    assert record["outcome"] == "partial"
    assert record["usage"]["input_tokens"] == input_tokens


def test_sigterm_lets_in_flight_stream_finish(fake: FakeUpstreamProcess, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(FAST_LIMITS)
    with ProxyProcess(fake.base_url, tmp_path, ["--config", str(config)]) as proxy:
        fake.script(Scripted(path="/v1/chat/completions", delay_between_chunks=0.15))
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=make_token(), max_retries=0)
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True
        )
        chunks = [next(stream)]
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGTERM)
        chunks += list(stream)
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert proxy.process.wait(timeout=10) == 0
        records = proxy.records()
    assert [r["outcome"] for r in records] == ["ok"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1)


def test_sigterm_deadline_cuts_hung_stream_and_records_it(
    fake: FakeUpstreamProcess, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(FAST_LIMITS.replace("shutdown_grace = 5.0", "shutdown_grace = 0.5"))
    with ProxyProcess(fake.base_url, tmp_path, ["--config", str(config)]) as proxy:
        fake.script(Scripted(path="/v1/messages", hang_after_chunks=2))
        sock = connect(proxy)
        body = json.dumps(
            {
                "model": "claude-haiku-4-5",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            }
        ).encode()
        sock.sendall(
            b"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"x-api-key: {make_token()}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert proxy.process is not None
        started = time.monotonic()
        proxy.process.send_signal(signal.SIGTERM)
        assert proxy.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        records = proxy.records()
    assert len(records) == 1
    assert records[0]["ending"] == "shutdown"
    assert records[0]["partial"] is True
    assert records[0]["usage"]["input_tokens"] > 0
