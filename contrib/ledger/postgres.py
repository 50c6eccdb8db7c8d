"""The PostgreSQL ledger: one database shared by several proxy replicas.

Owns: connecting with psycopg (3), creating the schema under an advisory lock (replicas starting
together must not race on CREATE TABLE), and adapting values PostgreSQL refuses (NUL in text).

Does not own: the write path or queries (base.py), the schema (schema.py), the server.

Semantics are those of the SQLite ledger: the same tables, idempotent writes by record id, batch
lines de-duplicated by their primary key, first-writer-wins ownership. A COMMIT with the default
`synchronous_commit = on` is durable when it returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from . import schema
from .base import LedgerBase

__all__ = ["PostgresLedger"]

_SCHEMA_LOCK = 0x6D657368  # "mesh": the advisory lock key serialising schema creation


class PostgresLedger(LedgerBase):
    dialect = schema.POSTGRES

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:  # the `ledger-postgres` extra
            raise RuntimeError(
                "a postgresql:// ledger needs psycopg: pip install 'meshproxy[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.url = url
        super().__init__()

    def __repr__(self) -> str:
        # never print the password a URL may carry
        return "PostgresLedger(<url>)"

    def _connect(self, *, autocommit: bool) -> Any:
        return self._psycopg.connect(self.url, autocommit=autocommit)

    def _begin(self, conn: Any) -> None:
        # psycopg opens a transaction implicitly on the first statement of a non-autocommit
        # connection; nothing to do.
        return None

    def _create_schema(self) -> None:
        with self._connect(autocommit=False) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in schema.ddl(self.dialect):
                conn.execute(statement)
            conn.commit()

    def _clean(self, row: Sequence[Any]) -> Sequence[Any]:
        return tuple(
            value.replace("\x00", "\ufffd") if isinstance(value, str) else value for value in row
        )

    def _select(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        # A server-side (named) cursor streams a large ledger to a report in chunks instead of
        # loading the whole result into memory; named cursors need a transaction.
        conn = self._connect(autocommit=False)
        try:
            with conn.cursor(name="meshproxy_report") as cur:
                cur.itersize = 2000
                cur.execute(sql, params)
                yield from cur
            conn.rollback()
        finally:
            conn.close()
