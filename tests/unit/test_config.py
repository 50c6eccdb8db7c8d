"""Configuration: environment defaults, per-project and per-room keys, validation."""

from __future__ import annotations

import pytest

from meshproxy_core.config import ConfigError, ProviderNotConfigured, ProxyConfig

ENV = {
    "OPENAI_API_KEY": "sk-server",
    "OPENAI_BASE_URL": "http://up.local/v1",
    "ANTHROPIC_API_KEY": "sk-ant-server",
    "MESHAGENT_SECRET": "env-secret",
    "OPENAI_ORG_ID": "org-server",
}

DOC = {
    "auth": {"secrets": {"k1": "kid-secret"}, "leeway_seconds": 5},
    "providers": {"anthropic": {"base_url": "http://ant.local"}},
    "projects": {
        "acme": {
            "providers": {"openai": {"api_key": "sk-acme"}},
            "rooms": {"lab": {"providers": {"openai": {"api_key": "sk-acme-lab"}}}},
        },
        "globex": {"providers": {"anthropic": {"api_key": "sk-ant-globex"}}},
    },
}


def test_environment_defaults() -> None:
    config = ProxyConfig.from_mapping({}, ENV)
    settings = config.provider_settings("openai", "any", "room")
    assert settings.api_key == "sk-server"
    assert settings.organization == "org-server"
    assert settings.upstream_url("openai", "/chat/completions", "") == (
        "http://up.local/v1/chat/completions"
    )
    assert config.secrets == {"": "env-secret"}


def test_file_overrides_environment_and_keeps_kid_secrets() -> None:
    config = ProxyConfig.from_mapping(DOC, ENV)
    assert config.secrets == {"k1": "kid-secret", "": "env-secret"}
    assert config.leeway_seconds == 5
    anthropic = config.provider_settings("anthropic", "nobody", "r")
    assert anthropic.api_key == "sk-ant-server"
    # ANTHROPIC_BASE_URL excludes /v1; the proxy adds it.
    assert anthropic.upstream_url("anthropic", "/messages", "beta=true") == (
        "http://ant.local/v1/messages?beta=true"
    )


def test_project_and_room_keys_never_cross() -> None:
    config = ProxyConfig.from_mapping(DOC, ENV)
    assert config.provider_settings("openai", "acme", "other").api_key == "sk-acme"
    assert config.provider_settings("openai", "acme", "lab").api_key == "sk-acme-lab"
    assert config.provider_settings("openai", "globex", "lab").api_key == "sk-server"
    assert config.provider_settings("anthropic", "globex", "x").api_key == "sk-ant-globex"
    assert config.provider_settings("anthropic", "acme", "x").api_key == "sk-ant-server"
    # A project's own key does not inherit the server account's organization header.
    assert config.provider_settings("openai", "acme", "x").organization is None
    assert config.provider_settings("openai", "globex", "x").organization == "org-server"
    # ...but it does inherit the base URL.
    assert config.provider_settings("openai", "acme", "x").base_url == "http://up.local/v1"


def test_no_key_anywhere_refuses() -> None:
    config = ProxyConfig.from_mapping({}, {})
    with pytest.raises(ProviderNotConfigured) as info:
        config.provider_settings("openai", "p", "r")
    assert info.value.status == 503
    assert not config.has_any_provider_key()


def test_key_is_not_in_repr() -> None:
    config = ProxyConfig.from_mapping(DOC, ENV)
    assert "sk-acme" not in repr(config) and "sk-server" not in repr(config)
    assert "kid-secret" not in repr(config)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"providers": {"openai": {"apikey": "x"}}}, "unknown keys: apikey"),
        ({"providers": "x"}, "[providers] must be a table"),
        ({"projects": {"p": 3}}, "[projects.p] must be a table"),
        ({"proxy": {"mount": "llm"}}, "mount must start with '/'"),
    ],
)
def test_invalid_config_names_the_key(doc: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ProxyConfig.from_mapping(doc, {})
    assert message in str(info.value)
