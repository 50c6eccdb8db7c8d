"""Benchmark: throughput of the streaming usage machines, and the CPU cost of one record.

Prints, side by side in the same run:
- MB/s of each streaming meter over a large SSE transcript fed in 16 KiB chunks, against the
  floor of simply splitting the same bytes into lines;
- microseconds of core CPU per non-streaming exchange (route, auth with a cached token,
  request facts, rewrite, meter, price, record), against a baseline of json.loads of the bodies.

    .venv/bin/python bench/bench_usage.py [DELTAS]

Asserts nothing: figures are for reading and comparing between runs.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

from meshproxy_core.auth import mint_token
from meshproxy_core.config import ProxyConfig
from meshproxy_core.exchange import Proxy
from meshproxy_core.pricing import PriceBook
from meshproxy_core.records import Ending
from meshproxy_core.usage import RequestFacts
from meshproxy_core.usage.select import meter_for

CHUNK = 16 * 1024


def anthropic_stream(deltas: int) -> bytes:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [],
            "usage": {"input_tokens": 1200, "output_tokens": 1},
        },
    }
    events = [
        f"event: message_start\ndata: {json.dumps(start)}\n\n",
        'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        '"content_block":{"type":"text","text":""}}\n\n',
    ]
    delta = (
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        '"delta":{"type":"text_delta","text":"Hello world, this is a token. "}}\n\n'
    )
    events += [delta] * deltas
    events.append('event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')
    events.append(
        'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
        f'"end_turn"}},"usage":{{"output_tokens":{deltas}}}}}\n\n'
    )
    events.append('event: message_stop\ndata: {"type":"message_stop"}\n\n')
    return "".join(events).encode()


def chat_stream(deltas: int) -> bytes:
    chunk = (
        'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
        '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello world "},'
        '"finish_reason":null}],"usage":null}\n\n'
    )
    usage = (
        'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
        '"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,'
        f'"completion_tokens":{deltas},"total_tokens":{deltas + 12}}}}}\n\n'
    )
    return (chunk * deltas + usage + "data: [DONE]\n\n").encode()


def responses_stream(deltas: int) -> bytes:
    events = []
    for i in range(deltas):
        body = {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hello world ",
            "sequence_number": i + 3,
        }
        events.append(f"event: response.output_text.delta\ndata: {json.dumps(body)}\n\n")
    done = {
        "type": "response.completed",
        "sequence_number": deltas + 3,
        "response": {
            "id": "resp_1",
            "object": "response",
            "model": "gpt-4o-mini",
            "status": "completed",
            "usage": {"input_tokens": 12, "output_tokens": deltas, "total_tokens": deltas + 12},
        },
    }
    events.append(f"event: response.completed\ndata: {json.dumps(done)}\n\n")
    return "".join(events).encode()


# A typical non-streamed chat completion body.
CHAT_COMPLETION = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi " * 80}}],
        "usage": {"prompt_tokens": 60, "completion_tokens": 80, "total_tokens": 140},
    }
).encode()


def chunks_of(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def time_it(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def split_lines(chunks: list[bytes]) -> None:
    tail = b""
    for chunk in chunks:
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()


def run_meter(facts: RequestFacts, chunks: list[bytes]) -> None:
    meter = meter_for(facts, 200, "text/event-stream")
    for chunk in chunks:
        meter.feed(chunk)
    _, metering = meter.finish(True)
    assert metering.usage.output_tokens > 0


def stream_rows(deltas: int) -> None:
    cases = [
        ("anthropic messages", anthropic_stream(deltas), RequestFacts("anthropic", "messages")),
        (
            "openai chat (client asked usage)",
            chat_stream(deltas),
            RequestFacts("openai", "chat.completions", stream=True),
        ),
        (
            "openai chat (usage chunk stripped)",
            chat_stream(deltas),
            RequestFacts("openai", "chat.completions", stream=True, strip_usage_chunk=True),
        ),
        ("openai responses", responses_stream(deltas), RequestFacts("openai", "responses")),
    ]
    print(f"Streaming meters ({deltas} deltas each, fed in {CHUNK // 1024} KiB chunks)")
    print(f"{'stream':38} {'MB':>6} {'split lines MB/s':>17} {'meter MB/s':>11} {'ratio':>6}")
    for name, data, facts in cases:
        chunks = chunks_of(data)
        megabytes = len(data) / 1e6
        floor = time_it(lambda chunks=chunks: split_lines(chunks))
        meter = time_it(lambda facts=facts, chunks=chunks: run_meter(facts, chunks))
        print(
            f"{name:38} {megabytes:6.1f} {megabytes / floor:17.0f} {megabytes / meter:11.1f}"
            f" {meter / floor:5.1f}x"
        )


def record_rows(n: int) -> None:
    secret = "bench-secret-" + "b" * 40
    env = {"MESHAGENT_SECRET": secret, "OPENAI_API_KEY": "sk-bench", "ANTHROPIC_API_KEY": "sk-b"}
    proxy = Proxy(ProxyConfig.from_mapping({}, env), prices=PriceBook.default())
    token = mint_token(secret, project="p", room="r", participant="u", now=time.time())
    headers = [
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
    ]
    request = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello " * 50}]}
    ).encode()
    response = CHAT_COMPLETION
    response_headers = [(b"content-type", b"application/json")]

    def exchanges() -> None:
        for _ in range(n):
            ex = proxy.exchange(now=time.time())
            ex.request_head("POST", "/v1/chat/completions", headers, content_length=len(request))
            ex.request_body(request)
            ex.response_head(200, response_headers)
            ex.response_data(response)
            ex.finish(Ending.COMPLETE, now=0.0)

    def baseline() -> None:
        for _ in range(n):
            json.loads(request)
            json.loads(response)

    full = time_it(exchanges)
    floor = time_it(baseline)
    print()
    print(f"One non-streaming exchange, start to record ({n} exchanges)")
    print(f"{'baseline: json.loads(request)+json.loads(response)':52} {floor / n * 1e6:8.1f} us")
    print(f"{'exchange: route, auth, facts, meter, price, record':52} {full / n * 1e6:8.1f} us")


def main() -> None:
    deltas = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    stream_rows(deltas)
    record_rows(5_000)


if __name__ == "__main__":
    main()
