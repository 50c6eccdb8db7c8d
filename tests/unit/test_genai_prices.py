"""Cross-check of the shipped price book against the `genai-prices` package's bundled data.

A rate on which the two disagree is allowed only where our entry documents why it is more precise
(its `note` names the unit family: audio or image rates genai-prices folds into plain tokens, or a
long-context tier it does not list). Any other difference fails and is printed for review.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

pytest.importorskip("genai_prices")

from meshproxy.contrib.genai_prices import (
    Difference,
    compare,
    entries_from_genai_prices,
)
from meshproxy_core.pricing import PriceBook
from meshproxy_core.records import Usage

BOOK = PriceBook.default()


def _explained(d: Difference) -> bool:
    entry = BOOK.resolve(d.provider, d.model)
    assert entry is not None
    note = entry.note.lower()
    if not note:
        return False
    if "@>" in d.key:
        return "over" in note  # "Prompts over 200K tokens ... long-context rates"
    keys = {key for key, _ in entry.rates}
    if "image" in d.key or "output_image" in keys:
        return "image" in note
    if "audio" in d.key or keys & {"input_audio", "output_audio"}:
        return "audio" in note
    return False


def test_book_agrees_with_genai_prices() -> None:
    differences = compare(BOOK)
    unexplained = [d for d in differences if not _explained(d)]
    assert not unexplained, "\n".join(
        f"{d.provider}/{d.model} ({d.genai_model}) {d.key}: ours={d.ours} theirs={d.theirs}"
        for d in unexplained
    )


def test_compare_covers_the_main_models() -> None:
    # The comparison must actually run over the models: a broken matcher would make it vacuous.
    differences = compare(BOOK)
    compared = {d.model for d in differences}
    assert "gpt-image-1" in compared  # a known, documented difference
    # And identical models produce no difference: gpt-4o and claude-sonnet-4-5 agree.
    assert "gpt-4o" not in compared and "claude-sonnet-4-5" not in compared


def test_entries_load_as_a_price_book() -> None:
    data = entries_from_genai_prices(effective=date(2026, 12, 4))
    book = PriceBook.from_mapping(data)
    # gpt-4o from genai-prices: 1M in x 2.50 + 1M out x 10 = 12.50
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert book.price("openai", "gpt-4o", usage).total == Decimal("12.50")
    # whisper-1: $0.36/hour -> $0.006/minute -> 60 s = 0.006
    assert book.price("openai", "whisper-1", Usage(audio_seconds=Decimal(60))).total == Decimal(
        "0.006"
    )
    assert PriceBook.from_toml(book.to_toml()) == book
