"""Worked examples for the price book. Every expected amount is computed by hand in a comment.

Rates in the file are USD per 1M tokens (per 1M characters, per minute, per 1K requests, per
image); so `n tokens x rate / 1_000_000` and so on.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from meshproxy_core.pricing import (
    PriceBook,
    PriceBookError,
    PricingError,
    quantize_money,
)
from meshproxy_core.records import Cost, ImageCount, Usage

D = Decimal


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.default()


def components(cost: Cost) -> dict[str, Decimal]:
    return dict(cost.components)


# -- tokens -----------------------------------------------------------------------------------


def test_openai_input_cached_output(book: PriceBook) -> None:
    # gpt-4o: $2.50 in, $1.25 cached, $10 out per 1M.
    # 1000 x 2.50 / 1e6 = 0.0025 ; 500 x 1.25 / 1e6 = 0.000625 ; 200 x 10 / 1e6 = 0.002
    cost = book.price(
        "openai", "gpt-4o", Usage(input_tokens=1000, cache_read_tokens=500, output_tokens=200)
    )
    assert components(cost) == {
        "input": D("0.0025"),
        "cache_read": D("0.000625"),
        "output": D("0.002"),
    }
    assert cost.total == D("0.005125")
    assert cost.currency == "USD"
    assert cost.price_version == book.version
    assert not cost.incomplete and cost.missing_units == ()


def test_component_order_is_stable(book: PriceBook) -> None:
    cost = book.price(
        "openai", "gpt-4o", Usage(output_tokens=1, input_tokens=1, cache_read_tokens=1)
    )
    assert [name for name, _ in cost.components] == ["input", "cache_read", "output"]


def test_reasoning_tokens_are_never_priced(book: PriceBook) -> None:
    # o3: 1000 output tokens of which 800 reasoning: 1000 x 8 / 1e6 = 0.008 (not 1800 tokens)
    cost = book.price("openai", "o3", Usage(output_tokens=1000, reasoning_tokens=800))
    assert cost.total == D("0.008")
    assert not cost.incomplete


def test_anthropic_cache_5m_vs_1h(book: PriceBook) -> None:
    # claude-sonnet-4-5: in 3, read 0.30, 5m write 3.75, 1h write 6, out 15 per 1M.
    # 1000 x 3 = 0.003 ; 10000 x 0.30 = 0.003 ; 2000 x 3.75 = 0.0075 ; 3000 x 6 = 0.018 ;
    # 500 x 15 = 0.0075  (all / 1e6)  -> 0.039
    usage = Usage(
        input_tokens=1000,
        cache_read_tokens=10_000,
        cache_write_5m_tokens=2000,
        cache_write_1h_tokens=3000,
        output_tokens=500,
    )
    cost = book.price("anthropic", "claude-sonnet-4-5", usage)
    assert components(cost) == {
        "input": D("0.003"),
        "cache_read": D("0.003"),
        "cache_write_5m": D("0.0075"),
        "cache_write_1h": D("0.018"),
        "output": D("0.0075"),
    }
    assert cost.total == D("0.039")
    # The same 100,000 tokens cost 1.25x input as a 5m write and 2x input as a 1h write:
    # 100000 x 3.75 / 1e6 = 0.375 ; 100000 x 6 / 1e6 = 0.6
    five = book.price("anthropic", "claude-sonnet-4-5", Usage(cache_write_5m_tokens=100_000))
    hour = book.price("anthropic", "claude-sonnet-4-5", Usage(cache_write_1h_tokens=100_000))
    assert (five.total, hour.total) == (D("0.375"), D("0.6"))


def test_explicit_cache_rates_match_multipliers(book: PriceBook) -> None:
    # The file stores explicit rates; for models on the standard multipliers they must agree.
    for model in ("claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-opus"):
        entry = book.resolve("anthropic", model)
        assert entry is not None
        base = entry.rate("input")
        assert base is not None
        assert entry.rate("cache_write_5m") == base * D("1.25")
        assert entry.rate("cache_write_1h") == base * 2
    # claude-3-haiku: 0.25 x 1.25 = 0.3125 and 0.25 x 0.1 = 0.025, but Anthropic publishes
    # $0.30 and $0.03: the file keeps the published rates, which is why it stores rates.
    entry = book.resolve("anthropic", "claude-3-haiku")
    assert entry is not None
    assert (entry.rate("cache_write_5m"), entry.rate("cache_read")) == (D("0.30"), D("0.03"))


# -- long context -----------------------------------------------------------------------------


def test_long_context_tier_applies_to_whole_request(book: PriceBook) -> None:
    # Prompt = 150000 input + 60000 cache read = 210000 > 200000 -> every token at tier rates:
    # 150000 x 6 / 1e6 = 0.9 ; 60000 x 0.60 / 1e6 = 0.036 ; 1000 x 22.50 / 1e6 = 0.0225
    usage = Usage(input_tokens=150_000, cache_read_tokens=60_000, output_tokens=1000)
    cost = book.price("anthropic", "claude-sonnet-4-5-20250929", usage)
    assert components(cost) == {"input": D("0.9"), "cache_read": D("0.036"), "output": D("0.0225")}
    assert cost.total == D("0.9585")


def test_long_context_threshold_is_strictly_greater(book: PriceBook) -> None:
    # Exactly 200000 prompt tokens is not over the threshold: 200000 x 3 / 1e6 = 0.6
    cost = book.price("anthropic", "claude-sonnet-4-5", Usage(input_tokens=200_000))
    assert cost.total == D("0.6")
    # 200001 is: 200001 x 6 / 1e6 = 1.200006
    cost = book.price("anthropic", "claude-sonnet-4-5", Usage(input_tokens=200_001))
    assert cost.total == D("1.200006")


def test_long_context_and_batch_stack(book: PriceBook) -> None:
    # 1M input on sonnet-4-5 is over 200K: 1M x 6 x 0.5 (batch) / 1e6 = 3
    cost = book.price("anthropic", "claude-sonnet-4-5", Usage(input_tokens=1_000_000), batch=True)
    assert cost.total == D("3")


def test_long_context_counts_cache_writes(book: PriceBook) -> None:
    # Haiku 5.5 tier above 100K: 50000 input + 50001 5m-write = 100001 prompt tokens.
    # 50000 x 0.50 / 1e6 = 0.025 ; 50001 x 0.625 / 1e6 = 0.031250625 ; 1000 x 2.50 / 1e6 = 0.0025
    usage = Usage(input_tokens=50_000, cache_write_5m_tokens=50_001, output_tokens=1000)
    cost = book.price("anthropic", "claude-haiku-5-5", usage)
    assert cost.total == D("0.025") + D("0.031250625") + D("0.0025")


# -- batch and service tiers ------------------------------------------------------------------


def test_batch_halves_tokens_not_tool_requests(book: PriceBook) -> None:
    # claude-3-7-sonnet batch: 1M in x 3 x 0.5 = 1.5 ; 1M out x 15 x 0.5 = 7.5 ;
    # 2 searches x $10/1000 = 0.02 (web search has no batch discount) -> 9.02
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, web_search_requests=2)
    cost = book.price("anthropic", "claude-3-7-sonnet", usage, batch=True)
    assert components(cost) == {"input": D("1.5"), "output": D("7.5"), "web_search": D("0.02")}
    assert cost.total == D("9.02")


def test_batch_from_service_tier_is_applied_once(book: PriceBook) -> None:
    # Anthropic batch results say service_tier "batch": 1M cache read x 0.30 x 0.5 = 0.15,
    # with or without batch=True (not 0.075).
    usage = Usage(cache_read_tokens=1_000_000)
    a = book.price("anthropic", "claude-3-7-sonnet", usage, service_tier="batch")
    b = book.price("anthropic", "claude-3-7-sonnet", usage, service_tier="batch", batch=True)
    assert a.total == b.total == D("0.15")


def test_openai_flex_and_priority(book: PriceBook) -> None:
    usage = Usage(input_tokens=1_000_000, cache_read_tokens=1_000_000, output_tokens=1_000_000)
    # standard: 1.25 + 0.125 + 10 = 11.375
    assert book.price("openai", "gpt-5", usage).total == D("11.375")
    assert book.price("openai", "gpt-5", usage, service_tier="default").total == D("11.375")
    # flex: 0.625 + 0.0625 + 5 = 5.6875
    assert book.price("openai", "gpt-5", usage, service_tier="flex").total == D("5.6875")
    # priority: 2.50 + 0.25 + 20 = 22.75 ; "fast" is an alias of priority
    assert book.price("openai", "gpt-5", usage, service_tier="priority").total == D("22.75")
    assert book.price("openai", "gpt-5", usage, service_tier="fast").total == D("22.75")
    # o4-mini flex cached input is the published $0.138: 1M x 0.138 / 1e6 = 0.138
    cost = book.price("openai", "o4-mini", Usage(cache_read_tokens=1_000_000), service_tier="flex")
    assert cost.total == D("0.138")
    # A tier the model does not publish (gpt-5-nano priority) falls back to standard rates:
    # 1M x 0.05 / 1e6 = 0.05
    cost = book.price(
        "openai", "gpt-5-nano", Usage(input_tokens=1_000_000), service_tier="priority"
    )
    assert cost.total == D("0.05")


def test_openai_batch(book: PriceBook) -> None:
    # gpt-4.1-mini batch: 1M in x 0.40 x 0.5 = 0.20 ; 1M out x 1.60 x 0.5 = 0.80
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert book.price("openai", "gpt-4.1-mini", usage, batch=True).total == D("1.00")


# -- images -----------------------------------------------------------------------------------


def test_dalle3_per_image(book: PriceBook) -> None:
    # 2 x standard 1024x1024 x 0.040 = 0.080 ; 1 x hd 1792x1024 x 0.120 = 0.120 -> 0.200
    usage = Usage(images=(ImageCount("1024x1024", "standard", 2), ImageCount("1792x1024", "hd", 1)))
    cost = book.price("openai", "dall-e-3", usage)
    assert components(cost) == {"images": D("0.200")}
    # standard 1024x1792 = 0.080 ; hd 1024x1024 = 0.080 ; hd 1024x1792 = 0.120
    for size, quality, price in (
        ("1024x1792", "standard", "0.080"),
        ("1024x1024", "hd", "0.080"),
        ("1024x1792", "hd", "0.120"),
        ("1024x1024", "standard", "0.04"),
    ):
        usage = Usage(images=(ImageCount(size, quality, 1),))
        assert book.price("openai", "dall-e-3", usage).total == D(price)


def test_dalle2_sizes_and_default_quality(book: PriceBook) -> None:
    # 256 -> 0.016, 512 -> 0.018, 1024 -> 0.020 ; 3 x 512 = 0.054
    for size, price in (("256x256", "0.016"), ("512x512", "0.018"), ("1024x1024", "0.020")):
        usage = Usage(images=(ImageCount(size, "standard", 1),))
        assert book.price("openai", "dall-e-2", usage).total == D(price)
    for quality in ("", "auto", "standard"):
        usage = Usage(images=(ImageCount("512x512", quality, 3),))
        assert book.price("openai", "dall-e-2", usage).total == D("0.054")


def test_unknown_image_size_is_incomplete(book: PriceBook) -> None:
    usage = Usage(images=(ImageCount("1024x1024", "ultra", 1), ImageCount("1024x1024", "hd", 1)))
    cost = book.price("openai", "dall-e-3", usage)
    assert cost.incomplete and cost.missing_units == ("images",)
    assert cost.total == D("0.080")  # the hd image is still priced


def test_gpt_image_tokens(book: PriceBook) -> None:
    # gpt-image-1: text in 5, image in 10, image out 40 per 1M.
    # 50 x 5 / 1e6 = 0.00025 ; 300 x 10 / 1e6 = 0.003 ; 4160 x 40 / 1e6 = 0.1664 -> 0.16965
    usage = Usage(input_tokens=50, input_image_tokens=300, output_image_tokens=4160)
    cost = book.price("openai", "gpt-image-1", usage)
    assert components(cost) == {
        "input": D("0.00025"),
        "input_image": D("0.003"),
        "output_image": D("0.1664"),
    }
    assert cost.total == D("0.16965")


# -- speech, transcription --------------------------------------------------------------------


def test_tts_characters(book: PriceBook) -> None:
    # tts-1: 1000 chars x 15 / 1e6 = 0.015 ; tts-1-hd: 4096 x 30 / 1e6 = 0.12288
    assert book.price("openai", "tts-1", Usage(input_characters=1000)).total == D("0.015")
    cost = book.price("openai", "tts-1-hd", Usage(input_characters=4096))
    assert components(cost) == {"characters": D("0.12288")}


def test_tts_tokens(book: PriceBook) -> None:
    # gpt-4o-mini-tts: 100 text in x 0.60 / 1e6 = 0.00006 ; 1000 audio out x 12 / 1e6 = 0.012
    usage = Usage(input_tokens=100, output_audio_tokens=1000)
    assert book.price("openai", "gpt-4o-mini-tts", usage).total == D("0.01206")


def test_whisper_seconds(book: PriceBook) -> None:
    # $0.006 per minute = $0.0001 per second exactly.
    # 9 s -> 0.0009 ; 60 s -> 0.006 ; 8.47 s is billed as 9 s (rounded up) -> 0.0009
    for seconds, price in (("9", "0.0009"), ("60", "0.006"), ("8.47", "0.0009"), ("0.2", "0.0001")):
        cost = book.price("openai", "whisper-1", Usage(audio_seconds=D(seconds)))
        assert components(cost) == {"audio_seconds": D(price)}


def test_transcribe_tokens(book: PriceBook) -> None:
    # gpt-4o-transcribe: 20 text in x 2.50 = 0.00005 ; 1500 audio in x 6 = 0.009 ;
    # 200 out x 10 = 0.002  (all / 1e6)  -> 0.01105
    usage = Usage(input_tokens=20, input_audio_tokens=1500, output_tokens=200)
    assert book.price("openai", "gpt-4o-transcribe", usage).total == D("0.01105")


def test_audio_chat_tokens(book: PriceBook) -> None:
    # gpt-4o-audio-preview: audio in 40, audio out 80 per 1M.
    # 1000 x 40 / 1e6 = 0.04 ; 500 x 80 / 1e6 = 0.04
    usage = Usage(input_audio_tokens=1000, output_audio_tokens=500)
    assert book.price("openai", "gpt-4o-audio-preview-2024-12-17", usage).total == D("0.08")


# -- tools ------------------------------------------------------------------------------------


def test_web_search_per_request(book: PriceBook) -> None:
    # $10 per 1,000 searches: 3 x 10 / 1000 = 0.03
    cost = book.price("anthropic", "claude-haiku-4-5", Usage(web_search_requests=3))
    assert components(cost) == {"web_search": D("0.03")}
    # Web fetch has no fee beyond tokens: priced at zero explicitly, not flagged.
    cost = book.price("anthropic", "claude-haiku-4-5", Usage(web_fetch_requests=5))
    assert cost.total == 0 and not cost.incomplete
    # Code execution is billed per container-hour: no per-request rate, so flagged.
    cost = book.price("anthropic", "claude-haiku-4-5", Usage(code_execution_requests=1))
    assert cost.incomplete and cost.missing_units == ("code_execution",)


# -- resolution -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "entry"),
    [
        ("openai", "gpt-4o", "gpt-4o"),
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),  # snapshot rule
        ("openai", "gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # own entry wins over the rule
        ("openai", "gpt-5.2-2025-12-11", "gpt-5.2"),  # not gpt-5
        ("openai", "gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),  # not gpt-4.1
        ("openai", "gpt-5-chat-latest", "gpt-5"),  # explicit alias
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-opus-4-20250514", "claude-opus-4-0"),  # rule, then alias
        ("anthropic", "claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ],
)
def test_resolve(book: PriceBook, provider: str, model: str, entry: str) -> None:
    found = book.resolve(provider, model)
    assert found is not None and found.model == entry
    assert book.resolve(provider, model) is found  # cached


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o-mini-foo"),  # no prefix matching
        ("openai", "gpt-4o2"),
        ("openai", "gpt-4o-2024-08"),  # not a full date
        ("openai", "gpt-4o-20240806"),  # OpenAI snapshots use dashed dates
        ("anthropic", "claude-sonnet-4-5-2025-09-29"),  # Anthropic uses compact dates
        ("anthropic", "gpt-4o"),  # wrong provider
        ("google", "gpt-4o"),
        ("openai", ""),
    ],
)
def test_resolve_refuses(book: PriceBook, provider: str, model: str) -> None:
    assert book.resolve(provider, model) is None


def test_unknown_model_raises(book: PriceBook) -> None:
    with pytest.raises(PricingError) as info:
        book.price("openai", "gpt-9-ultra", Usage(input_tokens=1))
    assert info.value.code == "model_not_priced"
    assert isinstance(info.value, Exception)


def test_missing_unit_is_incomplete_not_zero(book: PriceBook) -> None:
    # gpt-4o has no audio rates: the audio tokens are not priced and are named; the text is.
    usage = Usage(input_tokens=1000, output_audio_tokens=50)
    cost = book.price("openai", "gpt-4o", usage)
    assert cost.incomplete
    assert cost.missing_units == ("output_audio",)
    assert cost.total == D("0.0025")  # 1000 x 2.50 / 1e6
    # tts-1 has no token rates at all.
    cost = book.price("openai", "tts-1", Usage(input_tokens=5, input_characters=10))
    assert cost.missing_units == ("input",)


def test_zero_usage_costs_zero(book: PriceBook) -> None:
    cost = book.price("openai", "gpt-4o", Usage())
    assert cost.total == 0 and cost.components == () and not cost.incomplete


def test_negative_usage_is_refused(book: PriceBook) -> None:
    with pytest.raises(ValueError):
        book.price("openai", "gpt-4o", Usage(input_tokens=-1))


# -- can_price --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "endpoint", "model", "expected"),
    [
        ("openai", "chat.completions", "gpt-4o", True),
        ("openai", "responses", "gpt-5-2025-08-07", True),
        ("openai", "chat.completions", "text-embedding-3-small", False),
        ("openai", "embeddings", "text-embedding-3-small", True),
        ("openai", "embeddings", "tts-1", False),
        ("openai", "images.generations", "dall-e-3", True),
        ("openai", "images.variations", "dall-e-2", True),
        ("openai", "images.generations", "gpt-image-1", True),
        ("openai", "images.variations", "gpt-image-1", False),
        ("openai", "images.generations", "gpt-4o", False),
        ("openai", "audio.speech", "tts-1", True),
        ("openai", "audio.speech", "gpt-4o-mini-tts", True),
        ("openai", "audio.speech", "gpt-4o", False),
        ("openai", "audio.transcriptions", "whisper-1", True),
        ("openai", "audio.translations", "whisper-1", True),
        ("openai", "audio.transcriptions", "gpt-4o-mini-transcribe", True),
        ("openai", "audio.transcriptions", "tts-1", False),
        ("openai", "chat.completions", "nope", False),
        ("openai", "models", "anything", True),  # free endpoint
        ("openai", "no.such.endpoint", "gpt-4o", False),
        ("anthropic", "messages", "claude-sonnet-4-5-20250929", True),
        ("anthropic", "messages.batches", "claude-haiku-4-5", True),
        ("anthropic", "messages.count_tokens", "claude-whatever", True),
        ("anthropic", "complete", "claude-2.1", False),
    ],
)
def test_can_price(
    book: PriceBook, provider: str, endpoint: str, model: str, expected: bool
) -> None:
    assert book.can_price(provider, endpoint, model) is expected


def test_docs_worked_example(book: PriceBook) -> None:
    # docs/pricing.md: 0.003 + 0.003 + 0.0075 + 0.018 + 0.0075 + 1 search x 10 / 1000 = 0.049 ;
    # batch: tokens 0.039 x 0.5 = 0.0195, search stays 0.01 -> 0.0295
    usage = Usage(
        input_tokens=1000,
        cache_read_tokens=10_000,
        cache_write_5m_tokens=2000,
        cache_write_1h_tokens=3000,
        output_tokens=500,
        web_search_requests=1,
    )
    assert book.price("anthropic", "claude-sonnet-4-5-20250929", usage).total == D("0.049")
    cost = book.price("anthropic", "claude-sonnet-4-5-20250929", usage, batch=True)
    assert cost.total == D("0.0295")


def test_shipped_models(book: PriceBook) -> None:
    assert len(book.models("openai")) == 35  # gpt-4o-transcribe-diarize has its own entry
    assert len(book.models("anthropic")) == 22
    assert ("openai", "whisper-1") in book.models()


# -- the file ---------------------------------------------------------------------------------


def test_default_book_round_trips(book: PriceBook) -> None:
    text = book.to_toml()
    again = PriceBook.from_toml(text)
    assert again == book
    assert again.to_toml() == text


def test_every_entry_has_source_and_effective(book: PriceBook) -> None:
    for provider in book.providers:
        for entry in provider.entries:
            assert entry.source.startswith("https://"), entry.model
            assert len(entry.effective) == 10, entry.model


def test_with_overrides() -> None:
    base = PriceBook.default()
    book = base.with_overrides(
        {
            "providers": {
                "openai": {
                    "models": {
                        "my-ft": {
                            "source": "https://example.test",
                            "effective": "2026-01-01",
                            "rates": {"input": "1", "output": "2"},
                        },
                        "gpt-4o": {
                            "source": "https://example.test/contract",
                            "effective": "2026-01-01",
                            "rates": {"input": "2", "output": "8"},
                        },
                    },
                    "aliases": {"ft:gpt-4o:acme::x1": "my-ft"},
                }
            }
        }
    )
    assert book.version == f"{base.version}+overrides"
    # 1M x 1 / 1e6 = 1
    assert book.price("openai", "ft:gpt-4o:acme::x1", Usage(input_tokens=1_000_000)).total == 1
    # The replaced gpt-4o has no cached rate any more: flagged, not priced at the old rate.
    cost = book.price(
        "openai", "gpt-4o-2024-08-06", Usage(input_tokens=1_000_000, cache_read_tokens=1)
    )
    assert cost.total == 2 and cost.missing_units == ("cache_read",)
    assert base.resolve("openai", "my-ft") is None  # the base book is unchanged
    assert PriceBook.from_toml(book.to_toml()) == book


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"rates": {"input": 0.5}}, "decimal"),  # a float
        ({"rates": {"ouput": "1"}}, "unknown key"),
        ({"rates": {"input": "-1"}}, ">= 0"),
        ({"rates": {"input": "NaN"}}, "finite"),
        ({"rates": {"audio_minute": "0.007"}}, "divisible by 60"),
        ({"effective": "yesterday"}, "YYYY-MM-DD"),
        ({"tiers": [{"input": "1"}]}, "above_prompt_tokens"),
        ({"audio_rounding": "nearest"}, "audio_rounding"),
    ],
)
def test_invalid_entries(patch: dict[str, object], message: str) -> None:
    entry: dict[str, object] = {"source": "https://x.test", "effective": "2026-01-01"}
    entry.update(patch)
    data = {"format": 1, "version": "t", "providers": {"p": {"models": {"m": entry}}}}
    with pytest.raises(PriceBookError, match=message):
        PriceBook.from_mapping(data)


def test_invalid_book_shapes() -> None:
    with pytest.raises(PriceBookError, match="format"):
        PriceBook.from_mapping({"format": 2, "version": "t"})
    with pytest.raises(PriceBookError, match="no entry"):
        PriceBook.from_mapping(
            {"format": 1, "version": "t", "providers": {"p": {"aliases": {"a": "missing"}}}}
        )
    with pytest.raises(PriceBookError, match="base"):
        PriceBook.from_mapping(
            {"format": 1, "version": "t", "providers": {"p": {"snapshot_pattern": "(.+)-x"}}}
        )
    with pytest.raises(PriceBookError, match="invalid TOML"):
        PriceBook.from_toml("format = ")


def test_quantize_for_display_only() -> None:
    assert quantize_money(D("0.0000125")) == D("0.000012")  # half-even
    assert quantize_money(D("0.039"), D("0.01")) == D("0.04")
