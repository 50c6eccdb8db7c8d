"""The price book: `(provider, model, usage) -> Cost` in exact decimal money.

Owns: the price file format (TOML, `format = 1`, described in docs/pricing.md), loading and
validating it, dumping it back (load -> dump -> load is the identity), resolving a model name to
an entry (exact name, explicit alias, or an explicit dated-snapshot rule; never a prefix or fuzzy
match), knowing which endpoint kinds an entry can price, and pricing a `Usage`: per-million token
rates per token kind, per-image tables, per-million characters, per-minute audio, per-thousand
tool requests, long-context tiers, batch discounts and service-tier rates.

Money is `decimal.Decimal` end to end. Every multiplication and addition runs in a context that
traps `Inexact`, so a result that cannot be represented exactly raises instead of rounding
silently; rates are validated at load time so that this cannot happen for valid files (per-unit
rates are the file's rates divided by powers of ten, or by 60 for audio minutes, which is checked
to divide exactly). `quantize_money` rounds for display only; records keep the exact value.

Does not own: reading files or the environment (callers pass text or mappings; `default()` reads
the shipped package resource), deciding what to do with an unpriced model (exchange), or counting
usage (usage/).
"""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import (
    ROUND_CEILING,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Overflow,
)
from typing import Any

import attrs

from .records import Cost, Usage

__all__ = [
    "FORMAT",
    "RATE_KEYS",
    "TOKEN_RATE_KEYS",
    "LongContextTier",
    "PriceBook",
    "PriceBookError",
    "PriceEntry",
    "PricingError",
    "ProviderPrices",
    "add_costs",
    "quantize_money",
]

FORMAT = 1  # the only price-file format this module reads and writes

# Token kinds: (rate key, Usage field). Rates are USD per 1,000,000 tokens. The rate key is also
# the name of the cost component. `reasoning_tokens` is absent on purpose: it is a detail inside
# `output_tokens` and pricing it would double count.
_TOKEN_FIELDS: tuple[tuple[str, str], ...] = (
    ("input", "input_tokens"),
    ("cache_read", "cache_read_tokens"),
    ("cache_write_5m", "cache_write_5m_tokens"),
    ("cache_write_1h", "cache_write_1h_tokens"),
    ("input_audio", "input_audio_tokens"),
    ("input_image", "input_image_tokens"),
    ("output", "output_tokens"),
    ("output_audio", "output_audio_tokens"),
    ("output_image", "output_image_tokens"),
)
# Per-request tools: (rate key, Usage field). Rates are USD per 1,000 requests, the way both
# providers publish them ("$10 per 1,000 searches").
_REQUEST_FIELDS: tuple[tuple[str, str], ...] = (
    ("web_search", "web_search_requests"),
    ("web_fetch", "web_fetch_requests"),
    ("code_execution", "code_execution_requests"),
)
TOKEN_RATE_KEYS: tuple[str, ...] = tuple(key for key, _ in _TOKEN_FIELDS)
# Every scalar rate key, in the order components are reported and dumped.
RATE_KEYS: tuple[str, ...] = (
    *TOKEN_RATE_KEYS,
    "characters",  # USD per 1,000,000 input characters (text-to-speech)
    "audio_minute",  # USD per minute of audio (transcription / translation)
    *(key for key, _ in _REQUEST_FIELDS),
)
_RATE_KEY_SET = frozenset(RATE_KEYS)
# Prompt tokens compared against a long-context threshold: everything the request sent.
_PROMPT_FIELDS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "input_image_tokens",
)

_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1_000)
_SIXTY = Decimal(60)
_ZERO = Decimal(0)
_AUDIO_ROUNDING = ("exact", "up_to_second")

# Exact arithmetic: a huge precision and a trap on Inexact, so nothing is ever rounded silently.
_EXACT = Context(prec=200, traps=[Inexact, InvalidOperation, Overflow])


