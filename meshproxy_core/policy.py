"""Project policy: what a project's own settings allow, on top of what the token grants.

Owns: the app filter (User-Agent patterns, `blocked` or `allowed` mode, and whether a request
without a User-Agent is refused) and the project's model allow-list. A model must be allowed by
both the token's `llm.models` grant (auth) and the project's `allowed_models`.

Does not own: where settings come from (config, or the admin API through an adapter).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from .auth import model_matches
from .config import AppFilter, ProjectSettings
from .errors import AppNotAllowed, ModelNotAllowed, UserAgentRequired

__all__ = ["check_app", "check_project_model"]


def check_app(provider: str, app_filter: AppFilter | None, user_agent: str | None) -> None:
    """Refuse a client application the project's filter does not accept."""
    if app_filter is None:
        return
    if not user_agent:
        if app_filter.require_user_agent:
            raise UserAgentRequired(provider)
        # No User-Agent: nothing to match. An `allowed` list admits only named apps.
        if app_filter.mode == "allowed":
            raise AppNotAllowed(provider)
        return
    agent = user_agent.lower()
    matched = any(fnmatchcase(agent, pattern.lower()) for pattern in app_filter.user_agents)
    if matched == (app_filter.mode == "blocked"):
        raise AppNotAllowed(provider)


def check_project_model(settings: ProjectSettings | None, provider: str, model: str | None) -> None:
    """Refuse a model the project does not allow (None: the project allows every model)."""
    if settings is None or settings.allowed_models is None or model is None:
        return
    if not any(model_matches(p, provider, model) for p in settings.allowed_models):
        raise ModelNotAllowed(provider, model)
