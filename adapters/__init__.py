"""Adapters: move bytes between sockets and the sans-IO core; no decisions live here."""
