"""The command line: `meshproxy token` mints tokens the verifier accepts; bad config is named."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meshproxy.adapters.cli import main
from meshproxy_core.auth import HS256Verifier

SECRET = "cli-secret-" + "q" * 40


def test_token_command_mints_a_verifiable_token(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "token",
            "--room",
            "lab",
            "--participant",
            "ada",
            "--project",
            "acme",
            "--models",
            "openai/gpt-4o*,anthropic/claude-haiku*",
            "--ttl",
            "120",
            "--secret",
            SECRET,
            "--session",
            "s1",
        ]
    )
    assert code == 0
    token = capsys.readouterr().out.strip()
    principal = HS256Verifier({"": SECRET}).verify(token, now=time.time())
    assert (principal.project, principal.room, principal.participant) == ("acme", "lab", "ada")
    assert principal.models == ("openai/gpt-4o*", "anthropic/claude-haiku*")
    assert principal.session == "s1"


def test_token_command_needs_a_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESHAGENT_SECRET", raising=False)
    assert main(["token", "--room", "r", "--participant", "p"]) == 2
    assert "MESHAGENT_SECRET" in capsys.readouterr().err


def test_bad_config_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nheader_timeout = 1\nno_such_limit = 3\n")
    assert main(["serve", "--config", str(config), "--port", "0"]) == 2
    assert "no_such_limit" in capsys.readouterr().err
    config.write_text("this is = not [toml")
    assert main(["serve", "--config", str(config), "--port", "0"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_prices_listing_and_worked_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices"]) == 0
    listing = capsys.readouterr().out
    assert "openai     gpt-4o-mini" in listing and "anthropic  claude-haiku-4-5" in listing
    assert main(["prices", "anthropic/claude-sonnet-4-5-20250929"]) == 0
    details = capsys.readouterr().out
    assert "resolved from anthropic/claude-sonnet-4-5-20250929" in details
    # 10,000 input x $3/M + 40,000 cached x $0.30/M + 2,000 output x $15/M
    # = 0.03 + 0.012 + 0.03 = 0.072
    assert "total                    $0.072 " in details


def test_prices_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "gpt-nonexistent"]) == 1
    assert "no price for 'gpt-nonexistent'" in capsys.readouterr().err
