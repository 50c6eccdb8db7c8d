"""End to end: `configure_from_environment` exports OTLP/HTTP to a small local receiver, which
decodes the protobuf with opentelemetry-proto; the numbers that arrive are the records' numbers."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from meshproxy.contrib.otel import DURATION_BUCKETS, TOKEN_BUCKETS, configure_from_environment
from meshproxy_core.records import (
    Cost,
    Ending,
    Outcome,
    Principal,
    Usage,
    UsageRecord,
    UsageSource,
)

pytest.importorskip(
    "opentelemetry.exporter.otlp.proto.http", reason="needs the `otel` extra (SDK and exporter)"
)
from otlp_receiver import Receiver

T0 = 1_800_000_000.0


def attrs_of(point: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in point.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_otlp_http_export_carries_the_numbers(receiver: Receiver) -> None:
    sink = configure_from_environment(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": "meshproxy-test",
            "OTEL_METRIC_EXPORT_INTERVAL": "3600000",  # only the shutdown export
        }
    )
    assert sink is not None
    principal = Principal(project="acme", room="lab", participant="ada", session="s-1")
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for i, (tokens_in, tokens_out, cost) in enumerate([(1000, 200, "0.25"), (3000, 50, "0.5")]):
        trace = sink.start_request([(b"traceparent", traceparent)], now_ns=int(T0 * 1e9))
        record = UsageRecord(
            id=f"req-{i}",
            request_id=f"req-{i}",
            provider="anthropic",
            endpoint="messages",
            method="POST",
            path="/v1/messages",
            status=200,
            outcome=Outcome.OK,
            ending=Ending.COMPLETE,
            started_at=T0,
            ended_at=T0 + 1.0,
            principal=principal,
            model="claude-sonnet-4-5",
            response_model="claude-sonnet-4-5-20250929",
            usage=Usage(input_tokens=tokens_in, output_tokens=tokens_out),
            usage_source=UsageSource.REPORTED,
            cost=Cost(total=Decimal(cost)),
        )
        sink.end_request(trace, record)
        sink.emit(record)
    sink.shutdown()

    assert receiver.content_types == {"application/x-protobuf"}
    tokens = receiver.metric_points("gen_ai.client.token.usage")
    by_type = {attrs_of(p)["gen_ai.token.type"]: (m, p) for m, p in tokens}
    metric, inp = by_type["input"]
    assert metric.unit == "{token}"
    assert inp.count == 2 and inp.sum == 4000
    assert list(inp.explicit_bounds) == list(TOKEN_BUCKETS)
    # 1000 falls in (256, 1024], 3000 in (1024, 4096]
    assert inp.bucket_counts[TOKEN_BUCKETS.index(1024)] == 1
    assert inp.bucket_counts[TOKEN_BUCKETS.index(4096)] == 1
    assert by_type["output"][1].sum == 250
    assert attrs_of(inp) == {
        "gen_ai.token.type": "input",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "meshproxy.project": "acme",
        "meshproxy.room": "lab",
        "meshproxy.participant": "ada",
        "meshproxy.session": "s-1",
    }
    ((_, duration),) = receiver.metric_points("gen_ai.client.operation.duration")
    assert list(duration.explicit_bounds) == list(DURATION_BUCKETS)
    assert duration.count == 2 and duration.sum == pytest.approx(2.0)
    ((_, cost),) = receiver.metric_points("meshproxy.usage.cost")
    assert cost.as_double == pytest.approx(0.75)
    ((_, requests),) = receiver.metric_points("meshproxy.requests")
    assert requests.as_int == 2

    spans = [
        span
        for request in receiver.traces
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert len(spans) == 2
    resource_attrs = attrs_of(receiver.traces[0].resource_spans[0].resource)
    assert resource_attrs["service.name"] == "meshproxy-test"
    for span in spans:
        assert span.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
        assert span.parent_span_id.hex() == "b7ad6b7169203331"
        assert span.kind == span.SPAN_KIND_SERVER
        assert span.end_time_unix_nano - span.start_time_unix_nano == 1_000_000_000
        assert attrs_of(span)["gen_ai.usage.input_tokens"] in (1000, 3000)
        assert attrs_of(span)["meshproxy.cost.total"] in ("0.25", "0.5")
