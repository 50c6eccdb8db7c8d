"""Proxy configuration: an immutable value built from a parsed config file and an environment.

Owns: the shape of the TOML config file (documented in docs/configuration.md), the defaults, and
which provider credentials serve which request (room, then project, then server default: a
project's own key is never used for another project's requests).

Does not own: reading files or the process environment; adapters pass both in as mappings, so
the core stays free of I/O and every configuration is testable as plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .errors import ProxyError

__all__ = [
    "AppFilter",
    "ConfigError",
    "ProjectSettings",
    "ProviderNotConfigured",
    "ProviderSettings",
    "ProxyConfig",
]

PROVIDERS = ("openai", "anthropic")
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
_ENV_KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_ENV_URLS = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


class ProviderNotConfigured(ProxyError):
    status = 503
    code = "provider_not_configured"
    message = "No provider key is configured for this project."


@attrs.frozen
class ProviderSettings:
    """Where and with which key one provider is reached."""

    api_key: str | None = attrs.field(default=None, repr=False)  # never in reprs or logs
    base_url: str | None = None
    organization: str | None = None  # OpenAI only
    project: str | None = None  # OpenAI only

    def merged_over(self, base: ProviderSettings) -> ProviderSettings:
        """These settings, falling back to `base` field by field. A different key never inherits
        the base's organization/project headers, which belong to the base's account."""
        own_account = self.api_key is not None
        return ProviderSettings(
            api_key=self.api_key if own_account else base.api_key,
            base_url=self.base_url or base.base_url,
            organization=self.organization if own_account else base.organization,
            project=self.project if own_account else base.project,
        )

    def upstream_url(self, provider: str, path: str, query: str) -> str:
        base = (self.base_url or DEFAULT_BASE_URLS[provider]).rstrip("/")
        if provider == "anthropic" and not base.endswith("/v1"):
            # ANTHROPIC_BASE_URL excludes the version (as the SDK reads it); OPENAI_BASE_URL has it.
            base += "/v1"
        return base + path + (f"?{query}" if query else "")


@attrs.frozen
class AppFilter:
    """Which client applications (by User-Agent) a project accepts. Patterns are shell-style
    globs (`*`, `?`, `[...]`), matched case-insensitively against the whole User-Agent."""

    mode: str = "blocked"  # "blocked": refuse matches; "allowed": refuse everything else
    user_agents: tuple[str, ...] = ()
    require_user_agent: bool = False  # refuse requests that send no User-Agent at all


@attrs.frozen
class ProjectSettings:
    """One project's settings: its own provider keys (per room too), the models it allows (both
    this and the token's own grant must allow a model), and its app filter."""

    providers: Mapping[str, ProviderSettings] = attrs.field(factory=dict)
    rooms: Mapping[str, Mapping[str, ProviderSettings]] = attrs.field(factory=dict)
    allowed_models: tuple[str, ...] | None = None  # `provider/model` patterns; None: all
    app_filter: AppFilter | None = None
    prices: Mapping[str, Any] = attrs.field(factory=dict)  # price-book overrides (negotiated)

    @classmethod
    def from_mapping(cls, data: Any, where: str = "project") -> ProjectSettings:
        """Validate a project's table (TOML `[projects.ID]`, or the admin API's JSON)."""
        return _project(data, where)


