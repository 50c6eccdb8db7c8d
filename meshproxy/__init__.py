"""meshproxy: a room-scoped LLM proxy for OpenAI and Anthropic, as a library.

The public API. Everything else (meshproxy_core's internals, adapter helpers) is private.

    from meshproxy import Proxy, ProxyConfig, MeshProxyMiddleware
"""

from meshproxy.adapters.asgi import MeshProxyApp, MeshProxyMiddleware
from meshproxy.adapters.wsgi import MeshProxyWSGI, MeshProxyWSGIMiddleware
from meshproxy.contrib.jsonl import JsonlSink
from meshproxy_core.auth import HS256Verifier, TokenVerifier, mint_token
from meshproxy_core.config import ConfigError, ProxyConfig
from meshproxy_core.errors import ProxyError
from meshproxy_core.exchange import Exchange, Forward, Proxy, Reject
from meshproxy_core.pricing import PriceBook, PricingError
from meshproxy_core.records import (
    Cost,
    Ending,
    ImageCount,
    LineItem,
    Outcome,
    Principal,
    Usage,
    UsageRecord,
    UsageSink,
    UsageSource,
    record_to_dict,
)

__all__ = [
    "ConfigError",
    "Cost",
    "Ending",
    "Exchange",
    "Forward",
    "HS256Verifier",
    "ImageCount",
    "JsonlSink",
    "LineItem",
    "MeshProxyApp",
    "MeshProxyMiddleware",
    "MeshProxyWSGI",
    "MeshProxyWSGIMiddleware",
    "Outcome",
    "PriceBook",
    "PricingError",
    "Principal",
    "Proxy",
    "ProxyConfig",
    "ProxyError",
    "Reject",
    "TokenVerifier",
    "Usage",
    "UsageRecord",
    "UsageSink",
    "UsageSource",
    "mint_token",
    "record_to_dict",
]
