"""The ledger behind `meshproxy serve`: every finished request is durable before its response
ends (a SIGKILL loses none of them), and `meshproxy usage report` adds them up exactly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import anthropic
import openai
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess
from meshproxy.contrib.ledger import open_ledger

from .conftest import ProxyProcess, make_token

pytestmark = pytest.mark.e2e


def test_sigkill_loses_no_finished_request(fake: FakeUpstreamProcess, tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.sqlite3"
    finished: list[str] = []
    with ProxyProcess(fake.base_url, tmp_path, ["--ledger", str(ledger_path)]) as proxy:
        oa = openai.OpenAI(base_url=proxy.url + "/v1", api_key=make_token(), max_retries=0)
        an = anthropic.Anthropic(
            base_url=proxy.url + "/anthropic", api_key=make_token(), max_retries=0
        )
        for i in range(15):
            raw = oa.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"n{i}"}]
            )
            raw.parse()  # the whole response was received
            finished.append(raw.headers["x-meshproxy-request-id"])
            with an.messages.with_streaming_response.create(
                model="claude-haiku-4-5",
                max_tokens=20,
                stream=True,
                messages=[{"role": "user", "content": f"s{i}"}],
            ) as response:
                list(response.parse())
                finished.append(response.headers["x-meshproxy-request-id"])
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGKILL)
        proxy.process.wait(timeout=10)
    ledger = open_ledger(str(ledger_path))
    try:
        stored = {record["request_id"] for record in ledger.query_records()}
    finally:
        ledger.close()
    assert set(finished) <= stored
    assert len(finished) == 30


def test_report_adds_up_the_records(fake: FakeUpstreamProcess, tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.sqlite3"
    with ProxyProcess(fake.base_url, tmp_path, ["--ledger", str(ledger_path)]) as proxy:
        records = []
        for room in ("red", "red", "blue"):
            raw = openai.OpenAI(
                base_url=proxy.url + "/v1", api_key=make_token(room=room), max_retries=0
            ).chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": room}]
            )
            records.append(proxy.record(raw.headers["x-meshproxy-request-id"]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshproxy.adapters.cli",
            "usage",
            "report",
            "--ledger",
            str(ledger_path),
            "--by",
            "room",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = json.loads(result.stdout)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    by_room = {row["room"]: row for row in rows}
    for room in ("red", "blue"):
        mine = [r for r in records if r["principal"]["room"] == room]
        assert by_room[room]["requests"] == len(mine)
        expected = sum(Decimal(r["cost"]["total"]) for r in mine)
        assert Decimal(str(by_room[room]["cost_usd"])) == expected
