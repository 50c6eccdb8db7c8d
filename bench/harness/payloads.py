"""The requests the load generator sends: the same bodies to every target, with the path and
credentials each target expects.

Shapes: `openai` (chat completions, gpt-4o-mini) and `anthropic` (messages, claude-haiku-4-5).
A streamed OpenAI request does not ask for `stream_options.include_usage`, like the SDK's
default: meshproxy then adds it upstream and strips the usage chunk from what the client gets,
its most expensive streaming path.
"""

from __future__ import annotations

import json

SHAPES = ("openai", "anthropic")
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}

# target kind -> shape -> path
PATHS = {
    "direct": {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"},
    "meshproxy": {"openai": "/openai/v1/chat/completions", "anthropic": "/anthropic/v1/messages"},
    "litellm": {"openai": "/openai/v1/chat/completions", "anthropic": "/anthropic/v1/messages"},
}


def body(shape: str, *, stream: bool, chunk_delay: float | None = None) -> bytes:
    doc: dict[str, object] = {
        "model": MODELS[shape],
        "messages": [{"role": "user", "content": "Say hello, then count to fifty in words."}],
    }
    if shape == "anthropic":
        doc["max_tokens"] = 256
    if stream:
        doc["stream"] = True
    if chunk_delay is not None:
        # Read by the bench upstream only; both providers accept a `metadata` object.
        key = "user_id" if shape == "anthropic" else "bench"
        doc["metadata"] = {key: "x", "bench_chunk_delay": f"{chunk_delay:g}"}
    return json.dumps(doc, separators=(",", ":")).encode()


def request(
    kind: str, shape: str, host: str, token: str, *, stream: bool, chunk_delay: float | None = None
) -> bytes:
    """One complete HTTP/1.1 request (head and body) as bytes."""
    data = body(shape, stream=stream, chunk_delay=chunk_delay)
    headers = [
        f"POST {PATHS[kind][shape]} HTTP/1.1",
        f"host: {host}",
        "content-type: application/json",
        "accept: text/event-stream" if stream else "accept: application/json",
        f"content-length: {len(data)}",
        "user-agent: meshproxy-bench/1",
    ]
    if shape == "anthropic":
        headers += [f"x-api-key: {token}", "anthropic-version: 2023-06-01"]
    else:
        headers.append(f"authorization: Bearer {token}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + data
