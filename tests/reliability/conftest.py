"""The reliability suite shares the end-to-end harness (real processes on 127.0.0.1)."""

from e2e.conftest import (  # noqa: F401  (pytest finds fixtures by name in this module)
    _no_provider_credentials_in_client_env,
    anyio_backend,
    fake,
    fake_upstream,
    proxy,
    token,
)
