"""ASGI lifespan: the app and the middleware close the upstream pool and flush sinks at shutdown,
and the middleware forwards lifespan messages to the wrapped app."""

from __future__ import annotations

from typing import Any

import pytest

from meshproxy import MeshProxyApp, MeshProxyMiddleware, ProxyConfig, UsageRecord
from meshproxy.adapters.cli import build_proxy

ENV = {"MESHAGENT_SECRET": "s" * 40, "OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y"}


class FlushingSink:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []
        self.flushed = 0

    def emit(self, record: UsageRecord) -> None:
        self.records.append(record)

    def flush(self) -> None:
        self.flushed += 1


async def run_lifespan(app: Any) -> list[dict[str, Any]]:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return sent


@pytest.mark.anyio
async def test_app_lifespan_closes_pool_and_flushes() -> None:
    sink = FlushingSink()
    app = MeshProxyApp(build_proxy(ProxyConfig.from_mapping({}, ENV)), sinks=[sink])
    assert app.pool is not None  # created on first use
    sent = await run_lifespan(app)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sink.flushed == 1
    assert app._pool is None


@pytest.mark.anyio
async def test_middleware_passes_lifespan_to_the_app() -> None:
    seen: list[str] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    sink = FlushingSink()
    middleware = MeshProxyMiddleware(inner, ProxyConfig.from_mapping({}, ENV), sinks=[sink])
    sent = await run_lifespan(middleware)
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sink.flushed == 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
