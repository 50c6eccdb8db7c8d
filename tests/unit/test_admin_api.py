"""AdminAPI.handle with plain values over a real SQLite settings store: routes, auth, request
checks, error codes, masking."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshproxy.adapters.admin import OPENAPI, AdminAPI
from meshproxy.contrib.settings import MASK, SettingsStore, open_settings_store
from meshproxy_core.config import ConfigError

TOKEN = "admin-" + "t" * 30
KEY = "sk-unit-SECRET-provider-key-wxyz"
PATH = "/admin/v1/projects/p1/settings"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SettingsStore]:
    s = open_settings_store(str(tmp_path / "ledger.sqlite3"))
    yield s
    s.close()


@pytest.fixture
def api(store: SettingsStore) -> AdminAPI:
    return AdminAPI(store, TOKEN)


def call(
    api: AdminAPI,
    method: str,
    path: str = PATH,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    content_type: str = "application/json",
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    headers = [(b"content-type", content_type.encode())]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    status, out, payload = api.handle(method, path, headers, data)
    return status, {k.decode(): v.decode() for k, v in out}, json.loads(payload)


def test_put_then_get_masks_the_key(api: AdminAPI) -> None:
    status, headers, body = call(api, "PUT", body={"providers": {"openai": {"api_key": KEY}}})
    assert status == 200 and headers["content-type"] == "application/json"
    assert body["providers"]["openai"]["api_key"] == MASK + "wxyz"
    status, _, body = call(api, "GET")
    assert status == 200 and body["providers"]["openai"]["api_key"] == MASK + "wxyz"


def test_patch_accepts_merge_patch_media_type(api: AdminAPI) -> None:
    call(api, "PUT", body={"allowed_models": ["openai/*"]})
    status, _, body = call(
        api,
        "PATCH",
        body={"app_filter": {"mode": "allowed", "user_agents": ["MyApp/*"]}},
        content_type="application/merge-patch+json",
    )
    assert status == 200
    assert body["allowed_models"] == ["openai/*"]
    assert body["app_filter"]["user_agents"] == ["MyApp/*"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", PATH, {"token": None}, 401, "unauthorized"),
        ("GET", PATH, {"token": "nope"}, 401, "unauthorized"),
        ("GET", PATH, {"token": TOKEN + "x"}, 401, "unauthorized"),
        ("GET", PATH, {}, 404, "not_found"),  # no settings yet
        ("GET", "/admin/v1/projects/p1", {}, 404, "not_found"),
        ("GET", "/admin/v1/projects/..%2Fx/settings", {}, 404, "not_found"),
        ("GET", "/admin/v2/whatever", {}, 404, "not_found"),
        ("DELETE", PATH, {}, 405, "method_not_allowed"),
        ("POST", "/admin/v1/openapi.json", {}, 405, "method_not_allowed"),
        ("PUT", PATH, {"content_type": "text/plain", "body": {}}, 415, "unsupported_media_type"),
        ("PUT", PATH, {"content_type": "application/merge-patch+json"}, 415, None),
        ("PUT", PATH, {"raw": b"{not json"}, 400, "invalid_json"),
        ("PUT", PATH, {"raw": b'{"allowed_models": NaN}'}, 400, "invalid_json"),
        ("PUT", PATH, {"raw": b"[" * 100_000}, 400, "invalid_json"),
        ("PUT", PATH, {"body": {"allowed_models": "x"}}, 400, "invalid_settings"),
        ("PATCH", PATH, {"body": {"bogus": 1}}, 400, "invalid_settings"),
    ],
)
def test_errors_have_stable_codes(
    api: AdminAPI, method: str, path: str, kwargs: dict[str, Any], status: int, code: str | None
) -> None:
    got_status, headers, body = call(api, method, path, **kwargs)
    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert set(body["error"]) == {"message", "type", "code"}
    assert body["error"]["code"] == (code or "unsupported_media_type")
    if status == 401:
        assert headers["www-authenticate"].startswith("Bearer")
    if status == 405:
        assert "GET" in headers["allow"]


def test_body_over_the_limit(api: AdminAPI) -> None:
    headers = [
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", b"application/json"),
    ]
    status, _, body = api.handle("PUT", PATH, headers, None)
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"


def test_disabled_without_a_token(store: SettingsStore) -> None:
    api = AdminAPI(store, None)
    assert call(api, "GET", token=TOKEN)[0] == 404
    assert call(api, "GET", "/admin/v1/openapi.json", token=None)[0] == 404


def test_short_admin_token_is_refused(store: SettingsStore) -> None:
    with pytest.raises(ConfigError, match="admin token"):
        AdminAPI(store, "short")


def test_openapi_document(api: AdminAPI) -> None:
    status, _, body = call(api, "GET", "/admin/v1/openapi.json")
    assert status == 200 and body == OPENAPI
    assert body["openapi"].startswith("3.1")


def test_errors_never_echo_a_key(api: AdminAPI) -> None:
    bad = {"providers": {"openai": {"api_key": "sk SECRET with space"}, "nope": {}}}
    _, _, body = call(api, "PUT", body=bad)
    assert "SECRET" not in json.dumps(body)
    call(api, "PUT", body={"providers": {"openai": {"api_key": KEY}}})
    _, _, body = call(api, "PUT", body={"providers": {"openai": {"api_key": MASK + "0000"}}})
    assert body["error"]["code"] == "invalid_settings"
    assert KEY not in json.dumps(body) and "wxyz" not in json.dumps(body)


# -- the ASGI app: admin paths and run-time settings --------------------------------------------


async def _asgi(app: Any, method: str, path: str, headers: list, body: bytes) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        import anyio

        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
    }
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_asgi_app_serves_admin_and_applies_changes(store: SettingsStore) -> None:
    import time

    from meshproxy.adapters.asgi import MeshProxyApp
    from meshproxy.adapters.live_settings import LiveSettings
    from meshproxy_core.auth import mint_token
    from meshproxy_core.config import ProxyConfig
    from meshproxy_core.exchange import Proxy
    from meshproxy_core.pricing import PriceBook

    secret = "s" * 40
    config = ProxyConfig.from_mapping({}, {"MESHAGENT_SECRET": secret, "OPENAI_API_KEY": "sk-x"})
    live = LiveSettings(store, Proxy(config, prices=PriceBook.default()))
    app = MeshProxyApp(live.reload(), admin=AdminAPI(store, TOKEN), settings=live)
    admin_headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
    admin_headers.append((b"content-type", b"application/json"))
    status, _ = await _asgi(
        app, "PUT", PATH, admin_headers, json.dumps({"allowed_models": ["openai/gpt-4o"]}).encode()
    )
    assert status == 200
    token = mint_token(secret, project="p1", room="r", participant="a", now=time.time())
    request = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    status, body = await _asgi(
        app,
        "POST",
        "/openai/v1/chat/completions",
        [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")],
        request.encode(),
    )
    assert status == 403 and json.loads(body)["error"]["code"] == "model_not_allowed"
    assert app.proxy.verifier is live._base.verifier  # the token cache survives the swap
