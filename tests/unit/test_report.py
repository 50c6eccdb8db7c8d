"""`meshproxy usage report` over a real ledger: the numbers in table, CSV and JSON; the HTML page
rendered by headless Chromium, whose screenshot must show the chart's bars."""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import subprocess
import time
import zlib
from decimal import Decimal
from pathlib import Path

import pytest

import pg_server
from meshproxy.adapters.report_cli import run_report
from meshproxy.contrib.ledger import open_ledger
from meshproxy_core.records import (
    Cost,
    Ending,
    LineItem,
    Outcome,
    Principal,
    Usage,
    UsageRecord,
    UsageSource,
)

DAY1 = 1_796_083_200.0  # 2026-12-01T00:00:00Z
DAY = 86_400.0


def rec(
    rid: str,
    at: float,
    room: str,
    model: str,
    tokens: tuple[int, int],
    cost: str,
    *,
    participant: str = "ada",
    project: str = "acme",
    **changes: object,
) -> UsageRecord:
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
        started_at=at - 1,
        ended_at=at,
        principal=Principal(project=project, room=room, participant=participant, session="s"),
        model=model,
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1], cache_read_tokens=10),
        usage_source=UsageSource.REPORTED,
        cost=Cost(total=Decimal(cost)),
    )
    fields.update(changes)
    return UsageRecord(**fields)


def batch(rid: str, at: float, keys: list[str]) -> UsageRecord:
    items = tuple(
        LineItem(
            k, "claude-haiku-4-5", Usage(input_tokens=100, output_tokens=10), Cost(Decimal("0.2"))
        )
        for k in keys
    )
    return rec(
        rid,
        at,
        "studio",
        "claude-haiku-4-5",
        (100 * len(keys), 10 * len(keys)),
        str(Decimal("0.2") * len(keys)),
        provider="anthropic",
        endpoint="messages.batches.results",
        batch_id="msgbatch_1",
        line_items=items,
        usage=Usage(input_tokens=100 * len(keys), output_tokens=10 * len(keys)),
    )


RECORDS = [
    rec("a", DAY1 + 100, "lab", "gpt-4o", (1000, 100), "1.5"),
    rec("b", DAY1 + 200, "lab", "gpt-4o", (2000, 200), "2.25", participant="bob"),
    rec("c", DAY1 + DAY + 50, "lab", "gpt-4o-mini", (500, 50), "0.0125"),
    rec("d", DAY1 + DAY + 60, "studio", "gpt-4o", (100, 10), "0.5"),
    rec("e", DAY1 + 2 * DAY + 10, "studio", "gpt-4o", (100, 10), "1", project="globex"),
    # the same batch results downloaded twice: lines x, y counted once
    batch("f", DAY1 + 2 * DAY + 20, ["x", "y"]),
    batch("g", DAY1 + 2 * DAY + 30, ["x", "y"]),
]


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = str(tmp_path / "ledger.sqlite3")
    else:
        reason = pg_server.why_unavailable()
        if reason is not None:
            pytest.skip(reason)
        url = pg_server.shared_server().new_database(f"report_{time.time_ns()}")
    ledger = open_ledger(url)
    for record in RECORDS:
        ledger.submit(record).result(10)
    ledger.close()
    return url


