"""meshproxy_core: the sans-IO core of meshproxy (no sockets, no event loop, no clock reads)."""
