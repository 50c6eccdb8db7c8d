"""`meshproxy usage`: files in, JSONL records and a summary out; bad entries reported, skipped."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from meshproxy.adapters.usage_cli import add_usage_command, run_usage

FIXTURES = Path(__file__).parent.parent / "fixtures"
HAR = str(FIXTURES / "offline" / "session.har")
CAPTURE = str(FIXTURES / "offline" / "capture.jsonl")


def run(*argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_usage(list(argv), out, err, stdin=io.BytesIO(stdin))
    return code, out.getvalue(), err.getvalue()


OVERRIDE = """
[providers.openai.models.gpt-4o-mini]
source = "test"
effective = "2026-01-01"
rates = { input = 1, cache_read = 0.5, output = 2 }
"""


def cells(line: str) -> list[str]:
    return line.split()


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_har_and_capture_give_one_record_per_exchange_and_report_bad_entries() -> None:
    code, out, err = run(HAR, CAPTURE)
    assert code == 0
    found = records(out)
    assert [r["request_id"] for r in found] == [
        "har-10",
        "req_proxy_0001",
        "har-148",
        "req_cap_0001",
        "req_cap_0002",
        "req_cap_0003",
    ]
    assert [r["cost"]["total"] if r["cost"] else None for r in found] == [
        "0.000024000",
        "0.00000480",
        "0.0003300",
        "0.00006000",
        "0.000300",
        None,
    ]
    assert err.splitlines() == [
        f"{HAR}:210: skipped: GET https://example.com/static/app.js is not a proxied endpoint",
        f"{HAR}:250: 'response.status' is not an HTTP status",
        f"{CAPTURE}:4: not a JSON line: Expecting value: line 1 column 1 (char 0)",
        f"{CAPTURE}:5: not a capture line: 'capture' must be 1, got 2",
    ]


def test_records_have_the_live_sink_shape() -> None:
    _, out, _ = run(CAPTURE)
    first = records(out)[0]
    assert first["outcome"] == "ok" and first["usage"]["input_tokens"] == 200
    assert first["principal"]["participant"] == "alice"
    assert Decimal(first["cost"]["total"]) == Decimal("0.00006")


def test_summary_goes_to_stderr_without_out() -> None:
    code, out, err = run(HAR, "--summary")
    assert code == 0 and len(records(out)) == 3
    table = err.splitlines()[2:]  # after the two problem lines
    assert table[0].split() == [
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
    ]
    rows = [line.split() for line in table[1:]]
    assert rows[0] == cells("offline offline offline claude-sonnet-4-5 1 25 100 0 15 0 - 0.00033")
    assert rows[1][3:] == cells("gpt-4o-mini 1 60 40 0 20 0 - 0.000024")
    assert rows[2][:4] == ["offline", "team-a", "offline", "gpt-4o-mini"]
    assert rows[2][-1] == "0.0000048"
    assert set(rows[3]) == {"-" * len(cell) for cell in rows[3]}  # the rule above TOTAL
    # 0.00033 + 0.000024 + 0.0000048 = 0.0003588
    assert rows[4] == cells("TOTAL 3 97 140 0 40 0 - 0.0003588")


def test_out_writes_records_to_a_file_and_the_summary_to_stdout(tmp_path: Path) -> None:
    target = tmp_path / "records.jsonl"
    code, out, err = run(CAPTURE, "--out", str(target), "--summary")
    assert code == 0
    assert len(records(target.read_text())) == 3
    assert out.splitlines()[-1].split() == cells("TOTAL 3 225 0 0 65 0 - 0.00036")
    assert "capture.jsonl:4:" in err


def test_stdin_plain_stream() -> None:
    body = (FIXTURES / "anthropic_messages_stream.sse").read_bytes()
    code, out, _ = run("-", stdin=body)
    [record] = records(out)
    assert code == 0 and record["endpoint"] == "messages" and record["stream"] is True
    assert record["usage"]["output_tokens"] == 15


def test_stdin_capture_log_is_sniffed() -> None:
    code, out, err = run("-", stdin=Path(CAPTURE).read_bytes())
    assert code == 0 and len(records(out)) == 3
    assert "<stdin>:4: not a JSON line" in err


def test_auto_tells_a_har_without_its_extension_from_a_plain_json_body(tmp_path: Path) -> None:
    har = tmp_path / "session.json"
    shutil.copy(HAR, har)
    pretty = tmp_path / "answer.json"  # a pretty-printed body: its first line is "{" too
    shutil.copy(FIXTURES / "openai_chat_completion.json", pretty)
    log = tmp_path / "log.txt"
    shutil.copy(CAPTURE, log)
    code, out, _ = run(str(har), str(pretty), str(log))
    assert code == 0
    assert [r["request_id"] for r in records(out)][3:5] == ["plain-1", "req_cap_0001"]
    assert len(records(out)) == 7


def test_plain_options(tmp_path: Path) -> None:
    body = tmp_path / "answer.txt"
    body.write_text("a plain text transcript")
    code, out, err = run(
        str(body), "--format", "plain", "--endpoint", "/v1/audio/transcriptions", "--model", "m"
    )
    [record] = records(out)
    assert code == 0 and err == ""
    assert record["endpoint"] == "audio.transcriptions" and record["model"] == "m"


def test_nothing_accounted_exits_1() -> None:
    code, out, err = run(str(FIXTURES / "openai_error_401_invalid_api_key.json"))
    assert code == 1 and out == ""
    assert err.startswith(f"{FIXTURES / 'openai_error_401_invalid_api_key.json'}: cannot tell")


def test_summary_with_nothing_accounted() -> None:
    code, _, err = run(str(FIXTURES / "openai_error_401_invalid_api_key.json"), "--summary")
    assert code == 1 and err.endswith("no exchanges accounted\n")


def test_an_unpriced_model_shows_n_a(tmp_path: Path) -> None:
    body = tmp_path / "local.json"
    body.write_text(
        '{"object":"chat.completion","model":"my-local-model","choices":[],'
        '"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}'
    )
    code, _, err = run(str(body), "--summary")
    assert code == 0
    lines = err.splitlines()
    assert lines[1].split()[-1] == "n/a*"
    assert lines[-1].startswith("* some usage")


def test_price_overrides(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(OVERRIDE)
    code, out, _ = run(HAR, "--prices", str(prices))
    assert code == 0
    by_id = {r["request_id"]: r for r in records(out)}
    # 60 x 1 + 40 x 0.5 + 20 x 2 = 120 micro-dollars
    assert Decimal(by_id["har-10"]["cost"]["total"]) == Decimal("0.00012")


def test_price_overrides_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "meshproxy.toml"
    config.write_text("[proxy]\n" + OVERRIDE.replace("[providers.", "[prices.providers."))
    _, out, _ = run(HAR, "--prices", str(config))
    assert Decimal(records(out)[0]["cost"]["total"]) == Decimal("0.00012")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required"),
        (["--bogus", "x"], "unrecognized arguments"),
        (["--format", "xml", "x"], "invalid choice"),
        (["no-such-file.har"], "no such file: no-such-file.har"),
        (["-", "-"], "'-' (stdin) can be given once"),
        (["--endpoint", "nope", "-"], "unknown endpoint 'nope'"),
        (["--endpoint", "messages", "--provider", "openai", "-"], "anthropic endpoint"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert code == 2 and out == ""
    assert message in err


def test_bad_prices_exit_2(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text("providers = 3\n")
    code, _, err = run(HAR, "--prices", str(prices))
    assert code == 2 and "cannot use prices from" in err
    code, _, err = run(HAR, "--prices", str(tmp_path / "missing.toml"))
    assert code == 2


def test_unwritable_out_exits_2(tmp_path: Path) -> None:
    code, _, err = run(HAR, "--out", str(tmp_path / "no" / "such" / "dir.jsonl"))
    assert code == 2 and "meshproxy usage:" in err


def test_registered_on_a_parent_parser(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="meshproxy")
    add_usage_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["usage", CAPTURE, "--summary"])
    assert args.run(args) == 0
    captured = capsys.readouterr()
    assert len(records(captured.out)) == 3
    assert "TOTAL" in captured.err


def test_line_numbers_count_leading_blank_lines() -> None:
    code, out, err = run("-", stdin=b"\n\r\n" + Path(CAPTURE).read_bytes())
    assert code == 0 and len(records(out)) == 3
    assert "<stdin>:6: not a JSON line" in err and "<stdin>:7: not a capture" in err


def test_a_truncated_capture_is_accounted_and_flagged(tmp_path: Path) -> None:
    line = json.loads(Path(CAPTURE).read_text().splitlines()[1])
    line["truncated"] = True
    log = tmp_path / "cut.jsonl"
    log.write_text(json.dumps(line) + "\n")
    code, out, err = run(str(log))
    [record] = records(out)
    assert code == 0 and record["partial"] is True
    assert err == f"{log}:1: body truncated in the log; usage may be undercounted\n"
