"""Secrets never leak: after a mix of good, refused, failing and abandoned requests, no provider
key, room token or signing secret appears in any response, log line, record, capture, ledger
row or exported trace or metric."""

from __future__ import annotations

import signal
from pathlib import Path

import anthropic
import openai
import pytest

from e2e.conftest import ANTHROPIC_KEY, OPENAI_KEY, SECRET, ProxyProcess, make_token
from meshproxy.adapters.testing import FakeUpstreamProcess, Scripted

pytestmark = pytest.mark.e2e
pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="needs the `otel` extra")

from otlp_receiver import Receiver  # noqa: E402  (after the importorskip)


def exercise(proxy: ProxyProcess, fake: FakeUpstreamProcess, tokens: list[str]) -> list[bytes]:
    """Requests of every kind; returns everything the clients received."""
    seen: list[bytes] = []
    good, other_room = tokens[0], tokens[1]
    oa = openai.OpenAI(base_url=proxy.url + "/v1", api_key=good, max_retries=0, timeout=10)
    raw = oa.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    seen.append(repr(dict(raw.headers)).encode() + raw.http_response.content)
    with oa.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}], stream=True
    ) as response:
        seen.append(repr(dict(response.headers)).encode() + b"".join(response.iter_bytes()))
    an = anthropic.Anthropic(
        base_url=proxy.url + "/anthropic", api_key=good, max_retries=0, timeout=10
    )
    with an.messages.stream(
        model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "a"}]
    ) as stream:
        stream.get_final_message()
    failures = [
        lambda: openai.OpenAI(
            base_url=proxy.url + "/rooms/elsewhere/v1", api_key=other_room, max_retries=0
        ).models.list(),
        lambda: openai.OpenAI(
            base_url=proxy.url + "/v1", api_key=good + "tampered", max_retries=0
        ).models.list(),
        lambda: oa.files.list(),
        lambda: oa.chat.completions.create(model="gpt-not-priced", messages=[]),
    ]
    fake.script(Scripted(path="/v1/chat/completions", replay="openai_error_429_rate_limit.json"))
    failures.append(
        lambda: oa.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    )
    for attempt in failures:
        try:
            attempt()
        except openai.APIStatusError as exc:
            seen.append(repr(dict(exc.response.headers)).encode() + exc.response.content)
    fake.script(Scripted(path="/v1/messages", hang_after_chunks=2))
    with an.messages.with_streaming_response.create(
        model="claude-haiku-4-5",
        max_tokens=20,
        stream=True,
        messages=[{"role": "user", "content": "leave"}],
    ) as response:
        next(iter(response.parse()))
    return seen


def test_no_secret_anywhere(fake: FakeUpstreamProcess, tmp_path: Path) -> None:
    receiver = Receiver()
    tokens = [make_token(room="room-1"), make_token(room="room-2")]
    capture = tmp_path / "capture.jsonl"
    ledger = tmp_path / "ledger.sqlite3"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_METRIC_EXPORT_INTERVAL": "60000"}
    try:
        with ProxyProcess(
            fake.base_url,
            tmp_path,
            ["--capture", str(capture), "--ledger", str(ledger), "--log-level", "debug"],
            env=env,
        ) as proxy:
            seen = exercise(proxy, fake, tokens)
            assert proxy.process is not None
            proxy.process.send_signal(signal.SIGTERM)
            assert proxy.process.wait(timeout=20) == 0
            log = proxy.log_path.read_bytes()
            records = proxy.records_path.read_bytes()
    finally:
        receiver.close()
    exported = b"".join(r.SerializeToString() for r in (*receiver.metrics, *receiver.traces))
    places = {
        "responses": b"\n".join(seen),
        "log": log,
        "records": records,
        "capture": capture.read_bytes(),
        "ledger": b"".join(p.read_bytes() for p in tmp_path.glob("ledger.sqlite3*")),
        "telemetry": exported,
    }
    assert all(places.values()), [name for name, data in places.items() if not data]
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, SECRET, *tokens):
        for name, data in places.items():
            assert secret.encode() not in data, f"a secret leaked into the {name}"
    # The provider keys did reach the provider, and only the provider.
    sent = [dict(request.headers) for request in fake.received()]
    assert any(h.get("authorization") == f"Bearer {OPENAI_KEY}" for h in sent)
    assert any(h.get("x-api-key") == ANTHROPIC_KEY for h in sent)
