"""Micro rows, in one process with nothing else running: token verification (cold and cached),
usage-machine throughput, and pricing. Prints one JSON object.

    python -m bench.harness.micro [--quick]

- token verify, cold: HS256Verifier.verify of N distinct tokens, each seen once (the signature
  is checked); cached: the same token N times (the verifier's cache answers).
- usage machines: MB/s of the streaming meters over a long transcript fed in 16 KiB chunks
  (bench_usage.py's transcripts), and of the JSON meter over a typical chat completion body.
- price: µs per record over bench_pricing.py's mix of cases.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from bench.bench_pricing import CASES
from bench.bench_usage import (
    CHAT_COMPLETION,
    anthropic_stream,
    chat_stream,
    chunks_of,
    responses_stream,
)
from meshproxy_core.auth import HS256Verifier, mint_token
from meshproxy_core.pricing import PriceBook
from meshproxy_core.records import Usage
from meshproxy_core.usage import RequestFacts
from meshproxy_core.usage.select import meter_for

SECRET = "bench-secret-" + "m" * 40


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def tokens(n: int) -> dict[str, float]:
    now = time.time()
    minted = [
        mint_token(SECRET, project="p", room=f"r{i}", participant="u", now=now) for i in range(n)
    ]

    def cold() -> None:
        verifier = HS256Verifier({"": SECRET}, cache_size=n + 1)
        for token in minted:
            verifier.verify(token, now=now)

    cached_verifier = HS256Verifier({"": SECRET})
    cached_verifier.verify(minted[0], now=now)

    def cached() -> None:
        token = minted[0]
        for _ in range(n * 10):
            cached_verifier.verify(token, now=now)

    return {
        "verify_cold_us": best_of(cold) / n * 1e6,
        "verify_cached_us": best_of(cached) / (n * 10) * 1e6,
    }


def meters(deltas: int) -> dict[str, float]:
    cases = {
        "anthropic_messages_stream": (
            anthropic_stream(deltas),
            RequestFacts("anthropic", "messages"),
        ),
        "openai_chat_stream": (
            chat_stream(deltas),
            RequestFacts("openai", "chat.completions", stream=True),
        ),
        "openai_chat_stream_stripped": (
            chat_stream(deltas),
            RequestFacts("openai", "chat.completions", stream=True, strip_usage_chunk=True),
        ),
        "openai_responses_stream": (responses_stream(deltas), RequestFacts("openai", "responses")),
    }
    out: dict[str, float] = {}
    for name, (data, facts) in cases.items():
        chunks = chunks_of(data)

        def run(facts: RequestFacts = facts, chunks: list[bytes] = chunks) -> None:
            meter = meter_for(facts, 200, "text/event-stream")
            for chunk in chunks:
                meter.feed(chunk)
            meter.finish(True)

        def split(chunks: list[bytes] = chunks) -> None:
            tail = b""
            for chunk in chunks:
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()

        out[f"{name}_mb_s"] = len(data) / 1e6 / best_of(run)
        out[f"{name}_split_lines_mb_s"] = len(data) / 1e6 / best_of(split)
    body = CHAT_COMPLETION
    facts = RequestFacts("openai", "chat.completions")
    reps = max(200, deltas // 10)

    def json_meter() -> None:
        for _ in range(reps):
            meter = meter_for(facts, 200, "application/json")
            meter.feed(body)
            meter.finish(True)

    seconds = best_of(json_meter)
    out["openai_chat_json_mb_s"] = len(body) * reps / 1e6 / seconds
    out["openai_chat_json_us_per_body"] = seconds / reps * 1e6
    return out


def pricing(n: int) -> dict[str, float]:
    book = PriceBook.default()
    specs = [CASES[i % len(CASES)] for i in range(n)]
    usages = [Usage(**fields) for _, _, fields, _, _ in specs]  # type: ignore[arg-type]

    def run() -> None:
        for (provider, model, _, tier, batch), usage in zip(specs, usages, strict=True):
            book.price(provider, model, usage, service_tier=tier, batch=batch)

    return {"price_us_per_record": best_of(run) / n * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0
    result: dict[str, float] = {}
    result.update(tokens(int(2000 * scale)))
    result.update(meters(int(20_000 * scale)))
    result.update(pricing(int(50_000 * scale)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
