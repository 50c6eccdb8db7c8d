"""The durability bound: a proxy killed with SIGKILL loses only records it had not acknowledged.

A child process plays the proxy: several threads each make a record, `submit` it, wait for the
future (the commit), then print the id, as an adapter would before sending the last byte of a
response. The parent kills it with SIGKILL mid-stream, reopens the ledger, and every id the child
printed must be there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pg_server
from meshproxy.contrib.ledger import open_ledger

CHILD = textwrap.dedent(
    """
    import sys, threading
    from meshproxy.contrib.ledger import open_ledger
    from meshproxy_core.records import Ending, Outcome, Principal, Usage, UsageRecord

    ledger = open_ledger(sys.argv[1])
    out_lock = threading.Lock()

    def worker(n):
        i = 0
        while True:
            rid = f"w{n}-{i}"
            i += 1
            record = UsageRecord(
                id=rid, request_id=rid, provider="openai", endpoint="chat.completions",
                method="POST", path="/v1/chat/completions", status=200, outcome=Outcome.OK,
                ending=Ending.COMPLETE, started_at=1.0, ended_at=2.0,
                principal=Principal(project="p", room="r", participant="a"),
                usage=Usage(input_tokens=i),
            )
            ledger.submit(record).result()
            with out_lock:
                sys.stdout.write(rid + "\\n")
                sys.stdout.flush()

    for n in range(8):
        threading.Thread(target=worker, args=(n,), daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite3")
    reason = pg_server.why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    return pg_server.shared_server().new_database(f"sigkill_{os.getpid()}_{time.time_ns()}")


def test_sigkill_loses_no_acknowledged_record(ledger_url: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, ledger_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[str] = []
    try:
        assert child.stdout is not None
        while len(acked) < 400:
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"child ended early: {child.stderr.read()}")  # type: ignore[union-attr]
            acked.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        # whatever the child printed before it died was acknowledged too
        acked.extend(line.strip() for line in child.stdout if line.strip())
    finally:
        child.kill()
        child.wait(30)
    assert child.returncode == -signal.SIGKILL

    ledger = open_ledger(ledger_url)
    try:
        stored = {record["id"] for record in ledger.query_records()}
    finally:
        ledger.close()
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    # the bound: at most one in-flight record per worker thread was stored but not acknowledged
    assert len(stored - set(acked)) <= 8
