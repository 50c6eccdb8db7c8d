"""Project settings stored in the ledger's database, changeable at run time (the admin API).

Owns: the `project_settings` table and its single-row change counter `settings_version` (SQLite
or PostgreSQL, the database the ledger uses), validating what is written (the JSON shape of a
config file's `[projects.ID]` table), RFC 7396 merge patches, write-only provider keys (reads
show the last 4 characters; a masked value sent back keeps the stored key), encrypting keys at
rest with `MESHPROXY_SETTINGS_KEY` (Fernet), and a change check cheap enough for every request:
SQLite reads the one-row counter; PostgreSQL keeps the counter in memory, moved by a LISTEN
thread that a writer's NOTIFY wakes, so a check costs no round trip.

Does not own: HTTP (adapters.admin), swapping the proxy a server runs (adapters.live_settings),
or the meaning of the settings (meshproxy_core.config and policy). Keys are never logged and
never part of an error message.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshproxy_core.config import PROVIDERS, ConfigError, ProjectSettings, ProviderSettings

__all__ = [
    "MASK",
    "PROJECT_ID_PATTERN",
    "SettingsStore",
    "mask_key",
    "merge_patch",
    "open_settings_store",
    "settings_to_mapping",
    "validate_settings",
]

log = logging.getLogger("meshproxy.settings")

MASK = "\u2026"  # "…": a masked key is this, then (for keys of 12+ characters) the last 4
ENV_KEY = "MESHPROXY_SETTINGS_KEY"
CHANNEL = "meshproxy_settings"  # PostgreSQL NOTIFY channel
_ENCRYPTED_PREFIX = "fernet:"
_SCHEMA_LOCK = 0x6D657369  # advisory lock key for CREATE TABLE (the ledger uses ...68)
_BUSY_TIMEOUT_MS = 30_000

# Shared with the OpenAPI document (adapters.admin), so the schema and the validator agree.
PROJECT_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._~:@+=-]{0,199}$"
API_KEY_PATTERN = r"^[!-~]+$"  # printable ASCII, no spaces: it goes into a header as is
MASKED_KEY_PATTERN = "^" + MASK + r"[!-~]{0,4}$"
HEADER_TEXT_PATTERN = r"^[ -~]*$"  # organization / project headers
BASE_URL_PATTERN = r"^https?://[A-Za-z0-9.\-\[\]:]+(/[!-~]*)?$"
MAX_PATTERNS = 1000


def mask_key(key: str) -> str:
    """What reads show of a key: "…" and its last 4 characters (nothing of a short key)."""
    return MASK + (key[-4:] if len(key) >= 12 else "")


# -- validation ---------------------------------------------------------------------------------


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where} {message}")


def _check_provider(data: Any, where: str, *, masked_ok: bool) -> None:
    _check(isinstance(data, Mapping), where, "must be an object")
    for field in ("api_key", "base_url", "organization", "project"):
        value = data.get(field)
        if value is None:
            continue
        here = f"{where}.{field}"
        _check(isinstance(value, str), here, "must be a string or null")
        if field == "api_key":
            masked = masked_ok and re.fullmatch(MASKED_KEY_PATTERN, value) is not None
            # the value itself is never part of the message: it may be a key
            _check(
                masked or re.fullmatch(API_KEY_PATTERN, value) is not None,
                here,
                "must be printable ASCII without spaces",
            )
        elif field == "base_url":
            _check(
                re.fullmatch(BASE_URL_PATTERN, value) is not None,
                here,
                "must be an http:// or https:// URL",
            )
        else:
            _check(re.fullmatch(HEADER_TEXT_PATTERN, value) is not None, here, "must be ASCII")


def _check_providers(data: Any, where: str, *, masked_ok: bool) -> None:
    _check(isinstance(data, Mapping), where, "must be an object")
    for name, body in data.items():
        _check(
            name in PROVIDERS, f"{where}.{_label(name)}", "is not a provider (openai, anthropic)"
        )
        _check_provider(body, f"{where}.{name}", masked_ok=masked_ok)


def _check_patterns(value: Any, where: str) -> None:
    if value is None:
        return
    _check(isinstance(value, list) and len(value) <= MAX_PATTERNS, where, "must be a list")
    for item in value:
        _check(isinstance(item, str) and 0 < len(item) <= 500, where, "items must be strings")


def _label(name: Any) -> str:
    """A client-chosen name for an error message, if it is a plain one."""
    text = str(name)
    return text if re.fullmatch(r"[A-Za-z0-9_.:@-]{1,40}", text) else "<name>"


def _names(keys: set[Any]) -> str:
    """Unknown keys for an error message: plain names only, never arbitrary client text."""
    plain = sorted(k for k in map(str, keys) if re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", k))
    rest = len(keys) - len(plain)
    return ", ".join(plain + ([f"{rest} other(s)"] if rest else []))


def validate_settings(data: Any, *, masked_ok: bool = False) -> ProjectSettings:
    """A project's settings as the admin API takes them (the shape of `[projects.ID]`), checked
    more strictly than a config file (types, provider names, URL and header syntax), then
    built by `ProjectSettings.from_mapping`. Raises ConfigError naming the field."""
    _check(isinstance(data, Mapping), "settings", "must be a JSON object")
    unknown = set(data) - {"providers", "rooms", "allowed_models", "app_filter"}
    _check(not unknown, "settings", f"has unknown keys: {_names(unknown)}")
    if "providers" in data:
        _check_providers(data["providers"], "providers", masked_ok=masked_ok)
    if "rooms" in data:
        rooms = data["rooms"]
        _check(isinstance(rooms, Mapping), "rooms", "must be an object")
        for room, body in rooms.items():
            where = f"rooms.{_label(room)}"
            _check(0 < len(room) <= 200, "rooms", "ids must have 1 to 200 characters")
            _check(isinstance(body, Mapping), where, "must be an object")
            unknown = set(body) - {"providers"}
            _check(not unknown, where, "may only have 'providers'")
            if "providers" in body:
                _check_providers(body["providers"], f"{where}.providers", masked_ok=masked_ok)
    _check_patterns(data.get("allowed_models"), "allowed_models")
    app_filter = data.get("app_filter")
    if app_filter is not None:
        _check(isinstance(app_filter, Mapping), "app_filter", "must be an object")
        unknown = set(app_filter) - {"mode", "user_agents", "require_user_agent"}
        _check(not unknown, "app_filter", f"has unknown keys: {_names(unknown)}")
        if "user_agents" in app_filter:
            agents = app_filter["user_agents"]
            _check(agents is not None, "app_filter.user_agents", "must be a list")
            _check_patterns(agents, "app_filter.user_agents")
    return ProjectSettings.from_mapping(data, "settings")


def _provider_mapping(settings: ProviderSettings) -> dict[str, Any]:
    fields = {
        "api_key": settings.api_key,
        "base_url": settings.base_url,
        "organization": settings.organization,
        "project": settings.project,
    }
    return {k: v for k, v in fields.items() if v is not None}


def settings_to_mapping(settings: ProjectSettings) -> dict[str, Any]:
    """The canonical JSON form of a project's settings (keys in clear: callers mask)."""
    app_filter = settings.app_filter
    return {
        "providers": {n: _provider_mapping(p) for n, p in settings.providers.items()},
        "rooms": {
            room: {"providers": {n: _provider_mapping(p) for n, p in providers.items()}}
            for room, providers in settings.rooms.items()
        },
        "allowed_models": list(settings.allowed_models)
        if settings.allowed_models is not None
        else None,
        "app_filter": None
        if app_filter is None
        else {
            "mode": app_filter.mode,
            "user_agents": list(app_filter.user_agents),
            "require_user_agent": app_filter.require_user_agent,
        },
    }


