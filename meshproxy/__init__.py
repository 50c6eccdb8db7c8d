"""meshproxy: a room-scoped LLM proxy. Public API re-exported here."""
