"""Choosing the usage meter for one response.

Owns: the table from (endpoint kind, status, content type) to a meter class. The response's
Content-Type decides between the stream and JSON meters, not the request's `stream` flag: a
provider that answers a streamed request with a JSON error, or a gateway that buffers, is then
still read correctly.

Does not own: any parsing (the meter modules).
"""

from __future__ import annotations

from collections.abc import Callable

from . import RequestFacts, UsageMeter
from .anthropic_batches import BatchObjectMeter, BatchResultsMeter
from .anthropic_messages import AnthropicJsonMeter, AnthropicStreamMeter
from .errors import ErrorMeter
from .openai_audio import (
    SpeechAudioMeter,
    SpeechStreamMeter,
    TranscriptionJsonMeter,
    TranscriptionStreamMeter,
    TranslationJsonMeter,
)
from .openai_chat import ChatJsonMeter, ChatStreamMeter
from .openai_embeddings import EmbeddingsMeter
from .openai_images import ImagesJsonMeter, ImagesStreamMeter
from .openai_responses import ResponsesJsonMeter, ResponsesStreamMeter
from .simple import FreeMeter, NoUsageMeter

__all__ = ["media_type", "meter_for"]

MeterClass = Callable[[RequestFacts], UsageMeter]

# endpoint kind -> (meter for an event stream, meter for JSON, meter for anything else)
_TABLE: dict[str, tuple[MeterClass, MeterClass, MeterClass]] = {
    "chat.completions": (ChatStreamMeter, ChatJsonMeter, ChatJsonMeter),
    "responses": (ResponsesStreamMeter, ResponsesJsonMeter, ResponsesJsonMeter),
    "responses.compact": (ResponsesStreamMeter, ResponsesJsonMeter, ResponsesJsonMeter),
    "embeddings": (NoUsageMeter, EmbeddingsMeter, EmbeddingsMeter),
    "images.generations": (ImagesStreamMeter, ImagesJsonMeter, ImagesJsonMeter),
    "images.edits": (ImagesStreamMeter, ImagesJsonMeter, ImagesJsonMeter),
    "images.variations": (ImagesStreamMeter, ImagesJsonMeter, ImagesJsonMeter),
    # Speech: the success body is raw audio (any content type), or SSE with stream_format=sse.
    "audio.speech": (SpeechStreamMeter, SpeechAudioMeter, SpeechAudioMeter),
    # Transcriptions/translations: text/srt/vtt formats are plain text with no usage (§6).
    "audio.transcriptions": (TranscriptionStreamMeter, TranscriptionJsonMeter, NoUsageMeter),
    "audio.translations": (NoUsageMeter, TranslationJsonMeter, NoUsageMeter),
    "messages": (AnthropicStreamMeter, AnthropicJsonMeter, AnthropicJsonMeter),
    "messages.batches": (BatchObjectMeter, BatchObjectMeter, BatchObjectMeter),
    "messages.batches.results": (BatchResultsMeter, BatchResultsMeter, BatchResultsMeter),
    "complete": (NoUsageMeter, NoUsageMeter, NoUsageMeter),
    # Free: counts, not usage (§3, §10), and the model list.
    "models": (FreeMeter, FreeMeter, FreeMeter),
    "messages.count_tokens": (FreeMeter, FreeMeter, FreeMeter),
    "responses.input_tokens": (FreeMeter, FreeMeter, FreeMeter),
}


def media_type(content_type: str | None) -> str:
    """The lower-case media type of a Content-Type value, without parameters."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def meter_for(facts: RequestFacts, status: int, content_type: str | None) -> UsageMeter:
    """The meter for a response with this status and Content-Type to a request with `facts`."""
    if status >= 400:
        return ErrorMeter(facts)
    row = _TABLE.get(facts.endpoint)
    if row is None or not 200 <= status < 300:
        return NoUsageMeter(facts)
    stream_meter, json_meter, other_meter = row
    kind = media_type(content_type)
    if kind == "text/event-stream":
        return stream_meter(facts)
    if kind == "application/json" or kind.endswith("+json"):
        return json_meter(facts)
    return other_meter(facts)
