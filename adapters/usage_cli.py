"""`meshproxy usage`: offline accounting of logs.

Owns: the command's arguments, reading files and stdin, telling the formats apart (`--format
auto`), writing records as JSONL and the summary table, reporting bad entries as
`file:line: reason` on stderr, and the exit status (0: something was accounted, 1: nothing was,
2: the command line or a file could not be used).

Does not own: any parsing or accounting. Every exchange goes through
`meshproxy_core.offline.account_exchange`, the same state machine the live proxy runs, with an
offline configuration whose provider keys are placeholders (nothing is ever sent anywhere).

    meshproxy usage session.har --summary
    meshproxy usage capture.jsonl --out records.jsonl --summary
    meshproxy usage --format plain --endpoint chat --model gpt-4o-mini answer.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, BinaryIO, TextIO

import attrs

from meshproxy_core.capture import CapturedExchange
from meshproxy_core.config import ProxyConfig
from meshproxy_core.exchange import Proxy
from meshproxy_core.offline import (
    ParseProblem,
    PlainInputError,
    SummaryRow,
    account_exchange,
    combine_rows,
    read_capture,
    read_har,
    read_plain,
    resolve_endpoint,
    summarise,
)
from meshproxy_core.pricing import PriceBook, PriceBookError
from meshproxy_core.records import UsageRecord, record_to_dict

__all__ = ["add_usage_command", "format_summary", "run_usage"]

FORMATS = ("auto", "har", "capture", "plain")

# Keys only the Forward step reads; offline, nothing is forwarded.
_OFFLINE_ENV = {
    "OPENAI_API_KEY": "offline",
    "ANTHROPIC_API_KEY": "offline",
    "MESHAGENT_SECRET": "offline",
}
_STDIN = "-"


class _UsageError(Exception):
    """The command cannot run as asked: exit status 2."""


def add_usage_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `usage` on the `meshproxy` command's subparsers (`args.run(args)` runs it)."""
    parser = subparsers.add_parser(
        "usage",
        help="account usage offline from HAR files, capture logs or response bodies",
        description="Account usage offline: one JSON record per exchange, and a summary.",
    )
    _add_arguments(parser)
    parser.set_defaults(run=_run_from_main)
    return parser


def run_usage(
    argv: Sequence[str],
    stdout: TextIO,
    stderr: TextIO,
    *,
    stdin: BinaryIO | None = None,
) -> int:
    """Run `meshproxy usage` with these arguments and streams; returns the exit status."""
    parser = _Parser(prog="meshproxy usage", stderr=stderr)
    _add_arguments(parser)
    try:
        args = parser.parse_args(list(argv))
    except _ParserExit as exc:
        return exc.status
    return _run(args, stdin if stdin is not None else sys.stdin.buffer, stdout, stderr)


def _run_from_main(args: argparse.Namespace) -> int:
    return _run(args, sys.stdin.buffer, sys.stdout, sys.stderr)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="log files; '-' reads stdin")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="har, capture (the proxy's --capture log), plain (one response body or event "
        "stream), or auto: by extension and content (default)",
    )
    parser.add_argument("--provider", choices=("openai", "anthropic"), help="plain files only")
    parser.add_argument(
        "--endpoint",
        help="plain files only: an endpoint kind (chat.completions, messages...), a short name "
        "(chat, speech, transcriptions...) or a path (/v1/chat/completions)",
    )
    parser.add_argument("--model", help="plain files only: the model the request asked for")
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="write the records (JSONL) here, not to stdout"
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print totals by project/room/participant/model (to stderr, or to stdout with --out)",
    )
    parser.add_argument(
        "--prices", type=Path, metavar="FILE", help="TOML price overrides (docs/pricing.md)"
    )