class _Bill:
    """The components of one cost as they are added, in exact arithmetic, and the units the
    price book has no rate for."""

    __slots__ = ("components", "missing", "total")

    def __init__(self) -> None:
        self.components: list[tuple[str, Decimal]] = []
        self.missing: list[str] = []
        self.total = _ZERO

    def charge(
        self, component: str, field: str, count: int | Decimal, per_unit: Decimal | None
    ) -> None:
        if not count:
            return
        if count < 0:
            raise ValueError(f"negative usage: {field}={count}")
        if per_unit is None:
            self.missing.append(component)
        else:
            self.add(component, _EXACT.multiply(per_unit, count))

    def add(self, component: str, amount: Decimal) -> None:
        self.components.append((component, amount))
        self.total = _EXACT.add(self.total, amount)


# Endpoint kind -> alternative sets of rate keys; the endpoint can be priced if the entry has every
# key of at least one set (or, for images, a per-image table). Kinds not listed are free
# (models, count_tokens, input_tokens) or unknown.
_TEXT = (frozenset({"input", "output"}),)
_ENDPOINT_NEEDS: dict[str, tuple[frozenset[str], ...]] = {
    "chat.completions": _TEXT,
    "responses": _TEXT,
    "responses.compact": _TEXT,
    "messages": _TEXT,
    "messages.batches": _TEXT,
    "messages.batches.results": _TEXT,
    "complete": _TEXT,
    "embeddings": (frozenset({"input"}),),
    "audio.speech": (frozenset({"characters"}), frozenset({"input", "output_audio"})),
    "audio.transcriptions": (
        frozenset({"audio_minute"}),
        frozenset({"input_audio", "output"}),
    ),
    "audio.translations": (frozenset({"audio_minute"}), frozenset({"input_audio", "output"})),
    "images.generations": (frozenset({"output_image"}),),
    "images.edits": (frozenset({"output_image"}),),
    "images.variations": (),  # DALL·E 2 only, no usage: per-image table only
}
_IMAGE_KINDS = frozenset({"images.generations", "images.edits", "images.variations"})
_FREE_KINDS = frozenset({"models", "messages.count_tokens", "responses.input_tokens"})

# Resolution cache bound: model names come from clients, so an unbounded cache would let a caller
# grow memory with made-up names. Past this size, results are still correct, just not cached.
_CACHE_LIMIT = 4096


class PricingError(Exception):
    """The model has no entry (and no alias or snapshot rule leads to one)."""

    code = "model_not_priced"

    def __init__(self, provider: str, model: str) -> None:
        super().__init__(f"no price for {provider}/{model!r}")
        self.provider = provider
        self.model = model


class PriceBookError(ValueError):
    """The price file or override mapping is malformed; the message names the offending key."""


def quantize_money(amount: Decimal, unit: Decimal = Decimal("0.000001")) -> Decimal:
    """Round `amount` to `unit` (banker's rounding) for display. Never store the result."""
    return amount.quantize(unit, rounding=ROUND_HALF_EVEN)


Rates = tuple[tuple[str, Decimal], ...]  # (rate key, rate) in RATE_KEYS order


@attrs.frozen
class LongContextTier:
    """Rates that replace the base rates for a whole request once its prompt exceeds a size."""

    above_prompt_tokens: int  # strictly greater than this many prompt tokens
    rates: Rates


