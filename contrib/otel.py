"""OpenTelemetry metrics and traces for proxied requests, following the GenAI semantic conventions.

Owns: turning a finished `UsageRecord` into metric points (the conventions'
`gen_ai.client.token.usage` and `gen_ai.client.operation.duration` histograms, plus this
project's counters for what the conventions do not cover yet: tokens by kind, images, characters,
audio seconds, server tool calls, cost, requests by outcome); one SERVER span per proxied request
with `gen_ai.*`, usage, cost and outcome attributes; W3C trace context from the client's headers
to the upstream request; and `configure_from_environment`, which builds the SDK with OTLP/HTTP
exporters when the standard `OTEL_EXPORTER_OTLP_*` variables ask for it.

Does not own: the SDK. Only `opentelemetry-api` is imported at module level, so the hot path
never needs more; with no providers given the API's global ones are used, which are no-ops unless
the operator installed an SDK. The SDK and exporter (the `otel` extra) are imported lazily by
`configure_from_environment` only.

Cardinality: every series carries project, room, participant and (when present) session. See
docs/observability.md; `include_participant=False` drops participant and session from metrics
while traces and the ledger keep them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import attrs
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from meshproxy_core.records import Outcome, Usage, UsageRecord, UsageSource

__all__ = [
    "DURATION_BUCKETS",
    "TOKEN_BUCKETS",
    "OTelSink",
    "RequestTrace",
    "configure_from_environment",
    "replace_trace_headers",
]

log = logging.getLogger("meshproxy.otel")

INSTRUMENTATION_NAME = "meshproxy"

# The GenAI semantic conventions' advisory bucket boundaries.
TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

# gen_ai.operation.name for endpoint kinds the conventions name; other kinds (images, audio,
# batches, count_tokens) keep the endpoint kind, which the conventions allow for custom values.
_OPERATIONS = {
    "chat.completions": "chat",
    "responses": "chat",
    "messages": "chat",
    "complete": "text_completion",
    "embeddings": "embeddings",
}

# Usage field -> meshproxy.token.kind. Summing `meshproxy.usage.tokens` over kinds gives the
# token total; reasoning tokens are a detail of output and have their own counter.
_TOKEN_KINDS = (
    ("input_tokens", "input"),
    ("cache_read_tokens", "cache_read"),
    ("cache_write_5m_tokens", "cache_write_5m"),
    ("cache_write_1h_tokens", "cache_write_1h"),
    ("input_audio_tokens", "input_audio"),
    ("input_image_tokens", "input_image"),
    ("output_tokens", "output"),
    ("output_audio_tokens", "output_audio"),
    ("output_image_tokens", "output_image"),
)
_SERVER_TOOLS = (
    ("web_search_requests", "web_search"),
    ("web_fetch_requests", "web_fetch"),
    ("code_execution_requests", "code_execution"),
)
# Sources whose numbers are token usage worth a `gen_ai.client.token.usage` point.
_TOKEN_SOURCES = frozenset({UsageSource.REPORTED, UsageSource.ESTIMATED, UsageSource.COUNTED})

_PROPAGATOR = TraceContextTextMapPropagator()


def operation_name(endpoint: str) -> str:
    return _OPERATIONS.get(endpoint, endpoint or "unknown")


def input_token_total(usage: Usage) -> int:
    """Input tokens as the conventions count them: cached and cache-writing tokens included."""
    return (
        usage.input_tokens
        + usage.cache_read_tokens
        + usage.cache_write_5m_tokens
        + usage.cache_write_1h_tokens
        + usage.input_audio_tokens
        + usage.input_image_tokens
    )


def output_token_total(usage: Usage) -> int:
    return usage.output_tokens + usage.output_audio_tokens + usage.output_image_tokens


@attrs.frozen
class RequestTrace:
    """The span of one proxied request, and the trace context to send upstream."""

    span: Span
    upstream: tuple[tuple[bytes, bytes], ...]

    def upstream_headers(self) -> list[tuple[bytes, bytes]]:
        """`traceparent` (and `tracestate`) naming this request's span as the parent, or
        nothing when tracing is off and the client sent no context."""
        return list(self.upstream)


_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})


def replace_trace_headers(
    headers: Sequence[tuple[bytes, bytes]], request_trace: RequestTrace
) -> list[tuple[bytes, bytes]]:
    """The upstream headers with the client's trace context replaced by the proxy's span (a
    child of the client's). Without this the upstream would see the client's span as parent."""
    kept = [(k, v) for k, v in headers if k.lower() not in _TRACE_HEADERS]
    return kept + request_trace.upstream_headers()


class OTelSink:
    """A UsageSink recording metrics, plus tracing hooks an adapter calls around a request."""

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        include_participant: bool = True,
        owned: Sequence[Any] = (),
    ) -> None:
        meter = metrics.get_meter(INSTRUMENTATION_NAME, meter_provider=meter_provider)
        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
        self.include_participant = include_participant
        self._owned = tuple(owned)  # SDK providers this sink built and must shut down
        self._token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._tokens = meter.create_counter(
            "meshproxy.usage.tokens", unit="{token}", description="Tokens by kind."
        )
        self._reasoning = meter.create_counter(
            "meshproxy.usage.reasoning_tokens",
            unit="{token}",
            description="Reasoning tokens (already counted in output tokens).",
        )
        self._images = meter.create_counter(
            "meshproxy.usage.images", unit="{image}", description="Images generated."
        )
        self._characters = meter.create_counter(
            "meshproxy.usage.characters",
            unit="{character}",
            description="Speech (TTS) input characters.",
        )
        self._seconds = meter.create_counter(
            "meshproxy.usage.audio.duration",
            unit="s",
            description="Seconds of audio transcribed or translated.",
        )
        self._tools = meter.create_counter(
            "meshproxy.usage.server_tool_requests",
            unit="{request}",
            description="Provider-side tool calls billed per call (web search, web fetch, code).",
        )
        self._cost = meter.create_counter(
            "meshproxy.usage.cost",
            unit="{USD}",
            description="Cost in USD as priced by the proxy's price book.",
        )
        self._unpriced = meter.create_counter(
            "meshproxy.usage.unpriced",
            unit="{request}",
            description="Requests with usage the price book could not (fully) price.",
        )
        self._requests = meter.create_counter(
            "meshproxy.requests", unit="{request}", description="Requests by outcome."
        )

    # -- metrics --------------------------------------------------------------------------------

    def _principal_attributes(self, record: UsageRecord) -> dict[str, str]:
        principal = record.principal
        if principal is None:
            return {}
        attributes = {"meshproxy.project": principal.project, "meshproxy.room": principal.room}
        if self.include_participant:
            attributes["meshproxy.participant"] = principal.participant
            if principal.session:
                attributes["meshproxy.session"] = principal.session
        return attributes

    def _model_attributes(
        self,
        record: UsageRecord,
        operation: str,
        request_model: str | None,
        response_model: str | None,
    ) -> dict[str, str]:
        attributes = {"gen_ai.operation.name": operation}
        if record.provider:
            attributes["gen_ai.provider.name"] = record.provider
        if request_model:
            attributes["gen_ai.request.model"] = request_model
        if response_model:
            attributes["gen_ai.response.model"] = response_model
        return attributes

    def emit(self, record: UsageRecord) -> None:
        """UsageSink: record the metrics of one finished request. Never raises."""
        try:
            self._emit(record)
        except Exception:  # telemetry must never take a request down
            log.exception("OpenTelemetry metrics failed for record %s", record.id)

    def _emit(self, record: UsageRecord) -> None:
        who = self._principal_attributes(record)
        operation = operation_name(record.endpoint)
        if record.outcome is Outcome.REJECTED:
            # a refused request's model name is whatever the client typed: as an attribute it
            # would let any caller mint new series; it stays on the span and in the ledger
            base = {**self._model_attributes(record, operation, None, None), **who}
        else:
            models = (record.model, record.response_model)
            base = {**self._model_attributes(record, operation, *models), **who}

        outcome = {**base, "meshproxy.outcome": record.outcome.value}
        error = _error_type(record)
        if error is not None:
            outcome["error.type"] = error
        if record.outcome is Outcome.REJECTED and record.reject_reason:
            outcome["meshproxy.reject_reason"] = record.reject_reason
        self._requests.add(1, outcome)
        if record.outcome is not Outcome.REJECTED:
            duration = {**base, **({"error.type": error} if error is not None else {})}
            self._duration.record(max(0.0, record.ended_at - record.started_at), duration)

        if record.line_items:
            # batch results: each line is its own model's usage and cost
            for item in record.line_items:
                attributes = {
                    **self._model_attributes(record, "chat", item.model, item.model),
                    **who,
                }
                self._usage(record, item.usage, attributes)
                self._money(item.usage, item.cost, attributes)
        else:
            self._usage(record, record.usage, base)
            self._money(record.usage, record.cost, base)

    def _usage(self, record: UsageRecord, usage: Usage, attributes: dict[str, str]) -> None:
        if usage.is_zero():
            return
        if record.usage_source in _TOKEN_SOURCES and usage.token_total() > 0:
            self._token_usage.record(
                input_token_total(usage), {**attributes, "gen_ai.token.type": "input"}
            )
            self._token_usage.record(
                output_token_total(usage), {**attributes, "gen_ai.token.type": "output"}
            )
        for field, kind in _TOKEN_KINDS:
            value = getattr(usage, field)
            if value:
                self._tokens.add(value, {**attributes, "meshproxy.token.kind": kind})
        if usage.reasoning_tokens:
            self._reasoning.add(usage.reasoning_tokens, attributes)
        for image in usage.images:
            self._images.add(
                image.count,
                {
                    **attributes,
                    "meshproxy.image.size": image.size,
                    "meshproxy.image.quality": image.quality,
                },
            )
        if usage.input_characters:
            self._characters.add(usage.input_characters, attributes)
        if usage.audio_seconds:
            self._seconds.add(float(usage.audio_seconds), attributes)
        for field, tool in _SERVER_TOOLS:
            value = getattr(usage, field)
            if value:
                self._tools.add(value, {**attributes, "meshproxy.tool": tool})

    def _money(self, usage: Usage, cost: Any, attributes: dict[str, str]) -> None:
        if cost is not None and cost.total:
            # a float here is for dashboards; the exact Decimal lives in the ledger
            self._cost.add(float(cost.total), attributes)
        if not usage.is_zero() and (cost is None or cost.incomplete):
            self._unpriced.add(1, attributes)

    # -- traces ---------------------------------------------------------------------------------

    def start_request(
        self, client_headers: Sequence[tuple[bytes, bytes]], now_ns: int | None = None
    ) -> RequestTrace:
        """Start the SERVER span of one request, as a child of the client's W3C trace context
        (if any). `now_ns` is epoch nanoseconds (time.time_ns()), the clock records use."""
        carrier: dict[str, str] = {}
        for name, value in client_headers:
            key = name.lower()
            # only the W3C context: baggage could carry room-internal data to a third party
            if key in _TRACE_HEADERS:
                carrier[key.decode("latin-1")] = value.decode("latin-1")
        parent = _PROPAGATOR.extract(carrier)
        span = self._tracer.start_span(
            "meshproxy request", context=parent, kind=SpanKind.SERVER, start_time=now_ns
        )
        out: dict[str, str] = {}
        _PROPAGATOR.inject(out, context=trace.set_span_in_context(span, parent))
        upstream = tuple(
            (key.encode("latin-1"), value.encode("latin-1")) for key, value in sorted(out.items())
        )
        return RequestTrace(span=span, upstream=upstream)

    def end_request(self, request_trace: RequestTrace, record: UsageRecord) -> None:
        """Name the span, set its attributes from `record` and end it at the record's end."""
        span = request_trace.span
        try:
            operation = operation_name(record.endpoint)
            span.update_name(f"{operation} {record.model}" if record.model else operation)
            if span.is_recording():
                span.set_attributes(self._span_attributes(record, operation))
                error = _error_type(record)
                if record.outcome in (Outcome.FAILED, Outcome.PARTIAL) or record.status >= 500:
                    span.set_status(Status(StatusCode.ERROR, error))
        except Exception:
            log.exception("OpenTelemetry span attributes failed for record %s", record.id)
        finally:
            span.end(end_time=int(record.ended_at * 1_000_000_000))

    def _span_attributes(self, record: UsageRecord, operation: str) -> dict[str, Any]:
        usage = record.usage
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "http.request.method": record.method,
            "http.response.status_code": record.status,
            "url.path": record.path,
            "meshproxy.record.id": record.id,
            "meshproxy.request.id": record.request_id,
            "meshproxy.endpoint": record.endpoint,
            "meshproxy.outcome": record.outcome.value,
            "meshproxy.ending": record.ending.value,
            "meshproxy.stream": record.stream,
            "meshproxy.partial": record.partial,
            "meshproxy.usage.source": record.usage_source.value,
            "gen_ai.usage.input_tokens": input_token_total(usage),
            "gen_ai.usage.output_tokens": output_token_total(usage),
        }
        optional = {
            "gen_ai.provider.name": record.provider,
            "gen_ai.request.model": record.model,
            "gen_ai.response.model": record.response_model,
            "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_5m_tokens
            + usage.cache_write_1h_tokens,
            "gen_ai.usage.reasoning.output_tokens": usage.reasoning_tokens,
            "meshproxy.service_tier": record.service_tier,
            "error.type": _error_type(record),
            "meshproxy.reject_reason": record.reject_reason,
            "meshproxy.upstream.request_id": record.upstream_request_id,
            "meshproxy.batch.id": record.batch_id,
            "meshproxy.batch.lines": len(record.line_items),
            "meshproxy.usage.images": usage.image_total(),
            "meshproxy.usage.input_characters": usage.input_characters,
            "meshproxy.usage.audio_seconds": float(usage.audio_seconds),
        }
        for field, kind in _TOKEN_KINDS:
            optional[f"meshproxy.usage.tokens.{kind}"] = getattr(usage, field)
        for field, tool in _SERVER_TOOLS:
            optional[f"meshproxy.usage.{tool}_requests"] = getattr(usage, field)
        if record.principal is not None:
            # traces keep who it was even when metrics drop participant/session
            optional["meshproxy.project"] = record.principal.project
            optional["meshproxy.room"] = record.principal.room
            optional["meshproxy.participant"] = record.principal.participant
            optional["meshproxy.session"] = record.principal.session
        if record.cost is not None:
            optional["meshproxy.cost.usd"] = float(record.cost.total)
            optional["meshproxy.cost.total"] = str(record.cost.total)  # exact
            optional["meshproxy.cost.incomplete"] = record.cost.incomplete or None
            optional["meshproxy.price.version"] = record.cost.price_version
        attributes.update({k: v for k, v in optional.items() if v not in (None, "", 0, 0.0)})
        return attributes

    # -- lifecycle ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Export what is pending and shut down the SDK providers this sink built (those from
        `configure_from_environment`); providers passed in belong to the caller."""
        for provider in self._owned:
            try:
                # shutdown exports what is pending; a force_flush first would export the
                # (cumulative) metrics twice
                provider.shutdown()
            except Exception:
                log.exception("OpenTelemetry provider shutdown failed")


def _error_type(record: UsageRecord) -> str | None:
    """`error.type` per the conventions: the provider's error type, else a status code, else
    the proxy's reason; None when the request succeeded."""
    if record.outcome is Outcome.OK:
        return None
    if record.outcome is Outcome.REJECTED:
        return record.reject_reason or "rejected"
    if record.error_type:
        return record.error_type
    if record.status >= 400:
        return str(record.status)
    return record.ending.value if record.outcome is Outcome.PARTIAL else record.outcome.value