class _ParserExit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An argument parser that writes to the given stream and returns instead of exiting, so
    `run_usage` can be called from tests and other programs."""

    def __init__(self, *, stderr: TextIO, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stderr = stderr

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        if message:
            self._stderr.write(message)

    def exit(self, status: int = 0, message: str | None = None) -> Any:  # type: ignore[override]
        if message:
            self._stderr.write(message)
        raise _ParserExit(status)


# -- the run -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace, stdin: BinaryIO, stdout: TextIO, stderr: TextIO) -> int:
    try:
        proxy = _offline_proxy(args.prices)
        if args.endpoint is not None:
            resolve_endpoint(args.endpoint, args.provider)  # a typo fails before any work
        _check_files(args.files)
        out_file = args.out.open("w", encoding="utf-8") if args.out is not None else None
    except (_UsageError, PlainInputError, OSError) as exc:
        stderr.write(f"meshproxy usage: {exc}\n")
        return 2
    records_out = out_file if out_file is not None else stdout
    records: list[UsageRecord] = []
    try:
        for name in args.files:
            for record in _account_file(proxy, args, name, stdin, stderr):
                records_out.write(_record_line(record))
                records.append(record)
    except (OSError, _UsageError) as exc:
        stderr.write(f"meshproxy usage: {exc}\n")
        return 2
    finally:
        if out_file is not None:
            out_file.close()
    if args.summary:
        table = stdout if out_file is not None else stderr
        table.write(format_summary(summarise(records)))
    return 0 if records else 1


def _offline_proxy(prices: Path | None) -> Proxy:
    book = PriceBook.default()
    if prices is not None:
        try:
            data = tomllib.loads(prices.read_text(encoding="utf-8"), parse_float=Decimal)
            # A whole config file works too: its [prices] table is the overrides.
            overrides = data.get("prices", data) if isinstance(data.get("prices"), dict) else data
            book = book.with_overrides(overrides)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, PriceBookError) as exc:
            raise _UsageError(f"cannot use prices from {prices}: {exc}") from exc
    return Proxy(ProxyConfig.from_mapping({}, _OFFLINE_ENV), prices=book)


def _check_files(names: Sequence[str]) -> None:
    if names.count(_STDIN) > 1:
        raise _UsageError("'-' (stdin) can be given once")
    for name in names:
        if name != _STDIN and not Path(name).is_file():
            raise _UsageError(f"no such file: {name}")


def _record_line(record: UsageRecord) -> str:
    # The live JSONL sink's shape, so one set of tools reads both.
    return json.dumps(record_to_dict(record), separators=(",", ":"), default=str) + "\n"


def _account_file(
    proxy: Proxy, args: argparse.Namespace, name: str, stdin: BinaryIO, stderr: TextIO
) -> Iterator[UsageRecord]:
    shown = "<stdin>" if name == _STDIN else name
    with _opened(name, stdin) as stream:
        head = _first_content_line(stream)
        fmt = args.format if args.format != "auto" else _sniff(name, head.lstrip())
        if fmt == "capture":
            # Streamed line by line: a capture log can be far larger than memory.
            # Split the head as readline split the stream, so line numbers stay true.
            lines = itertools.chain(io.BytesIO(head).readlines(), stream)
            items = read_capture(lines)
        else:
            data = head + stream.read()
            if fmt == "auto":
                fmt = _sniff_whole(data)
            items = _read_whole(fmt, data, args)
        for line, item in items:
            if isinstance(item, ParseProblem):
                where = f"{shown}:{line}" if line else shown
                stderr.write(f"{where}: {item.reason}\n")
                continue
            record = _account_one(proxy, item, shown, line, stderr)
            if record is not None:
                yield record


def _read_whole(
    fmt: str, data: bytes, args: argparse.Namespace
) -> Iterable[tuple[int, CapturedExchange | ParseProblem]]:
    if fmt == "har":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [(0, ParseProblem(f"not a HAR file: not UTF-8 text ({exc.reason})"))]
        return read_har(text)
    try:
        captured = read_plain(data, args.provider, args.endpoint, args.model)
    except PlainInputError as exc:
        return [(0, ParseProblem(str(exc)))]
    return [(0, captured)]


def _account_one(
    proxy: Proxy, captured: CapturedExchange, shown: str, line: int, stderr: TextIO
) -> UsageRecord | None:
    where = f"{shown}:{line}" if line else shown
    try:
        record = account_exchange(proxy, captured)
    except Exception as exc:  # one entry that trips a bug must not lose the rest of the log
        stderr.write(f"{where}: internal error, entry skipped: {type(exc).__name__}: {exc}\n")
        return None
    if captured.truncated:
        stderr.write(f"{where}: body truncated in the log; usage may be undercounted\n")
    return record


@contextlib.contextmanager
def _opened(name: str, stdin: BinaryIO) -> Iterator[BinaryIO]:
    """A binary stream for `name`: the file, or stdin (left open) for '-'."""
    if name == _STDIN:
        yield stdin
        return
    with Path(name).open("rb") as stream:
        yield stream


def _first_content_line(stream: BinaryIO) -> bytes:
    """Lines up to and including the first non-blank one (what `auto` looks at)."""
    read = b""
    while True:
        line = stream.readline()
        read += line
        if not line or line.strip():
            return read


def _sniff(name: str, head: bytes) -> str:
    """`auto`, from the name and the first non-blank line: a `.har` name is a HAR; a first line
    that is a capture record is a capture log; otherwise it is decided on the whole content
    (`_sniff_whole`)."""
    if name.lower().endswith(".har"):
        return "har"
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b'{"capture":'):
        return "capture"
    if head.startswith(b"{"):
        try:
            first = json.loads(head)
        except (ValueError, RecursionError):
            first = None
        if isinstance(first, dict) and "capture" in first:
            return "capture"
    return "auto"


_HAR_START = re.compile(rb'\s*\{\s*"log"\s*:')


def _sniff_whole(data: bytes) -> str:
    """A JSON document whose first member is `log` is a HAR (every exporter writes it first);
    anything else is one plain response body."""
    return "har" if _HAR_START.match(data.removeprefix(b"\xef\xbb\xbf")) else "plain"


# -- the summary table -------------------------------------------------------------------------

_COLUMNS = (
    "project",
    "room",
    "participant",
    "model",
    "requests",
    "input",
    "cache_read",
    "cache_write",
    "output",
    "reasoning",
    "other",
    "cost_usd",
)


def format_summary(rows: Sequence[SummaryRow]) -> str:
    """A plain-text table, one row per group and a TOTAL row. Costs are exact; `*` marks a cost
    that leaves some usage unpriced (a lower bound), `n/a` a group nothing could be priced in."""
    if not rows:
        return "no exchanges accounted\n"
    total = rows[0]
    for row in rows[1:]:
        total = combine_rows(total, row)
    total = attrs.evolve(total, project="TOTAL", room="", participant="", model="")
    table = [list(_COLUMNS)] + [_cells(row) for row in (*rows, total)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    numeric = set(range(4, len(_COLUMNS)))
    text = []
    for index, line in enumerate(table):
        if index == len(table) - 1:
            text.append("  ".join("-" * width for width in widths))
        text.append(
            "  ".join(
                cell.rjust(width) if column in numeric and index else cell.ljust(width)
                for column, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
    if any(row.cost_incomplete for row in rows):
        text.append("* some usage in this group could not be priced; the cost is a lower bound")
    return "\n".join(text) + "\n"


def _cells(row: SummaryRow) -> list[str]:
    u = row.usage
    other = []
    if u.images:
        other.append(f"{u.image_total()} images")
    if u.input_characters:
        other.append(f"{u.input_characters} chars")
    if u.audio_seconds:
        other.append(f"{u.audio_seconds}s audio")
    if u.input_audio_tokens or u.output_audio_tokens:
        other.append(f"{u.input_audio_tokens + u.output_audio_tokens} audio tok")
    if u.input_image_tokens or u.output_image_tokens:
        other.append(f"{u.input_image_tokens + u.output_image_tokens} image tok")
    searches = u.web_search_requests + u.web_fetch_requests + u.code_execution_requests
    if searches:
        other.append(f"{searches} tool calls")
    cost = row.cost_text() + ("*" if row.cost_incomplete else "")
    return [
        row.project,
        row.room,
        row.participant,
        row.model,
        str(row.requests),
        str(u.input_tokens),
        str(u.cache_read_tokens),
        str(u.cache_write_5m_tokens + u.cache_write_1h_tokens),
        str(u.output_tokens),
        str(u.reasoning_tokens),
        ", ".join(other) or "-",
        cost,
    ]
