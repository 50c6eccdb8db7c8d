"""The ledger's tables and the mapping between `UsageRecord` and rows, shared by every backend.

Owns: the DDL (one dialect switch for the few types SQLite and PostgreSQL spell differently), the
column lists, `record_row` (a record -> the row written, every field of the record), the rows of
de-duplicated batch lines, and `UsageEntry`, the unit reports add up.

Does not own: connections, threads or transactions (the backends), or what a report shows.

Money is stored exactly: TEXT decimal strings in SQLite (whose NUMERIC affinity would turn
"0.0012" into a float) and NUMERIC in PostgreSQL; readers always go through `Decimal(str(x))`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs

from meshproxy_core.records import LineItem, Usage, UsageRecord, record_to_dict

__all__ = [
    "BATCH_LINE_COLUMNS",
    "RECORD_COLUMNS",
    "USAGE_COLUMNS",
    "Dialect",
    "UsageEntry",
    "batch_line_rows",
    "ddl",
    "entry_from_line_row",
    "entry_from_record_row",
    "record_row",
]

SCHEMA_VERSION = 1

# Every counted quantity of `Usage`, one column each, in both the record and the batch line
# tables. `images` (a tuple of (size, quality, count)) is stored as JSON plus its total.
USAGE_COLUMNS: tuple[str, ...] = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "input_image_tokens",
    "output_tokens",
    "reasoning_tokens",
    "output_audio_tokens",
    "output_image_tokens",
    "image_count",
    "input_characters",
    "audio_seconds",
    "web_search_requests",
    "web_fetch_requests",
    "code_execution_requests",
)

RECORD_COLUMNS: tuple[str, ...] = (
    "id",
    "request_id",
    "provider",
    "endpoint",
    "method",
    "path",
    "status",
    "outcome",
    "ending",
    "started_at",
    "ended_at",
    "project",
    "room",
    "participant",
    "session",
    "role",
    "api_key_id",
    "model",
    "response_model",
    "stream",
    *USAGE_COLUMNS,
    "images_json",
    "usage_source",
    "partial",
    "service_tier",
    "error_type",
    "error_code",
    "reject_reason",
    "raw_usage_json",
    "cost_total",
    "cost_components_json",
    "currency",
    "price_version",
    "cost_incomplete",
    "cost_missing_units_json",
    "upstream_request_id",
    "batch_id",
    "batch_custom_ids_json",
    "line_items_json",
    # The whole record as `record_to_dict` JSON: the lossless copy. The columns above exist so
    # that SQL can filter and add up; this one exists so nothing is ever lost to the mapping.
    "record_json",
)

BATCH_LINE_COLUMNS: tuple[str, ...] = (
    "project",
    "batch_id",
    "custom_id",
    "record_id",
    "model",
    *USAGE_COLUMNS,
    "cost_total",
    "currency",
)


@attrs.frozen
class Dialect:
    """The few spellings the two databases disagree on."""

    name: str
    param: str  # the DB-API placeholder: "?" or "%s"
    money: str  # column type for exact money
    real: str  # column type for seconds since the epoch and audio seconds


SQLITE = Dialect(name="sqlite", param="?", money="TEXT", real="REAL")
POSTGRES = Dialect(name="postgresql", param="%s", money="NUMERIC", real="DOUBLE PRECISION")

_TEXT_COLUMNS = frozenset(
    {
        "id",
        "request_id",
        "provider",
        "endpoint",
        "method",
        "path",
        "outcome",
        "ending",
        "project",
        "room",
        "participant",
        "session",
        "role",
        "api_key_id",
        "model",
        "response_model",
        "images_json",
        "usage_source",
        "service_tier",
        "error_type",
        "error_code",
        "reject_reason",
        "raw_usage_json",
        "cost_components_json",
        "currency",
        "price_version",
        "cost_missing_units_json",
        "upstream_request_id",
        "batch_id",
        "batch_custom_ids_json",
        "line_items_json",
        "record_json",
        "custom_id",
        "record_id",
    }
)
_REAL_COLUMNS = frozenset({"started_at", "ended_at", "audio_seconds"})
_MONEY_COLUMNS = frozenset({"cost_total"})


def _column_type(dialect: Dialect, column: str) -> str:
    if column in _TEXT_COLUMNS:
        return "TEXT"
    if column in _REAL_COLUMNS:
        # audio_seconds is a Decimal in the record; stored exactly like money
        return dialect.money if column == "audio_seconds" else dialect.real
    if column in _MONEY_COLUMNS:
        return dialect.money
    # counts, status, and flags stored as 0/1 (so both databases take the same Python ints)
    return "BIGINT"


def ddl(dialect: Dialect) -> list[str]:
    """CREATE statements, each safe to run again (IF NOT EXISTS)."""
    record_cols = ",\n  ".join(
        f"{c} {_column_type(dialect, c)}" + (" NOT NULL" if c in ("id", "ended_at") else "")
        for c in RECORD_COLUMNS
    )
    line_cols = ",\n  ".join(
        f"{c} {_column_type(dialect, c)}"
        + (" NOT NULL" if c in ("project", "batch_id", "custom_id") else "")
        for c in BATCH_LINE_COLUMNS
    )
    return [
        f"CREATE TABLE IF NOT EXISTS usage_records (\n  {record_cols},\n  PRIMARY KEY (id)\n)",
        "CREATE INDEX IF NOT EXISTS usage_records_ended_at ON usage_records (ended_at)",
        "CREATE INDEX IF NOT EXISTS usage_records_room ON usage_records (project, room, ended_at)",
        # A batch request (custom_id) of a batch is billed once per project, however many times
        # its results are downloaded: the primary key is the de-duplication.
        f"CREATE TABLE IF NOT EXISTS batch_lines (\n  {line_cols},\n"
        "  PRIMARY KEY (project, batch_id, custom_id)\n)",
        "CREATE INDEX IF NOT EXISTS batch_lines_record ON batch_lines (record_id)",
        # Which room created a stored object (an Anthropic message batch, an OpenAI response).
        # First writer wins; a later claim by another room does not change it.
        "CREATE TABLE IF NOT EXISTS object_owners (\n"
        "  kind TEXT NOT NULL,\n  object_id TEXT NOT NULL,\n  project TEXT NOT NULL,\n"
        f"  room TEXT NOT NULL,\n  created_at {dialect.real} NOT NULL,\n"
        "  PRIMARY KEY (kind, object_id)\n)",
        "CREATE INDEX IF NOT EXISTS object_owners_room ON object_owners (kind, project, room)",
    ]


def insert_sql(dialect: Dialect, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """An INSERT that stores a row once: a second insert of the same key does nothing. Both
    SQLite (3.24+) and PostgreSQL spell this the same way."""
    params = ", ".join(dialect.param for _ in columns)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({params}) "
        f"ON CONFLICT ({', '.join(key)}) DO NOTHING"
    )


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _usage_values(usage: Usage) -> list[Any]:
    return [
        usage.input_tokens,
        usage.cache_read_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        usage.input_audio_tokens,
        usage.input_image_tokens,
        usage.output_tokens,
        usage.reasoning_tokens,
        usage.output_audio_tokens,
        usage.output_image_tokens,
        usage.image_total(),
        usage.input_characters,
        str(usage.audio_seconds),
        usage.web_search_requests,
        usage.web_fetch_requests,
        usage.code_execution_requests,
    ]


def record_row(record: UsageRecord) -> tuple[Any, ...]:
    """The row of `usage_records` for `record`, in `RECORD_COLUMNS` order."""
    data = record_to_dict(record)
    principal = record.principal
    cost = record.cost
    row: list[Any] = [
        record.id,
        record.request_id,
        record.provider,
        record.endpoint,
        record.method,
        record.path,
        record.status,
        record.outcome.value,
        record.ending.value,
        record.started_at,
        record.ended_at,
        principal.project if principal else None,
        principal.room if principal else None,
        principal.participant if principal else None,
        principal.session if principal else None,
        principal.role if principal else None,
        principal.api_key_id if principal else None,
        record.model,
        record.response_model,
        int(record.stream),
        *_usage_values(record.usage),
        _json(data["usage"]["images"]),
        record.usage_source.value,
        int(record.partial),
        record.service_tier,
        record.error_type,
        record.error_code,
        record.reject_reason,
        _json(record.raw_usage),
        str(cost.total) if cost else None,
        _json(data["cost"]["components"]) if cost else None,
        cost.currency if cost else None,
        cost.price_version if cost else None,
        int(cost.incomplete) if cost else None,
        _json(list(cost.missing_units)) if cost else None,
        record.upstream_request_id,
        record.batch_id,
        _json(list(record.batch_custom_ids)),
        _json(data["line_items"]),
        _json(data),
    ]
    assert len(row) == len(RECORD_COLUMNS)
    return tuple(row)


def batch_line_rows(record: UsageRecord) -> list[tuple[Any, ...]]:
    """Rows of `batch_lines` for a batch results record: one per line item (custom_id). Empty
    when the record has no batch id or no project (nothing to de-duplicate against)."""
    if not record.batch_id or not record.line_items or record.principal is None:
        return []
    return [_line_row(record, item) for item in record.line_items]


def _line_row(record: UsageRecord, item: LineItem) -> tuple[Any, ...]:
    assert record.principal is not None and record.batch_id is not None
    return (
        record.principal.project,
        record.batch_id,
        item.key,
        record.id,
        item.model,
        *_usage_values(item.usage),
        str(item.cost.total) if item.cost else None,
        item.cost.currency if item.cost else None,
    )


@attrs.frozen
class UsageEntry:
    """One addend of a report: a plain record, or one batch line counted for the first time.

    A batch results record itself contributes an entry with `requests=1` and zero usage; its
    lines (those this record was the first to store) carry the usage and cost, with
    `requests=0`. So downloading results twice counts the request twice but the money once."""

    record_id: str
    at: float  # the record's ended_at, seconds since the epoch
    project: str | None
    room: str | None
    participant: str | None
    session: str | None
    provider: str
    model: str | None
    outcome: str
    requests: int
    tokens: dict[str, int]  # USAGE_COLUMNS token and count columns -> value
    audio_seconds: Decimal
    cost: Decimal | None

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d")


# The SELECT lists the readers use; the entry builders below index rows by these positions.
ENTRY_RECORD_SELECT = (
    "id, ended_at, project, room, participant, session, provider, "
    "COALESCE(response_model, model), outcome, "
    # 1 when the record's lines were stored in batch_lines (see `batch_line_rows`)
    "CASE WHEN batch_id IS NOT NULL AND project IS NOT NULL AND line_items_json <> '[]' "
    "THEN 1 ELSE 0 END, " + ", ".join(USAGE_COLUMNS) + ", cost_total"
)
ENTRY_LINE_SELECT = (
    "l.record_id, r.ended_at, r.project, r.room, r.participant, r.session, r.provider, "
    "l.model, r.outcome, " + ", ".join(f"l.{c}" for c in USAGE_COLUMNS) + ", l.cost_total"
)

_COUNT_COLUMNS = tuple(c for c in USAGE_COLUMNS if c != "audio_seconds")


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _split_usage(values: Sequence[Any]) -> tuple[dict[str, int], Decimal]:
    tokens: dict[str, int] = {}
    seconds = Decimal(0)
    for column, value in zip(USAGE_COLUMNS, values, strict=True):
        if column == "audio_seconds":
            seconds = _decimal(value) or Decimal(0)
        else:
            tokens[column] = int(value or 0)
    return tokens, seconds


def _entry(
    head: Sequence[Any],
    *,
    requests: int,
    tokens: dict[str, int],
    seconds: Decimal,
    cost: Decimal | None,
) -> UsageEntry:
    """An entry from the nine identifying columns both row kinds start with."""
    record_id, at, project, room, participant, session, provider, model, outcome = head
    return UsageEntry(
        record_id=record_id,
        at=float(at),
        project=project,
        room=room,
        participant=participant,
        session=session,
        provider=provider,
        model=model,
        outcome=outcome,
        requests=requests,
        tokens=tokens,
        audio_seconds=seconds,
        cost=cost,
    )


def entry_from_record_row(row: Sequence[Any]) -> UsageEntry:
    tokens, seconds = _split_usage(row[10 : 10 + len(USAGE_COLUMNS)])
    cost = _decimal(row[10 + len(USAGE_COLUMNS)])
    if row[9]:  # has batch lines
        # the lines carry this record's usage, counted once each across downloads
        tokens = dict.fromkeys(_COUNT_COLUMNS, 0)
        seconds, cost = Decimal(0), None
    return _entry(row[:9], requests=1, tokens=tokens, seconds=seconds, cost=cost)


def entry_from_line_row(row: Sequence[Any]) -> UsageEntry:
    tokens, seconds = _split_usage(row[9 : 9 + len(USAGE_COLUMNS)])
    cost = _decimal(row[9 + len(USAGE_COLUMNS)])
    return _entry(row[:9], requests=0, tokens=tokens, seconds=seconds, cost=cost)
