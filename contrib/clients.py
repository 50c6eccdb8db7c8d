"""Client helpers: the official SDK clients, pointed at the proxy, with the room token applied.

Owns: resolving each setting (explicit argument, then environment, then a clear error naming
what is missing), the `Meshagent-Session-Id` and `User-Agent` headers the helpers send, and an
optional HTTP client that logs traffic with credentials redacted.

    client = get_openai_client()     # OPENAI_BASE_URL, OPENAI_API_KEY or MESHAGENT_TOKEN
    client = get_anthropic_client()  # ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY or MESHAGENT_TOKEN

Does not own: the SDKs (the `clients` extra installs them) or anything about the proxy itself.
Environment variables are those `meshproxy env` prints for a room.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from meshproxy_core.headers import redacted

__all__ = [
    "MissingSetting",
    "anthropic_default_model",
    "get_anthropic_client",
    "get_async_anthropic_client",
    "get_async_openai_client",
    "get_openai_client",
    "logging_http_client",
    "openai_default_model",
]

USER_AGENT = "meshproxy-clients/0.1"
SESSION_HEADER = "Meshagent-Session-Id"
log = logging.getLogger("meshproxy.clients")


class MissingSetting(RuntimeError):
    """A client setting is neither given nor in the environment."""


def _resolve(
    what: str, explicit: str | None, env: Mapping[str, str], names: tuple[str, ...]
) -> str:
    if explicit:
        return explicit
    for name in names:
        if env.get(name):
            return env[name]
    raise MissingSetting(f"no {what}: pass it explicitly or set {' or '.join(names)}")


def _settings(
    provider: str,
    base_url: str | None,
    token: str | None,
    session_id: str | None,
    env: Mapping[str, str] | None,
) -> dict[str, Any]:
    env = os.environ if env is None else env
    prefix = provider.upper()
    headers = {"User-Agent": f"{USER_AGENT} ({provider})"}
    session = session_id or env.get("MESHAGENT_SESSION_ID")
    if session:
        headers[SESSION_HEADER] = session
    return {
        "base_url": _resolve(f"{provider} base URL", base_url, env, (f"{prefix}_BASE_URL",)),
        "api_key": _resolve("room token", token, env, (f"{prefix}_API_KEY", "MESHAGENT_TOKEN")),
        "default_headers": headers,
    }


def get_openai_client(
    *,
    base_url: str | None = None,
    token: str | None = None,
    session_id: str | None = None,
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """An `openai.OpenAI` client for the proxy. Extra keyword arguments go to the SDK."""
    import openai

    return openai.OpenAI(**_settings("openai", base_url, token, session_id, env), **kwargs)


def get_async_openai_client(
    *,
    base_url: str | None = None,
    token: str | None = None,
    session_id: str | None = None,
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    import openai

    return openai.AsyncOpenAI(**_settings("openai", base_url, token, session_id, env), **kwargs)


def get_anthropic_client(
    *,
    base_url: str | None = None,
    token: str | None = None,
    session_id: str | None = None,
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """An `anthropic.Anthropic` client for the proxy. Extra keyword arguments go to the SDK."""
    import anthropic

    return anthropic.Anthropic(**_settings("anthropic", base_url, token, session_id, env), **kwargs)


def get_async_anthropic_client(
    *,
    base_url: str | None = None,
    token: str | None = None,
    session_id: str | None = None,
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    import anthropic

    return anthropic.AsyncAnthropic(
        **_settings("anthropic", base_url, token, session_id, env), **kwargs
    )


def openai_default_model(env: Mapping[str, str] | None = None) -> str | None:
    """The room's default OpenAI model (`OPENAI_MODEL`), for callers that want one."""
    return (os.environ if env is None else env).get("OPENAI_MODEL") or None


def anthropic_default_model(env: Mapping[str, str] | None = None) -> str | None:
    return (os.environ if env is None else env).get("ANTHROPIC_MODEL") or None


def logging_http_client(
    sdk: str = "openai",
    *,
    logger: logging.Logger = log,
    max_body: int = 2048,
    redact: bool = True,
) -> Any:
    """The SDK's own default HTTP client, with hooks that log each request and response.

    Credentials are redacted unless `redact=False`; bodies are cut at `max_body` bytes;
    streamed response bodies are not read (that would consume the stream), only announced.
    Pass it as `http_client=` to the helpers above.
    """
    module = __import__(sdk)
    return module.DefaultHttpxClient(
        event_hooks={
            "request": [_log_request(logger, max_body, redact)],
            "response": [_log_response(logger, max_body, redact)],
        }
    )


def _headers(items: Any, redact: bool) -> list[tuple[str, str]]:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items]
    if redact:
        return redacted(raw)
    return [(k.decode(), v.decode()) for k, v in raw]


def _cut(body: bytes, max_body: int) -> str:
    text = body[:max_body].decode("utf-8", "replace")
    return text + (f"… ({len(body)} bytes)" if len(body) > max_body else "")


def _log_request(logger: logging.Logger, max_body: int, redact: bool) -> Callable[[Any], None]:
    def hook(request: Any) -> None:
        body = request.content if hasattr(request, "content") else b""
        logger.info(
            "request %s %s headers=%s body=%s",
            request.method,
            request.url,
            _headers(request.headers.items(), redact),
            _cut(body, max_body),
        )

    return hook


def _log_response(logger: logging.Logger, max_body: int, redact: bool) -> Callable[[Any], None]:
    def hook(response: Any) -> None:
        streamed = "event-stream" in response.headers.get("content-type", "")
        body = "(streamed)" if streamed else _cut(response.read(), max_body)
        logger.info(
            "response %s %s headers=%s body=%s",
            response.status_code,
            response.request.url,
            _headers(response.headers.items(), redact),
            body,
        )

    return hook