@attrs.frozen
class PriceEntry:
    """One priced model. Rates are as written in the file (per 1M tokens, per 1K requests...)."""

    provider: str
    model: str
    source: str
    effective: str
    rates: Rates = ()
    images: tuple[tuple[str, str, Decimal], ...] = ()  # (quality, size, USD per image)
    image_default_quality: str | None = None  # used when the request said "" or "auto"
    service_tiers: tuple[tuple[str, Rates], ...] = ()  # tier name -> rates replacing base rates
    tiers: tuple[LongContextTier, ...] = ()  # ascending by threshold
    batch_multiplier: Decimal | None = None  # None: the provider's multiplier
    audio_rounding: str = "exact"
    note: str = ""
    # Derived at construction, not part of identity.
    _rate_map: dict[str, Decimal] = attrs.field(init=False, eq=False, repr=False)
    _image_map: dict[tuple[str, str], Decimal] = attrs.field(init=False, eq=False, repr=False)
    _tier_map: dict[str, dict[str, Decimal]] = attrs.field(init=False, eq=False, repr=False)
    _plans: dict[tuple[str | None, int, bool], _Plan] = attrs.field(
        init=False, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_rate_map", dict(self.rates))
        object.__setattr__(self, "_image_map", {(q, s): p for q, s, p in self.images})
        object.__setattr__(self, "_tier_map", {n: dict(r) for n, r in self.service_tiers})
        object.__setattr__(self, "_plans", {})

    def rate(self, key: str) -> Decimal | None:
        """The base rate for `key` (one of RATE_KEYS), or None when the model has none."""
        return self._rate_map.get(key)

    def image_price(self, size: str, quality: str) -> Decimal | None:
        price = self._image_map.get((quality, size))
        if price is None and quality in ("", "auto") and self.image_default_quality is not None:
            price = self._image_map.get((self.image_default_quality, size))
        return price

    def can_price(self, endpoint: str) -> bool:
        if endpoint in _FREE_KINDS:
            return True
        needs = _ENDPOINT_NEEDS.get(endpoint)
        if needs is None:
            return False
        if endpoint in _IMAGE_KINDS and self.images:
            return True
        return any(need <= self._rate_map.keys() for need in needs)


@attrs.frozen
class _Plan:
    """Per-unit rates of one (entry, service tier, long-context tier, batch) combination, computed
    once: pricing a record is then a handful of integer x Decimal multiplications."""

    tokens: tuple[tuple[str, str, Decimal | None], ...]  # (component, Usage field, USD per token)
    requests: tuple[tuple[str, str, Decimal | None], ...]  # USD per request
    per_character: Decimal | None
    per_second: Decimal | None


@attrs.frozen
class ProviderPrices:
    """All entries of one provider plus its provider-wide rules."""

    name: str
    batch_multiplier: Decimal | None = None
    snapshot_pattern: str | None = None  # regex with a `base` group, e.g. a date suffix
    service_tier_aliases: tuple[tuple[str, str], ...] = ()  # e.g. ("fast", "priority")
    aliases: tuple[tuple[str, str], ...] = ()  # alias -> entry model name, sorted
    entries: tuple[PriceEntry, ...] = ()  # sorted by model name


@attrs.frozen
class _Index:
    entries: dict[str, PriceEntry]
    aliases: dict[str, str]
    snapshot: re.Pattern[str] | None
    tier_aliases: dict[str, str]
    batch_multiplier: Decimal | None
    cache: dict[str, PriceEntry | None]


@attrs.frozen
class PriceBook:
    """An immutable set of prices. Build with `from_toml`, `from_mapping` or `default()`."""

    version: str
    currency: str = "USD"
    providers: tuple[ProviderPrices, ...] = ()
    _index: dict[str, _Index] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        index: dict[str, _Index] = {}
        for provider in self.providers:
            pattern = provider.snapshot_pattern
            index[provider.name] = _Index(
                entries={entry.model: entry for entry in provider.entries},
                aliases=dict(provider.aliases),
                snapshot=re.compile(pattern) if pattern is not None else None,
                tier_aliases=dict(provider.service_tier_aliases),
                batch_multiplier=provider.batch_multiplier,
                cache={},
            )
        object.__setattr__(self, "_index", index)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, text: str) -> PriceBook:
        try:
            # parse_float=Decimal: a TOML `2.50` becomes Decimal("2.50"), never a float.
            data = tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise PriceBookError(f"invalid TOML: {exc}") from exc
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PriceBook:
        return _parse_book(data)

    @classmethod
    def default(cls) -> PriceBook:
        """The price file shipped in the package (meshproxy_core/data/prices.toml)."""
        text = (
            importlib.resources.files(__package__)
            .joinpath("data/prices.toml")
            .read_text(encoding="utf-8")
        )
        return cls.from_toml(text)

    def with_overrides(self, data: Mapping[str, Any]) -> PriceBook:
        """Operator overrides in the same format. Provider settings given replace the book's, an
        entry given replaces the book's entry of that name whole, aliases are added or replaced.
        `version` defaults to this book's version with "+overrides" appended."""
        merged = _to_mapping(self)
        _check_keys(data, {"format", "version", "currency", "providers"}, "overrides")
        if "format" in data and data["format"] != FORMAT:
            raise PriceBookError(f"overrides: format must be {FORMAT}")
        merged["version"] = data.get("version", f"{self.version}+overrides")
        if "currency" in data:
            merged["currency"] = data["currency"]
        providers = _mapping(data.get("providers", {}), "providers")
        for name, pdata in providers.items():
            pdata = _mapping(pdata, f"providers.{name}")
            target = merged["providers"].setdefault(name, {})
            for key, value in pdata.items():
                if key in ("models", "aliases"):
                    target.setdefault(key, {}).update(_mapping(value, f"providers.{name}.{key}"))
                else:
                    target[key] = value
        return _parse_book(merged)

    def to_toml(self) -> str:
        return _dump_book(self)

    # -- queries ------------------------------------------------------------------------------

    def resolve(self, provider: str, model: str) -> PriceEntry | None:
        """The entry for `model`: an exact entry name, else an explicit alias, else the
        provider's snapshot rule (e.g. `gpt-4o-2024-08-06` -> `gpt-4o`) followed by the same two
        lookups. Nothing else: no prefix or similarity matching."""
        index = self._index.get(provider)
        if index is None:
            return None
        cache = index.cache
        if model in cache:
            return cache[model]
        entry = _lookup(index, model)
        if entry is None and index.snapshot is not None:
            match = index.snapshot.fullmatch(model)
            if match is not None:
                entry = _lookup(index, match.group("base"))
        if len(cache) < _CACHE_LIMIT:
            cache[model] = entry
        return entry

    def can_price(self, provider: str, endpoint: str, model: str) -> bool:
        """True if `model` resolves and has every unit `endpoint` bills in (see docs)."""
        if endpoint in _FREE_KINDS:
            return True
        entry = self.resolve(provider, model)
        return entry is not None and entry.can_price(endpoint)

    def models(self, provider: str | None = None) -> tuple[tuple[str, str], ...]:
        """(provider, model) of every entry, for listings such as `meshproxy prices`."""
        return tuple(
            (p.name, entry.model)
            for p in self.providers
            if provider is None or p.name == provider
            for entry in p.entries
        )

    def price(
        self,
        provider: str,
        model: str,
        usage: Usage,
        *,
        service_tier: str | None = None,
        batch: bool = False,
    ) -> Cost:
        """Exact cost of `usage`. Raises PricingError if the model does not resolve. A nonzero
        usage field with no rate is not priced and is named in `missing_units` (incomplete)."""
        entry = self.resolve(provider, model)
        if entry is None:
            raise PricingError(provider, model)
        index = self._index[provider]
        tier = index.tier_aliases.get(service_tier, service_tier) if service_tier else None
        # Anthropic batch results report service_tier "batch": the same discount, applied once.
        batch = batch or tier == "batch"
        if tier not in entry._tier_map:
            tier = None  # "default", "auto", "standard"... and unknown tiers: base rates
        prompt = 0
        for name in _PROMPT_FIELDS:
            prompt += getattr(usage, name)
        level = 0
        for i, lc in enumerate(entry.tiers, start=1):
            if prompt > lc.above_prompt_tokens:
                level = i
        key = (tier, level, batch)
        plan = entry._plans.get(key)
        if plan is None:
            plan = _make_plan(entry, tier, level, batch, index.batch_multiplier)
            entry._plans[key] = plan

        bill = _Bill()
        for component, field, per_unit in plan.tokens:
            count = getattr(usage, field)
            if count:  # most fields are zero: skip the call
                bill.charge(component, field, count, per_unit)
        if usage.images:
            self._charge_images(bill, entry, usage)
        characters = usage.input_characters
        if characters:
            bill.charge("characters", "input_characters", characters, plan.per_character)
        seconds = usage.audio_seconds
        if seconds:
            if seconds > 0 and entry.audio_rounding == "up_to_second":
                # OpenAI bills whole seconds, rounding a fraction up (8.47 s -> 9 s).
                seconds = seconds.to_integral_value(rounding=ROUND_CEILING)
            bill.charge("audio_seconds", "audio_seconds", seconds, plan.per_second)
        for component, field, per_unit in plan.requests:
            count = getattr(usage, field)
            if count:  # most fields are zero: skip the call
                bill.charge(component, field, count, per_unit)
        return Cost(
            total=bill.total,
            components=tuple(bill.components),
            currency=self.currency,
            price_version=self.version,
            incomplete=bool(bill.missing),
            missing_units=tuple(bill.missing),
        )

    @staticmethod
    def _charge_images(bill: _Bill, entry: PriceEntry, usage: Usage) -> None:
        """Images are one component: each (size, quality) at its own price."""
        amount = _ZERO
        priced = False
        for image in usage.images:
            if image.count < 0:
                raise ValueError(f"negative usage: images count={image.count}")
            if image.count:
                price = entry.image_price(image.size, image.quality)
                if price is None:
                    if "images" not in bill.missing:
                        bill.missing.append("images")
                else:
                    priced = True
                    amount = _EXACT.add(amount, _EXACT.multiply(price, image.count))
        if priced:
            bill.add("images", amount)


