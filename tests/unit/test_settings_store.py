"""The settings store on both databases: validation, merge patch, masking, write-only keys,
encryption at rest, and change detection between two stores on one database (two replicas)."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pg_server
from meshproxy.contrib.settings import (
    ENV_KEY,
    MASK,
    SettingsStore,
    mask_key,
    merge_patch,
    open_settings_store,
)
from meshproxy_core.config import ConfigError, ProjectSettings, ProxyConfig

KEY = "sk-proj-SECRET-byok-key-000123"
OTHER_KEY = "sk-ant-SECRET-other-key-0009"
_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite3")
    reason = pg_server.why_unavailable()
    if reason:
        pytest.skip(reason)
    return pg_server.shared_server().new_database(f"settings_{next(_names)}_{int(time.time())}")


@pytest.fixture
def store(db_url: str) -> Iterator[SettingsStore]:
    s = open_settings_store(db_url)
    yield s
    s.close()


def _raw_rows(url: str) -> list[str]:
    """What the database holds, read past the store."""
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url) as conn:
            return [r[0] for r in conn.execute("SELECT settings_json FROM project_settings")]
    with sqlite3.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT settings_json FROM project_settings")]


def test_put_get_roundtrip_masks_keys(store: SettingsStore) -> None:
    assert store.get("p1") is None
    shown = store.put(
        "p1",
        {
            "providers": {"openai": {"api_key": KEY, "base_url": "http://127.0.0.1:9/v1"}},
            "rooms": {"r1": {"providers": {"anthropic": {"api_key": OTHER_KEY}}}},
            "allowed_models": ["openai/gpt-4o-mini"],
            "app_filter": {"mode": "blocked", "user_agents": ["curl/*"]},
        },
    )
    assert shown == store.get("p1")
    assert shown["providers"]["openai"]["api_key"] == MASK + "0123"
    assert shown["rooms"]["r1"]["providers"]["anthropic"]["api_key"] == MASK + "0009"
    assert KEY not in repr(shown) and OTHER_KEY not in repr(shown)
    settings = store.all()["p1"]
    assert settings.providers["openai"].api_key == KEY
    assert settings.rooms["r1"]["anthropic"].api_key == OTHER_KEY
    assert settings.allowed_models == ("openai/gpt-4o-mini",)
    assert settings.app_filter is not None and settings.app_filter.user_agents == ("curl/*",)


def test_short_keys_show_nothing() -> None:
    assert mask_key("abcdefgh") == MASK
    assert mask_key("abcdefghijkl") == MASK + "ijkl"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"providers": {"mistral": {"api_key": "k" * 20}}}, "providers.mistral"),
        ({"providers": {"openai": {"api_key": 42}}}, "providers.openai.api_key"),
        ({"providers": {"openai": {"api_key": "has space in it"}}}, "api_key"),
        ({"providers": {"openai": {"base_url": "ftp://x"}}}, "base_url"),
        ({"providers": {"openai": {"colour": "red"}}}, "providers.openai"),
        ({"allowed_models": "openai/*"}, "allowed_models"),
        ({"allowed_models": [""]}, "allowed_models"),
        ({"app_filter": {"mode": "sometimes"}}, "mode"),
        ({"app_filter": {"require_user_agent": "yes"}}, "require_user_agent"),
        ({"budget": 5}, "unknown keys: budget"),
        ([], "must be a JSON object"),
    ],
)
def test_invalid_settings_are_refused_naming_the_field(
    store: SettingsStore, settings: object, field: str
) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        store.put("p1", settings)  # type: ignore[arg-type]
    assert store.get("p1") is None


def test_invalid_key_is_not_echoed_in_the_error(store: SettingsStore) -> None:
    with pytest.raises(ConfigError) as info:
        store.put("p1", {"providers": {"openai": {"api_key": "sk secret with spaces"}}})
    assert "secret" not in str(info.value)


def test_merge_patch_rfc7396() -> None:
    # the examples of RFC 7396 section 3
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch(["a"], {"a": 1}) == {"a": 1}
    assert merge_patch({"a": "b"}, ["c"]) == ["c"]


def test_patch_changes_only_what_it_names(store: SettingsStore) -> None:
    store.put("p1", {"providers": {"openai": {"api_key": KEY}}, "allowed_models": ["openai/*"]})
    shown = store.patch("p1", {"app_filter": {"mode": "allowed", "user_agents": ["MyApp/*"]}})
    assert shown["allowed_models"] == ["openai/*"]
    assert store.all()["p1"].providers["openai"].api_key == KEY  # untouched
    shown = store.patch("p1", {"allowed_models": None, "providers": {"openai": None}})
    assert shown["allowed_models"] is None and shown["providers"] == {}
    assert store.all()["p1"].providers == {}
    with pytest.raises(ConfigError):
        store.patch("p1", {"allowed_models": 5})


def test_keys_are_write_only(store: SettingsStore) -> None:
    store.put("p1", {"providers": {"openai": {"api_key": KEY}}})
    # GET, edit something else, PUT back the masked value: the stored key stays.
    doc = store.get("p1")
    assert doc is not None
    doc["allowed_models"] = ["openai/gpt-4o-mini"]
    store.put("p1", doc)
    assert store.all()["p1"].providers["openai"].api_key == KEY
    # a mask that is not the stored key's (or in another place) is refused, not stored
    with pytest.raises(ConfigError, match="masked"):
        store.put("p1", {"providers": {"openai": {"api_key": MASK + "9999"}}})
    with pytest.raises(ConfigError, match="masked"):
        store.put("p1", {"providers": {"anthropic": {"api_key": MASK + "0123"}}})
    # a new key replaces it; omitting it in a PUT removes it
    store.patch("p1", {"providers": {"openai": {"api_key": OTHER_KEY}}})
    assert store.all()["p1"].providers["openai"].api_key == OTHER_KEY
    store.put("p1", {"providers": {"openai": {"base_url": "https://example.test/v1"}}})
    assert store.all()["p1"].providers["openai"].api_key is None


def test_plaintext_without_key_encrypted_with_key(db_url: str) -> None:
    plain = open_settings_store(db_url)
    plain.put("plain", {"providers": {"openai": {"api_key": KEY}}})
    plain.close()
    assert any(KEY in row for row in _raw_rows(db_url))

    Fernet = pytest.importorskip("cryptography.fernet").Fernet

    secret = Fernet.generate_key().decode()
    enc = open_settings_store(db_url, env={ENV_KEY: secret})
    enc.put("enc", {"providers": {"anthropic": {"api_key": OTHER_KEY}}})
    assert enc.all()["enc"].providers["anthropic"].api_key == OTHER_KEY
    assert enc.all()["plain"].providers["openai"].api_key == KEY  # plaintext still reads
    enc.close()
    assert not any(OTHER_KEY in row for row in _raw_rows(db_url))
    assert any("fernet:" in row for row in _raw_rows(db_url))

    # without the key (or with another one) an encrypted project fails closed: no model
    for env in ({}, {ENV_KEY: Fernet.generate_key().decode()}):
        other = open_settings_store(db_url, env=env)
        assert other.all()["enc"] == ProjectSettings(allowed_models=())
        with pytest.raises(ConfigError, match="enc"):
            other.get("enc")
        other.close()

    # rotation: a new key first, the old one still decrypts
    rotated = open_settings_store(
        db_url, env={ENV_KEY: Fernet.generate_key().decode() + "," + secret}
    )
    assert rotated.all()["enc"].providers["anthropic"].api_key == OTHER_KEY
    rotated.close()


def test_encrypted_key_is_bound_to_its_project(db_url: str) -> None:
    Fernet = pytest.importorskip("cryptography.fernet").Fernet

    env = {ENV_KEY: Fernet.generate_key().decode()}
    store = open_settings_store(db_url, env=env)
    store.put("a", {"providers": {"openai": {"api_key": KEY}}})
    store.put("b", {"allowed_models": ["openai/*"]})
    row_a = _raw_rows(db_url)[0] if "fernet" in _raw_rows(db_url)[0] else _raw_rows(db_url)[1]
    # a database user copies project a's ciphertext into project b's row
    if db_url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db_url) as conn:
            conn.execute(
                "UPDATE project_settings SET settings_json = %s WHERE project_id = 'b'", (row_a,)
            )
    else:
        with sqlite3.connect(db_url) as conn:
            conn.execute(
                "UPDATE project_settings SET settings_json = ? WHERE project_id = 'b'", (row_a,)
            )
    assert store.all()["b"] == ProjectSettings(allowed_models=())
    store.close()


def test_bad_encryption_key_is_a_config_error(db_url: str) -> None:
    with pytest.raises(ConfigError, match=ENV_KEY):
        open_settings_store(db_url, env={ENV_KEY: "not-a-fernet-key"})


def _wait_for(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_change_detection_across_two_stores(db_url: str) -> None:
    replica_a = open_settings_store(db_url)
    replica_b = open_settings_store(db_url)
    try:
        seen_b = replica_b.version()
        assert not replica_b.changed_since(seen_b)
        replica_a.put("p1", {"allowed_models": ["openai/gpt-4o-mini"]})
        assert replica_a.changed_since(seen_b)  # the writer sees its own change at once
        # SQLite: at once; PostgreSQL: when the NOTIFY arrives (milliseconds)
        assert _wait_for(lambda: replica_b.changed_since(seen_b))
        if not db_url.startswith("postgresql://"):
            assert replica_b.version() == replica_a.version()
        version, projects = replica_b.snapshot()
        assert projects["p1"].allowed_models == ("openai/gpt-4o-mini",)
        assert version == replica_a.version()
        # a failed write changes nothing
        before = replica_b.version()
        with pytest.raises(ConfigError):
            replica_a.put("p1", {"allowed_models": 1})
        time.sleep(0.05)
        assert replica_b.version() == before
    finally:
        replica_a.close()
        replica_b.close()


def test_concurrent_patches_lose_nothing(db_url: str) -> None:
    import threading

    stores = [open_settings_store(db_url) for _ in range(2)]
    stores[0].put("p1", {"rooms": {}})
    try:

        def patch(store: SettingsStore, n: int) -> None:
            for i in range(5):
                store.patch("p1", {"rooms": {f"room-{n}-{i}": {"providers": {}}}})

        threads = [threading.Thread(target=patch, args=(s, n)) for n, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(stores[0].all()["p1"].rooms) == 10
    finally:
        for s in stores:
            s.close()


def test_config_projects_are_the_base(db_url: str) -> None:
    config = ProxyConfig.from_mapping(
        {"projects": {"p1": {"providers": {"openai": {"api_key": KEY}}, "allowed_models": ["*"]}}}
    )
    store = open_settings_store(db_url, base=config.projects)
    try:
        assert store.source("p1") == "config"
        shown = store.get("p1")
        assert shown is not None and shown["providers"]["openai"]["api_key"] == mask_key(KEY)
        assert store.all() == {}  # only the database's projects
        # a patch starts from the config file's settings, keeping its key
        store.patch("p1", {"allowed_models": ["openai/gpt-4o-mini"]})
        assert store.source("p1") == "database"
        merged = config.with_projects(store.all())
        assert merged.projects["p1"].providers["openai"].api_key == KEY
        assert merged.projects["p1"].allowed_models == ("openai/gpt-4o-mini",)
    finally:
        store.close()


def test_invalid_project_id_is_refused(store: SettingsStore) -> None:
    with pytest.raises(ConfigError, match="project id"):
        store.put("../etc", {})
