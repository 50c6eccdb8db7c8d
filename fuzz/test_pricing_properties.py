"""Properties of the price book: money is exact, never negative, monotone and additive, and the
file format round-trips. The hypothesis profile (ci / fuzz / dev) comes from fuzz/conftest.py."""

from __future__ import annotations

from decimal import Decimal

import attrs
from hypothesis import assume, given
from hypothesis import strategies as st

from meshproxy_core.pricing import RATE_KEYS, PriceBook
from meshproxy_core.records import Cost, ImageCount, Usage

BOOK = PriceBook.default()
MODELS = BOOK.models()
TIERS = st.sampled_from([None, "default", "flex", "priority", "fast", "batch", "scale"])

_COUNT = st.integers(min_value=0, max_value=3_000_000)
_SMALL = st.integers(min_value=0, max_value=50)
_IMAGE = st.builds(
    ImageCount,
    size=st.sampled_from(["256x256", "512x512", "1024x1024", "1024x1792", "1792x1024", "9x9"]),
    quality=st.sampled_from(["standard", "hd", "", "auto", "low"]),
    count=st.integers(min_value=0, max_value=10),
)
_SECONDS = st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False)


def usages(seconds: st.SearchStrategy[Decimal] = _SECONDS) -> st.SearchStrategy[Usage]:
    return st.builds(
        Usage,
        input_tokens=_COUNT,
        cache_read_tokens=_COUNT,
        cache_write_5m_tokens=_COUNT,
        cache_write_1h_tokens=_COUNT,
        input_audio_tokens=_COUNT,
        input_image_tokens=_COUNT,
        output_tokens=_COUNT,
        output_audio_tokens=_COUNT,
        output_image_tokens=_COUNT,
        images=st.lists(_IMAGE, max_size=3).map(tuple),
        input_characters=_COUNT,
        audio_seconds=seconds,
        web_search_requests=_SMALL,
        web_fetch_requests=_SMALL,
        code_execution_requests=_SMALL,
    )


_INT_FIELDS = [f.name for f in attrs.fields(Usage) if f.type in ("int", int)]


def _assert_exact(cost: Cost) -> None:
    assert type(cost.total) is Decimal
    assert cost.total.is_finite()
    for _, amount in cost.components:
        assert type(amount) is Decimal
    assert sum((amount for _, amount in cost.components), Decimal(0)) == cost.total


@given(model=st.sampled_from(MODELS), usage=usages(), tier=TIERS, batch=st.booleans())
def test_cost_is_exact_and_never_negative(
    model: tuple[str, str], usage: Usage, tier: str | None, batch: bool
) -> None:
    cost = BOOK.price(*model, usage, service_tier=tier, batch=batch)
    _assert_exact(cost)
    assert cost.total >= 0
    assert all(amount >= 0 for _, amount in cost.components)
    assert cost.incomplete == bool(cost.missing_units)


@given(
    model=st.sampled_from(MODELS),
    usage=usages(),
    field=st.sampled_from(_INT_FIELDS),
    extra=st.integers(min_value=1, max_value=1_000_000),
    tier=TIERS,
    batch=st.booleans(),
)
def test_monotone_in_every_field(
    model: tuple[str, str], usage: Usage, field: str, extra: int, tier: str | None, batch: bool
) -> None:
    more = attrs.evolve(usage, **{field: getattr(usage, field) + extra})
    a = BOOK.price(*model, usage, service_tier=tier, batch=batch)
    b = BOOK.price(*model, more, service_tier=tier, batch=batch)
    assert b.total >= a.total
    # More usage never makes an incomplete cost complete.
    assert set(a.missing_units) <= set(b.missing_units)


@given(model=st.sampled_from(MODELS), usage=usages(), extra=_SECONDS, image=_IMAGE)
def test_monotone_in_seconds_and_images(
    model: tuple[str, str], usage: Usage, extra: Decimal, image: ImageCount
) -> None:
    a = BOOK.price(*model, usage)
    more = attrs.evolve(
        usage, audio_seconds=usage.audio_seconds + extra, images=(*usage.images, image)
    )
    assert BOOK.price(*model, more).total >= a.total


def _add(a: Usage, b: Usage) -> Usage:
    values = {name: getattr(a, name) + getattr(b, name) for name in _INT_FIELDS}
    return Usage(
        **values, images=a.images + b.images, audio_seconds=a.audio_seconds + b.audio_seconds
    )


def _prompt(u: Usage) -> int:
    return (
        u.input_tokens
        + u.cache_read_tokens
        + u.cache_write_5m_tokens
        + u.cache_write_1h_tokens
        + u.input_audio_tokens
        + u.input_image_tokens
    )