def add_costs(costs: Iterable[Cost]) -> Cost:
    """The exact sum of several costs (e.g. the lines of a batch), component by component."""
    total = _ZERO
    components: dict[str, Decimal] = {}
    missing: list[str] = []
    versions: list[str] = []
    currency = "USD"
    for cost in costs:
        total = _EXACT.add(total, cost.total)
        for name, amount in cost.components:
            components[name] = _EXACT.add(components.get(name, _ZERO), amount)
        missing.extend(unit for unit in cost.missing_units if unit not in missing)
        if cost.price_version not in versions:
            versions.append(cost.price_version)
        currency = cost.currency
    return Cost(
        total=total,
        components=tuple(components.items()),
        currency=currency,
        price_version="+".join(versions),
        incomplete=bool(missing),
        missing_units=tuple(missing),
    )


def _lookup(index: _Index, name: str) -> PriceEntry | None:
    entry = index.entries.get(name)
    if entry is None:
        target = index.aliases.get(name)
        if target is not None:
            entry = index.entries.get(target)
    return entry


def _make_plan(
    entry: PriceEntry, tier: str | None, level: int, batch: bool, provider_mul: Decimal | None
) -> _Plan:
    rates = dict(entry._rate_map)
    if tier is not None:
        rates.update(entry._tier_map[tier])
    if level:
        rates.update(entry.tiers[level - 1].rates)
    multiplier = None
    if batch:
        multiplier = entry.batch_multiplier if entry.batch_multiplier is not None else provider_mul
    tokens = []
    for key, field in _TOKEN_FIELDS:
        rate = rates.get(key)
        per_unit = None
        if rate is not None:
            per_unit = _EXACT.divide(rate, _MILLION)
            # Batch discounts tokens only: providers publish batch token rates, and per-request
            # tool fees (web search) keep their standard price in batch.
            if multiplier is not None:
                per_unit = _EXACT.multiply(per_unit, multiplier)
        tokens.append((key, field, per_unit))
    requests = []
    for key, field in _REQUEST_FIELDS:
        rate = rates.get(key)
        requests.append((key, field, None if rate is None else _EXACT.divide(rate, _THOUSAND)))
    chars = rates.get("characters")
    minute = rates.get("audio_minute")
    return _Plan(
        tokens=tuple(tokens),
        requests=tuple(requests),
        per_character=None if chars is None else _EXACT.divide(chars, _MILLION),
        per_second=None if minute is None else _EXACT.divide(minute, _SIXTY),
    )


