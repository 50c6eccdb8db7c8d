"""`meshproxy serve --capture` then `meshproxy usage` on the capture: the offline records equal
the live ones (same state machines, same prices), including a gzip body; refusals are not
captured (nothing reached a provider)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anthropic
import openai
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess, Scripted

from .conftest import ANTHROPIC_KEY, OPENAI_KEY, ProxyProcess, make_token

pytestmark = pytest.mark.e2e


def test_capture_replays_to_the_same_records(fake: FakeUpstreamProcess, tmp_path: Path) -> None:
    capture = tmp_path / "capture.jsonl"
    with ProxyProcess(fake.base_url, tmp_path, ["--capture", str(capture)]) as proxy:
        oa = openai.OpenAI(base_url=proxy.url + "/v1", api_key=make_token(), max_retries=0)
        fake.script(Scripted(path="/v1/chat/completions", content_encoding="gzip"))
        oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}])
        list(
            oa.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "b"}], stream=True
            )
        )
        an = anthropic.Anthropic(
            base_url=proxy.url + "/anthropic", api_key=make_token(), max_retries=0
        )
        with an.messages.stream(
            model="claude-haiku-4-5", max_tokens=40, messages=[{"role": "user", "content": "c"}]
        ) as stream:
            stream.get_final_message()
        with pytest.raises(openai.NotFoundError):  # refused: recorded live, never captured
            oa.files.list()
        live = {r["request_id"]: r for r in proxy.records()}
        captured_text = capture.read_text()
    lines = captured_text.splitlines()
    assert len(lines) == 3
    for secret in (OPENAI_KEY, ANTHROPIC_KEY):
        assert secret not in captured_text
    result = subprocess.run(
        [sys.executable, "-m", "meshproxy.adapters.cli", "usage", str(capture)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    offline = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(offline) == 3
    for record in offline:
        original = live[record["request_id"]]
        for key in ("usage", "cost", "outcome", "endpoint", "model", "usage_source", "stream"):
            assert record[key] == original[key], key
        # The capture keeps who called, not what the token granted (role, models, key id).
        for key in ("project", "room", "participant", "session"):
            assert record["principal"][key] == original["principal"][key]
