"""Shared test helpers: the recorded example payloads live in tests/fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixture_bytes():
    """Read one file from tests/fixtures as bytes: fixture_bytes("openai_responses.json")."""

    def read(name: str) -> bytes:
        return (FIXTURES / name).read_bytes()

    return read
