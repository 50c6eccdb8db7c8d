"""`meshproxy usage report`: totals over the usage ledger, as a table, CSV, JSON or an HTML page.

  meshproxy usage report --ledger URL [--since T] [--until T] [--room R] [--project P]
                         [--by project,room,participant,session,model,day]
                         [--format table|csv|json] [--html out.html]

Owns: parsing those arguments, adding up the ledger's `UsageEntry`s by the chosen keys (exact
Decimal money; batch lines already de-duplicated by the ledger), and rendering. The HTML page is
self-contained: inline CSS and an inline SVG chart of cost per day stacked by room, then
per-room and per-model tables; it loads nothing from the network.

Does not own: the ledger's storage or de-duplication (contrib.ledger), routing `meshproxy usage
report` to `run_report` (cli).

Time: --since is inclusive and --until exclusive, compared with each record's end time. Each
takes epoch seconds, an ISO date (midnight UTC), or an ISO date-time (UTC unless it says).
"""

from __future__ import annotations

import argparse
import csv
import html
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import attrs

__all__ = ["DIMENSIONS", "Totals", "aggregate", "render_html", "run_report"]

DIMENSIONS = ("project", "room", "participant", "session", "model", "day")
DEFAULT_BY = "project,room,model"

# Report columns: name -> the UsageEntry token columns that add up to it.
_COUNT_COLUMNS: dict[str, tuple[str, ...]] = {
    "input_tokens": ("input_tokens",),
    "cache_read_tokens": ("cache_read_tokens",),
    "cache_write_tokens": ("cache_write_5m_tokens", "cache_write_1h_tokens"),
    "output_tokens": ("output_tokens",),
    "reasoning_tokens": ("reasoning_tokens",),
    "audio_tokens": ("input_audio_tokens", "output_audio_tokens"),
    "image_tokens": ("input_image_tokens", "output_image_tokens"),
    "images": ("image_count",),
    "characters": ("input_characters",),
    "server_tool_requests": (
        "web_search_requests",
        "web_fetch_requests",
        "code_execution_requests",
    ),
}
# Shown in the table even when zero; the other columns only when some row uses them.
_ALWAYS_SHOWN = frozenset({"requests", "input_tokens", "output_tokens", "cost_usd"})


@attrs.define
class Totals:
    """Sums for one group of a report."""

    requests: int = 0
    counts: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(_COUNT_COLUMNS, 0))
    audio_seconds: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    unpriced: int = 0  # entries with usage but no price

    def add(self, entry: Any) -> None:
        self.requests += entry.requests
        for column, sources in _COUNT_COLUMNS.items():
            self.counts[column] += sum(entry.tokens.get(s, 0) for s in sources)
        self.audio_seconds += entry.audio_seconds
        if entry.cost is not None:
            self.cost += entry.cost
        elif any(entry.tokens.values()) or entry.audio_seconds:
            self.unpriced += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            **self.counts,
            "audio_seconds": str(self.audio_seconds),
            "cost_usd": str(self.cost),
            "unpriced": self.unpriced,
        }


def _key_value(entry: Any, dimension: str) -> str:
    if dimension == "day":
        return str(entry.day)
    value = getattr(entry, dimension)
    return "" if value is None else str(value)


def aggregate(entries: Iterable[Any], by: Sequence[str]) -> dict[tuple[str, ...], Totals]:
    groups: dict[tuple[str, ...], Totals] = {}
    for entry in entries:
        key = tuple(_key_value(entry, d) for d in by)
        groups.setdefault(key, Totals()).add(entry)
    return groups


def _sorted(groups: dict[tuple[str, ...], Totals]) -> list[tuple[tuple[str, ...], Totals]]:
    return sorted(groups.items(), key=lambda kv: (-kv[1].cost, kv[0]))


def _grand_total(groups: dict[tuple[str, ...], Totals]) -> Totals:
    total = Totals()
    for t in groups.values():
        total.requests += t.requests
        for column in _COUNT_COLUMNS:
            total.counts[column] += t.counts[column]
        total.audio_seconds += t.audio_seconds
        total.cost += t.cost
        total.unpriced += t.unpriced
    return total


