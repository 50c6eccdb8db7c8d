"""OpenTelemetry: metrics per the GenAI conventions and this project's counters, read back with the
SDK's in-memory metric reader; spans and W3C trace context with the in-memory span exporter."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from meshproxy.contrib.otel import (
    DURATION_BUCKETS,
    TOKEN_BUCKETS,
    OTelSink,
    configure_from_environment,
    replace_trace_headers,
)

pytest.importorskip("opentelemetry.sdk", reason="needs the `otel` extra (OpenTelemetry SDK)")
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from meshproxy_core.records import (
    Cost,
    Ending,
    ImageCount,
    LineItem,
    Outcome,
    Principal,
    Usage,
    UsageRecord,
    UsageSource,
)

T0 = 1_800_000_000.0
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01".encode()


def record(**changes: Any) -> UsageRecord:
    fields: dict[str, Any] = dict(
        id="req-1",
        request_id="req-1",
        provider="openai",
        endpoint="chat.completions",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        outcome=Outcome.OK,
        ending=Ending.COMPLETE,
        started_at=T0,
        ended_at=T0 + 2.5,
        principal=Principal(project="acme", room="lab", participant="ada", session="s-1"),
        model="gpt-4o",
        response_model="gpt-4o-2024-08-06",
        usage=Usage(input_tokens=100, cache_read_tokens=50, output_tokens=30, reasoning_tokens=10),
        usage_source=UsageSource.REPORTED,
        cost=Cost(total=Decimal("0.0125")),
    )
    fields.update(changes)
    return UsageRecord(**fields)


class Harness:
    def __init__(self, include_participant: bool = True) -> None:
        self.reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.sink = OTelSink(
            MeterProvider(metric_readers=[self.reader]),
            tracer_provider,
            include_participant=include_participant,
        )

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def metric(self, name: str) -> Any:
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        return metric
        raise AssertionError(f"no metric {name}")


@pytest.fixture
def h() -> Harness:
    return Harness()


def by(points: list[Any], **attributes: str) -> list[Any]:
    return [p for p in points if all(p.attributes.get(k) == v for k, v in attributes.items())]


def test_token_usage_histogram_follows_the_conventions(h: Harness) -> None:
    h.sink.emit(record())
    metric = h.metric("gen_ai.client.token.usage")
    assert metric.unit == "{token}"
    points = metric.data.data_points
    assert {p.attributes["gen_ai.token.type"] for p in points} == {"input", "output"}
    (inp,) = by(points, **{"gen_ai.token.type": "input"})
    (out,) = by(points, **{"gen_ai.token.type": "output"})
    assert list(inp.explicit_bounds) == list(TOKEN_BUCKETS)
    assert list(TOKEN_BUCKETS) == [
        1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
    ]  # fmt: skip
    assert inp.sum == 150  # cached input counts as input, as the conventions say
    assert out.sum == 30
    assert dict(inp.attributes) == {
        "gen_ai.token.type": "input",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "meshproxy.project": "acme",
        "meshproxy.room": "lab",
        "meshproxy.participant": "ada",
        "meshproxy.session": "s-1",
    }


def test_operation_duration_histogram(h: Harness) -> None:
    h.sink.emit(record())
    h.sink.emit(record(id="req-2", ended_at=T0 + 0.05))
    metric = h.metric("gen_ai.client.operation.duration")
    assert metric.unit == "s"
    (point,) = metric.data.data_points
    assert list(point.explicit_bounds) == list(DURATION_BUCKETS)
    assert list(DURATION_BUCKETS) == [
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ]  # fmt: skip
    assert point.count == 2
    assert point.sum == pytest.approx(2.55)
    assert "error.type" not in point.attributes


def test_project_counters_tokens_by_kind_cost_media(h: Harness) -> None:
    h.sink.emit(record())
    h.sink.emit(
        record(
            id="img",
            endpoint="images.generations",
            model="gpt-image-1",
            response_model=None,
            usage=Usage(
                input_tokens=20,
                output_image_tokens=4160,
                images=(ImageCount(size="1024x1024", quality="high", count=2),),
            ),
            cost=Cost(total=Decimal("0.5")),
        )
    )
    h.sink.emit(
        record(
            id="tts",
            endpoint="audio.speech",
            model="tts-1",
            response_model=None,
            usage=Usage(input_characters=1200),
            usage_source=UsageSource.COUNTED,
            cost=Cost(total=Decimal("0.018")),
        )
    )
    h.sink.emit(
        record(
            id="stt",
            endpoint="audio.transcriptions",
            model="whisper-1",
            response_model=None,
            usage=Usage(audio_seconds=Decimal("90.5")),
            cost=Cost(total=Decimal("0.009")),
        )
    )
    tokens = h.points("meshproxy.usage.tokens")
    kinds = {
        p.attributes["meshproxy.token.kind"]: p.value
        for p in by(tokens, **{"gen_ai.request.model": "gpt-4o"})
    }
    assert kinds == {"input": 100, "cache_read": 50, "output": 30}
    (reasoning,) = h.points("meshproxy.usage.reasoning_tokens")
    assert reasoning.value == 10
    (images,) = h.points("meshproxy.usage.images")
    assert images.value == 2 and images.attributes["meshproxy.image.quality"] == "high"
    assert images.attributes["gen_ai.operation.name"] == "images.generations"
    (characters,) = h.points("meshproxy.usage.characters")
    assert characters.value == 1200
    (seconds,) = h.points("meshproxy.usage.audio.duration")
    assert seconds.value == pytest.approx(90.5)
    cost = h.metric("meshproxy.usage.cost")
    assert cost.unit == "{USD}"
    assert sum(p.value for p in cost.data.data_points) == pytest.approx(0.5395)
    assert by(cost.data.data_points, **{"gen_ai.request.model": "gpt-4o"})[0].value == 0.0125
    assert h.points("meshproxy.usage.unpriced") == []


def test_requests_by_outcome(h: Harness) -> None:
    h.sink.emit(record())
    h.sink.emit(
        record(
            id="r",
            outcome=Outcome.REJECTED,
            status=403,
            reject_reason="model_not_allowed",
            usage=Usage(),
            cost=None,
        )
    )
    h.sink.emit(record(id="p", outcome=Outcome.PARTIAL, ending=Ending.CLIENT_GONE, partial=True))
    h.sink.emit(
        record(
            id="u",
            outcome=Outcome.UPSTREAM_ERROR,
            status=429,
            error_type="rate_limit_error",
            usage=Usage(),
            cost=None,
        )
    )
    requests = h.points("meshproxy.requests")
    outcomes = {p.attributes["meshproxy.outcome"]: p for p in requests}
    assert set(outcomes) == {"ok", "rejected", "partial", "upstream_error"}
    assert all(p.value == 1 for p in requests)
    assert outcomes["rejected"].attributes["meshproxy.reject_reason"] == "model_not_allowed"
    assert outcomes["rejected"].attributes["error.type"] == "model_not_allowed"
    assert "gen_ai.request.model" not in outcomes["rejected"].attributes  # client-chosen text
    assert outcomes["upstream_error"].attributes["error.type"] == "rate_limit_error"
    assert outcomes["partial"].attributes["error.type"] == "client_gone"
    assert "error.type" not in outcomes["ok"].attributes
    # rejected requests never reached a model: no duration point for them
    durations = h.points("gen_ai.client.operation.duration")
    assert sum(p.count for p in durations) == 3


def test_unknown_principal_and_unpriced_usage(h: Harness) -> None:
    h.sink.emit(record(principal=None, cost=None))
    (point,) = h.points("meshproxy.requests")
    assert "meshproxy.room" not in point.attributes
    (unpriced,) = h.points("meshproxy.usage.unpriced")
    assert unpriced.value == 1


def test_batch_lines_are_counted_per_model() -> None:
    h = Harness()
    items = (
        LineItem(
            "a", "claude-haiku-4-5", Usage(input_tokens=10, output_tokens=5), Cost(Decimal("0.001"))
        ),
        LineItem(
            "b", "claude-sonnet-4-5", Usage(input_tokens=20, output_tokens=7), Cost(Decimal("0.01"))
        ),
    )
    h.sink.emit(
        record(
            provider="anthropic",
            endpoint="messages.batches.results",
            model=None,
            response_model=None,
            line_items=items,
            batch_id="msgbatch_1",
            usage=Usage(input_tokens=30, output_tokens=12),
            cost=Cost(Decimal("0.011")),
        )
    )
    cost = h.points("meshproxy.usage.cost")
    per_model = {p.attributes["gen_ai.response.model"]: p.value for p in cost}
    assert per_model == {"claude-haiku-4-5": 0.001, "claude-sonnet-4-5": 0.01}
    usage = by(h.points("gen_ai.client.token.usage"), **{"gen_ai.token.type": "output"})
    assert sorted(p.sum for p in usage) == [5, 7]


def test_include_participant_switch_drops_them_from_metrics_not_traces() -> None:
    h = Harness(include_participant=False)
    trace = h.sink.start_request([], now_ns=int(T0 * 1e9))
    rec = record()
    h.sink.end_request(trace, rec)
    h.sink.emit(rec)
    for name in ("gen_ai.client.token.usage", "meshproxy.usage.cost", "meshproxy.requests"):
        for point in h.points(name):
            assert "meshproxy.participant" not in point.attributes
            assert "meshproxy.session" not in point.attributes
            assert point.attributes["meshproxy.room"] == "lab"
    (span,) = h.spans.get_finished_spans()
    assert span.attributes["meshproxy.participant"] == "ada"
    assert span.attributes["meshproxy.session"] == "s-1"


def test_span_is_a_child_of_the_client_and_parent_of_the_upstream(h: Harness) -> None:
    client_headers = [
        (b"Traceparent", TRACEPARENT),
        (b"tracestate", b"vendor=abc"),
        (b"baggage", b"secret=room-internal"),
    ]
    trace = h.sink.start_request(client_headers, now_ns=int(T0 * 1e9))
    upstream = dict(trace.upstream_headers())
    assert set(upstream) == {b"traceparent", b"tracestate"}  # never baggage
    version, trace_id, parent_id, flags = upstream[b"traceparent"].decode().split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")
    assert parent_id != CLIENT_SPAN
    assert upstream[b"tracestate"] == b"vendor=abc"

    h.sink.end_request(trace, record())
    (span,) = h.spans.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == CLIENT_TRACE
    assert format(span.parent.span_id, "016x") == CLIENT_SPAN
    assert format(span.context.span_id, "016x") == parent_id  # upstream's parent is our span
    assert span.name == "chat gpt-4o"
    assert span.start_time == int(T0 * 1e9)
    assert span.end_time == int((T0 + 2.5) * 1e9)
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert a["gen_ai.usage.input_tokens"] == 150
    assert a["gen_ai.usage.output_tokens"] == 30
    assert a["gen_ai.usage.cache_read.input_tokens"] == 50
    assert a["meshproxy.cost.total"] == "0.0125"
    assert a["meshproxy.outcome"] == "ok"
    assert a["meshproxy.room"] == "lab"
    assert a["http.response.status_code"] == 200
    assert span.status.status_code is StatusCode.UNSET


def test_root_span_without_client_context_and_error_status(h: Harness) -> None:
    trace = h.sink.start_request([], now_ns=int(T0 * 1e9))
    ((name, value),) = trace.upstream_headers()
    assert name == b"traceparent"
    h.sink.end_request(
        trace,
        record(
            outcome=Outcome.FAILED,
            status=502,
            usage=Usage(),
            cost=None,
            ending=Ending.UPSTREAM_FAILED,
        ),
    )
    (span,) = h.spans.get_finished_spans()
    assert span.parent is None
    assert value.decode().split("-")[2] == format(span.context.span_id, "016x")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "502"


def test_replace_trace_headers_swaps_the_client_context(h: Harness) -> None:
    trace = h.sink.start_request([(b"traceparent", TRACEPARENT)], now_ns=int(T0 * 1e9))
    forwarded = [(b"content-type", b"application/json"), (b"TraceParent", TRACEPARENT)]
    out = replace_trace_headers(forwarded, trace)
    assert [k for k, _ in out] == [b"content-type", b"traceparent"]
    assert out[1][1] != TRACEPARENT


def test_without_an_sdk_nothing_is_recorded_and_context_passes_through() -> None:
    sink = OTelSink()  # the API's global providers: no-ops unless an SDK was installed
    trace = sink.start_request([(b"traceparent", TRACEPARENT)], now_ns=0)
    # the no-op tracer keeps the client's span as the current one: the upstream sees it
    assert dict(trace.upstream_headers())[b"traceparent"] == TRACEPARENT
    sink.end_request(trace, record())
    sink.emit(record())


def test_configure_from_environment() -> None:
    assert configure_from_environment({}) is None
    assert (
        configure_from_environment(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"}
        )
        is None
    )
    sink = configure_from_environment(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"},
        include_participant=False,
    )
    assert sink is not None and not sink.include_participant
    assert len(sink._owned) == 1  # traces only: metrics stay a no-op
    sink.shutdown()
