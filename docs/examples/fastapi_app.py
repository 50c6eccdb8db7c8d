"""FastAPI: an existing app that also serves room-scoped LLM proxying.

MESHAGENT_SECRET=... OPENAI_API_KEY=... uvicorn fastapi_app:app
"""

import os

from fastapi import FastAPI

from meshproxy import JsonlSink, MeshProxyMiddleware, ProxyConfig

app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "served_by": "fastapi"}


app.add_middleware(
    MeshProxyMiddleware,
    proxy=ProxyConfig.from_mapping({}, os.environ),
    sinks=[JsonlSink(os.environ.get("MESHPROXY_RECORDS", "usage.jsonl"))],
)
