"""The usage ledger on both backends (a SQLite file; a real PostgreSQL the suite starts itself):
idempotent writes, batch line de-duplication, ownership across two replicas, flush on close."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import pg_server
from meshproxy.contrib.ledger import (
    KIND_ANTHROPIC_BATCH,
    KIND_OPENAI_RESPONSE,
    LedgerClosed,
    SqliteLedger,
    open_ledger,
)
from meshproxy_core.records import (
    Cost,
    Ending,
    ImageCount,
    LineItem,
    Outcome,
    Principal,
    Usage,
    UsageRecord,
    UsageSource,
    record_to_dict,
)

T0 = 1_800_000_000.0
_ids = itertools.count()


def make_record(
    *,
    id: str | None = None,
    room: str = "lab",
    project: str = "acme",
    participant: str = "ada",
    at: float = T0,
    cost: str | Cost | None = "0.0123",
    **changes: object,
) -> UsageRecord:
    rid = id or f"req-{next(_ids)}"
    fields: dict = dict(
        id=rid,
        request_id=rid,
        provider="openai",
        endpoint="chat.completions",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        outcome=Outcome.OK,
        ending=Ending.COMPLETE,
        started_at=at - 1.5,
        ended_at=at,
        principal=Principal(project=project, room=room, participant=participant, session="s1"),
        model="gpt-4o",
        response_model="gpt-4o-2024-08-06",
        usage=Usage(input_tokens=100, output_tokens=20, cache_read_tokens=50),
        usage_source=UsageSource.REPORTED,
        cost=Cost(total=Decimal(cost), components=(("input", Decimal(cost)),))
        if isinstance(cost, str)
        else cost,
        raw_usage={"prompt_tokens": 150, "completion_tokens": 20},
    )
    fields.update(changes)
    return UsageRecord(**fields)


def batch_record(batch_id: str, keys: list[str], *, project: str = "acme") -> UsageRecord:
    items = tuple(
        LineItem(
            key=key,
            model="claude-haiku-4-5",
            usage=Usage(input_tokens=10, output_tokens=5),
            cost=Cost(total=Decimal("0.001")),
        )
        for key in keys
    )
    return make_record(
        provider="anthropic",
        endpoint="messages.batches.results",
        project=project,
        batch_id=batch_id,
        batch_custom_ids=tuple(keys),
        line_items=items,
        usage=Usage(input_tokens=10 * len(keys), output_tokens=5 * len(keys)),
        cost=Cost(total=Decimal("0.001") * len(keys)),
    )


_db_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite3")
    reason = pg_server.why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    return pg_server.shared_server().new_database(f"ledger_{next(_db_names)}_{int(time.time())}")


@pytest.fixture
def ledger(ledger_url: str) -> Iterator:
    instance = open_ledger(ledger_url)
    yield instance
    instance.close()


def test_every_field_is_stored_and_read_back(ledger) -> None:
    record = make_record(
        usage=Usage(
            input_tokens=1,
            images=(ImageCount(size="1024x1024", quality="high", count=2),),
            audio_seconds=Decimal("12.5"),
        ),
        line_items=(),
    )
    ledger.submit(record).result(10)
    (stored,) = ledger.query_records()
    assert stored == json.loads(json.dumps(record_to_dict(record)))  # tuples become lists


def test_writes_are_idempotent_by_record_id(ledger) -> None:
    record = make_record(id="dup-1")
    futures = [ledger.submit(record), ledger.submit(record)]  # likely one batch
    for future in futures:
        future.result(10)
    ledger.submit(record).result(10)  # and a later batch
    assert [r["id"] for r in ledger.query_records()] == ["dup-1"]
    entries = list(ledger.query_entries())
    assert sum(e.cost for e in entries) == Decimal("0.0123")


def test_future_resolves_after_commit_visible_to_another_replica(ledger_url: str) -> None:
    writer, reader = open_ledger(ledger_url), open_ledger(ledger_url)
    try:
        writer.submit(make_record(id="seen")).result(10)
        # no flush, no close: the commit alone makes it visible to a separate connection
        assert [r["id"] for r in reader.query_records()] == ["seen"]
    finally:
        writer.close()
        reader.close()


def test_batch_lines_are_counted_once_across_downloads(ledger) -> None:
    first = batch_record("msgbatch_1", ["a", "b", "c"])
    second = batch_record("msgbatch_1", ["b", "c", "d"])  # results downloaded again, plus one
    other_batch = batch_record("msgbatch_2", ["a"])
    other_project = batch_record("msgbatch_1", ["a"], project="globex")
    for record in (first, second, other_batch, other_project):
        ledger.submit(record).result(10)
    assert ledger.count_batch_lines("acme", "msgbatch_1") == 4  # a, b, c, d
    entries = list(ledger.query_entries(project="acme"))
    assert sum(e.requests for e in entries) == 3  # three downloads were made
    assert sum(e.cost or 0 for e in entries) == Decimal("0.005")  # a b c d + batch_2's a
    assert sum(e.tokens["input_tokens"] for e in entries) == 50
    lines_of_second = [e for e in entries if e.record_id == second.id and e.requests == 0]
    assert len(lines_of_second) == 1  # only "d" was new
    assert sum(e.cost or 0 for e in ledger.query_entries(project="globex")) == Decimal("0.001")


def test_batch_dedup_within_one_write_batch(ledger) -> None:
    futures = [ledger.submit(batch_record("msgbatch_9", ["x", "y"])) for _ in range(5)]
    for future in futures:
        future.result(10)
    assert ledger.count_batch_lines("acme", "msgbatch_9") == 2
    assert sum(e.cost or 0 for e in ledger.query_entries()) == Decimal("0.002")


def test_ownership_across_two_replicas(ledger_url: str) -> None:
    replica_a, replica_b = open_ledger(ledger_url), open_ledger(ledger_url)
    try:
        assert replica_a.record_owner(KIND_ANTHROPIC_BATCH, "msgbatch_A", "acme", "lab") == (
            "acme",
            "lab",
        )
        replica_b.record_owner(KIND_ANTHROPIC_BATCH, "msgbatch_B", "acme", "studio")
        replica_b.record_owner(KIND_OPENAI_RESPONSE, "resp_1", "acme", "studio")
        # the other replica sees each claim at once
        assert replica_b.owner_of(KIND_ANTHROPIC_BATCH, "msgbatch_A") == ("acme", "lab")
        assert replica_a.owner_of(KIND_ANTHROPIC_BATCH, "msgbatch_B") == ("acme", "studio")
        assert replica_a.owner_of(KIND_ANTHROPIC_BATCH, "resp_1") is None  # kinds are apart
        assert replica_a.owner_of(KIND_OPENAI_RESPONSE, "unknown") is None
        # first claim wins: another room cannot take over an object
        assert replica_b.record_owner(KIND_ANTHROPIC_BATCH, "msgbatch_A", "acme", "studio") == (
            "acme",
            "lab",
        )
        assert replica_a.owned_ids(KIND_ANTHROPIC_BATCH, "acme", "lab") == {"msgbatch_A"}
        assert replica_a.owned_ids(KIND_ANTHROPIC_BATCH, "acme", "studio") == {"msgbatch_B"}
        assert replica_b.owned_ids(KIND_OPENAI_RESPONSE, "acme", "studio") == {"resp_1"}
    finally:
        replica_a.close()
        replica_b.close()


def test_ownership_is_durable_across_reopen(ledger_url: str) -> None:
    first = open_ledger(ledger_url)
    first.record_owner(KIND_OPENAI_RESPONSE, "resp_9", "acme", "lab")
    first.close()
    again = open_ledger(ledger_url)
    try:
        assert again.owner_of(KIND_OPENAI_RESPONSE, "resp_9") == ("acme", "lab")
    finally:
        again.close()


def test_close_flushes_everything_emitted(ledger_url: str) -> None:
    ledger = open_ledger(ledger_url)
    for _ in range(300):
        ledger.emit(make_record())
    ledger.close()
    with pytest.raises(LedgerClosed):
        ledger.submit(make_record()).result(1)
    reopened = open_ledger(ledger_url)
    try:
        assert len(list(reopened.query_records())) == 300
    finally:
        reopened.close()


def test_flush_waits_for_earlier_records(ledger) -> None:
    for _ in range(50):
        ledger.emit(make_record())
    assert ledger.flush(30)
    assert len(list(ledger.query_records())) == 50


def test_query_filters_time_range_room_and_project(ledger) -> None:
    for at, room, project in [
        (T0, "lab", "acme"),
        (T0 + 10, "lab", "acme"),
        (T0 + 20, "studio", "acme"),
        (T0 + 30, "lab", "globex"),
    ]:
        ledger.emit(make_record(at=at, room=room, project=project))
    ledger.flush(30)
    assert len(list(ledger.query_records(T0, T0 + 20))) == 2  # until is exclusive
    assert len(list(ledger.query_records(room="lab"))) == 3
    assert len(list(ledger.query_records(room="lab", project="acme"))) == 2
    assert len(list(ledger.query_entries(since=T0 + 5, project="acme"))) == 2


def test_records_without_principal_or_cost(ledger) -> None:
    rejected = make_record(
        principal=None,
        outcome=Outcome.REJECTED,
        status=401,
        reject_reason="invalid_token",
        cost=None,
        usage=Usage(),
        model="bad\x00model",  # NUL reaches text columns from client JSON; PostgreSQL refuses it
    )
    ledger.submit(rejected).result(10)
    (entry,) = ledger.query_entries()
    assert entry.project is None and entry.cost is None and entry.outcome == "rejected"
    (stored,) = ledger.query_records()
    assert stored["model"] == "bad\x00model"  # the lossless JSON copy keeps it


def test_throughput_sanity(ledger) -> None:
    """Thousands of records go through group commit without one fsync each (not a timing
    assertion: bench/bench_ledger.py measures)."""
    futures = [ledger.submit(make_record()) for _ in range(3000)]
    for future in futures:
        future.result(120)
    assert len(list(ledger.query_records())) == 3000


def test_open_ledger_urls(tmp_path: Path) -> None:
    for text in (str(tmp_path / "a.db"), f"sqlite://{tmp_path}/b.db"):
        ledger = open_ledger(text)
        assert isinstance(ledger, SqliteLedger)
        ledger.close()
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()
    with pytest.raises(ValueError, match="mysql"):
        open_ledger("mysql://x/y")


def test_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    import sqlite3

    open_ledger(tmp_path / "w.db").close()
    mode = sqlite3.connect(tmp_path / "w.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_line_items_without_batch_id_keep_their_usage(ledger) -> None:
    """Only lines that can be de-duplicated (a batch id and a project) move to batch_lines; a
    record with line items but neither is counted from its own totals."""
    record = batch_record("ignored", ["a", "b"])
    record = make_record(line_items=record.line_items, cost="0.002", batch_id=None)
    ledger.submit(record).result(10)
    (entry,) = ledger.query_entries()
    assert entry.cost == Decimal("0.002") and entry.tokens["input_tokens"] == 100


def test_a_record_the_database_refuses_fails_alone(ledger) -> None:
    """A batch the database rejects is retried record by record: the others are stored."""
    good = [make_record() for _ in range(3)]
    bad = make_record(usage=Usage(input_tokens=2**70))  # beyond BIGINT in both databases
    futures = [ledger.submit(good[0]), ledger.submit(bad), ledger.submit(good[1])]
    assert futures[1].exception(30) is not None
    assert futures[0].result(30) is None and futures[2].result(30) is None
    ledger.submit(good[2]).result(30)  # and the ledger goes on
    assert {r["id"] for r in ledger.query_records()} == {r.id for r in good}


def test_wait_durable_from_async_code(ledger) -> None:
    import anyio

    from meshproxy.contrib.ledger import wait_durable

    record = make_record(id="async-1")

    async def main() -> None:
        await wait_durable(ledger.submit(record))

    anyio.run(main)
    assert [r["id"] for r in ledger.query_records()] == ["async-1"]