# Whole seconds: with fractional seconds, whisper's round-up-per-request is (rightly) not additive.
_WHOLE_SECONDS = st.integers(min_value=0, max_value=100_000).map(Decimal)


@given(
    model=st.sampled_from(MODELS),
    a=usages(_WHOLE_SECONDS),
    b=usages(_WHOLE_SECONDS),
    tier=TIERS,
    batch=st.booleans(),
)
def test_additive_when_no_threshold_is_crossed(
    model: tuple[str, str], a: Usage, b: Usage, tier: str | None, batch: bool
) -> None:
    entry = BOOK.resolve(*model)
    assert entry is not None
    both = _add(a, b)
    thresholds = [t.above_prompt_tokens for t in entry.tiers]
    # The three prompts must sit in the same tier band, else the whole-request rule changes rates.
    bands = {sum(_prompt(u) > t for t in thresholds) for u in (a, b, both)}
    assume(len(bands) == 1)
    pa = BOOK.price(*model, a, service_tier=tier, batch=batch)
    pb = BOOK.price(*model, b, service_tier=tier, batch=batch)
    pab = BOOK.price(*model, both, service_tier=tier, batch=batch)
    assert pa.total + pb.total == pab.total
    assert set(pa.missing_units) | set(pb.missing_units) == set(pab.missing_units)


def test_default_book_round_trips() -> None:
    text = BOOK.to_toml()
    assert PriceBook.from_toml(text) == BOOK
    assert PriceBook.from_toml(text).to_toml() == text


# -- generated books --------------------------------------------------------------------------

_RATE = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False)
_NAME = st.from_regex(r"[a-z][a-z0-9.\-]{0,12}", fullmatch=True)
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)


@st.composite
def _rates(draw: st.DrawFn) -> dict[str, Decimal]:
    keys = draw(st.sets(st.sampled_from([k for k in RATE_KEYS if k != "audio_minute"])))
    rates = {key: draw(_RATE) for key in sorted(keys)}
    if draw(st.booleans()):
        # audio_minute must divide by 60 exactly: build it as a per-second amount x 60.
        rates["audio_minute"] = draw(_RATE) * 60
    return rates


@st.composite
def _entries(draw: st.DrawFn) -> dict[str, object]:
    entry: dict[str, object] = {
        "source": draw(_TEXT),
        "effective": draw(st.dates()).isoformat(),
        "rates": draw(_rates()),
    }
    if draw(st.booleans()):
        entry["note"] = draw(_TEXT)
    if draw(st.booleans()):
        entry["images"] = draw(
            st.dictionaries(
                _NAME, st.dictionaries(_NAME, _RATE, min_size=1, max_size=3), max_size=2
            )
        )
    if draw(st.booleans()):
        entry["service_tiers"] = draw(st.dictionaries(_NAME, _rates(), max_size=2))
    if draw(st.booleans()):
        thresholds = draw(st.sets(st.integers(min_value=0, max_value=10**7), max_size=2))
        entry["tiers"] = [{"above_prompt_tokens": t, **draw(_rates())} for t in sorted(thresholds)]
    if draw(st.booleans()):
        entry["batch_multiplier"] = draw(_RATE)
    if draw(st.booleans()):
        entry["audio_rounding"] = draw(st.sampled_from(["exact", "up_to_second"]))
    return entry


@st.composite
def books(draw: st.DrawFn) -> PriceBook:
    providers: dict[str, object] = {}
    for name in draw(st.sets(_NAME, max_size=2)):
        models = draw(st.dictionaries(_NAME, _entries(), min_size=1, max_size=3))
        provider: dict[str, object] = {"models": models}
        if draw(st.booleans()):
            provider["batch_multiplier"] = draw(_RATE)
        if draw(st.booleans()):
            provider["snapshot_pattern"] = r"^(?P<base>.+)-\d{8}$"
        aliases = draw(st.dictionaries(_NAME, st.sampled_from(sorted(models)), max_size=2))
        provider["aliases"] = {k: v for k, v in aliases.items() if k not in models}
        providers[name] = provider
    return PriceBook.from_mapping(
        {"format": 1, "version": draw(_TEXT), "currency": "USD", "providers": providers}
    )


@given(book=books())
def test_generated_books_round_trip(book: PriceBook) -> None:
    text = book.to_toml()
    again = PriceBook.from_toml(text)
    assert again == book
    assert again.to_toml() == text


@given(book=books(), usage=usages(), batch=st.booleans())
def test_generated_books_price_exactly(book: PriceBook, usage: Usage, batch: bool) -> None:
    for provider, model in book.models():
        cost = book.price(provider, model, usage, batch=batch)
        _assert_exact(cost)
        assert cost.total >= 0