# -- parsing ----------------------------------------------------------------------------------

_BOOK_KEYS = {"format", "version", "currency", "providers"}
_PROVIDER_KEYS = {
    "batch_multiplier",
    "snapshot_pattern",
    "service_tier_aliases",
    "aliases",
    "models",
}
_ENTRY_KEYS = {
    "source",
    "effective",
    "note",
    "rates",
    "images",
    "image_default_quality",
    "service_tiers",
    "tiers",
    "batch_multiplier",
    "audio_rounding",
}
_NAME = re.compile(r"[A-Za-z0-9_\-.:@~/]{1,256}")


def _parse_book(data: Mapping[str, Any]) -> PriceBook:
    data = _mapping(data, "price book")
    _check_keys(data, _BOOK_KEYS, "price book")
    if data.get("format") != FORMAT:
        raise PriceBookError(f"format: must be {FORMAT}")
    version = _string(data.get("version"), "version")
    currency = _string(data.get("currency", "USD"), "currency")
    providers = []
    for name, pdata in sorted(_mapping(data.get("providers", {}), "providers").items()):
        providers.append(_parse_provider(_name(name, "providers"), pdata))
    return PriceBook(version=version, currency=currency, providers=tuple(providers))


def _parse_provider(name: str, data: Any) -> ProviderPrices:
    where = f"providers.{name}"
    data = _mapping(data, where)
    _check_keys(data, _PROVIDER_KEYS, where)
    multiplier = None
    if "batch_multiplier" in data:
        multiplier = _amount(data["batch_multiplier"], f"{where}.batch_multiplier")
    pattern = None
    if "snapshot_pattern" in data:
        pattern = _string(data["snapshot_pattern"], f"{where}.snapshot_pattern")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise PriceBookError(f"{where}.snapshot_pattern: {exc}") from exc
        if "base" not in compiled.groupindex:
            raise PriceBookError(f"{where}.snapshot_pattern: needs a (?P<base>...) group")
    tier_aliases = tuple(
        sorted(
            (_name(k, f"{where}.service_tier_aliases"), _string(v, f"{where}.{k}"))
            for k, v in _mapping(data.get("service_tier_aliases", {}), where).items()
        )
    )
    entries = tuple(
        _parse_entry(name, _name(model, f"{where}.models"), edata)
        for model, edata in sorted(_mapping(data.get("models", {}), f"{where}.models").items())
    )
    names = {entry.model for entry in entries}
    aliases = []
    for alias, target in sorted(_mapping(data.get("aliases", {}), f"{where}.aliases").items()):
        alias = _name(alias, f"{where}.aliases")
        target = _string(target, f"{where}.aliases.{alias}")
        if alias in names:
            raise PriceBookError(f"{where}.aliases.{alias}: shadows an entry of the same name")
        if target not in names:
            raise PriceBookError(f"{where}.aliases.{alias}: no entry named {target!r}")
        aliases.append((alias, target))
    return ProviderPrices(
        name=name,
        batch_multiplier=multiplier,
        snapshot_pattern=pattern,
        service_tier_aliases=tier_aliases,
        aliases=tuple(aliases),
        entries=entries,
    )