# -- argument parsing ---------------------------------------------------------------------------


def _time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not epoch seconds, YYYY-MM-DD or an ISO date-time"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _by(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in DIMENSIONS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"--by takes a comma-separated subset of {','.join(DIMENSIONS)}"
        )
    return parts


class _Parser(argparse.ArgumentParser):
    def __init__(self, stderr: IO[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stderr = stderr

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        if message:
            self._stderr.write(message)


def _parser(stderr: IO[str]) -> argparse.ArgumentParser:
    parser = _Parser(
        stderr,
        prog="meshproxy usage report",
        description="Totals of tokens and cost from the usage ledger.",
        exit_on_error=False,
    )
    parser.add_argument(
        "--ledger",
        help="ledger path or URL (sqlite path, sqlite:///path, postgresql://...); "
        "default: meshproxy-ledger.sqlite3 in the working directory",
    )
    parser.add_argument("--since", type=_time, help="inclusive: epoch seconds or ISO date/time")
    parser.add_argument("--until", type=_time, help="exclusive: epoch seconds or ISO date/time")
    parser.add_argument("--room")
    parser.add_argument("--project")
    parser.add_argument("--by", type=_by, default=_by(DEFAULT_BY), help=f"default {DEFAULT_BY}")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--html", type=Path, help="also write a self-contained HTML report here")
    return parser


def run_report(argv: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    """Run the command; returns the exit status (0 ok, 2 usage error, 1 ledger error)."""
    parser = _parser(stderr)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own errors
        return int(exc.code or 0)
    except argparse.ArgumentError as exc:
        stderr.write(f"meshproxy usage report: {exc}\n")
        return 2

    from meshproxy.contrib.ledger import DEFAULT_PATH, open_ledger

    location = args.ledger or DEFAULT_PATH
    sqlite_path = _sqlite_path(location)
    # a report must not create an empty ledger where the user mistyped a path
    if sqlite_path is not None and not sqlite_path.exists():
        stderr.write(f"meshproxy usage report: no ledger at {sqlite_path}\n")
        return 1
    try:
        ledger = open_ledger(location)
    except Exception as exc:
        stderr.write(f"meshproxy usage report: cannot open ledger: {exc}\n")
        return 1
    try:
        entries = list(
            ledger.query_entries(args.since, args.until, room=args.room, project=args.project)
        )
    finally:
        ledger.close()

    groups = aggregate(entries, args.by)
    if args.format == "json":
        _write_json(groups, args, stdout)
    elif args.format == "csv":
        _write_csv(groups, args.by, stdout)
    else:
        _write_table(groups, args.by, stdout)
    if args.html is not None:
        args.html.write_text(render_html(entries, args), encoding="utf-8")
        stderr.write(f"wrote {args.html}\n")
    return 0


def _sqlite_path(location: str) -> Path | None:
    if location.startswith("sqlite:///"):
        return Path(location[len("sqlite://") :])
    if location.startswith("sqlite:"):
        return Path(location[len("sqlite:") :])
    return None if "://" in location else Path(location)


# -- text outputs -------------------------------------------------------------------------------


def _columns(groups: dict[tuple[str, ...], Totals]) -> list[str]:
    names = ["requests", *_COUNT_COLUMNS, "audio_seconds", "cost_usd"]
    shown = []
    for name in names:
        if name in _ALWAYS_SHOWN or any(t.as_dict()[name] not in (0, "0") for t in groups.values()):
            shown.append(name)
    return shown


def _write_table(groups: dict[tuple[str, ...], Totals], by: Sequence[str], out: IO[str]) -> None:
    columns = _columns(groups)
    header = [*by, *columns]
    rows = [[*key, *(str(t.as_dict()[c]) for c in columns)] for key, t in _sorted(groups)]
    total = _grand_total(groups).as_dict()
    rows.append(["TOTAL", *([""] * (len(by) - 1)), *(str(total[c]) for c in columns)])
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    numeric = [False] * len(by) + [True] * len(columns)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    out.write(line(header) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in rows[:-1]:
        out.write(line(row) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    out.write(line(rows[-1]) + "\n")


def _write_csv(groups: dict[tuple[str, ...], Totals], by: Sequence[str], out: IO[str]) -> None:
    names = ["requests", *_COUNT_COLUMNS, "audio_seconds", "cost_usd", "unpriced"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*by, *names])
    for key, totals in _sorted(groups):
        data = totals.as_dict()
        writer.writerow([*key, *(data[n] for n in names)])


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _write_json(groups: dict[tuple[str, ...], Totals], args: Any, out: IO[str]) -> None:
    document = {
        "since": _iso(args.since),
        "until": _iso(args.until),
        "room": args.room,
        "project": args.project,
        "by": list(args.by),
        "rows": [
            {**dict(zip(args.by, key, strict=True)), **totals.as_dict()}
            for key, totals in _sorted(groups)
        ],
        "totals": _grand_total(groups).as_dict(),
    }
    json.dump(document, out, indent=2)
    out.write("\n")


# -- HTML ---------------------------------------------------------------------------------------

_PALETTE = (
    "#2f6fdb", "#e8743b", "#19a979", "#945ecf", "#13a4b4",
    "#d64b6a", "#6c8893", "#bf9b30", "#525df4", "#7a7a7a",
)  # fmt: skip
_MAX_SERIES = 9  # rooms drawn separately; the rest are stacked as "other rooms"
_CHART_W, _CHART_H = 960, 320
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 70, 20, 20, 50


def _days(entries: Sequence[Any]) -> list[str]:
    present = sorted({e.day for e in entries})
    if not present:
        return []
    first, last = date.fromisoformat(present[0]), date.fromisoformat(present[-1])
    span = (last - first).days
    if span > 400:  # do not draw years of empty days; show the days that have usage
        return present
    return [(first + timedelta(days=i)).isoformat() for i in range(span + 1)]


def _money(value: Decimal) -> str:
    """Exact amount, at least cents: $3.7625, $1.00, $0.0125."""
    sign = "-" if value < 0 else ""
    whole, _, cents = f"{abs(value).normalize():f}".partition(".")
    return f"{sign}${int(whole):,}.{cents.ljust(2, '0')}"


def _nice_step(raw: Decimal) -> Decimal:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `raw`."""
    if raw <= 0:
        return Decimal(1)
    power = Decimal(10) ** (raw.adjusted())
    for factor in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        if power * factor >= raw:
            return power * factor
    return power * 10


def _svg_chart(entries: Sequence[Any]) -> str:
    days = _days(entries)
    room_cost: dict[str, Decimal] = {}
    for e in entries:
        room = f"{e.project or '?'}/{e.room or '?'}"
        room_cost[room] = room_cost.get(room, Decimal(0)) + (e.cost or Decimal(0))
    ranked = sorted(room_cost, key=lambda r: (-room_cost[r], r))
    series = ranked[:_MAX_SERIES]
    other = "other rooms" if len(ranked) > _MAX_SERIES else None
    names = [*series, *([other] if other else [])]
    cells: dict[tuple[str, str], Decimal] = {}
    for e in entries:
        room = f"{e.project or '?'}/{e.room or '?'}"
        name = room if room in series else other
        assert name is not None
        cells[(e.day, name)] = cells.get((e.day, name), Decimal(0)) + (e.cost or Decimal(0))
    day_totals = [sum((cells.get((d, n), Decimal(0)) for n in names), Decimal(0)) for d in days]
    step = _nice_step(max(day_totals, default=Decimal(0)) / 4)
    top = step * 4
    w, h = _CHART_W, _CHART_H
    plot_w, plot_h = w - _PAD_L - _PAD_R, h - _PAD_T - _PAD_B
    parts = [
        f'<svg id="cost-chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="Cost per day, stacked by room">',
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
    ]
    if not days or top <= 0:
        parts.append(
            f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" fill="#666">'
            "No priced usage in this range</text></svg>"
        )
        return "".join(parts)
    # y axis: 4 gridlines at "nice" amounts, labelled with as many decimals as the step needs
    places = max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]
    for i in range(5):
        value = step * i
        y = _PAD_T + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{_PAD_L}" x2="{w - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
            f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#555">${value:,.{places}f}</text>'
        )
    slot = plot_w / len(days)
    bar = max(1.0, slot * 0.8)
    label_every = max(1, len(days) // 12)
    for i, day in enumerate(days):
        x = _PAD_L + i * slot + (slot - bar) / 2
        y = _PAD_T + plot_h
        for j, name in enumerate(names):
            value = cells.get((day, name), Decimal(0))
            if value <= 0:
                continue
            height = float(value / top) * plot_h
            y -= height
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{max(height, 0.5):.1f}" fill="{_PALETTE[j % len(_PALETTE)]}">'
                f"<title>{html.escape(day)} {html.escape(name)}: "
                f"{html.escape(_money(value))}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{_PAD_T + plot_h + 16}" text-anchor="middle" '
                f'font-size="11" fill="#555">{html.escape(day[5:])}</text>'
            )
    parts.append(
        f'<line x1="{_PAD_L}" x2="{w - _PAD_R}" y1="{_PAD_T + plot_h}" y2="{_PAD_T + plot_h}" '
        'stroke="#888"/>'
    )
    x = float(_PAD_L)
    for j, name in enumerate(names):
        color = _PALETTE[j % len(_PALETTE)]
        parts.append(
            f'<rect x="{x:.0f}" y="{h - 18}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14:.0f}" y="{h - 9}" font-size="11" fill="#333">'
            f"{html.escape(name[:28])}</text>"
        )
        x += 16 + 7 * min(len(name), 28) + 14
    parts.append("</svg>")
    return "".join(parts)


def _html_table(title: str, by: Sequence[str], groups: dict[tuple[str, ...], Totals]) -> str:
    columns = _columns(groups)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [*by, *columns])
    body = []
    for key, totals in _sorted(groups):
        data = totals.as_dict()
        cells = "".join(f"<td>{html.escape(k)}</td>" for k in key)
        cells += "".join(
            f'<td class="n">{html.escape(_money(totals.cost) if c == "cost_usd" else str(data[c]))}'
            "</td>"
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#666;font-size:13px;margin-bottom:16px}
.kpi{display:inline-block;margin-right:28px;font-size:13px;color:#555}
.kpi b{display:block;font-size:20px;color:#111}
table{border-collapse:collapse;font-size:13px} th,td{padding:4px 10px;border-bottom:1px solid #eee}
th{text-align:left;background:#f6f6f6} td.n{text-align:right;font-variant-numeric:tabular-nums}
"""


def render_html(entries: Sequence[Any], args: Any) -> str:
    """The self-contained report page (no scripts, no external assets)."""
    total = _grand_total(aggregate(entries, ["project"]))
    scope = []
    if args.project:
        scope.append(f"project {args.project}")
    if args.room:
        scope.append(f"room {args.room}")
    scope.append(f"from {_iso(args.since) or 'the beginning'} to {_iso(args.until) or 'now'}")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    kpis = (
        f'<div class="kpi">cost<b>{html.escape(_money(total.cost))}</b></div>'
        f'<div class="kpi">requests<b>{total.requests}</b></div>'
        f'<div class="kpi">input tokens<b>{total.counts["input_tokens"]:,}</b></div>'
        f'<div class="kpi">output tokens<b>{total.counts["output_tokens"]:,}</b></div>'
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>meshproxy usage report</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>meshproxy usage report</h1>"
        f'<div class="meta">{html.escape(", ".join(scope))}; generated {generated}</div>'
        f"{kpis}<h2>Cost per day (UTC), by room</h2>{_svg_chart(entries)}"
        f"{_html_table('By room', ['project', 'room'], aggregate(entries, ['project', 'room']))}"
        f"{_html_table('By model', ['model'], aggregate(entries, ['model']))}"
        f"{_html_table('By ' + ', '.join(args.by), args.by, aggregate(entries, args.by))}"
        "</body></html>\n"
    )