@attrs.frozen
class ProxyConfig:
    """Everything the core needs to decide; built once, shared by every exchange."""

    secrets: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    leeway_seconds: float = 30.0
    providers: Mapping[str, ProviderSettings] = attrs.field(factory=dict)
    projects: Mapping[str, ProjectSettings] = attrs.field(factory=dict)
    mount: str = ""
    public_url: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    default_anthropic_version: str = DEFAULT_ANTHROPIC_VERSION
    price_overrides: Mapping[str, Any] = attrs.field(factory=dict)
    simulated: bool = False  # upstream is the built-in simulated provider

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> ProxyConfig:
        """Build from a parsed TOML document and an environment (both plain mappings)."""
        env = env or {}
        proxy = _table(data, "proxy")
        auth = _table(data, "auth")
        secrets = {str(k): str(v) for k, v in _table(auth, "secrets").items()}
        default_secret = auth.get("secret") or env.get("MESHAGENT_SECRET")
        if default_secret:
            secrets[""] = str(default_secret)
        providers = {}
        configured = _table(data, "providers")
        for name in PROVIDERS:
            from_env = ProviderSettings(
                api_key=env.get(_ENV_KEYS[name]) or None,
                base_url=env.get(_ENV_URLS[name]) or None,
                organization=env.get("OPENAI_ORG_ID") or None if name == "openai" else None,
                project=env.get("OPENAI_PROJECT_ID") or None if name == "openai" else None,
            )
            providers[name] = _provider(configured.get(name), f"providers.{name}").merged_over(
                from_env
            )
        projects = {
            str(pid): _project(body, f"projects.{pid}")
            for pid, body in _table(data, "projects").items()
        }
        return cls(
            secrets=secrets,
            leeway_seconds=float(auth.get("leeway_seconds", 30.0)),
            providers=providers,
            projects=projects,
            mount=_mount(proxy.get("mount", "")),
            public_url=proxy.get("public_url"),
            max_body_bytes=int(proxy.get("max_body_bytes", 32 * 1024 * 1024)),
            default_anthropic_version=str(
                proxy.get("anthropic_version", DEFAULT_ANTHROPIC_VERSION)
            ),
            price_overrides=_table(data, "prices"),
        )

    def provider_settings(self, provider: str, project: str, room: str) -> ProviderSettings:
        """The settings for a request of `project`/`room`: room, then project, then default."""
        settings = self.providers.get(provider, ProviderSettings())
        project_settings = self.projects.get(project)
        if project_settings is not None:
            own = project_settings.providers.get(provider)
            if own is not None:
                settings = own.merged_over(settings)
            room_settings = project_settings.rooms.get(room, {}).get(provider)
            if room_settings is not None:
                settings = room_settings.merged_over(settings)
        if not settings.api_key:
            raise ProviderNotConfigured(provider)
        return settings

    def project(self, project: str) -> ProjectSettings | None:
        return self.projects.get(project)

    def with_projects(self, projects: Mapping[str, ProjectSettings]) -> ProxyConfig:
        """This configuration with `projects` replacing the named projects' settings (settings
        changed at run time through the admin API)."""
        return attrs.evolve(self, projects={**self.projects, **projects})

    def has_any_provider_key(self) -> bool:
        return any(p.api_key for p in self.providers.values()) or any(
            p.api_key for proj in self.projects.values() for p in proj.providers.values()
        )


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _provider(data: Any, where: str) -> ProviderSettings:
    if data is None:
        return ProviderSettings()
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    unknown = set(data) - {"api_key", "base_url", "organization", "project"}
    if unknown:
        raise ConfigError(f"[{where}] has unknown keys: {', '.join(sorted(unknown))}")
    return ProviderSettings(
        api_key=data.get("api_key") or None,
        base_url=data.get("base_url") or None,
        organization=data.get("organization") or None,
        project=data.get("project") or None,
    )


def _project(data: Any, where: str) -> ProjectSettings:
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    unknown = set(data) - {"providers", "rooms", "allowed_models", "app_filter", "prices"}
    if unknown:
        raise ConfigError(f"[{where}] has unknown keys: {', '.join(sorted(unknown))}")
    providers = {
        name: _provider(body, f"{where}.providers.{name}")
        for name, body in _table(data, "providers").items()
    }
    rooms = {
        str(room): {
            name: _provider(body, f"{where}.rooms.{room}.providers.{name}")
            for name, body in _table(body, "providers").items()
        }
        for room, body in _table(data, "rooms").items()
    }
    return ProjectSettings(
        providers=providers,
        rooms=rooms,
        allowed_models=_patterns(data.get("allowed_models"), f"{where}.allowed_models"),
        app_filter=_app_filter(data.get("app_filter"), f"{where}.app_filter"),
        prices=_table(data, "prices"),
    )


def _patterns(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"[{where}] must be a list of non-empty strings")
    return tuple(value)


def _app_filter(data: Any, where: str) -> AppFilter | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    unknown = set(data) - {"mode", "user_agents", "require_user_agent"}
    if unknown:
        raise ConfigError(f"[{where}] has unknown keys: {', '.join(sorted(unknown))}")
    mode = data.get("mode", "blocked")
    if mode not in ("blocked", "allowed"):
        raise ConfigError(f"[{where}] mode must be 'blocked' or 'allowed'")
    require = data.get("require_user_agent", False)
    if not isinstance(require, bool):
        raise ConfigError(f"[{where}] require_user_agent must be true or false")
    return AppFilter(
        mode=mode,
        user_agents=_patterns(data.get("user_agents", []), f"{where}.user_agents") or (),
        require_user_agent=require,
    )


def _mount(value: Any) -> str:
    mount = str(value or "").rstrip("/")
    if mount and not mount.startswith("/"):
        raise ConfigError("[proxy] mount must start with '/'")
    return mount
