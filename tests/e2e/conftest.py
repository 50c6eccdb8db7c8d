"""End-to-end harness: the fake upstream and `meshproxy serve` as real processes on 127.0.0.1.

Each test talks to the proxy with the official SDKs; records are read back from the JSONL file
the proxy writes (`--records`), keyed by the `x-meshproxy-request-id` response header.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess
from meshproxy_core.auth import mint_token

SECRET = "e2e-room-token-secret-" + "x" * 32
OPENAI_KEY = "sk-provider-openai-SECRETKEY-0001"
ANTHROPIC_KEY = "sk-ant-provider-SECRETKEY-0002"
START_TIMEOUT = 20.0


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete records in a JSONL file another process is appending to. A read can
    observe a line half-written (Linux read(2) is not atomic against write(2)), so a last
    line without its newline is left for the next read."""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


class ProxyProcess:
    """`meshproxy serve` in a subprocess, pointed at a fake upstream."""

    def __init__(
        self,
        upstream_url: str,
        workdir: Path,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.extra_env = env or {}
        self.upstream_url = upstream_url
        self.records_path = workdir / "records.jsonl"
        self.log_path = workdir / "proxy.log"
        self.ledger_path = workdir / "ledger.sqlite3"
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ProxyProcess:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))},
            "MESHAGENT_SECRET": SECRET,
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": self.upstream_url + "/v1",
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "ANTHROPIC_BASE_URL": self.upstream_url,
            "MESHPROXY_LEDGER": str(self.ledger_path),
            **self.extra_env,
        }
        cmd = [
            sys.executable,
            "-m",
            "meshproxy.adapters.cli",
            "serve",
            "--port",
            "0",
            "--records",
            str(self.records_path),
            "--log-http",
            *self.extra_args,
        ]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, env=env
        )
        lines: queue.Queue[bytes] = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=START_TIMEOUT).decode().strip()
        except queue.Empty:
            line = ""
        prefix = "meshproxy listening on http://127.0.0.1:"
        if not line.startswith(prefix):
            self.__exit__()
            raise RuntimeError(f"proxy did not start: {line!r}\n{self.log()}")
        self.port = int(line.removeprefix(prefix))
        threading.Thread(target=stdout.read, daemon=True).start()  # drain the banner
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        if not self.records_path.exists():
            return []
        return read_jsonl(self.records_path)

    def record(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The record of one request. Records are written when the response has ended, which
        may be just after the client saw its last byte, so wait for it (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.records():
                if record["request_id"] == request_id:
                    return record
            if time.monotonic() > deadline:
                raise AssertionError(f"no record for {request_id}\n{self.log()[-3000:]}")
            time.sleep(0.02)


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstreamProcess]:
    with FakeUpstreamProcess(openai_key=OPENAI_KEY, anthropic_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture(scope="session")
def proxy(fake_upstream: FakeUpstreamProcess) -> Iterator[ProxyProcess]:
    with tempfile.TemporaryDirectory() as tmp, ProxyProcess(fake_upstream.base_url, Path(tmp)) as p:
        yield p


@pytest.fixture
def fake(fake_upstream: FakeUpstreamProcess) -> FakeUpstreamProcess:
    fake_upstream.reset()
    return fake_upstream


def make_token(
    room: str = "room-1",
    participant: str = "alice",
    project: str = "proj-1",
    ttl: float = 600.0,
    models: list[str] | None = None,
    session: str | None = None,
    now: float | None = None,
) -> str:
    return mint_token(
        SECRET,
        project=project,
        room=room,
        participant=participant,
        now=time.time() if now is None else now,
        ttl=ttl,
        models=models,
        session=session,
    )


@pytest.fixture
def token() -> str:
    return make_token()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_provider_credentials_in_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDKs read OPENAI_API_KEY / ANTHROPIC_API_KEY from the environment when a test passes
    none; a developer's real keys must neither leak into nor confuse these tests."""
    for name in (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "OPENAI_BASE_URL",
        "ANTHROPIC_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
