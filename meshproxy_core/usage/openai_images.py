"""OpenAI Images usage: generations, edits, variations; JSON and stream (WIRE.md §5).

Owns: GPT-image token usage and DALL·E image counts.

GPT-image models report `usage` (JSON body, or the `image_generation.completed` /
`image_edit.completed` stream event):
    input_tokens        = input_tokens_details.text_tokens   (input - image tokens if no details)
    input_image_tokens  = input_tokens_details.image_tokens  (edits: the source images)
    output_image_tokens = output_tokens_details.image_tokens, or all output_tokens without details
    output_tokens       = output_tokens_details.text_tokens  (text output, if any)
DALL·E 2/3 (and variations) report nothing: the images returned in `data[]` are COUNTED by the
request's size and quality (defaults 1024x1024 / "standard"; §5: bill by model x size x quality x
images returned).

Stream: `partial_image` events carry multi-MB base64 and no usage; they are never decoded. The
completed events are decoded; the last usage seen wins (§14 "keep the LAST non-null usage").

Does not own: the price of a size or quality (pricing).
"""

from __future__ import annotations

from typing import Any

from ..records import ImageCount, Usage, UsageSource
from ..sse import Event
from . import Metering, RequestFacts
from .common import JsonBodyMeter, SseMeter, as_int, as_str, event_kind, get

__all__ = ["DEFAULT_QUALITY", "DEFAULT_SIZE", "ImagesJsonMeter", "ImagesStreamMeter", "image_usage"]

DEFAULT_SIZE = "1024x1024"
DEFAULT_QUALITY = "standard"
_COMPLETED = frozenset({"image_generation.completed", "image_edit.completed"})


def image_usage(raw: dict[str, Any]) -> Usage:
    """Normalise one GPT-image `usage` object (module header)."""
    total_in = as_int(raw.get("input_tokens"))
    details = raw.get("input_tokens_details")
    image_in = min(as_int(get(details, "image_tokens")), total_in)
    if isinstance(details, dict) and "text_tokens" in details:
        text_in = as_int(details.get("text_tokens"))
    else:
        text_in = total_in - image_in
    total_out = as_int(raw.get("output_tokens"))
    out_details = raw.get("output_tokens_details")
    if isinstance(out_details, dict):
        image_out = as_int(out_details.get("image_tokens"))
        text_out = as_int(out_details.get("text_tokens"))
    else:
        image_out, text_out = total_out, 0
    return Usage(
        input_tokens=text_in,
        input_image_tokens=image_in,
        output_tokens=text_out,
        output_image_tokens=image_out,
    )


def counted_images(facts: RequestFacts, count: int, obj: dict[str, Any] | None = None) -> Usage:
    """`count` images at the response's (else the request's, else default) size and quality."""
    size = as_str(get(obj, "size")) or facts.size or DEFAULT_SIZE
    quality = as_str(get(obj, "quality")) or facts.quality or DEFAULT_QUALITY
    if size == "auto":
        size = DEFAULT_SIZE
    if quality == "auto":
        quality = DEFAULT_QUALITY
    return Usage(images=(ImageCount(size=size, quality=quality, count=count),) if count else ())


class ImagesJsonMeter(JsonBodyMeter):
    """An `ImagesResponse`: usage for GPT-image models, else a count of `data[]`."""

    def _from_object(self, obj: dict[str, Any]) -> Metering:
        raw = obj.get("usage")
        if isinstance(raw, dict):
            return Metering(usage=image_usage(raw), source=UsageSource.REPORTED, raw_usage=raw)
        data = obj.get("data")
        count = len(data) if isinstance(data, list) else 0
        if count == 0:
            return Metering(source=UsageSource.NONE)
        return Metering(usage=counted_images(self.facts, count, obj), source=UsageSource.COUNTED)


class ImagesStreamMeter(SseMeter):
    """Image stream events: partials skipped, completed events decoded."""

    END_EVENTS = _COMPLETED

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw: dict[str, Any] | None = None
        self._completed = 0
        self._last: dict[str, Any] | None = None
        self._error_type: str | None = None

    def _on_event(self, event: Event) -> None:
        kind = event_kind(event)
        if kind in _COMPLETED:
            obj = self._decode(event)
            if obj is None:
                return
            self._completed += 1
            self._last = obj
            if isinstance(obj.get("usage"), dict):
                self._raw = obj["usage"]
        elif kind == "error" or (kind == "message" and event.data[:9] == b'{"error":'):
            obj = self._decode(event)
            self._error_type = as_str(get(obj, "error", "type")) or "error"

    def _result(self, complete: bool) -> Metering:
        if self._raw is not None:
            return Metering(
                usage=image_usage(self._raw),
                source=UsageSource.REPORTED,
                raw_usage=self._raw,
                error_type=self._error_type,
            )
        if self._completed:
            usage = counted_images(self.facts, self._completed, self._last)
            return Metering(usage=usage, source=UsageSource.COUNTED, error_type=self._error_type)
        return self._no_usage(error_type=self._error_type)
