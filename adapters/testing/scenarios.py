"""Response generation for the fake upstream: request in, provider-shaped reply out.

Owns: what the fake (and the built-in simulated provider) answers to every OpenAI and Anthropic
endpoint the proxy forwards, for ANY model name, and the exact usage numbers it reports. All of it
is deterministic: the same request gives the same bytes except for timestamps, which come in as
`now`. Usage is derived from the request so a test can predict it (`expected_usage`):

  input tokens  = ceil(len(canonical JSON of the prompt-bearing fields) / 4), at least 1
                  (so injecting `stream_options` or reordering keys never changes it, and
                  Anthropic count_tokens / OpenAI responses/input_tokens agree with the real call)
  output tokens = min(max_tokens, chunks + 1 + input_tokens % 5)

Streams follow WIRE.md §1 framing: every event ends with a blank line; OpenAI chat, transcription
and speech streams are data-only (chat and transcription end with `data: [DONE]`); Responses,
images and Anthropic streams carry an `event:` line equal to the JSON `type`.

Does not own: sockets, scripting, faults or recording (upstream.py). Like h11's Connection, the
`Simulator` keeps a little state (a counter for ids and the stored Anthropic batches) but does no
I/O.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import attrs

__all__ = [
    "ReceivedRequest",
    "Reply",
    "Simulator",
    "error_reply",
    "expected_usage",
    "provider_of",
]

Headers = tuple[tuple[str, str], ...]
_Handler = Callable[["ReceivedRequest", "_Ctx"], "Reply"]

# The paths only Anthropic serves; used to pick a provider when a request carries no credentials.
_ANTHROPIC_ONLY_PREFIXES = ("/v1/messages", "/v1/complete")

# A valid 1x1 PNG, so image bytes decode as an image if a test looks at them.
TINY_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6"
    "kgAAAABJRU5ErkJggg=="
)

_WORDS = (
    "Hello", "from", "the", "simulated", "provider", "this", "reply", "is", "deterministic",
    "and", "every", "word", "arrives", "as", "its", "own", "chunk",
)  # fmt: skip

# gpt-image-1 output tokens per image by (size, quality); WIRE.md §5.
_IMAGE_OUTPUT_TOKENS = {
    "1024x1024": {"low": 272, "medium": 1056, "high": 4160},
    "1024x1536": {"low": 408, "medium": 1584, "high": 6240},
    "1536x1024": {"low": 408, "medium": 1584, "high": 6240},
}
# Tokens charged per input image on GPT-image edits (a made-up but fixed figure).
_IMAGE_INPUT_TOKENS_PER_IMAGE = 65
# Bytes of uploaded audio per simulated second (16 kB/s, roughly 128 kbit/s mp3).
_AUDIO_BYTES_PER_SECOND = 16_000


@attrs.frozen
class ReceivedRequest:
    """One request exactly as the fake received it (header names lowercased)."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> Any:
        """The body decoded as JSON (raises ValueError if it is not JSON)."""
        return json.loads(self.body)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": [list(pair) for pair in self.headers],
            "body_b64": base64.b64encode(self.body).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReceivedRequest:
        return cls(
            method=data["method"],
            path=data["path"],
            query=data["query"],
            headers=tuple((str(k), str(v)) for k, v in data["headers"]),
            body=base64.b64decode(data["body_b64"]),
        )


@attrs.frozen
class Reply:
    """What to send back: a head and the body as pieces (one piece per SSE event when streaming).

    `chunked` replies go out with Transfer-Encoding: chunked, one write per piece; the others with
    Content-Length. `usage` is the provider-shaped usage the reply reports on the wire (for a
    stream, the final merged value a client would hold), None when the reply carries none.
    `item_usage` is per-`custom_id` usage for Anthropic batch results.
    """

    status: int
    headers: Headers
    pieces: tuple[bytes, ...]
    chunked: bool
    provider: str
    kind: str
    model: str | None = None
    stream: bool = False
    usage: dict[str, Any] | None = None
    item_usage: dict[str, dict[str, Any]] | None = None


def provider_of(path: str, headers: Headers) -> str:
    """'anthropic' or 'openai', by credentials first (both live under /v1), then by path."""
    names = {name for name, _ in headers}
    if "x-api-key" in names or "anthropic-version" in names:
        return "anthropic"
    for name, value in headers:
        if name == "authorization" and value.lower().startswith("bearer "):
            return "openai"
    if path.startswith(_ANTHROPIC_ONLY_PREFIXES):
        return "anthropic"
    return "openai"


