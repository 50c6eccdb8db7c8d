"""Anthropic Message Batches: batch objects and result files (WIRE.md §11, §16.13).

Owns:
- `BatchObjectMeter` (create, retrieve, list, cancel): free. When `facts.public_base_url` is
  set, every string `results_url` in the batch object (or in each object of a list's `data`) is
  rewritten to `{public_base_url}/messages/batches/{id}/results`, because the upstream URL points
  at the provider host and "may change" (§11); otherwise clients would fetch results around the
  proxy. Only the URL string literals are replaced; every other byte is kept. The body is held
  back until its end, so the exchange must not forward the upstream Content-Length.
- `BatchResultsMeter`: the results JSONL, lines in any order. Each `succeeded` line's
  `result.message.usage` is normalised like a Message and summed; `errored`, `canceled` and
  `expired` lines are not billed. The custom_ids of the billed (succeeded) lines are collected.
  service_tier is "batch" (the tier the results report, 50% price).

Does not own: the per-request Messages normalisation (anthropic_messages).
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from ..records import LineItem, Usage, UsageSource
from . import Metering, RequestFacts
from .anthropic_messages import anthropic_usage
from .common import MAX_JSON_BODY, add_usage, as_str, get, loads_object

__all__ = ["MAX_RAW_RESULTS", "BatchObjectMeter", "BatchResultsMeter"]

# raw_usage keeps at most this many per-line usage objects (a batch has up to 100,000 lines).
MAX_RAW_RESULTS = 10_000

_EMPTY_LIST = b'{"data":[],"has_more":false,"first_id":null,"last_id":null}'
_RESULTS_URL = re.compile(rb'("results_url"\s*:\s*)"(?:[^"\\]|\\.)*"')


class BatchObjectMeter:
    """A batch object or a list of them: free. Held back and rewritten when the proxy knows its
    public URL (results_url) or filters a listing to the caller's room (owned_ids); the id of a
    created batch is reported so the proxy can register it to the room."""

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self._base = (facts.public_base_url or "").rstrip("/")
        self._holds = bool(self._base) or facts.owned_ids is not None
        self._copies = self._holds or facts.creates is not None
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> bytes:
        if self._copies and self._size <= MAX_JSON_BODY:
            self._chunks.append(data)
            self._size += len(data)
        if not self._holds:
            return data
        return b""

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        body = b"".join(self._chunks)
        self._chunks = []
        obj = loads_object(body) if self._copies and self._size <= MAX_JSON_BODY else None
        created = as_str(obj.get("id")) if obj is not None and self.facts.creates else None
        metering = Metering(source=UsageSource.FREE, created_object_id=created)
        if not self._holds:
            return b"", metering
        if self.facts.owned_ids is not None:
            if obj is None or not complete or not isinstance(obj.get("data"), list):
                # A listing that cannot be read cannot be filtered: show nothing rather than
                # risk showing another room's batches.
                return _EMPTY_LIST, attrs.evolve(metering, rewritten=True)
            page = json.dumps(self._filtered(obj), separators=(",", ":")).encode()
            return page, attrs.evolve(metering, rewritten=True)
        if obj is None or not complete:
            return body, metering
        rewritten = self._rewrite(body) if self._base else None
        if rewritten is None or rewritten == body:
            return body, metering
        return rewritten, attrs.evolve(metering, rewritten=True)

    def _filtered(self, page: dict[str, Any]) -> dict[str, Any]:
        """The caller's room's batches of an upstream page (asked for with the largest limit,
        see ownership.list_query), cut to the page size the client asked for."""
        owned = self.facts.owned_ids or frozenset()
        mine = [b for b in page["data"] if isinstance(b, dict) and b.get("id") in owned]
        limit = self.facts.page_limit
        # Newest first; `before_id` pages towards newer batches: the page ends at the cursor.
        kept = mine[-limit:] if self.facts.page_backwards else mine[:limit]
        if self._base:
            kept = [
                {**b, "results_url": self._url(b["id"])} if b.get("results_url") else b
                for b in kept
            ]
        more = len(mine) > len(kept) or page.get("has_more") is True
        return {
            **page,
            "data": kept,
            "has_more": more,
            "first_id": kept[0]["id"] if kept else None,
            "last_id": kept[-1]["id"] if kept else None,
        }

    def _rewrite(self, body: bytes) -> bytes | None:
        obj = loads_object(body)
        if obj is None:
            return None
        objects = obj.get("data") if isinstance(obj.get("data"), list) else [obj]
        urls = [
            self._url(item["id"])
            for item in objects
            if isinstance(item, dict)
            and isinstance(item.get("results_url"), str)
            and isinstance(item.get("id"), str)
        ]
        matches = list(_RESULTS_URL.finditer(body))
        if len(matches) != len(urls):
            return None  # the literal URLs cannot be paired with their batches: leave as is
        out: list[bytes] = []
        pos = 0
        for match, url in zip(matches, urls, strict=True):
            out.append(body[pos : match.end(1)])
            out.append(json.dumps(url).encode())
            pos = match.end()
        out.append(body[pos:])
        return b"".join(out)

    def _url(self, batch_id: str) -> str:
        return f"{self._base}/messages/batches/{batch_id}/results"


class BatchResultsMeter:
    """The results JSONL: one line at a time; succeeded lines billed and summed."""

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self._line: list[bytes] = []
        self._usage = Usage()
        self._raw: list[dict[str, Any]] = []
        self._custom_ids: list[str] = []
        self._items: list[LineItem] = []
        self._model: str | None = None
        self._billed = 0
        self._garbled = False
        self._tier: str | None = None

    def feed(self, data: bytes) -> bytes:
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline == -1:
                if start < len(data):
                    self._line.append(data[start:])
                return data
            self._line.append(data[start:newline])
            self._on_line(b"".join(self._line))
            self._line = []
            start = newline + 1

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        if self._line:  # the last line may lack its newline
            self._on_line(b"".join(self._line))
            self._line = []
        if self._billed:
            source = UsageSource.REPORTED
        elif self._garbled:
            source = UsageSource.UNPARSEABLE
        else:
            source = UsageSource.NONE
        return b"", Metering(
            usage=self._usage,
            source=source,
            raw_usage=self._raw or None,
            response_model=self._model,
            service_tier=(self._tier or "batch") if self._billed else None,
            batch_id=self.facts.batch_id,
            batch_custom_ids=tuple(self._custom_ids),
            line_items=tuple(self._items),
        )

    def _on_line(self, line: bytes) -> None:
        if not line.strip():
            return
        if b'"succeeded"' not in line:  # errored / canceled / expired: not billed (§11)
            return
        obj = loads_object(line)
        if obj is None:
            self._garbled = True
            return
        if get(obj, "result", "type") != "succeeded":
            return
        message = get(obj, "result", "message")
        raw = get(message, "usage")
        if not isinstance(raw, dict):
            return
        self._billed += 1
        usage = anthropic_usage(raw)
        self._usage = add_usage(self._usage, usage)
        custom_id = as_str(obj.get("custom_id"))
        model = as_str(get(message, "model"))
        if custom_id is not None:
            self._custom_ids.append(custom_id)
        # One item per line: a batch may mix models, and each line is priced by its own.
        self._items.append(LineItem(key=custom_id or f"#{self._billed}", model=model, usage=usage))
        self._model = model or self._model
        self._tier = as_str(raw.get("service_tier")) or self._tier
        if len(self._raw) < MAX_RAW_RESULTS:
            self._raw.append({"custom_id": custom_id, "usage": raw})
