"""`meshproxy prices [MODEL]`: what the price book can price, and a worked example.

Owns: the listing and the worked example's presentation. The numbers come from the same
`PriceBook.price()` the proxy uses, so the example is exactly what a record would carry.

Does not own: the price data or the arithmetic (meshproxy_core.pricing).
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from meshproxy_core.pricing import PriceBook, PriceEntry, quantize_money
from meshproxy_core.records import ImageCount, Usage

__all__ = ["add_prices_command", "run_prices"]

_LISTED_RATES = ("input", "cache_read", "output")


def add_prices_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    prices = commands.add_parser("prices", help="list priced models, or show one with an example")
    prices.add_argument("model", nargs="?", help="a model id, optionally as provider/model")
    prices.add_argument("--config", type=Path, help="TOML config whose [prices] override entries")
    prices.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from .cli import load_document

    overrides = load_document(args.config).get("prices", {})
    book = PriceBook.default()
    if overrides:
        book = book.with_overrides(overrides)
    return run_prices(book, args.model, sys.stdout, sys.stderr)


def run_prices(book: PriceBook, model: str | None, out: TextIO, err: TextIO) -> int:
    if model is None:
        _listing(book, out)
        return 0
    matches = _resolve(book, model)
    if not matches:
        print(f"meshproxy prices: no price for {model!r}; the proxy refuses it", file=err)
        return 1
    for entry in matches:
        _details(book, entry, model, out)
    return 0


def _resolve(book: PriceBook, model: str) -> list[PriceEntry]:
    provider, _, name = model.rpartition("/")
    providers = [provider] if provider else [p.name for p in book.providers]
    found = []
    for candidate in providers:
        entry = book.resolve(candidate, name)
        if entry is not None:
            found.append(entry)
    return found


def _listing(book: PriceBook, out: TextIO) -> None:
    print(f"price book {book.version} ({book.currency}; token rates per 1M tokens)", file=out)
    header = f"{'provider':10} {'model':32} {'input':>8} {'cached':>8} {'output':>8}  other"
    print(header, file=out)
    for provider, name in book.models():
        entry = book.resolve(provider, name)
        assert entry is not None
        rates = [_fmt(entry.rate(key)) for key in _LISTED_RATES]
        print(
            f"{provider:10} {name:32} {rates[0]:>8} {rates[1]:>8} {rates[2]:>8}  "
            f"{_other_units(entry)}",
            file=out,
        )


def _other_units(entry: PriceEntry) -> str:
    units = []
    if entry.images:
        units.append(f"{len(entry.images)} image prices")
    for key in ("characters", "audio_minute", "web_search"):
        if entry.rate(key) is not None:
            units.append(key)
    if entry.tiers:
        units.append("long-context tier")
    return ", ".join(units)


def _money(amount: Decimal) -> str:
    return f"{amount.normalize():f}"


def _fmt(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:f}"


def _details(book: PriceBook, entry: PriceEntry, asked: str, out: TextIO) -> None:
    title = f"{entry.provider}/{entry.model}"
    if asked.rpartition("/")[2] != entry.model:
        title += f"  (resolved from {asked})"
    print(title, file=out)
    print(f"  source:    {entry.source}", file=out)
    print(f"  effective: {entry.effective}", file=out)
    if entry.note:
        print(f"  note:      {entry.note}", file=out)
    for key, value in entry.rates:
        print(f"  {key:16} {value:f}", file=out)
    for quality, size, price in entry.images:
        print(f"  image {quality:9} {size:10} {price:f} per image", file=out)
    for tier in entry.tiers:
        print(
            f"  prompts over {tier.above_prompt_tokens} tokens: "
            + ", ".join(f"{k} {v:f}" for k, v in tier.rates),
            file=out,
        )
    usage = _example_usage(entry)
    cost = book.price(entry.provider, entry.model, usage)
    print("  worked example:", file=out)
    for name, value in _usage_items(usage):
        print(f"    {name:24} {value}", file=out)
    for component, amount in cost.components:
        print(f"    = {component:22} ${_money(amount)}", file=out)
    print(
        f"    total                    ${_money(cost.total)}  (exact; rounded for display: "
        f"${quantize_money(cost.total)})",
        file=out,
    )


def _example_usage(entry: PriceEntry) -> Usage:
    fields: dict[str, object] = {}
    if entry.rate("input") is not None:
        fields["input_tokens"] = 10_000
    if entry.rate("cache_read") is not None:
        fields["cache_read_tokens"] = 40_000
    if entry.rate("output") is not None:
        fields["output_tokens"] = 2_000
    if entry.images:
        quality, size, _ = entry.images[0]
        fields["images"] = (ImageCount(size=size, quality=quality, count=2),)
    if entry.rate("characters") is not None:
        fields["input_characters"] = 1_000
    if entry.rate("audio_minute") is not None:
        fields["audio_seconds"] = Decimal("90")
    return Usage(**fields)  # type: ignore[arg-type]


def _usage_items(usage: Usage) -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for name in ("input_tokens", "cache_read_tokens", "output_tokens", "input_characters"):
        value = getattr(usage, name)
        if value:
            items.append((name, value))
    for image in usage.images:
        items.append((f"images {image.quality} {image.size}", image.count))
    if usage.audio_seconds:
        items.append(("audio_seconds", usage.audio_seconds))
    return items
