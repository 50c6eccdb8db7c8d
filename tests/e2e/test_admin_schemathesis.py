"""Schemathesis against the running server's published OpenAPI document: generated requests to
every admin operation (a bounded number of examples each) must never get a server error, and
every answer's status code and content type must be ones the document declares."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from meshproxy.adapters.testing import FakeUpstreamProcess  # noqa: E402

from .conftest import ProxyProcess  # noqa: E402

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "admin-token-schemathesis-" + "s" * 16
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def admin_server() -> Iterator[ProxyProcess]:
    with (
        FakeUpstreamProcess() as upstream,
        tempfile.TemporaryDirectory() as tmp,
    ):
        config = Path(tmp) / "meshproxy.toml"
        config.write_text(f'[admin]\ntoken = "{ADMIN_TOKEN}"\n')
        with ProxyProcess(upstream.base_url, Path(tmp), ["--config", str(config)]) as proxy:
            yield proxy


@pytest.fixture(scope="module")
def admin_schema(admin_server: ProxyProcess):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(
        f"{admin_server.url}/admin/v1/openapi.json", headers=AUTH, timeout=10
    )


OPERATIONS = [
    ("/admin/v1/projects/{project_id}/settings", "GET"),
    ("/admin/v1/projects/{project_id}/settings", "PUT"),
    ("/admin/v1/projects/{project_id}/settings", "PATCH"),
    ("/admin/v1/openapi.json", "GET"),
]


# The operations are parametrized here and their cases drawn with `as_strategy`, rather than
# with `schema.parametrize()`/`from_fixture`, whose lazy loading does not run under pytest 9.
@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_admin_api_conforms_to_its_schema(
    admin_schema,  # type: ignore[no-untyped-def]
    admin_server: ProxyProcess,
    path: str,
    method: str,
    mode: str,
) -> None:
    operation = admin_schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate(
            base_url=admin_server.url,
            headers=AUTH,
            timeout=10,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    check()


def test_committed_document_matches_the_code() -> None:
    from meshproxy.adapters.admin import openapi_json

    committed = Path(__file__).parents[2] / "docs" / "admin-openapi.json"
    assert committed.read_text() == openapi_json(), (
        "regenerate: python -m meshproxy.adapters.admin > docs/admin-openapi.json"
    )