def _parse_entry(provider: str, model: str, data: Any) -> PriceEntry:
    where = f"providers.{provider}.models.{model}"
    data = _mapping(data, where)
    _check_keys(data, _ENTRY_KEYS, where)
    effective = data.get("effective")
    if isinstance(effective, date):
        effective = effective.isoformat()
    effective = _string(effective, f"{where}.effective")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", effective):
        raise PriceBookError(f"{where}.effective: must be YYYY-MM-DD")
    rates = _parse_rates(data.get("rates", {}), f"{where}.rates")
    images = []
    for quality, sizes in sorted(_mapping(data.get("images", {}), f"{where}.images").items()):
        for size, price in sorted(_mapping(sizes, f"{where}.images.{quality}").items()):
            images.append((quality, size, _amount(price, f"{where}.images.{quality}.{size}")))
    default_quality = data.get("image_default_quality")
    if default_quality is not None:
        default_quality = _string(default_quality, f"{where}.image_default_quality")
    service_tiers = tuple(
        (_name(tier, f"{where}.service_tiers"), _parse_rates(r, f"{where}.service_tiers.{tier}"))
        for tier, r in sorted(_mapping(data.get("service_tiers", {}), where).items())
    )
    tiers = []
    raw_tiers = data.get("tiers", [])
    if not isinstance(raw_tiers, list):
        raise PriceBookError(f"{where}.tiers: must be an array of tables")
    for i, raw in enumerate(raw_tiers):
        raw = dict(_mapping(raw, f"{where}.tiers[{i}]"))
        above = raw.pop("above_prompt_tokens", None)
        if isinstance(above, bool) or not isinstance(above, int) or above < 0:
            raise PriceBookError(f"{where}.tiers[{i}].above_prompt_tokens: a whole number >= 0")
        tiers.append(LongContextTier(above, _parse_rates(raw, f"{where}.tiers[{i}]")))
    tiers.sort(key=lambda t: t.above_prompt_tokens)
    if len({t.above_prompt_tokens for t in tiers}) != len(tiers):
        raise PriceBookError(f"{where}.tiers: two tiers with the same threshold")
    multiplier = None
    if "batch_multiplier" in data:
        multiplier = _amount(data["batch_multiplier"], f"{where}.batch_multiplier")
    rounding = _string(data.get("audio_rounding", "exact"), f"{where}.audio_rounding")
    if rounding not in _AUDIO_ROUNDING:
        raise PriceBookError(f"{where}.audio_rounding: one of {', '.join(_AUDIO_ROUNDING)}")
    return PriceEntry(
        provider=provider,
        model=model,
        source=_string(data.get("source"), f"{where}.source"),
        effective=effective,
        rates=rates,
        images=tuple(images),
        image_default_quality=default_quality,
        service_tiers=service_tiers,
        tiers=tuple(tiers),
        batch_multiplier=multiplier,
        audio_rounding=rounding,
        note=_string(data.get("note", ""), f"{where}.note"),
    )


