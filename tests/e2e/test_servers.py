"""The same end-to-end checks under every server and framework the adapters support: the
built-in server, uvicorn, hypercorn and granian running the ASGI app, gunicorn running the WSGI
app, and the docs' examples (FastAPI, Starlette and Django behind the ASGI middleware, Flask
behind the WSGI middleware). Each is a real server process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess, Scripted

from .conftest import ANTHROPIC_KEY, OPENAI_KEY, SECRET, make_token, read_jsonl

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
PY = sys.executable

# name -> (argv with {port}, the app's own route if it wraps an app)
SERVERS: dict[str, tuple[list[str], str | None]] = {
    "builtin": ([PY, "-m", "meshproxy.adapters.cli", "serve", "--port", "{port}"], None),
    "uvicorn": (
        [
            PY,
            "-m",
            "uvicorn",
            "meshproxy.adapters.asgi:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
        None,
    ),
    "hypercorn": (
        [PY, "-m", "hypercorn", "meshproxy.adapters.asgi:app", "--bind", "127.0.0.1:{port}"],
        None,
    ),
    "granian": (
        [
            PY,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "meshproxy.adapters.asgi:app",
        ],
        None,
    ),
    "gunicorn-wsgi": (
        [
            PY,
            "-m",
            "gunicorn",
            "-k",
            "gthread",
            "--threads",
            "8",
            "-b",
            "127.0.0.1:{port}",
            "meshproxy.adapters.wsgi:app",
        ],
        None,
    ),
    "fastapi-example": (
        [
            PY,
            "-m",
            "uvicorn",
            "--app-dir",
            str(EXAMPLES),
            "fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
        "fastapi",
    ),
    "starlette-example": (
        [
            PY,
            "-m",
            "uvicorn",
            "--app-dir",
            str(EXAMPLES),
            "starlette_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
        "starlette",
    ),
    "django-example": (
        [
            PY,
            "-m",
            "uvicorn",
            "--app-dir",
            str(EXAMPLES),
            "django_asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
        "django",
    ),
    "flask-example": (
        [
            PY,
            "-m",
            "gunicorn",
            "-k",
            "gthread",
            "--threads",
            "8",
            "--chdir",
            str(EXAMPLES),
            "-b",
            "127.0.0.1:{port}",
            "flask_app:app",
        ],
        "flask",
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    def __init__(self, name: str, upstream: str, workdir: Path) -> None:
        argv, self.own_app = SERVERS[name]
        self.name = name
        self.port = free_port()
        self.records_path = workdir / f"{name}.jsonl"
        self.log_path = workdir / f"{name}.log"
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        if name == "builtin":
            argv += ["--records", str(self.records_path)]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))},
            "MESHAGENT_SECRET": SECRET,
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": upstream + "/v1",
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "ANTHROPIC_BASE_URL": upstream,
            "MESHPROXY_RECORDS": str(self.records_path),
            "MESHPROXY_LEDGER": str(workdir / f"{name}.sqlite3"),
        }
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()

    def record(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.records_path.exists():
                for record in read_jsonl(self.records_path):
                    if record["request_id"] == request_id:
                        return record
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: no record for {request_id}")


@pytest.fixture(scope="module", params=list(SERVERS))
def served(
    request: pytest.FixtureRequest,
    fake_upstream: FakeUpstreamProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    server = Served(request.param, fake_upstream.base_url, tmp_path_factory.mktemp("servers"))
    try:
        yield server
    finally:
        server.stop()


def oa(served: Served, token: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=served.url + "/openai/v1",
        api_key=token or make_token(),
        max_retries=0,
        timeout=10,
    )


def test_chat_plain_and_streamed(served: Served, fake: FakeUpstreamProcess) -> None:
    raw = oa(served).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello " + served.name}]
    )
    usage = raw.parse().usage
    assert usage is not None
    record = served.record(raw.headers["x-meshproxy-request-id"])
    assert record["usage"]["output_tokens"] == usage.completion_tokens
    assert record["usage"]["input_tokens"] == usage.prompt_tokens
    assert record["outcome"] == "ok"
    with oa(served).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream"}], stream=True
    ) as response:
        request_id = response.headers["x-meshproxy-request-id"]
        chunks = list(response.parse())
    assert chunks and all(chunk.usage is None for chunk in chunks)
    served_usage = fake.last_served("openai.chat").usage
    assert (
        served.record(request_id)["usage"]["output_tokens"] == (served_usage["completion_tokens"])
    )
    assert dict(fake.received()[-1].headers)["authorization"] == f"Bearer {OPENAI_KEY}"


def test_anthropic_stream(served: Served, fake: FakeUpstreamProcess) -> None:
    client = anthropic.Anthropic(
        base_url=served.url + "/anthropic", api_key=make_token(), max_retries=0, timeout=10
    )
    with client.messages.with_streaming_response.create(
        model="claude-haiku-4-5",
        max_tokens=50,
        stream=True,
        messages=[{"role": "user", "content": "hi"}],
    ) as response:
        request_id = response.headers["x-meshproxy-request-id"]
        events = list(response.parse())
    assert events[-1].type == "message_stop"
    served_usage = fake.last_served("anthropic.messages").usage
    record = served.record(request_id)
    assert record["usage"]["output_tokens"] == served_usage["output_tokens"]
    assert record["usage"]["input_tokens"] == served_usage["input_tokens"]


def test_refusals(served: Served, fake: FakeUpstreamProcess) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        oa(served).files.list()
    assert not_found.value.code == "path_not_allowed"
    with pytest.raises(openai.AuthenticationError):
        oa(served, token="forged.token.value").models.list()
    with pytest.raises(openai.BadRequestError) as unpriced:
        oa(served).chat.completions.create(
            model="gpt-unpriced", messages=[{"role": "user", "content": "x"}]
        )
    assert unpriced.value.code == "model_not_priced"
    assert fake.received() == []


def test_client_disconnect_gives_partial_record(served: Served, fake: FakeUpstreamProcess) -> None:
    fake.script(Scripted(path="/v1/messages", delay_between_chunks=0.3))
    client = anthropic.Anthropic(
        base_url=served.url + "/anthropic", api_key=make_token(), max_retries=0, timeout=10
    )
    with client.messages.with_streaming_response.create(
        model="claude-haiku-4-5",
        max_tokens=50,
        stream=True,
        messages=[{"role": "user", "content": "slowly"}],
    ) as response:
        request_id = response.headers["x-meshproxy-request-id"]
        first = next(iter(response.parse()))
        assert first.type == "message_start"
    record = served.record(request_id, timeout=15)
    assert record["ending"] == "client_gone"
    assert record["partial"] is True
    assert record["usage"]["input_tokens"] == first.message.usage.input_tokens


def test_other_paths_go_to_the_wrapped_app_or_are_refused(served: Served) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request("GET", "/health")
    response = conn.getresponse()
    body = json.loads(response.read())
    if served.own_app is None:  # the proxy alone answers every path, refusing unlisted ones
        assert response.status == 404
        assert body["error"]["code"] == "path_not_allowed"
    else:  # behind the middleware, the app's own routes are untouched
        assert response.status == 200
        assert body["served_by"] == served.own_app
