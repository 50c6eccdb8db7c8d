"""The durable usage ledger: every `UsageRecord`, one row each, in SQLite or PostgreSQL.

Owns: the `Ledger` interface and `open_ledger`, which picks a backend from a path or URL:

  ./usage.sqlite3, sqlite:///abs/path.sqlite3, sqlite:relative.sqlite3  -> SqliteLedger
  postgresql://user@host/db, postgres://...                             -> PostgresLedger

Does not own: which records are produced (the core), reports (adapters.report_cli), metrics.
See docs/ledger.md for the schema, the durability bound, idempotency, batch de-duplication
and object ownership.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from meshproxy_core.records import UsageRecord

from .base import LedgerBase, LedgerClosed
from .schema import UsageEntry
from .sqlite import DEFAULT_PATH, SqliteLedger

__all__ = [
    "DEFAULT_PATH",
    "Ledger",
    "LedgerBase",
    "LedgerClosed",
    "SqliteLedger",
    "UsageEntry",
    "open_ledger",
    "wait_durable",
]

# Object kinds for ownership, named here so adapters and tests agree on the strings.
KIND_ANTHROPIC_BATCH = "anthropic.message_batch"
KIND_OPENAI_RESPONSE = "openai.response"


class Ledger(Protocol):
    def submit(self, record: UsageRecord) -> Future[None]: ...
    def emit(self, record: UsageRecord) -> None: ...
    def flush(self, timeout: float | None = None) -> bool: ...
    def close(self, timeout: float | None = 30.0) -> None: ...
    def record_owner(
        self, kind: str, object_id: str, project: str, room: str
    ) -> tuple[str, str]: ...
    def owner_of(self, kind: str, object_id: str) -> tuple[str, str] | None: ...
    def owned_ids(self, kind: str, project: str, room: str) -> set[str]: ...
    def query_entries(
        self,
        since: float | None = None,
        until: float | None = None,
        *,
        room: str | None = None,
        project: str | None = None,
    ) -> Iterator[UsageEntry]: ...
    def query_records(
        self,
        since: float | None = None,
        until: float | None = None,
        *,
        room: str | None = None,
        project: str | None = None,
    ) -> Iterator[dict[str, Any]]: ...


def open_ledger(url_or_path: str | Path | None = None) -> LedgerBase:
    """Open (creating if needed) the ledger at `url_or_path`; None is the default SQLite file
    under the working directory."""
    if url_or_path is None:
        return SqliteLedger(DEFAULT_PATH)
    if isinstance(url_or_path, Path):
        return SqliteLedger(url_or_path)
    text = url_or_path
    if text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresLedger

        return PostgresLedger(text)
    if text.startswith("sqlite:///"):
        return SqliteLedger(text[len("sqlite://") :])  # keeps the leading "/": absolute
    if text.startswith("sqlite:"):
        return SqliteLedger(text[len("sqlite:") :])
    if "://" in text:
        raise ValueError(f"unsupported ledger URL scheme: {text.split('://', 1)[0]!r}")
    return SqliteLedger(text)


async def wait_durable(future: Future[None]) -> None:
    """Await a `submit` future from async code without blocking the event loop: what an async
    adapter does before it sends the last byte of a response. Raises what the write raised."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio under anyio): wait in a worker thread
        import anyio

        await anyio.to_thread.run_sync(future.result)
        return
    await asyncio.wrap_future(future)
