"""OpenAI Audio usage: speech, transcriptions, translations (WIRE.md §6, §16.9-10).

Owns:
- Speech, raw audio body (the default): no usage on the wire. The characters of the request's
  `input` are COUNTED (tts-1/-1-hd bill per character). With `stream_format:"sse"`:
  `speech.audio.done.usage` -> input_tokens (text in), output_audio_tokens (audio out).
- Transcriptions, JSON: `usage` is a union (§16.10), read leniently because the streamed
  `transcript.text.done.usage` may lack `type`:
      {type:"tokens", input_tokens, input_token_details{text_tokens, audio_tokens}, output_tokens}
          -> input_audio_tokens = audio_tokens (all input when there are no details),
             input_tokens = the rest, output_tokens = output_tokens
      {type:"duration", seconds} -> audio_seconds = seconds
  No usage but a top-level `duration` (verbose_json) -> audio_seconds ESTIMATED, rounded up to a
  whole second as OpenAI reports it (8.47 s -> 9, §6). text/srt/vtt bodies have none -> NONE.
- Translations: no usage in any format; a verbose `duration` -> audio_seconds ESTIMATED, else NONE.

Does not own: measuring audio length from the uploaded file (that would need a media decoder).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from ..records import Usage, UsageSource
from ..sse import Event
from . import Metering, RequestFacts
from .common import JsonBodyMeter, SseMeter, as_int, as_str, ceil_seconds, event_kind, get

__all__ = [
    "SpeechAudioMeter",
    "SpeechStreamMeter",
    "TranscriptionJsonMeter",
    "TranscriptionStreamMeter",
    "TranslationJsonMeter",
    "speech_usage",
    "transcription_usage",
]


def speech_usage(raw: dict[str, Any]) -> Usage:
    """`speech.audio.done.usage`: text tokens in, audio tokens out."""
    return Usage(
        input_tokens=as_int(raw.get("input_tokens")),
        output_audio_tokens=as_int(raw.get("output_tokens")),
    )


def transcription_usage(raw: dict[str, Any]) -> Usage:
    """Either variant of the transcription usage union (module header)."""
    is_duration = raw.get("type") == "duration" or ("seconds" in raw and "input_tokens" not in raw)
    if is_duration:
        return Usage(audio_seconds=_seconds(raw.get("seconds")))
    total_in = as_int(raw.get("input_tokens"))
    details = raw.get("input_token_details")
    if isinstance(details, dict):
        audio_in = min(as_int(details.get("audio_tokens")), total_in)
    else:
        audio_in = total_in
    return Usage(
        input_tokens=total_in - audio_in,
        input_audio_tokens=audio_in,
        output_tokens=as_int(raw.get("output_tokens")),
    )


def _seconds(value: Any) -> Decimal:
    """Reported seconds, exactly as reported (never negative)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Decimal(0)
    if not math.isfinite(value) or value <= 0:
        return Decimal(0)
    return Decimal(value) if isinstance(value, int) else Decimal(str(value))


class SpeechAudioMeter:
    """Raw audio: the request's input characters, COUNTED, whatever the bytes are."""

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        # The provider bills the request once accepted, so a cut stream is counted in full.
        chars = self.facts.input_characters
        if chars <= 0:
            return b"", Metering(source=UsageSource.NONE)
        return b"", Metering(usage=Usage(input_characters=chars), source=UsageSource.COUNTED)


class _DoneEventStreamMeter(SseMeter):
    """A data-only audio stream: deltas, then one done event whose `usage` is the whole
    request's (speech and transcription streams differ only in names and normalisation)."""

    DONE_EVENT = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw: dict[str, Any] | None = None
        self._error_type: str | None = None

    def _normalise(self, raw: dict[str, Any]) -> Usage:
        raise NotImplementedError

    def _on_event(self, event: Event) -> None:
        if event.data[:6] == b"[DONE]":
            return
        kind = event_kind(event)
        if kind == self.DONE_EVENT:
            self._terminated = True
            raw = get(self._decode(event), "usage")
            if isinstance(raw, dict):
                self._raw = raw
        elif kind == "error" or event.data[:9] == b'{"error":':
            self._error_type = as_str(get(self._decode(event), "error", "type")) or "error"

    def _result(self, complete: bool) -> Metering:
        if self._raw is not None:
            return Metering(
                usage=self._normalise(self._raw),
                source=UsageSource.REPORTED,
                raw_usage=self._raw,
                error_type=self._error_type,
            )
        return self._no_usage(error_type=self._error_type)


class SpeechStreamMeter(_DoneEventStreamMeter):
    """`stream_format=sse`: speech.audio.delta x N, then speech.audio.done with usage."""

    DONE_EVENT = "speech.audio.done"

    def _normalise(self, raw: dict[str, Any]) -> Usage:
        return speech_usage(raw)


class TranscriptionJsonMeter(JsonBodyMeter):
    """json / verbose_json / diarized_json transcription bodies."""

    def _from_object(self, obj: dict[str, Any]) -> Metering:
        raw = obj.get("usage")
        if isinstance(raw, dict):
            return Metering(
                usage=transcription_usage(raw), source=UsageSource.REPORTED, raw_usage=raw
            )
        return _from_duration(obj)


class TranslationJsonMeter(JsonBodyMeter):
    """json / verbose_json translation bodies: never a usage object (§6)."""

    def _from_object(self, obj: dict[str, Any]) -> Metering:
        return _from_duration(obj)


def _from_duration(obj: dict[str, Any]) -> Metering:
    seconds = ceil_seconds(obj.get("duration"))
    if seconds == 0:
        return Metering(source=UsageSource.NONE)
    return Metering(usage=Usage(audio_seconds=seconds), source=UsageSource.ESTIMATED)


class TranscriptionStreamMeter(_DoneEventStreamMeter):
    """transcript.text.delta x N, then transcript.text.done (usage optional, type optional)."""

    DONE_EVENT = "transcript.text.done"

    def _normalise(self, raw: dict[str, Any]) -> Usage:
        return transcription_usage(raw)
