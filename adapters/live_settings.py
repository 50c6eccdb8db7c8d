"""Keeping a running adapter's `Proxy` in step with the settings database.

Owns: the per-request question "did the settings change?" (`stale`, a cheap check: see
contrib.settings) and building the replacement `Proxy`: the config file's configuration with the
database's projects laid over it, project by project, keeping the token verifier (and its cache)
and the price book of the proxy it replaces.

Does not own: storage (contrib.settings) or when to ask (each adapter asks before a request;
`reload` does database I/O, so async adapters run it in a worker thread).
"""

from __future__ import annotations

import contextlib
import logging
import threading

import attrs

from meshproxy.contrib.settings import SettingsStore
from meshproxy_core.config import ProjectSettings
from meshproxy_core.exchange import Proxy

__all__ = ["LiveSettings"]

log = logging.getLogger("meshproxy.settings")


class LiveSettings:
    def __init__(self, store: SettingsStore, base: Proxy) -> None:
        self.store = store
        self._base = base  # built from the config file alone
        self._seen: int | None = None  # the version `proxy` reflects; None: never loaded
        self._lock = threading.Lock()
        self._failing = False  # logged once per run of failed checks
        self.proxy = base

    def stale(self) -> bool:
        """Whether the stored settings moved since `proxy` was built. Never raises: a database
        that cannot answer must not fail the request, which then runs on the settings it has."""
        try:
            version = self.store.version()
        except Exception as exc:
            if not self._failing:
                self._failing = True
                log.error("cannot check the project settings (%s); keeping the current ones", exc)
            return False
        self._failing = False
        return version != self._seen

    def reload(self) -> Proxy:
        """The proxy for the settings now stored (the current one when nothing changed)."""
        with self._lock:
            if not self.stale():
                return self.proxy
            try:
                version, projects = self.store.snapshot()
            except Exception:
                # Keep serving the settings we have; try again on the next change.
                log.exception("reading project settings failed; keeping the previous ones")
                with contextlib.suppress(Exception):
                    self._seen = self.store.version()
                return self.proxy
            if self._base.config.simulated:
                # The simulated provider is sealed: no stored key or URL may send a request
                # out of the process (the config file's projects are dropped for the same reason).
                projects = {p: _without_providers(s) for p, s in projects.items()}
            old = self.proxy
            self.proxy = Proxy(
                self._base.config.with_projects(projects),
                verifier=old.verifier,
                prices=old.prices,
            )
            if self._seen is not None:
                log.info(
                    "project settings changed (version %d): %d project(s) from the database",
                    version,
                    len(projects),
                )
            self._seen = version
            return self.proxy


def _without_providers(settings: ProjectSettings) -> ProjectSettings:
    return attrs.evolve(settings, providers={}, rooms={})