def _parse_rates(data: Any, where: str) -> Rates:
    data = _mapping(data, where)
    _check_keys(data, _RATE_KEY_SET, where)
    rates = tuple((key, _amount(data[key], f"{where}.{key}")) for key in RATE_KEYS if key in data)
    for key, rate in rates:
        if key == "audio_minute":
            try:
                _EXACT.divide(rate, _SIXTY)
            except Inexact:
                # Guarantees seconds x rate/60 is exact for every whole or decimal second count.
                raise PriceBookError(
                    f"{where}.audio_minute: {rate} per minute is not a whole per-second amount; "
                    "give a rate divisible by 60"
                ) from None
    return rates


def _amount(value: Any, where: str) -> Decimal:
    # Floats are refused: 0.1 as a float is not 0.1, and money must not depend on binary rounding.
    if isinstance(value, bool | float):
        raise PriceBookError(f"{where}: write money as a decimal (TOML number or string)")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise PriceBookError(f"{where}: not a decimal number") from None
    else:
        raise PriceBookError(f"{where}: not a decimal number")
    if not amount.is_finite() or amount < 0:
        raise PriceBookError(f"{where}: must be a finite amount >= 0")
    return amount


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PriceBookError(f"{where}: must be a string")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise PriceBookError(f"{where}: invalid name {value!r}")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PriceBookError(f"{where}: must be a table")
    return value


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    # Unknown keys are errors, so a typo ("ouput") cannot silently drop a rate.
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise PriceBookError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")


