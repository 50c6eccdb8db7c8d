"""Pricing through the running proxy: unpriced models are refused before they reach a provider,
operator price overrides from the config file apply, and records carry exact costs."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess

from .conftest import ProxyProcess, make_token

pytestmark = pytest.mark.e2e

OVERRIDES = """
[prices.providers.openai.models."ft:gpt-4o-mini:acme::tuned"]
source = "negotiated contract 2026-11"
effective = "2026-11-01"
rates = { input = 0.30, output = 1.20 }
"""


@pytest.fixture
def priced_proxy(fake: FakeUpstreamProcess, tmp_path: Path) -> Iterator[ProxyProcess]:
    config = tmp_path / "meshproxy.toml"
    config.write_text(OVERRIDES)
    with ProxyProcess(fake.base_url, tmp_path, ["--config", str(config)]) as proxy:
        yield proxy


def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=make_token(), max_retries=0)


def test_unpriced_model_is_refused_and_never_forwarded(
    priced_proxy: ProxyProcess, fake: FakeUpstreamProcess
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(priced_proxy).chat.completions.create(
            model="gpt-unknown-9000", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "model_not_priced"
    assert "gpt-unknown-9000" in info.value.message
    assert fake.received() == []
    record = priced_proxy.record(info.value.response.headers["x-meshproxy-request-id"])
    assert record["outcome"] == "rejected" and record["reject_reason"] == "model_not_priced"


def test_operator_override_prices_a_custom_model(
    priced_proxy: ProxyProcess, fake: FakeUpstreamProcess
) -> None:
    raw = client(priced_proxy).chat.completions.with_raw_response.create(
        model="ft:gpt-4o-mini:acme::tuned", messages=[{"role": "user", "content": "hello"}]
    )
    usage = raw.parse().usage
    assert usage is not None
    record = priced_proxy.record(raw.headers["x-meshproxy-request-id"])
    # $0.30 and $1.20 per million tokens; the simulated provider reports no cached tokens.
    expected = (
        Decimal("0.30") * usage.prompt_tokens + Decimal("1.20") * usage.completion_tokens
    ) / (10**6)
    assert Decimal(record["cost"]["total"]) == expected
    assert record["cost"]["incomplete"] is False
    assert record["cost"]["price_version"].endswith("+overrides")


def test_dated_snapshot_resolves_to_its_entry(
    proxy: ProxyProcess, fake: FakeUpstreamProcess
) -> None:
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o-mini-2024-07-18", messages=[{"role": "user", "content": "x"}]
    )
    usage = raw.parse().usage
    assert usage is not None
    record = proxy.record(raw.headers["x-meshproxy-request-id"])
    # gpt-4o-mini: $0.15 input, $0.60 output per million tokens.
    expected = (
        Decimal("0.15") * usage.prompt_tokens + Decimal("0.60") * usage.completion_tokens
    ) / (10**6)
    assert Decimal(record["cost"]["total"]) == expected
