"""Where a finished request's record goes, for every adapter: sinks, the ledger, traces.

Owns: the order and the guarantees.
- A forwarded request's record is committed to the ledger *before* the proxy sends the end of
  its response (`settle`), so a proxy killed with SIGKILL loses at most the records of
  responses it had not finished sending. Objects the response created (a message batch, a
  stored response) are registered to the caller's room in the same step, before the client can
  name them in a follow-up request.
- Every record, refused requests included, then reaches the sinks and ends its trace span
  (`emit`). Sinks never block: the ledger is written by its own thread.

Does not own: the records themselves (the exchange) or I/O to clients and providers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from meshproxy_core.exchange import CheckOwnership, Exchange, Forward, Reject
from meshproxy_core.records import UsageRecord, UsageSink

__all__ = ["Recorder", "RequestContext"]

log = logging.getLogger("meshproxy.recording")


@attrs.define
class RequestContext:
    """Per-request state: the trace span, and whether the record was already settled."""

    trace: Any = None
    settled: bool = False

    def upstream_headers(self) -> list[tuple[bytes, bytes]]:
        return self.trace.upstream_headers() if self.trace is not None else []


def _created(record: UsageRecord) -> bool:
    return bool(
        record.created_object_kind and record.created_object_id and record.principal is not None
    )


class Recorder:
    @classmethod
    def from_config(
        cls,
        document: Mapping[str, Any],
        env: Mapping[str, str],
        *,
        sinks: Sequence[UsageSink] = (),
        ledger_url: str | None = None,
        ledger_enabled: bool | None = None,
    ) -> Recorder:
        """The outlets `[ledger]` and `[telemetry]` (and the OTEL_* variables) ask for.

        The ledger is on by default (a SQLite file in the working directory, or
        `MESHPROXY_LEDGER` / `[ledger] url`); `[ledger] enabled = false` or
        `MESHPROXY_LEDGER=off` turns it off. OpenTelemetry exports only when the standard
        `OTEL_EXPORTER_OTLP_*` variables are set.
        """
        ledger_table = document.get("ledger", {})
        telemetry = document.get("telemetry", {})
        url = ledger_url or env.get("MESHPROXY_LEDGER") or ledger_table.get("url")
        enabled = ledger_table.get("enabled", True) if ledger_enabled is None else ledger_enabled
        ledger = None
        if enabled and url != "off":
            from meshproxy.contrib.ledger import open_ledger

            ledger = open_ledger(url)
        from meshproxy.contrib.otel import configure_from_environment

        otel = configure_from_environment(
            env, include_participant=bool(telemetry.get("metrics_participant", True))
        )
        return cls(sinks, ledger=ledger, otel=otel)

    def __init__(
        self,
        sinks: Sequence[UsageSink] = (),
        *,
        ledger: Any = None,
        otel: Any = None,
    ) -> None:
        self.sinks = list(sinks)
        self.ledger = ledger
        self.otel = otel

    def start(self, client_headers: Sequence[tuple[bytes, bytes]]) -> RequestContext:
        trace = None
        if self.otel is not None:
            trace = self.otel.start_request(client_headers, time.time_ns())
        return RequestContext(trace=trace)

    def upstream_headers(
        self, context: RequestContext, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """The forwarded headers with the proxy's span as the upstream's parent."""
        if context.trace is None:
            return headers
        from meshproxy.contrib.otel import replace_trace_headers

        return replace_trace_headers(headers, context.trace)

    async def ownership(self, exchange: Exchange, question: CheckOwnership) -> Reject | Forward:
        """Answer the exchange's ownership question from the ledger (shared by replicas). With
        no ledger nothing is owned: by-id access is refused, listings come back empty."""
        owner, owned = None, None
        if self.ledger is not None:
            import anyio

            owner, owned = await anyio.to_thread.run_sync(self._look_up, question)
        return exchange.ownership_known(owner=owner, owned_ids=owned)

    def ownership_sync(self, exchange: Exchange, question: CheckOwnership) -> Reject | Forward:
        owner, owned = self._look_up(question) if self.ledger is not None else (None, None)
        return exchange.ownership_known(owner=owner, owned_ids=owned)

    def _look_up(self, question: CheckOwnership) -> tuple[Any, Any]:
        check = question.check
        if check.list_owned:
            return None, self.ledger.owned_ids(check.kind, question.project, question.room)
        assert check.object_id is not None
        return self.ledger.owner_of(check.kind, check.object_id), None

    async def settle(self, context: RequestContext, record: UsageRecord) -> None:
        """Make the record durable and register what it created; awaited before the response
        ends."""
        if self.ledger is None:
            return
        import anyio

        from meshproxy.contrib.ledger import wait_durable

        # Shielded: a client that leaves right after the last event (openai-python closes at
        # [DONE]) cancels the relay, but the record and the ownership must still be committed.
        with anyio.CancelScope(shield=True):
            try:
                if _created(record):
                    await anyio.to_thread.run_sync(self._register_owner, record)
                await wait_durable(self.ledger.submit(record))
                context.settled = True
            except Exception:  # the client's answer must not fail because the ledger did
                log.exception("ledger write failed for %s", record.request_id)

    def settle_sync(self, context: RequestContext, record: UsageRecord) -> None:
        """`settle` for WSGI, which has no event loop."""
        if self.ledger is None:
            return
        try:
            if _created(record):
                self._register_owner(record)
            self.ledger.submit(record).result()
            context.settled = True
        except Exception:
            log.exception("ledger write failed for %s", record.request_id)

    def _register_owner(self, record: UsageRecord) -> None:
        assert record.principal is not None and record.created_object_kind is not None
        assert record.created_object_id is not None
        self.ledger.record_owner(
            record.created_object_kind,
            record.created_object_id,
            record.principal.project,
            record.principal.room,
        )

    def emit(self, context: RequestContext, record: UsageRecord | None) -> None:
        if record is None:
            return
        if self.ledger is not None and not context.settled:
            self.ledger.emit(record)
        if self.otel is not None:
            self.otel.emit(record)  # metrics
            if context.trace is not None:
                self.otel.end_request(context.trace, record)
        for sink in self.sinks:
            try:
                sink.emit(record)
            except Exception:  # a broken sink must not take the proxy down
                log.exception("usage sink %r failed", sink)

    def close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None) or getattr(sink, "flush", None)
            if close is not None:
                close()
        if self.ledger is not None:
            self.ledger.close()
        if self.otel is not None:
            self.otel.shutdown()