# -- dumping ----------------------------------------------------------------------------------


def _to_mapping(book: PriceBook) -> dict[str, Any]:
    """The book as plain data in the file format (Decimals kept as Decimals)."""
    providers: dict[str, Any] = {}
    for p in book.providers:
        pdata: dict[str, Any] = {}
        if p.batch_multiplier is not None:
            pdata["batch_multiplier"] = p.batch_multiplier
        if p.snapshot_pattern is not None:
            pdata["snapshot_pattern"] = p.snapshot_pattern
        if p.service_tier_aliases:
            pdata["service_tier_aliases"] = dict(p.service_tier_aliases)
        if p.aliases:
            pdata["aliases"] = dict(p.aliases)
        pdata["models"] = {e.model: _entry_mapping(e) for e in p.entries}
        providers[p.name] = pdata
    return {
        "format": FORMAT,
        "version": book.version,
        "currency": book.currency,
        "providers": providers,
    }


def _entry_mapping(e: PriceEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"source": e.source, "effective": e.effective}
    if e.note:
        out["note"] = e.note
    if e.batch_multiplier is not None:
        out["batch_multiplier"] = e.batch_multiplier
    if e.audio_rounding != "exact":
        out["audio_rounding"] = e.audio_rounding
    if e.image_default_quality is not None:
        out["image_default_quality"] = e.image_default_quality
    if e.rates:
        out["rates"] = dict(e.rates)
    if e.images:
        images: dict[str, dict[str, Decimal]] = {}
        for quality, size, price in e.images:
            images.setdefault(quality, {})[size] = price
        out["images"] = images
    if e.service_tiers:
        out["service_tiers"] = {name: dict(rates) for name, rates in e.service_tiers}
    if e.tiers:
        out["tiers"] = [
            {"above_prompt_tokens": t.above_prompt_tokens, **dict(t.rates)} for t in e.tiers
        ]
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    if _BARE_KEY.fullmatch(name):
        return name
    return _str(name)


def _str(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(value: Any) -> str:
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        # Fixed notation: TOML has no Decimal("1E+1") form. An integral value is written as a
        # TOML integer, which loads back as the same Decimal value.
        return format(value, "f")
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__}")


def _dump_table(lines: list[str], path: str, table: dict[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict | list)}
    inline = {k: v for k, v in table.items() if k in ("service_tier_aliases", "aliases")}
    nested = {k: v for k, v in table.items() if isinstance(v, dict | list) and k not in inline}
    if lines:
        lines.append("")
    lines.append(f"[{path}]")
    for k, v in scalars.items():
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in inline.items():
        # Written as a sub-table (one line per alias) rather than inline, for readability.
        nested[k] = v
    for k, v in nested.items():
        sub = f"{path}.{_key(k)}"
        if isinstance(v, list):
            for item in v:
                lines.append("")
                lines.append(f"[[{sub}]]")
                for ik, iv in item.items():
                    lines.append(f"{_key(ik)} = {_value(iv)}")
        elif all(not isinstance(x, dict) for x in v.values()):
            lines.append("")
            lines.append(f"[{sub}]")
            for ik, iv in v.items():
                lines.append(f"{_key(ik)} = {_value(iv)}")
        else:
            _dump_table(lines, sub, v)


def _dump_book(book: PriceBook) -> str:
    data = _to_mapping(book)
    lines = [
        f"format = {FORMAT}",
        f"version = {_str(book.version)}",
        f"currency = {_str(book.currency)}",
    ]
    for name, pdata in data["providers"].items():
        provider_path = f"providers.{_key(name)}"
        models = pdata.pop("models")
        _dump_table(lines, provider_path, pdata)
        for model, edata in models.items():
            _dump_table(lines, f"{provider_path}.models.{_key(model)}", edata)
    return "\n".join(lines) + "\n"
