"""The JSONL sink: one complete line per record, even with many writers on one file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from meshproxy.contrib.jsonl import JsonlSink
from meshproxy_core.records import Ending, Outcome, Principal, Usage, UsageRecord


def _record(n: int) -> UsageRecord:
    return UsageRecord(
        id=f"req_{n}",
        request_id=f"req_{n}",
        provider="openai",
        endpoint="chat.completions",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        outcome=Outcome.OK,
        ending=Ending.COMPLETE,
        started_at=1.0,
        ended_at=2.0,
        model="gpt-4o-mini",
        principal=Principal(project="p", room="r", participant="u", session="s"),
        # A long raw usage makes each line longer than an 8 KiB stdio buffer.
        raw_usage={"note": "x" * (16384 + n)},
        usage=Usage(input_tokens=n, output_tokens=2 * n),
    )


def test_two_sinks_on_one_file_never_interleave_lines(tmp_path: Path) -> None:
    # Two sinks stand for two gunicorn workers appending to the same file.
    path = tmp_path / "records.jsonl"
    sinks = [JsonlSink(path), JsonlSink(path)]

    def write(sink: JsonlSink, start: int) -> None:
        for n in range(start, start + 300):
            sink.emit(_record(n))

    threads = [threading.Thread(target=write, args=(s, i * 1000)) for i, s in enumerate(sinks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sink in sinks:
        sink.close()

    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    ids = sorted(json.loads(line)["request_id"] for line in lines[:-1])
    assert ids == sorted([f"req_{n}" for n in range(300)] + [f"req_{n}" for n in range(1000, 1300)])


def test_emit_after_close_is_an_error(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "r.jsonl")
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        sink.emit(_record(1))
