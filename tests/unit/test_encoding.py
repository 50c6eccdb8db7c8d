"""Incremental content decoding: identity, gzip, deflate; clear errors on bad data."""

from __future__ import annotations

import gzip
import zlib

import pytest

from meshproxy_core.encoding import ContentDecoder, DecodingError

BODY = b'{"usage":{"prompt_tokens":10}}' * 500


def decode_all(encoding: str | None, data: bytes, step: int) -> bytes:
    decoder = ContentDecoder(encoding)
    out = [decoder.decode(data[i : i + step]) for i in range(0, len(data), step)]
    return b"".join(out) + decoder.flush()


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        (None, BODY),
        ("identity", BODY),
        ("gzip", gzip.compress(BODY)),
        ("x-gzip", gzip.compress(BODY)),
        ("GZIP", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),
        ("deflate", zlib.compress(BODY)[2:-4]),  # raw deflate, as some servers send
        ("gzip", gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])),  # two members
        ("deflate, gzip", gzip.compress(zlib.compress(BODY))),
    ],
)
def test_round_trip_any_split(encoding: str | None, encoded: bytes, step: int) -> None:
    assert decode_all(encoding, encoded, step) == BODY


def test_identity_flags() -> None:
    assert ContentDecoder(None).is_identity
    assert ContentDecoder("identity").is_identity
    assert not ContentDecoder("gzip").is_identity
    assert not ContentDecoder("br").is_identity


def test_corrupt_gzip_is_a_clear_error() -> None:
    with pytest.raises(DecodingError, match="corrupt gzip"):
        decode_all("gzip", b"this is not gzip at all", 5)


def test_truncated_gzip_is_an_error_at_flush() -> None:
    decoder = ContentDecoder("gzip")
    decoder.decode(gzip.compress(BODY)[:40])
    with pytest.raises(DecodingError, match="truncated"):
        decoder.flush()


def test_unsupported_coding_is_an_error() -> None:
    with pytest.raises(DecodingError, match="unsupported content-encoding 'br'"):
        ContentDecoder("br").decode(b"x")


def test_trailing_garbage_after_deflate_is_an_error() -> None:
    with pytest.raises(DecodingError):
        decode_all("deflate", zlib.compress(BODY) + b"junk", 1 << 20)


def test_decoding_error_is_a_value_error() -> None:
    assert issubclass(DecodingError, ValueError)
