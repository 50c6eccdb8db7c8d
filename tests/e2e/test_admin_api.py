"""The admin API end to end: two `meshproxy serve` replicas sharing one database (SQLite file,
or PostgreSQL with keys encrypted at rest); settings written through replica A govern replica
B's next request, seen through the official openai SDK."""

from __future__ import annotations

import http.client
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

import pg_server
from meshproxy.adapters.testing import FakeUpstreamProcess

from .conftest import OPENAI_KEY, ProxyProcess, make_token

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "admin-token-e2e-" + "a" * 24
BYOK_KEY = "sk-byok-project-SECRET-7f3k"
_names = itertools.count()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstreamProcess]:
    """A fake provider that accepts any key, so the test can see which key arrived."""
    with FakeUpstreamProcess() as fake:
        yield fake


@pytest.fixture(params=["sqlite", "postgresql"])
def replicas(
    request: pytest.FixtureRequest,
    upstream: FakeUpstreamProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    upstream.reset()
    if request.param == "sqlite":
        url = str(tmp_path / "shared-ledger.sqlite3")
        monkeypatch.delenv("MESHPROXY_SETTINGS_KEY", raising=False)  # plaintext at rest
    else:
        reason = pg_server.why_unavailable()
        if reason:
            pytest.skip(reason)
        url = pg_server.shared_server().new_database(f"admin_{next(_names)}_{int(time.time())}")
        Fernet = pytest.importorskip("cryptography.fernet").Fernet

        monkeypatch.setenv("MESHPROXY_SETTINGS_KEY", Fernet.generate_key().decode())
    config = tmp_path / "meshproxy.toml"
    config.write_text(f'[admin]\ntoken = "{ADMIN_TOKEN}"\n')
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    args = ["--ledger", url, "--config", str(config)]
    with (
        ProxyProcess(upstream.base_url, one, args) as a,
        ProxyProcess(upstream.base_url, two, args) as b,
    ):
        yield a, b


class Reply:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status_code = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self.text = response.read().decode()

    def json(self) -> Any:
        return json.loads(self.text)


def request(
    url: str, method: str = "GET", body: object = None, headers: dict[str, str] | None = None
) -> Reply:
    """http.client: stays on 127.0.0.1 whatever *_proxy variables say."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, parts.path, body=data, headers=headers or {})
        return Reply(conn.getresponse())
    finally:
        conn.close()


def on_sqlite(proxy: ProxyProcess) -> bool:
    """The replicas share a SQLite file (a change applies on the very next request) rather
    than PostgreSQL (it applies once the NOTIFY has arrived)."""
    return not proxy.extra_args[1].startswith("postgresql://")


def admin(
    proxy: ProxyProcess, method: str, project: str, body: object = None, token: str = ADMIN_TOKEN
) -> Reply:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["content-type"] = (
            "application/merge-patch+json" if method == "PATCH" else "application/json"
        )
    return request(f"{proxy.url}/admin/v1/projects/{project}/settings", method, body, headers)


def gpt(proxy: ProxyProcess, project: str, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=proxy.url + "/openai/v1",
        api_key=make_token(project=project),
        max_retries=0,
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )


def chat(client: openai.OpenAI, model: str = "gpt-4o-mini") -> None:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def refused_soon(call: Callable[[], None], *, at_once: bool) -> openai.PermissionDeniedError:
    """The refusal `call` gets once the other replica has the change: on the very next request
    for SQLite (it reads the version row per request), within moments for PostgreSQL (when the
    NOTIFY arrives)."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            call()
        except openai.PermissionDeniedError as exc:
            return exc
        if at_once or time.monotonic() > deadline:
            raise AssertionError("the change did not reach the other replica")
        time.sleep(0.02)


def test_allowed_models_put_on_one_replica_govern_the_other(
    replicas: tuple[ProxyProcess, ProxyProcess],
) -> None:
    a, b = replicas
    client = gpt(b, "proj-models")
    chat(client, "gpt-4o")  # allowed before
    put = admin(a, "PUT", "proj-models", {"allowed_models": ["openai/gpt-4o-mini"]})
    assert put.status_code == 200, put.text
    refusal = refused_soon(lambda: chat(client, "gpt-4o"), at_once=on_sqlite(a))
    assert refusal.status_code == 403
    assert refusal.code == "model_not_allowed"
    chat(client, "gpt-4o-mini")  # still allowed
    chat(gpt(b, "proj-elsewhere"), "gpt-4o")  # other projects unaffected
    # and back: a PATCH removing the list allows every model again
    assert admin(a, "PATCH", "proj-models", {"allowed_models": None}).status_code == 200
    deadline = time.monotonic() + 5.0
    while True:
        try:
            chat(client, "gpt-4o")
            break
        except openai.PermissionDeniedError:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_byok_key_goes_upstream_for_its_project_only(
    replicas: tuple[ProxyProcess, ProxyProcess], upstream: FakeUpstreamProcess
) -> None:
    a, b = replicas
    put = admin(a, "PUT", "proj-byok", {"providers": {"openai": {"api_key": BYOK_KEY}}})
    assert put.status_code == 200, put.text
    assert BYOK_KEY not in put.text
    assert put.json()["providers"]["openai"]["api_key"] == "\u2026" + BYOK_KEY[-4:]

    def byok_seen() -> bool:
        upstream.reset()
        chat(gpt(b, "proj-byok"))
        return upstream.received()[-1].header("authorization") == f"Bearer {BYOK_KEY}"

    deadline = time.monotonic() + 5.0
    while not byok_seen():
        assert not on_sqlite(a) and time.monotonic() < deadline
        time.sleep(0.02)
    upstream.reset()
    chat(gpt(b, "proj-other"))
    assert upstream.received()[-1].header("authorization") == f"Bearer {OPENAI_KEY}"

    # reads are masked on both replicas; the key is in no log and no record
    for proxy in (a, b):
        got = admin(proxy, "GET", "proj-byok")
        assert got.status_code == 200
        assert got.json()["providers"]["openai"]["api_key"] == "\u2026" + BYOK_KEY[-4:]
        assert BYOK_KEY not in got.text
    for proxy in (a, b):
        assert BYOK_KEY not in proxy.log()
        assert BYOK_KEY not in proxy.records_path.read_text()


def test_app_filter_blocks_a_user_agent(replicas: tuple[ProxyProcess, ProxyProcess]) -> None:
    a, b = replicas
    patch = admin(
        a,
        "PATCH",
        "proj-app",
        {"app_filter": {"mode": "blocked", "user_agents": ["OpenAI/Python*"]}},
    )
    assert patch.status_code == 200, patch.text
    refusal = refused_soon(lambda: chat(gpt(b, "proj-app")), at_once=on_sqlite(a))
    assert refusal.code == "app_not_allowed"
    chat(gpt(b, "proj-app", default_headers={"User-Agent": "room-agent/2.0"}))


def test_admin_auth(replicas: tuple[ProxyProcess, ProxyProcess]) -> None:
    a, _ = replicas
    room_token = make_token(project="proj-auth")
    for token in ("", "wrong-" + ADMIN_TOKEN, room_token, ADMIN_TOKEN[:-1]):
        for method, body in (("GET", None), ("PUT", {"allowed_models": []})):
            got = admin(a, method, "proj-auth", body, token=token)
            assert got.status_code == 401, (token[:8], method)
            assert got.json()["error"]["code"] == "unauthorized"
            assert got.headers["www-authenticate"].startswith("Bearer")
    assert admin(a, "GET", "proj-auth").status_code == 404  # nothing stored: not a 401
    # a room token that names the admin API on the proxy paths gets nothing either
    openapi = f"{a.url}/admin/v1/openapi.json"
    assert request(openapi, headers={"authorization": f"Bearer {room_token}"}).status_code == 401


def test_openapi_document_is_served(replicas: tuple[ProxyProcess, ProxyProcess]) -> None:
    from meshproxy.adapters.admin import OPENAPI

    a, _ = replicas
    got = request(
        f"{a.url}/admin/v1/openapi.json", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert got.status_code == 200
    assert got.json() == OPENAPI


def test_admin_api_is_off_without_a_token(upstream: FakeUpstreamProcess, tmp_path: Path) -> None:
    with ProxyProcess(upstream.base_url, tmp_path) as proxy:
        got = admin(proxy, "GET", "proj-x")
        assert got.status_code == 404
        assert admin(proxy, "PUT", "proj-x", {"allowed_models": []}).status_code == 404
