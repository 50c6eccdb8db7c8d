"""OpenAI Embeddings usage (WIRE.md §4).

Owns: reading `usage.prompt_tokens` (all input; there is no completion count) from the JSON
body. The `embedding` values may be float arrays or base64 strings (the official SDK asks for
base64 by default, §16.11); neither is looked at, and the body is delivered untouched.

Does not own: anything about the vectors themselves.
"""

from __future__ import annotations

from typing import Any

from ..records import Usage, UsageSource
from . import Metering
from .common import JsonBodyMeter, as_int, as_str

__all__ = ["EmbeddingsMeter"]


class EmbeddingsMeter(JsonBodyMeter):
    """`{"object":"list","data":[...],"model","usage":{"prompt_tokens","total_tokens"}}`."""

    def _from_object(self, obj: dict[str, Any]) -> Metering:
        raw = obj.get("usage")
        model = as_str(obj.get("model"))
        if not isinstance(raw, dict):
            return Metering(source=UsageSource.NONE, response_model=model)
        # prompt_tokens is all of the input; total_tokens == prompt_tokens (no output).
        tokens = as_int(raw.get("prompt_tokens")) or as_int(raw.get("total_tokens"))
        return Metering(
            usage=Usage(input_tokens=tokens),
            source=UsageSource.REPORTED,
            raw_usage=raw,
            response_model=model,
        )
