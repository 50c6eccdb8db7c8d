"""`meshproxy serve` with the standard OTEL_EXPORTER_OTLP_* variables: spans and metrics reach a
local OTLP/HTTP receiver with the record's numbers, and the client's W3C trace context reaches
the upstream as the proxy's child span."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import openai
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess

from .conftest import ProxyProcess, make_token

pytestmark = pytest.mark.e2e
pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="needs the `otel` extra")

from otlp_receiver import Receiver  # noqa: E402  (after the importorskip)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def attributes(item: Any) -> dict[str, Any]:
    out = {}
    for kv in item.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def test_spans_and_metrics_reach_the_collector(fake: FakeUpstreamProcess, tmp_path: Path) -> None:
    receiver = Receiver()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "meshproxy-e2e",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",  # exported at shutdown, once
    }
    try:
        with ProxyProcess(fake.base_url, tmp_path, env=env) as proxy:
            client = openai.OpenAI(
                base_url=proxy.url + "/v1",
                api_key=make_token(room="traced"),
                max_retries=0,
                default_headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"},
            )
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "trace me"}]
            )
            usage = raw.parse().usage
            assert usage is not None
            upstream_parent = dict(fake.received()[-1].headers)["traceparent"]
            assert proxy.process is not None
            proxy.process.send_signal(signal.SIGTERM)  # flushes the exporters
            assert proxy.process.wait(timeout=20) == 0
    finally:
        receiver.close()

    spans = [
        span
        for request in receiver.traces
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert len(spans) == 1
    span = spans[0]
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == CLIENT_SPAN
    # The upstream saw the same trace, with the proxy's span as its parent.
    assert upstream_parent == f"00-{TRACE_ID}-{span.span_id.hex()}-01"
    span_attributes = attributes(span)
    assert span_attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert span_attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert span_attributes["meshproxy.room"] == "traced"
    tokens = receiver.metric_points("gen_ai.client.token.usage")
    by_type = {attributes(point)["gen_ai.token.type"]: point for _, point in tokens}
    assert by_type["input"].sum == usage.prompt_tokens
    assert by_type["output"].sum == usage.completion_tokens
