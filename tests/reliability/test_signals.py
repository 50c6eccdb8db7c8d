"""Signals under load. SIGTERM: in-flight streams finish (up to the grace deadline) and every
record is flushed. SIGKILL: after a restart, the ledger holds every request that completed
before the kill."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from e2e.conftest import ProxyProcess, make_token
from meshproxy.adapters.testing import FakeUpstreamProcess, Scripted
from meshproxy.contrib.ledger import open_ledger

pytestmark = pytest.mark.e2e

STREAMS = 16


def stored_ids(ledger_path: Path) -> set[str]:
    ledger = open_ledger(str(ledger_path))
    try:
        return {record["request_id"] for record in ledger.query_records()}
    finally:
        ledger.close()


def test_sigterm_under_load_finishes_streams_and_flushes(
    fake: FakeUpstreamProcess, tmp_path: Path
) -> None:
    fake.script(*[Scripted(path="/v1/chat/completions", delay_between_chunks=0.1)] * STREAMS)
    ledger_path = tmp_path / "ledger.sqlite3"
    started = threading.Barrier(STREAMS + 1, timeout=30)
    with ProxyProcess(fake.base_url, tmp_path, ["--ledger", str(ledger_path)]) as proxy:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=make_token(), max_retries=0)

        def stream(i: int) -> tuple[str, str | None]:
            with client.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini",
                stream=True,
                messages=[{"role": "user", "content": f"stream {i}"}],
            ) as response:
                chunks = iter(response.parse())
                next(chunks)
                started.wait()
                finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
                return response.headers["x-meshproxy-request-id"], finish

        with ThreadPoolExecutor(STREAMS) as pool:
            futures = [pool.submit(stream, i) for i in range(STREAMS)]
            started.wait()  # every stream is in flight
            assert proxy.process is not None
            proxy.process.send_signal(signal.SIGTERM)
            results = [f.result(timeout=30) for f in futures]
        assert proxy.process.wait(timeout=30) == 0
        records = {r["request_id"]: r for r in proxy.records()}
    assert all(finish == "stop" for _, finish in results)
    for request_id, _ in results:
        assert records[request_id]["outcome"] == "ok"
    assert {request_id for request_id, _ in results} <= stored_ids(ledger_path)


def test_sigkill_under_load_keeps_every_completed_request(
    fake: FakeUpstreamProcess, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "ledger.sqlite3"
    completed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    with ProxyProcess(fake.base_url, tmp_path, ["--ledger", str(ledger_path)]) as proxy:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=make_token(), max_retries=0)

        def worker(w: int) -> None:
            i = 0
            while not stop.is_set() and i < 200:
                i += 1
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": f"{w}-{i}"}]
                    )
                    raw.parse()  # the whole response arrived
                except (openai.APIConnectionError, openai.APIStatusError):
                    return  # the proxy is gone
                with lock:
                    completed.append(raw.headers["x-meshproxy-request-id"])

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(completed) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        proxy.process.wait(timeout=10)
    assert len(completed) >= 100
    missing = set(completed) - stored_ids(ledger_path)
    assert missing == set()
