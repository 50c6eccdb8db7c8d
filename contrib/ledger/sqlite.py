"""The SQLite ledger: the default, one file on local disk.

Owns: opening the file in WAL mode with `synchronous=FULL` (a COMMIT has reached the disk before
it returns, so an acknowledged record survives SIGKILL and power loss), creating the schema, and
the busy timeout that lets several processes (replicas on one host) share the file.

Does not own: the write path or queries (base.py), the schema (schema.py).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from . import schema
from .base import LedgerBase

__all__ = ["DEFAULT_PATH", "SqliteLedger"]

DEFAULT_PATH = "meshproxy-ledger.sqlite3"  # relative: under the working directory
BUSY_TIMEOUT_MS = 30_000


class SqliteLedger(LedgerBase):
    dialect = schema.SQLITE

    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__()

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    def _connect(self, *, autocommit: bool) -> Any:
        # isolation_level=None: no implicit transactions; the writer says BEGIN itself, so a
        # batch is exactly one transaction and one fsync.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _begin(self, conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so a busy database waits here (busy_timeout)
        # instead of failing half way through the batch.
        conn.execute("BEGIN IMMEDIATE")

    def _create_schema(self) -> None:
        conn = self._connect(autocommit=True)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in schema.ddl(self.dialect):
                conn.execute(statement)
            conn.execute("COMMIT")
        finally:
            conn.close()
