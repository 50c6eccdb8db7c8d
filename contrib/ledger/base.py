"""The ledger machinery both backends share: the queue, the one writer thread, group commit,
futures that resolve after COMMIT, flush and close, ownership and report queries.

Owns: when rows are written (in batches, off the request path) and what "written" means (the
transaction holding the record has committed). A backend only says how to connect, how to start
a write transaction, and which SQL dialect it speaks.

Does not own: the schema (schema.py) or a particular database (sqlite.py, postgres.py).

Durability bound: `submit` returns a future that resolves only after the COMMIT that stored the
record. An adapter that awaits it before sending the last byte of a response guarantees that a
client which saw its response end has its record in the ledger, even if the proxy is killed
with SIGKILL right after. What SIGKILL can lose is exactly the records whose futures had not
resolved: requests still in flight, whose clients never saw a complete response.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import attrs

from meshproxy_core.records import UsageRecord

from . import schema

__all__ = ["LedgerBase", "LedgerClosed"]

log = logging.getLogger("meshproxy.ledger")

MAX_BATCH = 1000  # records per transaction; bounds one commit's latency


class LedgerClosed(RuntimeError):
    """The ledger was closed; it accepts no more records."""


@attrs.frozen
class _Item:
    record: UsageRecord | None  # None: a flush marker, resolved once everything before it is
    future: Future[None]


_STOP = object()


class LedgerBase:
    """One writer thread per ledger instance; any number of instances (replicas) may share one
    database. Subclasses implement `_connect`, `_begin` and set `dialect`."""

    dialect: schema.Dialect

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        # Ownership calls and queries come from other threads; one short-lived-lock connection
        # serves the synchronous ownership calls so they never wait behind a write batch's queue.
        self._sync_lock = threading.Lock()
        self._sync_conn: Any = None
        self._create_schema()
        self._writer = threading.Thread(target=self._run, name="meshproxy-ledger", daemon=True)
        self._writer.start()

    # -- backend hooks ------------------------------------------------------------------------

    def _connect(self, *, autocommit: bool) -> Any:
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        """Start a write transaction on a non-autocommit connection."""
        raise NotImplementedError

    def _create_schema(self) -> None:
        raise NotImplementedError

    def _clean(self, row: Sequence[Any]) -> Sequence[Any]:
        """Adapt a row's values to what the database accepts (PostgreSQL refuses NUL in text)."""
        return row

    # -- the UsageSink and the write path -----------------------------------------------------

    def submit(self, record: UsageRecord) -> Future[None]:
        """Queue `record`; the future resolves after the COMMIT that stored it (or that found
        it already stored: writes are idempotent by record id), or fails with the error."""
        future: Future[None] = Future()
        if self._closed:
            future.set_exception(LedgerClosed("ledger is closed"))
            return future
        self._queue.put(_Item(record, future))
        return future

    def emit(self, record: UsageRecord) -> None:
        """UsageSink: submit and do not wait. Write failures are logged by the writer; a record
        emitted after `close` is logged here (it is lost, and an operator should know)."""
        future = self.submit(record)
        if self._closed and future.done():
            log.warning("ledger is closed; usage record %s was not stored", record.id)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record submitted before this call is committed (or failed).
        True when that happened within `timeout` seconds."""
        marker: Future[None] = Future()
        self._queue.put(_Item(None, marker))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                marker.result(0.1)
                return True
            except TimeoutError:
                # a marker queued behind close()'s STOP is never answered: a stopped writer
                # has written all it ever will
                if not self._writer.is_alive():
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, stop the writer and close connections. Records submitted afterwards fail with
        `LedgerClosed`. Safe to call twice."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._writer.join(timeout)
        with self._sync_lock:
            if self._sync_conn is not None:
                self._sync_conn.close()
                self._sync_conn = None

    def __enter__(self) -> LedgerBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        conn: Any = None
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[_Item] = []
            if first is _STOP:
                stopping = True
            else:
                assert isinstance(first, _Item)
                batch.append(first)
            # Group commit: everything that queued up while the last commit ran goes into this
            # transaction, so one fsync serves many requests under load.
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    continue
                assert isinstance(item, _Item)
                batch.append(item)
            if batch:
                conn = self._write_with_retry(conn, batch)
        self._drop(conn)
        # anything still queued after STOP was submitted concurrently with close()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Item):
                _fail(item.future, LedgerClosed("ledger closed before write"))

    def _write_with_retry(self, conn: Any, batch: list[_Item]) -> Any:
        """Write `batch`, resolve its futures, and return the connection to use next.

        Writes are idempotent (ON CONFLICT DO NOTHING), so retrying is always safe: a failed
        batch is retried once on a fresh connection (the server restarted, a replica failed
        over), then record by record, so that one record the database refuses fails alone."""
        pending = [item for item in batch if item.record is not None]
        for attempt in range(2):
            try:
                if conn is None:
                    conn = self._connect(autocommit=False)
                self._write_batch(conn, pending)
                break
            except Exception:
                log.warning("ledger write of %d record(s) failed", len(pending), exc_info=True)
                conn = self._drop(conn)
                if attempt == 1:
                    for item in pending:
                        if _settled(item.future):
                            continue
                        try:
                            if conn is None:
                                conn = self._connect(autocommit=False)
                            self._write_batch(conn, [item])
                        except Exception as exc:
                            assert item.record is not None
                            log.exception("ledger could not store record %s", item.record.id)
                            conn = self._drop(conn)
                            _fail(item.future, exc)
        for item in batch:
            if item.record is None:  # flush markers: everything before them is settled
                _resolve(item.future)
        return conn

    def _drop(self, conn: Any) -> Any:
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("closing a failed ledger connection", exc_info=True)
        return None

    def _write_batch(self, conn: Any, batch: list[_Item]) -> None:
        """Write the records of `batch` in one transaction; resolve their futures after COMMIT.
        A record that cannot be mapped to a row fails alone, before the transaction."""
        records = [item for item in batch if item.record is not None and not _settled(item.future)]
        good: list[_Item] = []
        record_rows: list[Sequence[Any]] = []
        line_rows: list[Sequence[Any]] = []
        for item in records:
            assert item.record is not None
            try:
                rows = schema.record_row(item.record), schema.batch_line_rows(item.record)
            except Exception as exc:  # one unmappable record must not sink its batch
                log.exception("ledger cannot map record %r", item.record.id)
                _fail(item.future, exc)
                continue
            good.append(item)
            record_rows.append(self._clean(rows[0]))
            line_rows.extend(self._clean(row) for row in rows[1])
        if record_rows:
            cur = conn.cursor()
            try:
                self._begin(conn)
                cur.executemany(self._insert_record, record_rows)
                # Lines after records, in submission order, in the same transaction: the first
                # record to carry a (project, batch, custom_id) owns it; later ones insert
                # nothing. A duplicate record (same id) brings the same keys, so also nothing.
                if line_rows:
                    cur.executemany(self._insert_line, line_rows)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                cur.close()
        for item in good:
            _resolve(item.future)

    @property
    def _insert_record(self) -> str:
        return schema.insert_sql(self.dialect, "usage_records", schema.RECORD_COLUMNS, ("id",))

    @property
    def _insert_line(self) -> str:
        return schema.insert_sql(
            self.dialect,
            "batch_lines",
            schema.BATCH_LINE_COLUMNS,
            ("project", "batch_id", "custom_id"),
        )

    # -- ownership (synchronous; adapters call these from a worker thread) --------------------

    def _sync(self) -> Any:
        if self._closed:
            raise LedgerClosed("ledger is closed")
        if self._sync_conn is None:
            self._sync_conn = self._connect(autocommit=True)
        return self._sync_conn

    def _sync_execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._sync_lock:
            conn = self._sync()
            try:
                cur = conn.cursor()
                try:
                    cur.execute(sql, self._clean(params))
                    return list(cur.fetchall()) if cur.description else []
                finally:
                    cur.close()
            except Exception:
                # a broken connection (server restart) is replaced on the next call
                self._sync_conn = self._drop(conn)
                raise

    def record_owner(self, kind: str, object_id: str, project: str, room: str) -> tuple[str, str]:
        """Store that (project, room) created object `object_id` of `kind`, durably (committed
        on return). The first claim wins: returns the owner now on record, which is not the
        caller when another room claimed the id first."""
        p = self.dialect.param
        self._sync_execute(
            "INSERT INTO object_owners (kind, object_id, project, room, created_at) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (kind, object_id) DO NOTHING",
            (kind, object_id, project, room, time.time()),
        )
        owner = self.owner_of(kind, object_id)
        assert owner is not None
        return owner

    def owner_of(self, kind: str, object_id: str) -> tuple[str, str] | None:
        """(project, room) that created the object, or None when no room claimed it."""
        p = self.dialect.param
        rows = self._sync_execute(
            f"SELECT project, room FROM object_owners WHERE kind = {p} AND object_id = {p}",
            (kind, object_id),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def owned_ids(self, kind: str, project: str, room: str) -> set[str]:
        p = self.dialect.param
        rows = self._sync_execute(
            f"SELECT object_id FROM object_owners WHERE kind = {p} AND project = {p} "
            f"AND room = {p}",
            (kind, project, room),
        )
        return {row[0] for row in rows}

    # -- queries for reports ------------------------------------------------------------------

    def _where(
        self,
        prefix: str,
        since: float | None,
        until: float | None,
        room: str | None,
        project: str | None,
    ) -> tuple[str, list[Any]]:
        p = self.dialect.param
        clauses: list[str] = []
        params: list[Any] = []
        for column, op, value in (
            ("ended_at", ">=", since),
            ("ended_at", "<", until),
            ("room", "=", room),
            ("project", "=", project),
        ):
            if value is not None:
                clauses.append(f"{prefix}{column} {op} {p}")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _select(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        # A connection per query: a report may iterate slowly, and must not hold the
        # ownership connection's lock meanwhile.
        conn = self._connect(autocommit=True)
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            while rows := cur.fetchmany(2000):
                yield from rows
            cur.close()
        finally:
            conn.close()

    def query_entries(
        self,
        since: float | None = None,
        until: float | None = None,
        *,
        room: str | None = None,
        project: str | None = None,
    ) -> Iterator[schema.UsageEntry]:
        """The addends of a usage report over records that ended in [since, until): one entry
        per record, plus one per batch line that record was the first to store."""
        where, params = self._where("", since, until, room, project)
        sql = f"SELECT {schema.ENTRY_RECORD_SELECT} FROM usage_records{where} ORDER BY ended_at"
        for row in self._select(sql, params):
            yield schema.entry_from_record_row(row)
        where, params = self._where("r.", since, until, room, project)
        sql = (
            f"SELECT {schema.ENTRY_LINE_SELECT} FROM batch_lines l "
            f"JOIN usage_records r ON r.id = l.record_id{where} ORDER BY r.ended_at"
        )
        for row in self._select(sql, params):
            yield schema.entry_from_line_row(row)

    def query_records(
        self,
        since: float | None = None,
        until: float | None = None,
        *,
        room: str | None = None,
        project: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every stored record in range, as the `record_to_dict` dict it was written from."""

        where, params = self._where("", since, until, room, project)
        sql = f"SELECT record_json FROM usage_records{where} ORDER BY ended_at, id"
        for (text,) in self._select(sql, params):
            yield json.loads(text)

    def count_batch_lines(self, project: str, batch_id: str) -> int:
        p = self.dialect.param
        rows = list(
            self._select(
                f"SELECT COUNT(*) FROM batch_lines WHERE project = {p} AND batch_id = {p}",
                (project, batch_id),
            )
        )
        return int(rows[0][0])


# A waiter that gives up (its task was cancelled, e.g. the client left) may cancel the future
# it awaited; the record must still be written, and resolving must not fail the batch.
def _settled(future: Future[None]) -> bool:
    """Resolved by the writer already (a cancelled future was not: it is still written)."""
    return future.done() and not future.cancelled()


def _resolve(future: Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
