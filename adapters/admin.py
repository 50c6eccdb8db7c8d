"""The admin REST API: read and change a project's settings at run time.

Owns: the routes under `/admin/v1/` (`GET|PUT|PATCH /admin/v1/projects/{id}/settings`,
`GET /admin/v1/openapi.json`), admin authentication (`Authorization: Bearer <admin token>`,
a secret of its own: a room token is never an admin token), request checks (content type, size,
JSON), the JSON error shape `{"error": {"message", "type", "code"}}` with stable codes, and the
OpenAPI 3.1 document (`OPENAPI`, also committed as docs/admin-openapi.json:
`python -m meshproxy.adapters.admin > docs/admin-openapi.json`).

Does not own: storage, validation or masking (contrib.settings), sockets (every adapter calls
`AdminAPI.handle` with plain values, in a worker thread: it does blocking database I/O).
Keys are never logged or echoed; error messages name fields, never values.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import sys
from typing import Any
from urllib.parse import unquote

from meshproxy.contrib.settings import (
    API_KEY_PATTERN,
    BASE_URL_PATTERN,
    HEADER_TEXT_PATTERN,
    MASKED_KEY_PATTERN,
    MAX_PATTERNS,
    PROJECT_ID_PATTERN,
    SettingsStore,
)
from meshproxy_core.config import ConfigError

__all__ = ["OPENAPI", "PREFIX", "AdminAPI"]

log = logging.getLogger("meshproxy.admin")

PREFIX = "/admin/"
MAX_BODY_BYTES = 1024 * 1024
MIN_TOKEN_LENGTH = 16

Headers = list[tuple[bytes, bytes]]
Response = tuple[int, Headers, bytes]

_SETTINGS_PATH = re.compile(r"^/admin/v1/projects/([^/]+)/settings$")
_JSON_TYPES = ("application/json",)
_PATCH_TYPES = ("application/merge-patch+json", "application/json")


class AdminAPI:
    """`handle(method, path, headers, body) -> (status, headers, body)` for `/admin/…` paths.
    With no admin token every admin path is 404, as if the API did not exist."""

    def __init__(
        self,
        store: SettingsStore | None,
        admin_token: str | None,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if admin_token is not None and len(admin_token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"the admin token must have at least {MIN_TOKEN_LENGTH} characters")
        self.store = store
        self._token = admin_token.encode() if admin_token else None
        self.max_body_bytes = max_body_bytes

    @property
    def enabled(self) -> bool:
        return self._token is not None and self.store is not None

    @staticmethod
    def claims(path: str) -> bool:
        """Whether `path` (without query) is the admin API's to answer."""
        return path == "/admin" or path.startswith(PREFIX)

    def handle(self, method: str, path: str, headers: Headers, body: bytes | None) -> Response:
        """Answer one request. `body` None: the body exceeded `max_body_bytes` (unread).
        Never raises: a database failure is a 503 (logged), not a broken connection."""
        try:
            return self._handle(method, path, headers, body)
        except Exception:
            log.exception("admin request %s failed", method)
            return _error(503, "settings_unavailable", "The settings database is unavailable.")

    def _handle(self, method: str, path: str, headers: Headers, body: bytes | None) -> Response:
        path = path.split("?", 1)[0]
        if not self.enabled:
            return _error(404, "not_found", "Not found.")
        if not self._authorized(headers):
            status, out, data = _error(401, "unauthorized", "A valid admin token is required.")
            return status, [*out, (b"www-authenticate", b'Bearer realm="meshproxy-admin"')], data
        if path == "/admin/v1/openapi.json":
            if method != "GET":
                return _not_allowed("GET")
            return _json(200, OPENAPI)
        match = _SETTINGS_PATH.match(path)
        project_id = unquote(match.group(1)) if match else None
        if project_id is None or not re.fullmatch(PROJECT_ID_PATTERN, project_id):
            return _error(404, "not_found", "Not found.")
        if method == "GET":
            return self._get(project_id)
        if method not in ("PUT", "PATCH"):
            return _not_allowed("GET, PUT, PATCH")
        accepted = _JSON_TYPES if method == "PUT" else _PATCH_TYPES
        if _media_type(headers) not in accepted:
            return _error(
                415, "unsupported_media_type", f"Send the body as {' or '.join(accepted)}."
            )
        if body is None:
            return _error(413, "body_too_large", "The request body is too large.")
        try:
            document = json.loads(body, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            return _error(400, "invalid_json", "The request body is not valid JSON.")
        try:
            assert self.store is not None
            if method == "PUT":
                settings = self.store.put(project_id, document)
            else:
                settings = self.store.patch(project_id, document)
        except ConfigError as exc:
            return _error(400, "invalid_settings", str(exc))
        except RecursionError:
            return _error(400, "invalid_settings", "The settings are nested too deeply.")
        log.info("settings of project %s changed (%s)", project_id, method)
        return _json(200, settings)

    def _get(self, project_id: str) -> Response:
        assert self.store is not None
        try:
            settings = self.store.get(project_id)
        except ConfigError as exc:  # e.g. stored keys encrypted and no key to read them
            log.error("settings of project %s unreadable: %s", project_id, exc)
            return _error(500, "settings_unreadable", "The stored settings cannot be read.")
        if settings is None:
            return _error(404, "not_found", "This project has no settings.")
        return _json(200, settings)

    def _authorized(self, headers: Headers) -> bool:
        assert self._token is not None
        given = b""
        for key, value in headers:
            if key.lower() == b"authorization":
                scheme, _, credential = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credential.strip()
                break
        # constant time: the comparison must not tell how much of a guess was right
        return hmac.compare_digest(given, self._token)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _media_type(headers: Headers) -> str:
    for key, value in headers:
        if key.lower() == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return ""


def _json(status: int, document: Any) -> Response:
    body = json.dumps(document, ensure_ascii=False).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    return status, headers, body


def _error(status: int, code: str, message: str) -> Response:
    kind = {
        401: "authentication_error",
        404: "not_found_error",
        405: "invalid_request_error",
        413: "invalid_request_error",
        415: "invalid_request_error",
    }.get(status, "invalid_request_error" if status < 500 else "api_error")
    return _json(status, {"error": {"message": message, "type": kind, "code": code}})


def _not_allowed(allow: str) -> Response:
    status, headers, body = _error(405, "method_not_allowed", "Method not allowed.")
    return status, [*headers, (b"allow", allow.encode())], body


# -- the OpenAPI document -----------------------------------------------------------------------


def _nullable_string(pattern: str, description: str) -> dict[str, Any]:
    return {"type": ["string", "null"], "pattern": pattern, "description": description}


_PROVIDER = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "api_key": {
            "description": "The provider key (write-only: reads show '…' and its last 4 "
            "characters; sending that masked value back keeps the stored key). Null: none.",
            "anyOf": [
                {"type": "string", "pattern": API_KEY_PATTERN, "maxLength": 500},
                {"type": "string", "pattern": MASKED_KEY_PATTERN},
                {"type": "null"},
            ],
        },
        "base_url": _nullable_string(BASE_URL_PATTERN, "Where the provider is reached."),
        "organization": _nullable_string(HEADER_TEXT_PATTERN, "OpenAI only."),
        "project": _nullable_string(HEADER_TEXT_PATTERN, "OpenAI only."),
    },
}
_PROVIDERS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "openai": {"$ref": "#/components/schemas/Provider"},
        "anthropic": {"$ref": "#/components/schemas/Provider"},
    },
}
_PATTERNS = {
    "type": "array",
    "maxItems": MAX_PATTERNS,
    "items": {"type": "string", "minLength": 1, "maxLength": 500},
}
_SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "providers": {"$ref": "#/components/schemas/Providers"},
        "rooms": {
            "type": "object",
            "description": "Per-room provider settings, by room id.",
            "propertyNames": {"minLength": 1, "maxLength": 200},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"providers": {"$ref": "#/components/schemas/Providers"}},
            },
        },
        "allowed_models": {
            "description": "`provider/model` glob patterns; null: every model (the room "
            "token's own `llm.models` grant must allow a model too).",
            "anyOf": [_PATTERNS, {"type": "null"}],
        },
        "app_filter": {
            "description": "Which client applications (by User-Agent) the project accepts.",
            "anyOf": [
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "mode": {"type": "string", "enum": ["blocked", "allowed"]},
                        "user_agents": _PATTERNS,
                        "require_user_agent": {"type": "boolean"},
                    },
                },
                {"type": "null"},
            ],
        },
    },
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {
                    "type": "string",
                    "enum": [
                        "unauthorized",
                        "not_found",
                        "invalid_settings",
                        "method_not_allowed",
                        "unsupported_media_type",
                        "invalid_json",
                        "body_too_large",
                        "settings_unreadable",
                        "settings_unavailable",
                    ],
                },
            },
        }
    },
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _settings_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ProjectSettings"}}
        },
    }