def _provider_slots(doc: Mapping[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    """Every provider table of a settings document, by its path (project or room level)."""
    slots: dict[tuple[str, ...], dict[str, Any]] = {}
    for name, body in (doc.get("providers") or {}).items():
        if isinstance(body, dict):
            slots[("providers", name)] = body
    for room, room_body in (doc.get("rooms") or {}).items():
        if isinstance(room_body, dict):
            for name, body in (room_body.get("providers") or {}).items():
                if isinstance(body, dict):
                    slots[("rooms", room, "providers", name)] = body
    return slots


def masked(doc: Mapping[str, Any]) -> dict[str, Any]:
    """`doc` with every api_key replaced by its mask."""
    out = copy.deepcopy(dict(doc))
    for body in _provider_slots(out).values():
        if isinstance(body.get("api_key"), str):
            body["api_key"] = mask_key(body["api_key"])
    return out


def _keep_masked_keys(doc: dict[str, Any], current: Mapping[str, Any]) -> None:
    """Write-only keys: an api_key sent back as the mask of the key stored in the same place
    keeps that key. Any other masked value is refused (it is not a key)."""
    stored = _provider_slots(current)
    for path, body in _provider_slots(doc).items():
        value = body.get("api_key")
        if not isinstance(value, str) or not value.startswith(MASK):
            continue
        old = stored.get(path, {}).get("api_key")
        where = ".".join(map(_label, path)) + ".api_key"
        _check(
            isinstance(old, str) and mask_key(old) == value,
            where,
            "is masked but does not match the stored key; send the whole key",
        )
        body["api_key"] = old


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge recursively, null removes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- encryption at rest -------------------------------------------------------------------------


class _Cipher:
    """Fernet (AES-128-CBC + HMAC-SHA256) over each api_key, bound to its project so a stored
    key copied into another project's row does not decrypt there. Several comma-separated keys
    rotate: the first encrypts, any decrypts."""

    def __init__(self, keys: str) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError as exc:
            raise ConfigError(
                f"{ENV_KEY} needs the `cryptography` package (pip install cryptography)"
            ) from exc
        try:
            self._fernet = MultiFernet([Fernet(k.strip()) for k in keys.split(",") if k.strip()])
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{ENV_KEY} must be Fernet keys (Fernet.generate_key()), comma-separated"
            ) from exc

    def encrypt(self, project_id: str, key: str) -> str:
        token = self._fernet.encrypt(f"{project_id}\x00{key}".encode())
        return _ENCRYPTED_PREFIX + token.decode("ascii")

    def decrypt(self, project_id: str, stored: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            plain = self._fernet.decrypt(stored[len(_ENCRYPTED_PREFIX) :].encode("ascii"))
        except (InvalidToken, ValueError) as exc:
            raise ConfigError(
                f"project {project_id}: a stored provider key does not decrypt with {ENV_KEY}"
            ) from exc
        owner, _, key = plain.decode().partition("\x00")
        if owner != project_id:
            raise ConfigError(f"project {project_id}: a stored provider key belongs elsewhere")
        return key


# -- the store ----------------------------------------------------------------------------------


class SettingsStore:
    """Per-project settings in a database, with a cheap per-request change check.

    `base` is the config file's `[projects]`: GET and PATCH start from them for a project the
    database has no row for. `all()` returns only the database's projects; the adapter lays
    them over the config file's (`ProxyConfig.with_projects`), project by project.
    """

    def __init__(
        self,
        db: _Backend,
        *,
        encryption_key: str | None = None,
        base: Mapping[str, ProjectSettings] | None = None,
    ) -> None:
        self._db = db
        self._cipher = _Cipher(encryption_key) if encryption_key else None
        self.base = dict(base or {})
        self._warned_plaintext = False

    # The change check: what every request calls.
    def version(self) -> int:
        """The settings' version: it changes whenever any project's settings change, on any
        replica. SQLite: one single-row read; PostgreSQL: an in-memory value (no round trip)."""
        return self._db.version()

    def changed_since(self, version: int) -> bool:
        return self.version() != version

    # Reads.
    def get(self, project_id: str) -> dict[str, Any] | None:
        """The project's effective settings with keys masked (the database's row, else the
        config file's table), or None when neither has the project."""
        current = self._current(project_id)
        return None if current is None else masked(current)

    def source(self, project_id: str) -> str | None:
        """ "database", "config" or None: where `get` found the project's settings."""
        if self._db.read(project_id) is not None:
            return "database"
        return "config" if project_id in self.base else None

    def all(self) -> dict[str, ProjectSettings]:
        return self.snapshot()[1]

    def snapshot(self) -> tuple[int, dict[str, ProjectSettings]]:
        """(version, every database project's settings), read together. A row that cannot be
        read (a key that does not decrypt) fails closed: that project then allows no model."""
        version, rows = self._db.read_all()
        projects: dict[str, ProjectSettings] = {}
        for project_id, text in rows:
            try:
                projects[project_id] = validate_settings(self._decrypt(project_id, text))
            except (ConfigError, ValueError) as exc:
                log.error(
                    "settings of project %s unusable, refusing its requests: %s", project_id, exc
                )
                projects[project_id] = ProjectSettings(allowed_models=())
        return version, projects

    # Writes.
    def put(self, project_id: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the project's settings; returns them masked. Masked keys keep the stored
        key at the same place. Raises ConfigError when invalid."""
        return self._write(project_id, lambda current: copy.deepcopy(settings))

    def patch(self, project_id: str, patch: Any) -> dict[str, Any]:
        """Apply an RFC 7396 merge patch to the project's effective settings."""
        return self._write(project_id, lambda current: merge_patch(current or {}, patch))

    def close(self) -> None:
        self._db.close()

    # Internals.
    def _current(self, project_id: str) -> dict[str, Any] | None:
        text = self._db.read(project_id)
        if text is not None:
            return self._decrypt(project_id, text)
        if project_id in self.base:
            return settings_to_mapping(self.base[project_id])
        return None

    def _write(self, project_id: str, change: Any) -> dict[str, Any]:
        _check(re.fullmatch(PROJECT_ID_PATTERN, project_id) is not None, "project id", "invalid")

        result: dict[str, Any] = {}

        def compute(current_text: str | None) -> str:
            # runs inside the write transaction, so a patch never loses a concurrent write
            if current_text is not None:
                current = self._decrypt(project_id, current_text)
            elif project_id in self.base:
                current = settings_to_mapping(self.base[project_id])
            else:
                current = None
            doc = change(current)
            validate_settings(doc, masked_ok=True)
            assert isinstance(doc, dict)
            _keep_masked_keys(doc, current or {})
            canonical = settings_to_mapping(validate_settings(doc))
            result.update(masked(canonical))
            return json.dumps(self._encrypt(project_id, canonical), sort_keys=True)

        with self._db.write_lock:
            self._db.write(project_id, compute)
        return result

    def _encrypt(self, project_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        for body in _provider_slots(out).values():
            if not isinstance(body.get("api_key"), str):
                continue
            if self._cipher is not None:
                body["api_key"] = self._cipher.encrypt(project_id, body["api_key"])
            elif not self._warned_plaintext:
                self._warned_plaintext = True
                log.warning(
                    "%s is not set: provider keys are stored in plaintext in the settings "
                    "database (see docs/settings.md)",
                    ENV_KEY,
                )
        return out

    def _decrypt(self, project_id: str, text: str) -> dict[str, Any]:
        doc = json.loads(text)
        for body in _provider_slots(doc).values():
            value = body.get("api_key")
            if isinstance(value, str) and value.startswith(_ENCRYPTED_PREFIX):
                if self._cipher is None:
                    raise ConfigError(
                        f"project {project_id}: provider keys are encrypted; set {ENV_KEY}"
                    )
                body["api_key"] = self._cipher.decrypt(project_id, value)
        return doc


# -- backends -----------------------------------------------------------------------------------

_DDL = (
    "CREATE TABLE IF NOT EXISTS project_settings (project_id TEXT PRIMARY KEY, "
    "settings_json TEXT NOT NULL, version BIGINT NOT NULL, updated_at {real} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS settings_version (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "version BIGINT NOT NULL)",
    "INSERT INTO settings_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
)
_UPSERT = (
    "INSERT INTO project_settings (project_id, settings_json, version, updated_at) "
    "VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (project_id) DO UPDATE SET "
    "settings_json = excluded.settings_json, version = excluded.version, "
    "updated_at = excluded.updated_at"
)


class _Backend:
    """How one database connects, locks a write, and tells of changes."""

    param = "?"

    def __init__(self) -> None:
        self.write_lock = threading.Lock()  # one write at a time per process
        self._read_lock = threading.Lock()
        self._conn: Any = None

    def version(self) -> int:
        raise NotImplementedError

    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin_write(self, cur: Any) -> int:
        """Start the write transaction, taking the database-wide write lock (so patches made on
        two replicas serialise); return the new settings version."""
        raise NotImplementedError

    def _after_write(self, cur: Any, version: int) -> None:
        return None

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            if self._conn is None:
                self._conn = self._connect()
            try:
                cur = self._conn.cursor()
                cur.execute(sql, params)
                rows = list(cur.fetchall())
                cur.close()
                self._conn.commit()
                return rows
            except Exception:
                self._close_quietly()
                raise

    def _close_quietly(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:
            log.debug("closing a failed settings connection", exc_info=True)
        self._conn = None

    def read(self, project_id: str) -> str | None:
        rows = self._rows(
            f"SELECT settings_json FROM project_settings WHERE project_id = {self.param}",
            (project_id,),
        )
        return rows[0][0] if rows else None

    def read_all(self) -> tuple[int, list[tuple[str, str]]]:
        with self._read_lock:
            if self._conn is None:
                self._conn = self._connect()
            try:
                cur = self._conn.cursor()
                cur.execute("SELECT version FROM settings_version WHERE id = 1")
                version = int(cur.fetchone()[0])
                cur.execute("SELECT project_id, settings_json FROM project_settings")
                rows = [(str(a), str(b)) for a, b in cur.fetchall()]
                cur.close()
                self._conn.commit()
                return version, rows
            except Exception:
                self._close_quietly()
                raise

    def write(self, project_id: str, compute: Any) -> int:
        conn = self._connect()
        try:
            cur = conn.cursor()
            try:
                version = self._begin_write(cur)
                cur.execute(
                    f"SELECT settings_json FROM project_settings WHERE project_id = {self.param}",
                    (project_id,),
                )
                row = cur.fetchone()
                text = compute(row[0] if row else None)
                cur.execute(_UPSERT.format(p=self.param), (project_id, text, version, time.time()))
                self._after_write(cur, version)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                cur.close()
        finally:
            conn.close()
        self._written(version)
        return version

    def _written(self, version: int) -> None:
        return None

    def close(self) -> None:
        with self._read_lock:
            self._close_quietly()


class _Sqlite(_Backend):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _DDL:
                conn.execute(statement.format(real="REAL"))
            conn.commit()
        finally:
            conn.close()
        # The change check's own connection: a write in progress elsewhere never blocks it
        # (WAL readers do not wait for writers).
        self._check_conn = self._connect()
        self._check_lock = threading.Lock()

    def _connect(self) -> Any:
        # isolation_level=None: no implicit transactions; a write says BEGIN IMMEDIATE itself.
        conn = sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
            isolation_level=None,
        )
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        return conn

    def version(self) -> int:
        with self._check_lock:
            row = self._check_conn.execute(
                "SELECT version FROM settings_version WHERE id = 1"
            ).fetchone()
        return int(row[0])

    def _begin_write(self, cur: Any) -> int:
        cur.execute("BEGIN IMMEDIATE")  # SQLite's write lock, across processes
        cur.execute("UPDATE settings_version SET version = version + 1 WHERE id = 1")
        cur.execute("SELECT version FROM settings_version WHERE id = 1")
        return int(cur.fetchone()[0])

    def close(self) -> None:
        super().close()
        with self._check_lock:
            self._check_conn.close()


class _Postgres(_Backend):
    param = "%s"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                "a postgresql:// settings store needs psycopg: pip install 'meshproxy[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.url = url
        with psycopg.connect(url) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _DDL:
                conn.execute(statement.format(real="DOUBLE PRECISION"))
            conn.commit()
        self._version = self._read_version()
        self._version_lock = threading.Lock()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, name="meshproxy-settings-listen", daemon=True
        )
        self._listener.start()
        self._listening.wait(10.0)

    def __repr__(self) -> str:
        return "_Postgres(<url>)"  # a URL may carry a password

    def _connect(self) -> Any:
        return self._psycopg.connect(self.url)

    def _read_version(self) -> int:
        with self._psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SELECT version FROM settings_version WHERE id = 1").fetchone()
            return int(row[0])

    def version(self) -> int:
        return self._version

    def _bump(self, version: int) -> None:
        with self._version_lock:
            self._version = max(self._version, version)

    def _begin_write(self, cur: Any) -> int:
        # The counter row's lock serialises writers on every replica.
        cur.execute(
            "UPDATE settings_version SET version = version + 1 WHERE id = 1 RETURNING version"
        )
        return int(cur.fetchone()[0])

    def _after_write(self, cur: Any, version: int) -> None:
        # Delivered to every listener when (and only if) the transaction commits.
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))

    def _written(self, version: int) -> None:
        self._bump(version)  # this replica sees its own write at once

    def _listen(self) -> None:
        """LISTEN, and move the in-memory version on each NOTIFY. After a lost connection,
        reconnect and re-read the counter: notifications sent meanwhile were missed."""
        delay = 0.1
        while not self._stop.is_set():
            try:
                with self._psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    row = conn.execute(
                        "SELECT version FROM settings_version WHERE id = 1"
                    ).fetchone()
                    self._bump(int(row[0]))
                    self._listening.set()
                    delay = 0.1
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            try:
                                self._bump(int(notify.payload))
                            except ValueError:
                                log.warning("unexpected settings notification ignored")
            except Exception as exc:
                if self._stop.is_set():
                    return
                # one line, no traceback: this repeats while the database is away
                log.warning(
                    "settings listener lost its connection (%s); reconnecting",
                    type(exc).__name__,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        self._stop.set()
        self._listener.join(5.0)
        super().close()


def open_settings_store(
    url_or_path: str | Path | None,
    *,
    env: Mapping[str, str] | None = None,
    base: Mapping[str, ProjectSettings] | None = None,
) -> SettingsStore:
    """A store in the database `open_ledger` would open for the same argument (a SQLite path,
    `sqlite:` URL or `postgresql://` URL). `env` supplies MESHPROXY_SETTINGS_KEY."""
    key = (env or {}).get(ENV_KEY) or None
    if url_or_path is None:
        from .ledger import DEFAULT_PATH

        return _store(_Sqlite(DEFAULT_PATH), key, base)
    if isinstance(url_or_path, Path):
        return _store(_Sqlite(url_or_path), key, base)
    text = url_or_path
    db: _Backend
    if text.startswith(("postgresql://", "postgres://")):
        db = _Postgres(text)
    elif text.startswith("sqlite:///"):
        db = _Sqlite(text[len("sqlite://") :])
    elif text.startswith("sqlite:"):
        db = _Sqlite(text[len("sqlite:") :])
    elif "://" in text:
        raise ConfigError(f"unsupported settings database URL scheme: {text.split('://')[0]!r}")
    else:
        db = _Sqlite(text)
    return _store(db, key, base)


def _store(
    db: _Backend, key: str | None, base: Mapping[str, ProjectSettings] | None
) -> SettingsStore:
    try:
        return SettingsStore(db, encryption_key=key, base=base)
    except BaseException:
        db.close()  # stop the listener thread of a store that will never be used
        raise


def location_of(ledger: Any) -> str | Path | None:
    """The database of an open ledger (SqliteLedger.path or PostgresLedger.url)."""
    return getattr(ledger, "url", None) or getattr(ledger, "path", None)
