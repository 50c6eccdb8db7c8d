"""Refusals: a small hierarchy of exceptions with stable codes, rendered in each provider's shape.

Owns: every reason the proxy can refuse a request, its HTTP status and stable machine-readable
code, and the JSON error bodies in OpenAI's and Anthropic's own shapes, so that the official SDKs
raise their normal exception classes (`openai.NotFoundError`, `anthropic.AuthenticationError`...).

Shapes (WIRE.md §7, §13):
  OpenAI:    {"error": {"message", "type", "param", "code"}}
  Anthropic: {"type": "error", "error": {"type", "message"}, "request_id"}
Anthropic's shape has no code field; the stable code is added as `error.code`, which the SDK
ignores and machines can read.

Messages never echo anything the client sent: a refusal names the rule, not the input (the model
name in `model_not_allowed` / `model_not_priced` is the one exception, and it is escaped by JSON
encoding and length-capped).

Does not own: deciding when to refuse (routes, auth, exchange).
"""

from __future__ import annotations

import json

__all__ = [
    "AuthenticationFailed",
    "BadRequest",
    "BodyTooLarge",
    "MethodNotAllowed",
    "ModelNotAllowed",
    "ModelNotPriced",
    "PathNotAllowed",
    "PermissionDenied",
    "ProxyError",
    "UpstreamUnavailable",
    "error_body",
]

# HTTP status -> Anthropic error.type (WIRE.md §13).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# HTTP status -> OpenAI error.type (WIRE.md §7: 401 is invalid_request_error, not authentication).
_OPENAI_TYPES = {
    403: "permission_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class ProxyError(Exception):
    """A refusal by the proxy. `code` is stable; `status` is the HTTP status sent."""

    status: int = 400
    code: str = "bad_request"
    message: str = "The request was refused by the proxy."

    def __init__(self, provider: str | None, message: str | None = None) -> None:
        self.provider = provider
        if message is not None:
            self.message = message
        super().__init__(f"{self.code}: {self.message}")

    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        return []


class PathNotAllowed(ProxyError):
    status = 404
    code = "path_not_allowed"
    message = "This path is not served by the proxy."


class MethodNotAllowed(ProxyError):
    status = 405
    code = "method_not_allowed"
    message = "This method is not allowed on this path."

    def __init__(self, provider: str | None, allowed: tuple[str, ...]) -> None:
        super().__init__(provider)
        self.allowed = allowed

    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", ", ".join(self.allowed).encode())]


class AuthenticationFailed(ProxyError):
    status = 401
    code = "invalid_token"
    message = "Invalid or missing room token."


class PermissionDenied(ProxyError):
    status = 403
    code = "permission_denied"
    message = "The room token does not grant access to this resource."


class RoomMismatch(PermissionDenied):
    code = "room_mismatch"
    message = "The room token is not valid for this room."


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"

    def __init__(self, provider: str | None, model: str) -> None:
        super().__init__(provider, f"The model {_quote(model)} is not allowed for this room token.")


class ObjectNotFound(ProxyError):
    """The request names a stored object the caller's room does not own. Answered exactly as
    for an id that does not exist, so a room cannot probe for other rooms' ids."""

    status = 404
    code = "object_not_found"
    message = "No such object."


class AppNotAllowed(PermissionDenied):
    code = "app_not_allowed"
    message = "This application is not allowed to use this project."


class UserAgentRequired(PermissionDenied):
    code = "user_agent_required"
    message = "This project requires a User-Agent header."


class BadRequest(ProxyError):
    status = 400
    code = "invalid_request"


class ModelNotPriced(ProxyError):
    status = 400
    code = "model_not_priced"

    def __init__(self, provider: str | None, model: str) -> None:
        super().__init__(
            provider,
            f"The model {_quote(model)} has no price in this proxy's price book, so its usage "
            "could not be accounted; the request was not forwarded.",
        )


class BodyTooLarge(ProxyError):
    status = 413
    code = "body_too_large"
    message = "The request body is larger than this proxy accepts."


class UpstreamUnavailable(ProxyError):
    status = 502
    code = "upstream_unavailable"
    message = "The provider could not be reached."


class UpstreamTimeout(ProxyError):
    status = 504
    code = "upstream_timeout"
    message = "The provider did not answer in time."


def _quote(text: str) -> str:
    shown = text if len(text) <= 100 else text[:100] + "…"
    return json.dumps(shown)


def error_body(
    provider: str | None,
    status: int,
    message: str,
    code: str,
    *,
    request_id: str,
) -> bytes:
    """The JSON error body for `provider` (OpenAI's shape when unknown)."""
    if provider == "anthropic":
        payload: dict[str, object] = {
            "type": "error",
            "error": {
                "type": _ANTHROPIC_TYPES.get(status, "invalid_request_error"),
                "message": message,
                "code": code,
            },
            "request_id": request_id,
        }
    else:
        payload = {
            "error": {
                "message": message,
                "type": _OPENAI_TYPES.get(status, "invalid_request_error"),
                "param": None,
                "code": code,
            }
        }
    return json.dumps(payload, separators=(",", ":")).encode()


def stream_error_event(provider: str | None, message: str, code: str) -> bytes:
    """An SSE event that ends a cut stream cleanly and makes the SDK raise (WIRE.md §1, §7, §13).

    OpenAI: a data-only frame whose JSON has a top-level `error` (openai-python raises APIError
    on it, whatever the endpoint). Anthropic: `event: error` (anthropic-python raises on it; a
    data-only frame would be skipped silently).
    """
    if provider == "anthropic":
        payload = {
            "type": "error",
            "error": {"type": "api_error", "message": message, "code": code},
        }
        data = json.dumps(payload, separators=(",", ":"))
        return f"event: error\ndata: {data}\n\n".encode()
    payload = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