_COMMON_ERRORS = {
    "401": _error_response("Missing or wrong admin token (`unauthorized`)."),
    "404": _error_response("Unknown path or project (`not_found`)."),
    "405": _error_response("Method not allowed (`method_not_allowed`)."),
    "503": _error_response("The settings database is unavailable (`settings_unavailable`)."),
}
_WRITE_ERRORS = {
    "400": _error_response("Invalid JSON (`invalid_json`) or settings (`invalid_settings`)."),
    "413": _error_response("Body over 1 MiB (`body_too_large`)."),
    "415": _error_response("Wrong content type (`unsupported_media_type`)."),
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "meshproxy admin API",
        "version": "1",
        "description": "Per-project settings (provider keys, allowed models, app filter), "
        "changed at run time. See docs/settings.md.",
    },
    "security": [{"adminToken": []}],
    "paths": {
        "/admin/v1/projects/{project_id}/settings": {
            "parameters": [
                {
                    "name": "project_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": PROJECT_ID_PATTERN},
                }
            ],
            "get": {
                "operationId": "getProjectSettings",
                "summary": "The project's effective settings, provider keys masked.",
                "responses": {
                    "200": _settings_response("The settings."),
                    "500": _error_response("Stored settings unreadable (`settings_unreadable`)."),
                    **_COMMON_ERRORS,
                },
            },
            "put": {
                "operationId": "putProjectSettings",
                "summary": "Replace the project's settings.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ProjectSettings"}
                        }
                    },
                },
                "responses": {
                    "200": _settings_response("The stored settings, keys masked."),
                    **_WRITE_ERRORS,
                    **_COMMON_ERRORS,
                },
            },
            "patch": {
                "operationId": "patchProjectSettings",
                "summary": "Change the project's settings with a JSON merge patch (RFC 7396).",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/merge-patch+json": {
                            "schema": {"$ref": "#/components/schemas/ProjectSettingsPatch"}
                        }
                    },
                },
                "responses": {
                    "200": _settings_response("The stored settings, keys masked."),
                    **_WRITE_ERRORS,
                    **_COMMON_ERRORS,
                },
            },
        },
        "/admin/v1/openapi.json": {
            "get": {
                "operationId": "getOpenAPI",
                "summary": "This document.",
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_COMMON_ERRORS,
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "adminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "MESHPROXY_ADMIN_TOKEN or the config's [admin] token; "
                "room tokens are refused.",
            }
        },
        "schemas": {
            "Provider": _PROVIDER,
            "Providers": _PROVIDERS,
            "ProjectSettings": _SETTINGS,
            "ProjectSettingsPatch": {
                "type": "object",
                "description": "A JSON merge patch (RFC 7396) over ProjectSettings: members "
                "set to null are removed, objects merge. The result must be valid "
                "ProjectSettings.",
                "additionalProperties": False,
                "properties": {
                    "providers": {"type": ["object", "null"]},
                    "rooms": {"type": ["object", "null"]},
                    "allowed_models": {"anyOf": [_PATTERNS, {"type": "null"}]},
                    "app_filter": {"type": ["object", "null"]},
                },
            },
            "Error": _ERROR,
        },
    },
}


def openapi_json() -> str:
    """The committed form of the document (docs/admin-openapi.json)."""
    return json.dumps(OPENAPI, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(openapi_json())
