"""Both ends of the wire: `meshproxy env` for a room, an unmodified SDK script using it, and the
client helpers (resolution order, session header, user agent, redacted logging)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess
from meshproxy.contrib.clients import (
    MissingSetting,
    get_anthropic_client,
    get_openai_client,
    logging_http_client,
    openai_default_model,
)

from .conftest import SECRET, ProxyProcess, make_token

pytestmark = pytest.mark.e2e

UNMODIFIED_SCRIPT = textwrap.dedent(
    """
    import json, openai, anthropic
    oa = openai.OpenAI().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "from a room service"}])
    an = anthropic.Anthropic().messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    print(json.dumps([oa.headers["x-meshproxy-request-id"], an.headers["x-meshproxy-request-id"]]))
    """
)


def room_env(proxy: ProxyProcess, room: str = "lab") -> dict[str, str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshproxy.adapters.cli",
            "env",
            "--room",
            room,
            "--participant",
            "svc-7",
            "--project",
            "acme",
            "--proxy-url",
            proxy.url,
            "--secret",
            SECRET,
            "--session",
            "sess-room",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(result.stdout)


def test_unmodified_script_with_meshproxy_env_is_attributed_to_the_room(
    proxy: ProxyProcess, fake: FakeUpstreamProcess
) -> None:
    variables = room_env(proxy)
    assert variables["OPENAI_BASE_URL"] == f"{proxy.url}/rooms/lab/openai/v1"
    result = subprocess.run(
        [sys.executable, "-c", UNMODIFIED_SCRIPT],
        env={"PATH": "/usr/bin:/bin", **variables},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for request_id in json.loads(result.stdout):
        principal = proxy.record(request_id)["principal"]
        assert principal == {
            "project": "acme",
            "room": "lab",
            "participant": "svc-7",
            "session": "sess-room",
            "role": "agent",
            "api_key_id": None,
            "models": None,
        }
    assert len(fake.received()) == 2


def test_env_formats(proxy: ProxyProcess) -> None:
    shell = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshproxy.adapters.cli",
            "env",
            "--room",
            "r",
            "--participant",
            "p",
            "--secret",
            SECRET,
            "--proxy-url",
            proxy.url,
            "--format",
            "shell",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    names = [line.split("=")[0] for line in shell.splitlines()]
    assert names == [
        "export OPENAI_BASE_URL",
        "export ANTHROPIC_BASE_URL",
        "export OPENAI_API_KEY",
        "export ANTHROPIC_API_KEY",
        "export MESHAGENT_TOKEN",
        "export MESHAGENT_SESSION_ID",
    ]


def test_helpers_resolve_from_environment_and_send_session(
    proxy: ProxyProcess, fake: FakeUpstreamProcess
) -> None:
    env = {
        "OPENAI_BASE_URL": proxy.url + "/openai/v1",
        "ANTHROPIC_BASE_URL": proxy.url + "/anthropic",
        "MESHAGENT_TOKEN": make_token(),
        "MESHAGENT_SESSION_ID": "sess-helper",
        "OPENAI_MODEL": "gpt-4o-mini",
    }
    client = get_openai_client(env=env, max_retries=0)
    model = openai_default_model(env)
    assert model == "gpt-4o-mini"
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "x"}]
    )
    record = proxy.record(raw.headers["x-meshproxy-request-id"])
    assert record["principal"]["session"] == "sess-helper"
    sent = dict(fake.received()[-1].headers)
    assert sent["user-agent"].startswith("meshproxy-clients/")
    anthropic_client = get_anthropic_client(env=env, max_retries=0)
    message = anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert message.usage.output_tokens > 0


def test_explicit_arguments_win_and_missing_settings_are_named() -> None:
    client = get_openai_client(base_url="http://127.0.0.1:9/v1", token="t", env={})
    assert str(client.base_url).startswith("http://127.0.0.1:9/v1")
    with pytest.raises(MissingSetting) as info:
        get_openai_client(env={"MESHAGENT_TOKEN": "t"})
    assert "OPENAI_BASE_URL" in str(info.value)
    with pytest.raises(MissingSetting) as info:
        get_anthropic_client(env={"ANTHROPIC_BASE_URL": "http://x"})
    assert "ANTHROPIC_API_KEY or MESHAGENT_TOKEN" in str(info.value)


def test_logging_client_redacts_credentials(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, caplog: pytest.LogCaptureFixture
) -> None:
    token = make_token()
    client = get_openai_client(
        base_url=proxy.url + "/v1",
        token=token,
        env={},
        max_retries=0,
        http_client=logging_http_client("openai"),
    )
    with caplog.at_level(logging.INFO, logger="meshproxy.clients"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "log me"}]
        )
    text = caplog.text
    assert "request POST" in text and "response 200" in text
    assert "[redacted]" in text
    assert token not in text
    assert "log me" in text  # bodies are logged (truncated), credentials are not
