"""Flask (WSGI): wrap `app.wsgi_app`; run under gunicorn.

MESHAGENT_SECRET=... OPENAI_API_KEY=... gunicorn -k gthread --threads 8 flask_app:app
"""

import os

from flask import Flask

from meshproxy import JsonlSink, MeshProxyWSGIMiddleware, ProxyConfig

app = Flask(__name__)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "served_by": "flask"}


app.wsgi_app = MeshProxyWSGIMiddleware(  # type: ignore[method-assign]
    app.wsgi_app,
    ProxyConfig.from_mapping({}, os.environ),
    sinks=[JsonlSink(os.environ.get("MESHPROXY_RECORDS", "usage.jsonl"))],
)
