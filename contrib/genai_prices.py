"""A price source built from the `genai-prices` package (pydantic/genai-prices on PyPI).

Owns: translating genai-prices' bundled model prices for OpenAI and Anthropic into entries of the
meshproxy price-file format (usable with `PriceBook.from_mapping` / `with_overrides`), and
comparing a `PriceBook` against them rate by rate.

Does not own: deciding which prices are right. meshproxy's shipped book is the authority; this
module is a cross-check and a convenience for operators who prefer genai-prices' data. It never
fetches updates (genai-prices can download newer data; this module only reads the bundled
snapshot, so results depend on the installed version, not on the network or the clock).

Only units that `meshproxy_core.records.Usage` can carry are translated; others (storage
searches, cached image/audio input, video...) are reported in `unmapped` and skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

import attrs

from meshproxy_core.pricing import TOKEN_RATE_KEYS, PriceBook

__all__ = ["Difference", "compare", "entries_from_genai_prices", "genai_rates"]

# genai-prices ModelPrice attribute -> (meshproxy rate key, divisor to meshproxy's unit).
_UNITS: dict[str, tuple[str, int]] = {
    "input_mtok": ("input", 1),
    "cache_read_mtok": ("cache_read", 1),
    "cache_write_mtok": ("cache_write_5m", 1),
    "cache_write_1h_mtok": ("cache_write_1h", 1),
    "input_audio_mtok": ("input_audio", 1),
    "input_image_mtok": ("input_image", 1),
    "output_mtok": ("output", 1),
    "output_audio_mtok": ("output_audio", 1),
    "output_image_mtok": ("output_image", 1),
    "input_mchars": ("characters", 1),
    "web_searches_kcount": ("web_search", 1),
    # Per hour of audio -> per minute: $0.36/hour is $0.006/minute.
    "audio_hours": ("audio_minute", 60),
    "input_audio_hours": ("audio_minute", 60),
}
# Exact conversions only: a rate that does not convert exactly is reported as unmapped.
_EXACT = Context(prec=100, traps=[Inexact, InvalidOperation])


def _convert(value: Any, divisor: int, per_second_check: bool) -> Decimal | None:
    try:
        rate = _EXACT.divide(Decimal(value), Decimal(divisor))
        if per_second_check:
            _EXACT.divide(rate, Decimal(60))  # the book requires audio_minute / 60 to be exact
    except Inexact:
        return None
    return rate


_PROVIDERS = ("openai", "anthropic")


@attrs.frozen
class Difference:
    """One rate on which the book and genai-prices disagree (None: that side has no rate)."""

    provider: str
    model: str  # the book's entry name
    genai_model: str  # genai-prices' model id
    key: str  # meshproxy rate key; "<key>@><threshold>" for a long-context tier rate
    ours: Decimal | None
    theirs: Decimal | None


def _models(provider: str) -> list[Any]:
    from genai_prices.data import providers  # imported late: an optional dependency

    for p in providers:
        if p.id == provider:
            return list(p.models)
    return []


def _standard_price(model: Any) -> tuple[Any, date | None]:
    """The last listed (most recent) standard price and its start date, if it has one."""
    prices = model.prices
    if isinstance(prices, list):
        last = prices[-1]
        start = getattr(last.constraint, "start_date", None)
        return last.prices, start if isinstance(start, date) else None
    return prices, None


def genai_rates(model: Any) -> tuple[dict[str, Decimal], dict[str, tuple[int, Decimal]], list[str]]:
    """(base rates, long-context tier {key: (threshold, rate)}, unmapped attribute names)."""
    price, _ = _standard_price(model)
    rates: dict[str, Decimal] = {}
    tiers: dict[str, tuple[int, Decimal]] = {}
    unmapped: list[str] = []
    for attr, value in sorted(vars(price).items()):
        if attr.startswith("_") or value is None:
            continue
        if attr not in _UNITS:
            unmapped.append(attr)
            continue
        key, divisor = _UNITS[attr]
        check = key == "audio_minute"
        base = _convert(getattr(value, "base", value), divisor, check)  # TieredPrices: .base
        if base is None:
            unmapped.append(attr)
            continue
        rates[key] = base
        for tier in getattr(value, "tiers", ())[:1]:
            rate = _convert(tier.price, divisor, check)
            if rate is not None:
                tiers[key] = (int(tier.start), rate)
    return rates, tiers, unmapped


def entries_from_genai_prices(
    effective: date, providers: Iterable[str] = _PROVIDERS
) -> dict[str, Any]:
    """A price-book mapping (format 1) holding genai-prices' standard rates. `effective` is used
    for entries whose price carries no start date in genai-prices."""
    out: dict[str, Any] = {}
    for provider in providers:
        models: dict[str, Any] = {}
        for model in _models(provider):
            rates, tiers, _ = genai_rates(model)
            if not rates:
                continue
            _, start = _standard_price(model)
            entry: dict[str, Any] = {
                "source": "https://pypi.org/project/genai-prices/",
                "effective": (start or effective).isoformat(),
                "rates": rates,
                "note": f"from genai-prices model {model.id!r}",
            }
            thresholds = {threshold for threshold, _ in tiers.values()}
            if len(thresholds) == 1:
                (threshold,) = thresholds
                tier: dict[str, Any] = {"above_prompt_tokens": threshold}
                tier.update({key: rate for key, (_, rate) in tiers.items()})
                entry["tiers"] = [tier]
            models[model.id] = entry
        out[provider] = {"models": models}
    return {"format": 1, "version": "genai-prices", "providers": out}


def _match(models: list[Any], name: str) -> Any | None:
    # genai-prices' own matching rules (prefixes, regexes) pick the model for our entry name.
    for model in models:
        if model.is_match(name):
            return model
    return None


def compare(book: PriceBook, providers: Iterable[str] = _PROVIDERS) -> list[Difference]:
    """Rate-by-rate differences for token-priced models both sides cover. Compared: every token
    rate either side has, and any other rate both sides have; the first long-context tier."""
    out: list[Difference] = []
    for provider in providers:
        models = _models(provider)
        for _, name in book.models(provider):
            entry = book.resolve(provider, name)
            model = _match(models, name)
            if entry is None or model is None:
                continue
            theirs, their_tiers, _ = genai_rates(model)
            ours = dict(entry.rates)
            if not (ours.keys() & set(TOKEN_RATE_KEYS)) or "input" not in theirs:
                continue  # not token-priced on both sides
            keys = {k for k in ours.keys() | theirs.keys() if k in TOKEN_RATE_KEYS}
            keys |= ours.keys() & theirs.keys()
            for key in sorted(keys):
                if ours.get(key) != theirs.get(key):
                    out.append(
                        Difference(provider, name, model.id, key, ours.get(key), theirs.get(key))
                    )
            our_tiers: dict[str, tuple[int, Decimal]] = {}
            if entry.tiers:
                first = entry.tiers[0]
                our_tiers = {k: (first.above_prompt_tokens, v) for k, v in first.rates}
            for key in sorted(our_tiers.keys() | their_tiers.keys()):
                a, b = our_tiers.get(key), their_tiers.get(key)
                if a != b:
                    threshold = (a or b or (0, None))[0]
                    out.append(
                        Difference(
                            provider,
                            name,
                            model.id,
                            f"{key}@>{threshold}",
                            a[1] if a else None,
                            b[1] if b else None,
                        )
                    )
    return out