# -- configuration from the environment --------------------------------------------------------


def _signal_endpoint(env: Mapping[str, str], signal: str) -> str | None:
    """The OTLP/HTTP URL of one signal: the per-signal variable as is, else the base endpoint
    with `/v1/<signal>` appended (the OTLP exporter specification's rule); None when neither
    is set or the signal's exporter is `none`."""
    if env.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").strip().lower() == "none":
        return None
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if specific:
        return specific
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base:
        return base.rstrip("/") + f"/v1/{signal}"
    return None


def _headers(env: Mapping[str, str], signal: str) -> dict[str, str]:
    text = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS") or env.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    headers: dict[str, str] = {}
    for pair in text.split(","):
        if "=" in pair:
            key, _, value = pair.partition("=")
            headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        log.warning("%s=%r is not an integer; using %d", name, text, default)
        return default


def configure_from_environment(
    env: Mapping[str, str], *, include_participant: bool = True
) -> OTelSink | None:
    """An `OTelSink` exporting OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` or a
    per-signal endpoint is set; None when nothing asks for export, when `OTEL_SDK_DISABLED` is
    true, or when the SDK is not installed (logged: install the `otel` extra). Never raises for
    a missing SDK: the proxy runs without it."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    traces_url = _signal_endpoint(env, "traces")
    metrics_url = _signal_endpoint(env, "metrics")
    if traces_url is None and metrics_url is None:
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip()
    if protocol != "http/protobuf":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s: meshproxy exports http/protobuf only", protocol
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTLP export is configured but the OpenTelemetry SDK is not installed; "
            "nothing is exported (pip install 'meshproxy[otel]')"
        )
        return None

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "meshproxy"})
    owned: list[Any] = []
    meter_provider: metrics.MeterProvider = metrics.NoOpMeterProvider()
    tracer_provider: trace.TracerProvider = trace.NoOpTracerProvider()
    if metrics_url is not None:
        interval = _int(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000)
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=metrics_url, headers=_headers(env, "metrics")),
            export_interval_millis=interval,
        )
        sdk_meters = MeterProvider(resource=resource, metric_readers=[reader])
        meter_provider = sdk_meters
        owned.append(sdk_meters)
    if traces_url is not None:
        sdk_tracers = TracerProvider(resource=resource)
        sdk_tracers.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=traces_url, headers=_headers(env, "traces"))
            )
        )
        tracer_provider = sdk_tracers
        owned.append(sdk_tracers)
    log.info("OpenTelemetry: exporting metrics to %s, traces to %s", metrics_url, traces_url)
    return OTelSink(
        meter_provider, tracer_provider, include_participant=include_participant, owned=owned
    )
