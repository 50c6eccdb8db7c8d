"""Django (ASGI): wrap `get_asgi_application()` in the middleware.

    MESHAGENT_SECRET=... OPENAI_API_KEY=... uvicorn django_asgi:application

In a real project the middleware line goes in your project's `asgi.py`; the settings below only
make this example self-contained.
"""

import os

import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import path

from meshproxy import JsonlSink, MeshProxyMiddleware, ProxyConfig


def health(request: object) -> JsonResponse:
    return JsonResponse({"status": "ok", "served_by": "django"})


settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="example-only",
)
django.setup()
urlpatterns = [path("health", health)]

from django.core.asgi import get_asgi_application  # noqa: E402  (after settings)

application = MeshProxyMiddleware(
    get_asgi_application(),
    ProxyConfig.from_mapping({}, os.environ),
    sinks=[JsonlSink(os.environ.get("MESHPROXY_RECORDS", "usage.jsonl"))],
)
