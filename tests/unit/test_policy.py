"""Project policy: app filter by User-Agent, and the project's model allow-list on top of the
token's grant."""

from __future__ import annotations

import json

import pytest

from meshproxy_core.auth import mint_token
from meshproxy_core.config import AppFilter, ConfigError, ProjectSettings, ProxyConfig
from meshproxy_core.errors import AppNotAllowed, UserAgentRequired
from meshproxy_core.exchange import Forward, NeedBody, Proxy, Reject
from meshproxy_core.policy import check_app
from meshproxy_core.pricing import PriceBook

SECRET = "policy-" + "k" * 40
NOW = 1_900_000_000.0


def test_blocked_mode_refuses_matches_only() -> None:
    app_filter = AppFilter(mode="blocked", user_agents=("curl/*", "*scraper*"))
    check_app("openai", app_filter, "OpenAI/Python 3.60.0")
    check_app("openai", app_filter, None)
    for agent in ("curl/8.5.0", "CURL/7", "MyScraper/1.0"):
        with pytest.raises(AppNotAllowed):
            check_app("openai", app_filter, agent)


def test_allowed_mode_refuses_everything_else() -> None:
    app_filter = AppFilter(mode="allowed", user_agents=("OpenAI/Python *", "Anthropic/*"))
    check_app("openai", app_filter, "OpenAI/Python 3.60.0")
    check_app("anthropic", app_filter, "anthropic/Python 2.17")
    with pytest.raises(AppNotAllowed):
        check_app("openai", app_filter, "curl/8")
    with pytest.raises(AppNotAllowed):
        check_app("openai", app_filter, None)


def test_missing_user_agent_can_be_required() -> None:
    with pytest.raises(UserAgentRequired) as info:
        check_app("openai", AppFilter(require_user_agent=True), "")
    assert info.value.code == "user_agent_required" and info.value.status == 403


def test_settings_validation_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="mode must be"):
        ProjectSettings.from_mapping({"app_filter": {"mode": "sometimes"}})
    with pytest.raises(ConfigError, match="unknown keys: colour"):
        ProjectSettings.from_mapping({"colour": "red"})
    with pytest.raises(ConfigError, match="list of non-empty strings"):
        ProjectSettings.from_mapping({"allowed_models": "openai/*"})


def _proxy() -> Proxy:
    document = {
        "projects": {
            "acme": {
                "allowed_models": ["openai/gpt-4o-mini", "anthropic/claude-haiku*"],
                "app_filter": {"mode": "blocked", "user_agents": ["curl/*"]},
            }
        }
    }
    env = {"MESHAGENT_SECRET": SECRET, "OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"}
    return Proxy(ProxyConfig.from_mapping(document, env), prices=PriceBook.default())


def _request(model: str, agent: str, *, models: list[str] | None = None) -> Forward | Reject:
    token = mint_token(SECRET, project="acme", room="r", participant="p", now=NOW, models=models)
    ex = _proxy().exchange(now=NOW)
    headers = [
        (b"authorization", f"Bearer {token}".encode()),
        (b"user-agent", agent.encode()),
        (b"content-type", b"application/json"),
    ]
    body = json.dumps({"model": model, "messages": []}).encode()
    decision = ex.request_head("POST", "/v1/chat/completions", headers, content_length=len(body))
    if isinstance(decision, Reject):
        return decision
    assert isinstance(decision, NeedBody)
    result = ex.request_body(body)
    assert isinstance(result, Forward | Reject)
    return result


def test_both_the_project_and_the_token_must_allow_the_model() -> None:
    assert isinstance(_request("gpt-4o-mini", "OpenAI/Python"), Forward)
    refused = _request("gpt-4o", "OpenAI/Python")  # the token allows it, the project does not
    assert isinstance(refused, Reject) and refused.status == 403
    assert json.loads(refused.body)["error"]["code"] == "model_not_allowed"
    narrowed = _request("gpt-4o-mini", "OpenAI/Python", models=["openai/gpt-4.1*"])
    assert isinstance(narrowed, Reject) and narrowed.status == 403  # the token does not


def test_blocked_app_is_refused_before_the_body() -> None:
    refused = _request("gpt-4o-mini", "curl/8.5.0")
    assert isinstance(refused, Reject) and refused.status == 403
    assert json.loads(refused.body)["error"]["code"] == "app_not_allowed"
