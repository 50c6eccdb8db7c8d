"""Benchmark: records per second through the usage ledger, SQLite and PostgreSQL, against a baseline
of mapping the same records to rows into an in-memory list. Prints figures; asserts nothing.

Two shapes per backend:
  burst   N records `emit`ted at once, then `flush` (group commit at its best)
  acked   C threads, each submitting one record and waiting for its commit before the next (what
          an adapter that awaits durability before the end of each response sees)

    .venv/bin/python bench/bench_ledger.py [N] [C]

PostgreSQL runs on a throwaway server (tests/pg_server.py) with fsync on; it is skipped with a
message when the binaries are missing.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from meshproxy.contrib.ledger import open_ledger
from meshproxy.contrib.ledger.schema import batch_line_rows, record_row
from meshproxy_core.records import (
    Cost,
    Ending,
    Outcome,
    Principal,
    Usage,
    UsageRecord,
    UsageSource,
)

_PRINCIPAL = Principal(project="acme", room="lab", participant="ada", session="s1")


def make(i: int, tag: str) -> UsageRecord:
    rid = f"{tag}-{i}"
    return UsageRecord(
        id=rid,
        request_id=rid,
        provider="openai",
        endpoint="chat.completions",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        outcome=Outcome.OK,
        ending=Ending.COMPLETE,
        started_at=1_800_000_000.0 + i,
        ended_at=1_800_000_001.0 + i,
        principal=_PRINCIPAL,
        model="gpt-4o",
        response_model="gpt-4o-2024-08-06",
        stream=True,
        usage=Usage(input_tokens=1200, cache_read_tokens=800, output_tokens=300),
        usage_source=UsageSource.REPORTED,
        raw_usage={"prompt_tokens": 2000, "completion_tokens": 300},
        cost=Cost(total=Decimal("0.00725"), components=(("input", Decimal("0.003")),)),
    )


def baseline(n: int) -> float:
    records = [make(i, "base") for i in range(n)]
    rows: list[object] = []
    start = time.perf_counter()
    for record in records:
        rows.append(record_row(record))
        rows.extend(batch_line_rows(record))
    return n / (time.perf_counter() - start)


def burst(url: str, n: int, tag: str) -> float:
    records = [make(i, tag) for i in range(n)]
    ledger = open_ledger(url)
    try:
        start = time.perf_counter()
        for record in records:
            ledger.emit(record)
        ledger.flush()
        return n / (time.perf_counter() - start)
    finally:
        ledger.close()


def acked(url: str, n: int, clients: int, tag: str) -> tuple[float, float]:
    """(records/s, mean milliseconds from submit to commit)"""
    ledger = open_ledger(url)
    per = n // clients
    waits: list[float] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        mine = 0.0
        for i in range(per):
            t = time.perf_counter()
            ledger.submit(make(c * per + i, tag)).result()
            mine += time.perf_counter() - t
        with lock:
            waits.append(mine)

    try:
        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        return per * clients / elapsed, 1000 * sum(waits) / (per * clients)
    finally:
        ledger.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    print(f"{n} records; acked with {clients} concurrent clients")
    print(f"baseline  in-memory rows        {baseline(n):>10,.0f} records/s")
    targets: list[tuple[str, str]] = []
    tmp = tempfile.TemporaryDirectory()
    targets.append(("sqlite", str(Path(tmp.name) / "bench.sqlite3")))
    server = None
    import pg_server

    reason = pg_server.why_unavailable()
    if reason is None:
        server = pg_server.PgServer(fsync=True)
        targets.append(("postgres", server.new_database("bench")))
    try:
        for name, url in targets:
            print(f"{name:<9} burst (emit+flush)     {burst(url, n, 'burst'):>10,.0f} records/s")
            rate, ms = acked(url, n // 4, clients, "acked")
            print(f"{name:<9} acked (submit+wait)   {rate:>10,.0f} records/s  {ms:.2f} ms/commit")
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()
    if reason is not None:
        print(f"postgres  skipped: {reason}")


if __name__ == "__main__":
    main()