def report(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_report(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_json_totals_by_room_and_model(ledger_url: str) -> None:
    code, out, err = report(
        "--ledger", ledger_url, "--by", "project,room,model", "--format", "json"
    )
    assert code == 0, err
    doc = json.loads(out)
    rows = {(r["project"], r["room"], r["model"]): r for r in doc["rows"]}
    assert rows[("acme", "lab", "gpt-4o")]["cost_usd"] == "3.75"
    assert rows[("acme", "lab", "gpt-4o")]["requests"] == 2
    assert rows[("acme", "lab", "gpt-4o")]["input_tokens"] == 3000
    assert rows[("acme", "lab", "gpt-4o")]["cache_read_tokens"] == 20
    assert rows[("acme", "studio", "claude-haiku-4-5")]["cost_usd"] == "0.4"  # not 0.8
    assert rows[("acme", "studio", "claude-haiku-4-5")]["requests"] == 2
    assert rows[("acme", "studio", "claude-haiku-4-5")]["input_tokens"] == 200
    assert doc["totals"]["cost_usd"] == "5.6625"
    assert doc["totals"]["requests"] == 7
    assert doc["rows"][0]["model"] == "gpt-4o"  # most expensive first


def test_filters_by_time_room_and_project(ledger_url: str) -> None:
    _, out, _ = report(
        "--ledger", ledger_url, "--since", "2026-12-02", "--until", "2026-12-03",
        "--by", "room", "--format", "json",
    )  # fmt: skip
    rows = {r["room"]: r["cost_usd"] for r in json.loads(out)["rows"]}
    assert rows == {"lab": "0.0125", "studio": "0.5"}
    _, out, _ = report(
        "--ledger", ledger_url, "--room", "lab", "--by", "participant,day", "--format", "json"
    )
    rows = {(r["participant"], r["day"]): r["cost_usd"] for r in json.loads(out)["rows"]}
    assert rows == {
        ("ada", "2026-12-01"): "1.5",
        ("bob", "2026-12-01"): "2.25",
        ("ada", "2026-12-02"): "0.0125",
    }
    _, out, _ = report("--ledger", ledger_url, "--project", "globex", "--format", "json")
    assert json.loads(out)["totals"]["cost_usd"] == "1"
    since = str(DAY1 + 150)
    _, out, _ = report(
        "--ledger", ledger_url, "--since", since, "--until", str(DAY1 + DAY), "--format", "json"
    )
    assert json.loads(out)["totals"]["cost_usd"] == "2.25"


def test_csv(ledger_url: str) -> None:
    code, out, _ = report("--ledger", ledger_url, "--by", "session,day", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["day"], r["cost_usd"]) for r in rows] == [
        ("2026-12-01", "3.75"),
        ("2026-12-03", "1.4"),
        ("2026-12-02", "0.5125"),
    ]
    assert rows[0]["session"] == "s" and rows[0]["output_tokens"] == "300"


def test_table(ledger_url: str) -> None:
    code, out, _ = report("--ledger", ledger_url, "--by", "room")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "room", "requests", "input_tokens", "cache_read_tokens", "output_tokens", "cost_usd",
    ]  # fmt: skip
    assert lines[2].split() == ["lab", "3", "3500", "30", "350", "3.7625"]
    assert lines[-1].split() == ["TOTAL", "7", "3900", "50", "390", "5.6625"]


def test_usage_errors(tmp_path: Path) -> None:
    code, _, err = report("--ledger", str(tmp_path / "missing.sqlite3"))
    assert code == 1 and "no ledger" in err
    assert not (tmp_path / "missing.sqlite3").exists()
    code, _, err = report("--by", "colour")
    assert code == 2 and "--by" in err
    code, _, err = report("--since", "yesterday-ish")
    assert code == 2


# -- HTML in headless Chromium ------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, raw pixel rows) of an 8-bit, non-interlaced RGB or
    RGBA PNG, which is what Chromium writes. Enough of PNG for this test; no dependency."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        out += line
        prev = line
    return width, height, bpp, bytes(out)


def test_html_report_renders_a_chart_in_headless_chromium(ledger_url: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    code, _, err = report("--ledger", ledger_url, "--html", str(page))
    assert code == 0, err
    text = page.read_text()
    assert 'id="cost-chart"' in text and text.count('class="bar"') == 5  # 3 days, rooms stacked
    for forbidden in ("<script", "http://", "https://", "src="):
        # self-contained: nothing to fetch (the SVG namespace is an identifier, not a fetch)
        assert forbidden not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")

    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (Debian's `chromium` package; .ci/run installs it)")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--screenshot={shot}", "--window-size=1200,900", page.as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    width, height, bpp, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (1200, 900)

    def count(predicate: object, top: int, bottom: int) -> int:
        n = 0
        for y in range(top, bottom):
            row = pixels[y * width * bpp : (y + 1) * width * bpp]
            for x in range(0, width * bpp, bpp):
                if predicate(row[x], row[x + 1], row[x + 2]):  # type: ignore[operator]
                    n += 1
        return n

    # the chart sits in the upper half; its first room is drawn in #2f6fdb, the second #e8743b
    blue = count(lambda r, g, b: b > 180 and r < 90 and 90 < g < 140, 0, 500)
    orange = count(lambda r, g, b: r > 200 and 90 < g < 140 and b < 90, 0, 500)
    assert blue > 500, "no bars of the first room in the screenshot"
    assert orange > 200, "no bars of the second room in the screenshot"


def test_html_escapes_names_from_tokens(tmp_path: Path) -> None:
    """Room and model names come from tokens and request bodies: never markup in the page."""
    url = str(tmp_path / "l.sqlite3")
    ledger = open_ledger(url)
    hostile = '<img src=x onerror="alert(1)">'
    ledger.submit(rec("h", DAY1, hostile, "<b>gpt</b>", (1, 1), "0.01")).result(10)
    ledger.close()
    page = tmp_path / "r.html"
    assert report("--ledger", url, "--html", str(page))[0] == 0
    text = page.read_text()
    assert "<img" not in text and "<b>gpt" not in text
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