# ---------------------------------------------------------------------------------------------
# Small encoders


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sse(data: Any, event: str | None = None) -> bytes:
    # Every frame ends with a blank line (WIRE.md §1 rule 1), or the SDK drops the last event.
    head = f"event: {event}\n".encode() if event is not None else b""
    payload = data if isinstance(data, bytes) else _dumps(data)
    return head + b"data: " + payload + b"\n\n"


def _json_headers(provider: str, request_id: str) -> Headers:
    return (("content-type", "application/json"), _request_id_header(provider, request_id))


def _sse_headers(provider: str, request_id: str) -> Headers:
    return (
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        _request_id_header(provider, request_id),
    )


def _request_id_header(provider: str, request_id: str) -> tuple[str, str]:
    return ("request-id", request_id) if provider == "anthropic" else ("x-request-id", request_id)


_OPENAI_ERROR_TYPES = {401: "invalid_request_error", 429: "requests", 500: "server_error"}
_ANTHROPIC_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_reply(
    provider: str, status: int, message: str, *, request_id: str, code: str | None = None
) -> Reply:
    """An error in the provider's own shape (WIRE.md §7, §13), so SDKs raise their usual class."""
    if provider == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error")
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": request_id,
        }
    else:
        kind = _OPENAI_ERROR_TYPES.get(status, "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return Reply(
        status=status,
        headers=_json_headers(provider, request_id),
        pieces=(_dumps(body),),
        chunked=False,
        provider=provider,
        kind=f"{provider}.error",
    )


# ---------------------------------------------------------------------------------------------
# Deterministic counting


