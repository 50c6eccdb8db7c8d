"""A fast fake upstream for the benchmark: OpenAI chat completions and Anthropic messages, JSON
and 50-chunk SSE, with correct usage, over HTTP/1.1 keep-alive on 127.0.0.1.

Built for speed, not fidelity (meshproxy.adapters.testing is the faithful one): a raw asyncio
protocol, regexes instead of JSON parsing, and every response precomputed as bytes per
(endpoint, model, stream, include_usage). A streamed response is written one SSE event per
write (a separate TCP segment, as a provider sends tokens), yielding to the loop between events,
or sleeping `--chunk-delay` seconds between them. A request body may carry
`"bench_chunk_delay":"0.2"` (any JSON place, e.g. in `metadata`) to slow only that stream.

    python -m bench.harness.upstream --port 0 [--chunks 50] [--chunk-delay 0]

Prints `PORT <n>` on stdout once listening. Binds 127.0.0.1 only. Exits on SIGTERM/SIGINT or
after `--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from typing import Any

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
_STREAM = re.compile(rb'"stream"\s*:\s*true')
_INCLUDE_USAGE = re.compile(rb'"include_usage"\s*:\s*true')
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,100})"')
_DELAY = re.compile(rb'"bench_chunk_delay"\s*:\s*"?([0-9.]+)')

PROMPT_TOKENS = 12
WORDS = ["Hello", " world", ",", " this", " is", " a", " token", "."]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (obj if isinstance(obj, bytes) else _dumps(obj)) + b"\n\n"


def _deltas(chunks: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(chunks)]


def _json_response(body: bytes, request_id_header: bytes) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + request_id_header
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    return head + body


def _stream_head(request_id_header: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"cache-control: no-cache\r\n" + request_id_header + b"transfer-encoding: chunked\r\n\r\n"
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def openai_chat(model: str, chunks: int, stream: bool, include_usage: bool) -> list[bytes]:
    """The whole response as a list of writes: [head+first] + one write per further event."""
    rid = b"x-request-id: req_bench\r\n"
    deltas = _deltas(chunks)
    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": chunks,
        "total_tokens": PROMPT_TOKENS + chunks,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    common = {"id": "chatcmpl-bench", "created": 1_800_000_000, "model": model}
    if not stream:
        doc = {
            **common,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(deltas), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_bench",
        }
        return [_json_response(_dumps(doc), rid)]

    def event(choices: list[Any], usage_value: Any = None) -> bytes:
        doc: dict[str, Any] = {**common, "object": "chat.completion.chunk", "choices": choices}
        if include_usage:
            doc["usage"] = usage_value
        return _sse(doc)

    def choice(delta: dict[str, Any], finish: str | None = None) -> Any:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = [event([choice({"role": "assistant", "content": ""})])]
    events += [event([choice({"content": d})]) for d in deltas]
    events.append(event([choice({}, "stop")]))
    if include_usage:
        events.append(event([], usage))
    events.append(b"data: [DONE]\n\n")
    return _stream_writes(_stream_head(rid), events)


def anthropic_messages(model: str, chunks: int, stream: bool) -> list[bytes]:
    rid = b"request-id: req_bench\r\n"
    deltas = _deltas(chunks)
    usage = {
        "input_tokens": PROMPT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": chunks,
        "service_tier": "standard",
    }
    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(deltas)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if not stream:
        return [_json_response(_dumps(message), rid)]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    docs: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    docs += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}
        for d in deltas
    ]
    docs += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": chunks},
        },
        {"type": "message_stop"},
    ]
    return _stream_writes(_stream_head(rid), [_sse(d, event=d["type"]) for d in docs])


def _stream_writes(head: bytes, events: list[bytes]) -> list[bytes]:
    writes = [_chunk(e) for e in events]
    writes[0] = head + writes[0]
    writes[-1] += b"0\r\n\r\n"
    return writes


_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 58\r\n\r\n"
    b'{"error":{"message":"bench upstream: unknown path","x":1}}'
)


class Upstream:
    def __init__(self, chunks: int, chunk_delay: float) -> None:
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self._cache: dict[tuple[str, str, bool, bool], list[bytes]] = {}
        self.served = 0

    def reply(self, path: bytes, body: bytes) -> tuple[list[bytes], float]:
        stream = _STREAM.search(body) is not None
        model_match = _MODEL.search(body)
        model = model_match.group(1).decode() if model_match else "unknown"
        delay_match = _DELAY.search(body)
        delay = float(delay_match.group(1)) if delay_match else self.chunk_delay
        path = path.split(b"?", 1)[0]
        if path.endswith(b"/chat/completions"):
            include = stream and _INCLUDE_USAGE.search(body) is not None
            key = ("chat", model, stream, include)
            if key not in self._cache:
                self._cache[key] = openai_chat(model, self.chunks, stream, include)
        elif path.endswith(b"/messages"):
            key = ("messages", model, stream, False)
            if key not in self._cache:
                self._cache[key] = anthropic_messages(model, self.chunks, stream)
        else:
            return [_NOT_FOUND], 0.0
        self.served += 1
        return self._cache[key], delay


class _Protocol(asyncio.Protocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closed = False
        self.close_after = False
        self._can_write = asyncio.Event()
        self._can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._process()

    def _process(self) -> None:
        while not self.busy and not self.closed:
            request = self._take_request()
            if request is None:
                return
            path, body, close = request
            writes, delay = self.upstream.reply(path, body)
            self.close_after = close
            assert self.transport is not None
            if len(writes) == 1:
                self.transport.write(writes[0])
                if close:
                    self.transport.close()
                    return
                continue
            self.busy = True
            asyncio.get_running_loop().create_task(self._stream(writes, delay))

    def _take_request(self) -> tuple[bytes, bytes, bool] | None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buf[: end + 2])
        start = end + 4
        if _CHUNKED.search(head):
            body = bytearray()
            pos = start
            while True:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    return None
                size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
                if size == 0:
                    if len(buf) < line_end + 4:
                        return None
                    total = line_end + 4  # no trailers
                    break
                if len(buf) < line_end + 2 + size + 2:
                    return None
                body += buf[line_end + 2 : line_end + 2 + size]
                pos = line_end + 2 + size + 2
            body_bytes = bytes(body)
        else:
            match = _CONTENT_LENGTH.search(head)
            length = int(match.group(1)) if match else 0
            total = start + length
            if len(buf) < total:
                return None
            body_bytes = bytes(buf[start:total])
        del buf[:total]
        path = head.split(b" ", 2)[1] if b" " in head else b"/"
        return path, body_bytes, _CLOSE.search(head) is not None

    async def _stream(self, writes: list[bytes], delay: float) -> None:
        transport = self.transport
        assert transport is not None
        try:
            for i, data in enumerate(writes):
                if self.closed:
                    return
                if i:
                    await asyncio.sleep(delay)
                    if not self._can_write.is_set():
                        await self._can_write.wait()
                    if self.closed:
                        return
                transport.write(data)
        finally:
            self.busy = False
        if self.close_after:
            transport.close()
            return
        if self.buf:
            self._process()


async def serve(port: int, chunks: int, chunk_delay: float, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    upstream = Upstream(chunks, chunk_delay)
    server = await loop.create_server(
        lambda: _Protocol(upstream), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    sock_port = server.sockets[0].getsockname()[1]
    print(f"PORT {sock_port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    except TimeoutError:
        print("bench upstream: --max-seconds reached, exiting", file=sys.stderr)
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=50, help="content deltas per stream")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between events")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.chunks, args.chunk_delay, args.max_seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
