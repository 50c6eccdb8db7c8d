"""Starlette: wrap the app; proxy paths go to meshproxy, the rest to your routes.

MESHAGENT_SECRET=... OPENAI_API_KEY=... uvicorn starlette_app:app
"""

import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshproxy import JsonlSink, MeshProxyMiddleware, ProxyConfig


async def health(request: object) -> JSONResponse:
    return JSONResponse({"status": "ok", "served_by": "starlette"})


app = MeshProxyMiddleware(
    Starlette(routes=[Route("/health", health)]),
    ProxyConfig.from_mapping({}, os.environ),
    sinks=[JsonlSink(os.environ.get("MESHPROXY_RECORDS", "usage.jsonl"))],
)