def _tokens_of_text(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def prompt_tokens(body: Mapping[str, Any], fields: Iterable[str]) -> int:
    """Input tokens from the prompt-bearing fields only, via canonical JSON (see module doc)."""
    picked = {name: body[name] for name in fields if body.get(name) is not None}
    canonical = json.dumps(picked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _tokens_of_text(canonical)


def _output_tokens(chunks: int, input_tokens: int, cap: Any) -> tuple[int, bool]:
    """(output tokens, was it cut by the cap)."""
    natural = chunks + 1 + input_tokens % 5
    if isinstance(cap, int) and not isinstance(cap, bool) and cap < natural:
        return max(1, cap), True
    return natural, False


def _words(count: int) -> list[str]:
    """`count` text deltas; the first has no leading space, so they concatenate to a sentence."""
    out = []
    for i in range(max(1, count)):
        word = _WORDS[i % len(_WORDS)]
        out.append(word if i == 0 else " " + word)
    return out


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


def _rfc3339(ts: float) -> str:
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------
# Multipart (audio and image edits are multipart/form-data)


def parse_multipart(body: bytes, content_type: str) -> dict[str, list[bytes]]:
    """Form fields and files by name -> list of raw values. Small on purpose: a fake needs names,
    values and file sizes, not filenames or nested content types."""
    boundary = None
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        return {}
    fields: dict[str, list[bytes]] = {}
    for part in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        name = None
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                for item in line.split(";")[1:]:
                    key, _, val = item.strip().partition("=")
                    if key == "name":
                        name = val.strip('"')
        if name is not None:
            # Each part's value ends with the CRLF that precedes the next delimiter.
            fields.setdefault(name, []).append(value.removesuffix(b"\r\n"))
    return fields


def _form_str(fields: Mapping[str, list[bytes]], name: str, default: str | None) -> str | None:
    values = fields.get(name)
    return values[0].decode("utf-8", "replace") if values else default


# ---------------------------------------------------------------------------------------------
# The simulator


@attrs.define
class _Batch:
    id: str
    created_at: float
    requests: list[dict[str, Any]]
    canceled: bool = False


class Simulator:
    """Generates provider replies. One per fake server; holds a request counter and batches."""

    def __init__(self, *, chunks: int = 8) -> None:
        if chunks < 1:
            raise ValueError("chunks must be at least 1")
        self.chunks = chunks
        self._counter = 0
        self._batches: dict[str, _Batch] = {}

    def reset(self) -> None:
        self._counter = 0
        self._batches.clear()

    # The single entry point -------------------------------------------------------------------

    def reply(self, request: ReceivedRequest, *, now: float, base_url: str) -> Reply:
        """The generated reply to `request`. `base_url` is where clients reach this fake (used for
        Anthropic `results_url`); `now` stamps `created` fields."""
        self._counter += 1
        provider = provider_of(request.path, request.headers)
        rid = f"req_{self._counter:06d}{_digest(request.body)[:18]}"
        try:
            handler = self._route(provider, request)
            if handler is None:
                return error_reply(
                    provider,
                    404,
                    f"Invalid URL ({request.method} {request.path})"
                    if provider == "openai"
                    else "Not Found",
                    request_id=rid,
                )
            return handler(request, _Ctx(provider, rid, now, base_url, self._counter))
        except _BadRequest as exc:
            return error_reply(provider, 400, str(exc), request_id=rid)

    def _route(self, provider: str, req: ReceivedRequest) -> _Handler | None:
        method, path = req.method, req.path
        if provider == "openai":
            posts = {
                "/v1/chat/completions": self._openai_chat,
                "/v1/responses": self._openai_responses,
                "/v1/responses/compact": self._openai_compact,
                "/v1/responses/input_tokens": self._openai_input_tokens,
                "/v1/embeddings": self._openai_embeddings,
                "/v1/audio/speech": self._openai_speech,
                "/v1/audio/transcriptions": self._openai_transcription,
                "/v1/audio/translations": self._openai_translation,
                "/v1/images/generations": self._openai_images,
                "/v1/images/edits": self._openai_images,
                "/v1/images/variations": self._openai_images,
            }
            if method == "POST":
                return posts.get(path)
            if method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
                return self._openai_models
            return None
        if method == "POST" and path == "/v1/messages":
            return self._anthropic_messages
        if method == "POST" and path == "/v1/messages/count_tokens":
            return self._anthropic_count_tokens
        if method == "POST" and path == "/v1/complete":
            return self._anthropic_complete
        if path == "/v1/messages/batches" or path.startswith("/v1/messages/batches/"):
            return self._anthropic_batches
        if method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
            return self._anthropic_models
        return None

    # OpenAI -----------------------------------------------------------------------------------

    def _openai_chat(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        body = _json_object(req)
        model = _required_str(body, "model")
        n = body.get("n") or 1
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        input_tokens = prompt_tokens(body, ("messages", "tools", "functions"))
        out, cut = _output_tokens(self.chunks, input_tokens, cap)
        deltas = _words(min(self.chunks, out))
        finish = "length" if cut else "stop"
        usage = {
            "prompt_tokens": input_tokens,
            "completion_tokens": out * n,
            "total_tokens": input_tokens + out * n,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        cid = f"chatcmpl-fake{ctx.seq:06d}"
        common = {
            "id": cid,
            "created": int(ctx.now),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        if not body.get("stream"):
            choices = [
                {
                    "index": i,
                    "message": {
                        "role": "assistant",
                        "content": "".join(deltas),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for i in range(n)
            ]
            doc = {
                "id": cid,
                "object": "chat.completion",
                "created": common["created"],
                "model": model,
                "choices": choices,
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
            return ctx.json(doc, kind="openai.chat", model=model, usage=usage)

        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))

        def chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
            doc = {"object": "chat.completion.chunk", **common, "choices": choices}
            # WIRE.md §2: the usage key exists on every chunk only when include_usage is set.
            if include_usage:
                doc["usage"] = usage_value
            return _sse(doc)

        def choice(i: int, delta: dict[str, Any], finish_reason: str | None = None) -> Any:
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        pieces = [chunk([choice(i, {"role": "assistant", "content": ""}) for i in range(n)])]
        for text in deltas:
            pieces.extend(chunk([choice(i, {"content": text})]) for i in range(n))
        pieces.append(chunk([choice(i, {}, finish) for i in range(n)]))
        if include_usage:
            pieces.append(chunk([], usage))
        pieces.append(b"data: [DONE]\n\n")
        return ctx.stream(
            pieces, kind="openai.chat", model=model, usage=usage if include_usage else None
        )

    def _responses_usage(self, input_tokens: int, out: int) -> dict[str, Any]:
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + out,
        }

    def _openai_responses(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        body = _json_object(req)
        model = _required_str(body, "model")
        input_tokens = prompt_tokens(body, ("input", "instructions", "tools"))
        cap = body.get("max_output_tokens")
        out, cut = _output_tokens(self.chunks, input_tokens, cap)
        deltas = _words(min(self.chunks, out))
        text = "".join(deltas)
        usage = self._responses_usage(input_tokens, out)
        rid, mid = f"resp_fake{ctx.seq:06d}", f"msg_fake{ctx.seq:06d}"
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        item_status = "incomplete" if cut else "completed"
        item = {
            "id": mid,
            "type": "message",
            "status": item_status,
            "role": "assistant",
            "content": [part],
        }

        def response(status: str, output: list[Any], usage_value: Any) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "response",
                "created_at": int(ctx.now),
                "status": status,
                "background": False,
                "error": None,
                "incomplete_details": {"reason": "max_output_tokens"}
                if status == "incomplete"
                else None,
                "instructions": body.get("instructions"),
                "max_output_tokens": cap,
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": body.get("previous_response_id"),
                "service_tier": "default",
                "store": body.get("store", True),
                "temperature": 1.0,
                "text": {"format": {"type": "text"}, "verbosity": "medium"},
                "tool_choice": "auto",
                "tools": [],
                "top_p": 1.0,
                "truncation": "disabled",
                "usage": usage_value,
                "user": None,
                "metadata": {},
            }

        final_status = "incomplete" if cut else "completed"
        if not body.get("stream"):
            doc = response(final_status, [item], usage)
            return ctx.json(doc, kind="openai.responses", model=model, usage=usage)

        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": response("in_progress", [], None)},
            {"type": "response.in_progress", "response": response("in_progress", [], None)},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "content": []},
            },
            {
                "type": "response.content_part.added",
                "item_id": mid,
                "output_index": 0,
                "content_index": 0,
                "part": {**part, "text": ""},
            },
        ]
        events.extend(
            {
                "type": "response.output_text.delta",
                "item_id": mid,
                "output_index": 0,
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            }
            for delta in deltas
        )
        loc = {"item_id": mid, "output_index": 0, "content_index": 0}
        events += [
            {"type": "response.output_text.done", **loc, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **loc, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": f"response.{final_status}", "response": response(final_status, [item], usage)},
        ]
        pieces = [
            _sse({"type": ev["type"], "sequence_number": seq, **ev}, event=ev["type"])
            for seq, ev in enumerate(events)
        ]
        return ctx.stream(pieces, kind="openai.responses", model=model, usage=usage)

    def _openai_compact(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        body = _json_object(req)
        model = _required_str(body, "model")
        input_tokens = prompt_tokens(body, ("input", "instructions", "tools"))
        out, _ = _output_tokens(self.chunks, input_tokens, None)
        usage = self._responses_usage(input_tokens, out)
        doc = {
            "id": f"resp_fake{ctx.seq:06d}",
            "object": "response.compaction",
            "created_at": int(ctx.now),
            "output": [
                {
                    "id": f"cmp_fake{ctx.seq:06d}",
                    "type": "compaction",
                    "encrypted_content": base64.b64encode(_digest(body).encode()).decode(),
                }
            ],
            "usage": usage,
        }
        return ctx.json(doc, kind="openai.responses_compact", model=model, usage=usage)

    def _openai_input_tokens(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        body = _json_object(req)
        count = prompt_tokens(body, ("input", "instructions", "tools"))
        doc = {"object": "response.input_tokens", "input_tokens": count}
        return ctx.json(doc, kind="openai.responses_input_tokens", model=body.get("model"))

    def _openai_embeddings(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        body = _json_object(req)
        model = _required_str(body, "model")
        raw = body.get("input")
        if raw is None:
            raise _BadRequest("'input' is a required property")
        items: list[Any] = raw if isinstance(raw, list) and raw else [raw]
        if all(isinstance(x, int) for x in items):
            items = [items]  # one input given as a token array
        dims = body.get("dimensions") or 16
        tokens = 0
        data = []
        for index, item in enumerate(items):
            tokens += len(item) if isinstance(item, list) else _tokens_of_text(str(item))
            seed = hashlib.sha256(repr(item).encode("utf-8")).digest()
            vector = [((seed[i % 32] + i) % 200 - 100) / 100.0 for i in range(dims)]
            if body.get("encoding_format") == "base64":
                # Little-endian float32, as the real API sends and the SDK decodes.
                packed = struct.pack(f"<{dims}f", *vector)
                embedding: Any = base64.b64encode(packed).decode("ascii")
            else:
                embedding = vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        doc = {"object": "list", "data": data, "model": model, "usage": usage}
        return ctx.json(doc, kind="openai.embeddings", model=model, usage=usage)

    def _openai_speech(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        body = _json_object(req)
        model = _required_str(body, "model")
        text = str(body.get("input") or "")
        # Fake audio: an ID3-looking prefix and bytes proportional to the input length.
        audio = b"ID3\x04\x00" + hashlib.sha256(text.encode()).digest() * (1 + len(text) // 8)
        size = max(1, math.ceil(len(audio) / self.chunks))
        parts = [audio[i : i + size] for i in range(0, len(audio), size)]
        if body.get("stream_format") == "sse":
            in_tokens = _tokens_of_text(text)
            usage = {
                "input_tokens": in_tokens,
                "output_tokens": len(parts) * 10,
                "total_tokens": in_tokens + len(parts) * 10,
            }
            pieces = [
                _sse({"type": "speech.audio.delta", "audio": base64.b64encode(p).decode()})
                for p in parts
            ]
            pieces.append(_sse({"type": "speech.audio.done", "usage": usage}))
            return ctx.stream(pieces, kind="openai.speech", model=model, usage=usage)
        mime = {
            "mp3": "audio/mpeg",
            "opus": "audio/opus",
            "aac": "audio/aac",
            "flac": "audio/flac",
            "wav": "audio/wav",
            "pcm": "audio/pcm",
        }.get(str(body.get("response_format") or "mp3"), "application/octet-stream")
        headers = (("content-type", mime), _request_id_header("openai", ctx.request_id))
        return Reply(200, headers, tuple(parts), True, "openai", "openai.speech", model)

    def _audio_form(self, req: ReceivedRequest) -> tuple[dict[str, list[bytes]], str, int, str]:
        fields = parse_multipart(req.body, req.header("content-type") or "")
        model = _form_str(fields, "model", None)
        if not model:
            raise _BadRequest("you must provide a model parameter")
        audio = fields.get("file", [b""])[0]
        seconds = max(1, math.ceil(len(audio) / _AUDIO_BYTES_PER_SECOND))
        fmt = _form_str(fields, "response_format", "json") or "json"
        return fields, model, seconds, fmt

    def _openai_transcription(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        fields, model, seconds, fmt = self._audio_form(req)
        deltas = _words(self.chunks)
        text = "".join(deltas)
        by_duration = model.startswith("whisper") or "diarize" in model
        prompt = _form_str(fields, "prompt", "") or ""
        text_tokens = _tokens_of_text(prompt) if prompt else 0
        audio_tokens = seconds * 10
        out = len(deltas) + 1
        usage: dict[str, Any] = (
            {"type": "duration", "seconds": seconds}
            if by_duration
            else {
                "type": "tokens",
                "input_tokens": text_tokens + audio_tokens,
                "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
                "output_tokens": out,
                "total_tokens": text_tokens + audio_tokens + out,
            }
        )
        if _form_str(fields, "stream", "false") == "true" and not model.startswith("whisper"):
            pieces = [_sse({"type": "transcript.text.delta", "delta": d}) for d in deltas]
            pieces.append(_sse({"type": "transcript.text.done", "text": text, "usage": usage}))
            pieces.append(b"data: [DONE]\n\n")
            return ctx.stream(pieces, kind="openai.transcription", model=model, usage=usage)
        if fmt in ("text", "srt", "vtt"):
            return ctx.text(text + "\n", kind="openai.transcription", model=model)
        doc: dict[str, Any] = {"text": text, "usage": usage}
        if fmt == "verbose_json":
            doc = {"task": "transcribe", "language": "english", "duration": float(seconds), **doc}
            doc["segments"] = []
        return ctx.json(doc, kind="openai.transcription", model=model, usage=usage)

    def _openai_translation(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        _, model, seconds, fmt = self._audio_form(req)
        text = "".join(_words(self.chunks))
        if fmt in ("text", "srt", "vtt"):
            return ctx.text(text + "\n", kind="openai.translation", model=model)
        doc: dict[str, Any] = {"text": text}
        if fmt == "verbose_json":
            doc = {"task": "translate", "language": "english", "duration": float(seconds), **doc}
            doc["segments"] = []
        return ctx.json(doc, kind="openai.translation", model=model)

    def _openai_images(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        operation = req.path.rsplit("/", 1)[1]  # generations | edits | variations
        ctype = req.header("content-type") or ""
        if operation == "generations" or ctype.startswith("application/json"):
            body = _json_object(req)
            n_images = 0
        else:
            form = parse_multipart(req.body, ctype)
            body = {k: v[0].decode("utf-8", "replace") for k, v in form.items()}
            n_images = len(form.get("image", [])) + len(form.get("image[]", []))
        default_model = "gpt-image-1" if operation == "edits" and "mask" not in body else "dall-e-2"
        model = str(body.get("model") or default_model)
        n = int(body.get("n") or 1)
        kind = f"openai.images_{operation}"
        gpt_image = "gpt-image" in model or model.startswith("chatgpt-image")
        if not gpt_image:
            # DALL·E: no usage (WIRE.md §5); url by default, b64 on request.
            as_b64 = body.get("response_format") == "b64_json"
            data = []
            for i in range(n):
                url = f"{ctx.base_url}/__fake__/images/img-{ctx.seq}-{i}.png"
                entry: dict[str, Any] = {"b64_json": TINY_PNG_B64} if as_b64 else {"url": url}
                if model == "dall-e-3":
                    entry["revised_prompt"] = str(body.get("prompt") or "")
                data.append(entry)
            return ctx.json({"created": int(ctx.now), "data": data}, kind=kind, model=model)
        size = str(body.get("size") or "1024x1024")
        quality = str(body.get("quality") or "medium")
        size = size if size in _IMAGE_OUTPUT_TOKENS else "1024x1024"
        quality = quality if quality in ("low", "medium", "high") else "medium"
        text_tokens = _tokens_of_text(str(body.get("prompt") or ""))
        image_tokens = n_images * _IMAGE_INPUT_TOKENS_PER_IMAGE
        output_tokens = _IMAGE_OUTPUT_TOKENS[size][quality] * n
        usage = {
            "input_tokens": text_tokens + image_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
            "output_tokens": output_tokens,
            "total_tokens": text_tokens + image_tokens + output_tokens,
        }
        fmt = str(body.get("output_format") or "png")
        meta = {"background": "opaque", "output_format": fmt, "quality": quality, "size": size}
        if str(body.get("stream")).lower() == "true":
            prefix = "image_edit" if operation == "edits" else "image_generation"
            partials = int(body.get("partial_images") or 0)
            pieces = []
            for i in range(partials):
                ev = {
                    "type": f"{prefix}.partial_image",
                    "b64_json": TINY_PNG_B64,
                    "partial_image_index": i,
                    "created_at": int(ctx.now),
                    **meta,
                }
                pieces.append(_sse(ev, event=ev["type"]))
            done = {
                "type": f"{prefix}.completed",
                "b64_json": TINY_PNG_B64,
                "created_at": int(ctx.now),
                **meta,
                "usage": usage,
            }
            pieces.append(_sse(done, event=done["type"]))
            return ctx.stream(pieces, kind=kind, model=model, usage=usage)
        doc = {
            "created": int(ctx.now),
            **meta,
            "data": [{"b64_json": TINY_PNG_B64} for _ in range(n)],
            "usage": usage,
        }
        return ctx.json(doc, kind=kind, model=model, usage=usage)

    def _openai_models(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        def model(mid: str) -> dict[str, Any]:
            return {"id": mid, "object": "model", "created": 1700000000, "owned_by": "fake"}

        if req.path.startswith("/v1/models/"):
            return ctx.json(model(req.path.removeprefix("/v1/models/")), kind="openai.models")
        ids = ("gpt-4o-mini", "gpt-4.1", "gpt-5-mini", "text-embedding-3-small", "gpt-image-1")
        doc = {"object": "list", "data": [model(mid) for mid in ids]}
        return ctx.json(doc, kind="openai.models")

    # Anthropic --------------------------------------------------------------------------------

    def _message_usage(self, body: Mapping[str, Any], *, batch: bool = False) -> dict[str, Any]:
        input_tokens = prompt_tokens(body, ("system", "messages", "tools"))
        out, _ = _output_tokens(self.chunks, input_tokens, body.get("max_tokens"))
        return {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": out,
            "service_tier": "batch" if batch else "standard",
        }

    def _message(self, body: Mapping[str, Any], msg_id: str, *, batch: bool = False) -> Any:
        usage = self._message_usage(body, batch=batch)
        cut = isinstance(body.get("max_tokens"), int) and usage["output_tokens"] == body.get(
            "max_tokens"
        )
        text = "".join(_words(min(self.chunks, usage["output_tokens"])))
        return {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if cut else "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }

    def _anthropic_messages(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        body = _json_object(req)
        model = _required_str(body, "model")
        if not isinstance(body.get("max_tokens"), int):
            raise _BadRequest("max_tokens: Field required")
        message = self._message(body, f"msg_fake{ctx.seq:06d}")
        usage = message["usage"]
        if not body.get("stream"):
            return ctx.json(message, kind="anthropic.messages", model=model, usage=usage)
        text = message["content"][0]["text"]
        deltas = _words(min(self.chunks, usage["output_tokens"]))
        assert "".join(deltas) == text
        # message_start carries the real input counts and a placeholder output of 1 (WIRE.md §9).
        start_usage = {**usage, "output_tokens": 1}
        start = {**message, "content": [], "stop_reason": None, "usage": start_usage}
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": start},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {"type": "ping"},
        ]
        events.extend(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}
            for d in deltas
        )
        # The final delta repeats input and cache counts: cumulative, to be overwritten, not added.
        delta_usage = {
            "input_tokens": usage["input_tokens"],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": usage["output_tokens"],
        }
        events += [
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": delta_usage,
            },
            {"type": "message_stop"},
        ]
        pieces = [_sse(ev, event=ev["type"]) for ev in events]
        return ctx.stream(pieces, kind="anthropic.messages", model=model, usage=usage)

    def _anthropic_count_tokens(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        body = _json_object(req)
        model = _required_str(body, "model")
        count = prompt_tokens(body, ("system", "messages", "tools"))
        return ctx.json({"input_tokens": count}, kind="anthropic.count_tokens", model=model)

    def _anthropic_complete(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        body = _json_object(req)
        model = _required_str(body, "model")
        input_tokens = _tokens_of_text(str(body.get("prompt") or ""))
        out, cut = _output_tokens(self.chunks, input_tokens, body.get("max_tokens_to_sample"))
        deltas = [" " + w.strip() for w in _words(min(self.chunks, out))]
        stop = "max_tokens" if cut else "stop_sequence"
        if not body.get("stream"):
            doc = {
                "type": "completion",
                "id": f"compl_fake{ctx.seq:06d}",
                "completion": "".join(deltas),
                "stop_reason": stop,
                "model": model,
            }
            return ctx.json(doc, kind="anthropic.complete", model=model)

        def frame(text: str, reason: str | None) -> bytes:
            doc = {"type": "completion", "completion": text, "stop_reason": reason, "model": model}
            return _sse(doc, event="completion")

        pieces = [frame(d, None) for d in deltas] + [frame("", stop)]
        return ctx.stream(pieces, kind="anthropic.complete", model=model)

    def _batch_doc(self, batch: _Batch, ctx: _Ctx, *, ended: bool) -> dict[str, Any]:
        total = len(batch.requests)
        status = "ended" if ended else ("canceling" if batch.canceled else "in_progress")
        counts = {"processing": total, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            counts["processing"] = 0
            counts["canceled" if batch.canceled else "succeeded"] = total
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": _rfc3339(batch.created_at + 1) if ended else None,
            "created_at": _rfc3339(batch.created_at),
            "expires_at": _rfc3339(batch.created_at + 86400),
            "archived_at": None,
            "cancel_initiated_at": _rfc3339(batch.created_at + 0.5) if batch.canceled else None,
            "results_url": f"{ctx.base_url}/v1/messages/batches/{batch.id}/results"
            if ended
            else None,
        }

    def _batch_page(self, req: ReceivedRequest, ctx: _Ctx) -> dict[str, Any]:
        """A page of batches as Anthropic pages them: newest first, `limit` (default 20, at
        most 1000), and the cursors `after_id` (older than) / `before_id` (newer than)."""
        query = dict(parse_qsl(req.query))
        ordered = list(reversed(self._batches.values()))  # newest first
        ids = [b.id for b in ordered]
        limit = max(1, min(int(query.get("limit", "20") or 20), 1000))
        if query.get("after_id") in ids:
            ordered = ordered[ids.index(query["after_id"]) + 1 :]
            page, more = ordered[:limit], len(ordered) > limit
        elif query.get("before_id") in ids:
            ordered = ordered[: ids.index(query["before_id"])]
            page, more = ordered[-limit:], len(ordered) > limit
        else:
            page, more = ordered[:limit], len(ordered) > limit
        docs = [self._batch_doc(b, ctx, ended=True) for b in page]
        return {
            "data": docs,
            "has_more": more,
            "first_id": docs[0]["id"] if docs else None,
            "last_id": docs[-1]["id"] if docs else None,
        }

    def _anthropic_batches(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        parts = req.path.removeprefix("/v1/messages/batches").strip("/").split("/")
        kind = "anthropic.batches"
        if parts == [""]:
            if req.method == "POST":  # create
                body = _json_object(req)
                requests = body.get("requests")
                if not isinstance(requests, list) or not requests:
                    raise _BadRequest("requests: Field required")
                bid = f"msgbatch_fake{ctx.seq:06d}{_digest(requests)[:8]}"
                self._batches[bid] = _Batch(bid, ctx.now, requests)
                return ctx.json(self._batch_doc(self._batches[bid], ctx, ended=False), kind=kind)
            return ctx.json(self._batch_page(req, ctx), kind=kind)
        batch = self._batches.get(parts[0])
        if batch is None or len(parts) > 2:
            return error_reply("anthropic", 404, "Not Found", request_id=ctx.request_id)
        action = parts[1] if len(parts) == 2 else ""
        if req.method == "GET" and action == "":
            # The fake finishes every batch instantly: the first retrieve already sees it ended.
            return ctx.json(self._batch_doc(batch, ctx, ended=True), kind=kind)
        if req.method == "DELETE" and action == "":
            del self._batches[batch.id]
            return ctx.json({"id": batch.id, "type": "message_batch_deleted"}, kind=kind)
        if req.method == "POST" and action == "cancel":
            batch.canceled = True
            return ctx.json(self._batch_doc(batch, ctx, ended=False), kind=kind)
        if req.method == "GET" and action == "results":
            return self._batch_results(batch, ctx)
        return error_reply("anthropic", 404, "Not Found", request_id=ctx.request_id)

    def _batch_results(self, batch: _Batch, ctx: _Ctx) -> Reply:
        lines = []
        item_usage: dict[str, dict[str, Any]] = {}
        # Reverse order on purpose: results come "in no particular order" (WIRE.md §11).
        for index, entry in reversed(list(enumerate(batch.requests))):
            custom_id = str(entry.get("custom_id"))
            if batch.canceled:
                result: dict[str, Any] = {"type": "canceled"}
            else:
                message = self._message(
                    entry.get("params") or {}, f"msg_{batch.id}_{index}", batch=True
                )
                item_usage[custom_id] = message["usage"]
                result = {"type": "succeeded", "message": message}
            lines.append(_dumps({"custom_id": custom_id, "result": result}) + b"\n")
        headers = (
            ("content-type", "application/binary"),
            _request_id_header("anthropic", ctx.request_id),
        )
        return Reply(
            200,
            headers,
            (b"".join(lines),),
            False,
            "anthropic",
            "anthropic.batch_results",
            item_usage=item_usage,
        )

    def _anthropic_models(self, req: ReceivedRequest, ctx: _Ctx) -> Reply:
        def model(mid: str) -> dict[str, Any]:
            name = mid.replace("-", " ").title()
            return {
                "type": "model",
                "id": mid,
                "display_name": name,
                "created_at": "2025-09-29T00:00:00Z",
            }

        if req.path.startswith("/v1/models/"):
            return ctx.json(model(req.path.removeprefix("/v1/models/")), kind="anthropic.models")
        ids = (
            "claude-sonnet-4-5-20250929",
            "claude-haiku-4-5-20251001",
            "claude-opus-4-1-20250805",
        )
        docs = [model(mid) for mid in ids]
        doc = {"data": docs, "has_more": False, "first_id": ids[0], "last_id": ids[-1]}
        return ctx.json(doc, kind="anthropic.models")


# ---------------------------------------------------------------------------------------------
# Helpers for the handlers


class _BadRequest(Exception):
    """The request is malformed; becomes a provider-shaped 400."""


@attrs.frozen
class _Ctx:
    provider: str
    request_id: str
    now: float
    base_url: str
    seq: int

    def json(self, doc: Any, *, kind: str, model: str | None = None, usage: Any = None) -> Reply:
        headers = _json_headers(self.provider, self.request_id)
        return Reply(200, headers, (_dumps(doc),), False, self.provider, kind, model, False, usage)

    def text(self, text: str, *, kind: str, model: str | None = None) -> Reply:
        headers = (
            ("content-type", "text/plain; charset=utf-8"),
            _request_id_header(self.provider, self.request_id),
        )
        return Reply(200, headers, (text.encode(),), False, self.provider, kind, model)

    def stream(
        self, pieces: list[bytes], *, kind: str, model: str | None = None, usage: Any = None
    ) -> Reply:
        headers = _sse_headers(self.provider, self.request_id)
        return Reply(200, headers, tuple(pieces), True, self.provider, kind, model, True, usage)


def _json_object(req: ReceivedRequest) -> dict[str, Any]:
    try:
        body = json.loads(req.body or b"null")
    except ValueError:
        raise _BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.")
    return body


def _required_str(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _BadRequest(f"{name}: Field required")
    return value


def expected_usage(
    method: str,
    path: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    chunks: int = 8,
) -> dict[str, Any] | None:
    """The usage the fake would report for this request, without serving it (or None)."""
    request = ReceivedRequest(
        method=method,
        path=path,
        query="",
        headers=tuple((k.lower(), v) for k, v in headers),
        body=body,
    )
    return Simulator(chunks=chunks).reply(request, now=0.0, base_url="http://127.0.0.1").usage
