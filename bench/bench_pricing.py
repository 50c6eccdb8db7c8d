"""Micro-benchmark: microseconds to price one usage record, against a baseline of constructing the
same `Usage` objects, measured in the same run. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_pricing.py [N]
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal

from meshproxy_core.pricing import PriceBook
from meshproxy_core.records import ImageCount, Usage

# A mix shaped like real traffic: chat with cache, Anthropic cache writes, a long-context request,
# a flex request, images, speech and transcription.
CASES: list[tuple[str, str, dict[str, object], str | None, bool]] = [
    (
        "openai",
        "gpt-4o-2024-08-06",
        {"input_tokens": 1200, "cache_read_tokens": 800, "output_tokens": 300},
        None,
        False,
    ),
    (
        "openai",
        "gpt-5",
        {"input_tokens": 5000, "output_tokens": 2000, "reasoning_tokens": 1500},
        "flex",
        False,
    ),
    (
        "anthropic",
        "claude-sonnet-4-5-20250929",
        {
            "input_tokens": 900,
            "cache_read_tokens": 20000,
            "cache_write_5m_tokens": 3000,
            "output_tokens": 700,
        },
        None,
        False,
    ),
    (
        "anthropic",
        "claude-sonnet-4-5",
        {"input_tokens": 250_000, "output_tokens": 1000, "web_search_requests": 2},
        None,
        True,
    ),
    ("openai", "dall-e-3", {"images": (ImageCount("1024x1024", "hd", 2),)}, None, False),
    ("openai", "tts-1", {"input_characters": 2048}, None, False),
    ("openai", "whisper-1", {"audio_seconds": Decimal("8.47")}, None, False),
]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    book = PriceBook.default()
    specs = [CASES[i % len(CASES)] for i in range(n)]

    start = time.perf_counter()
    usages = [Usage(**fields) for _, _, fields, _, _ in specs]  # type: ignore[arg-type]
    baseline = time.perf_counter() - start

    start = time.perf_counter()
    for (provider, model, _, tier, batch), usage in zip(specs, usages, strict=True):
        book.price(provider, model, usage, service_tier=tier, batch=batch)
    pricing = time.perf_counter() - start

    print(f"records:               {n}")
    print(f"baseline (Usage(...)): {baseline / n * 1e6:8.2f} us/record")
    print(f"price():               {pricing / n * 1e6:8.2f} us/record")
    print(f"ratio:                 {pricing / baseline:8.2f}x the baseline")


if __name__ == "__main__":
    main()
