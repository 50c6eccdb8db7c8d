"""Incremental content decoding of response bodies: identity, gzip, deflate (stdlib zlib).

Owns: `ContentDecoder`, which turns the Content-Encoding'd bytes of a response, split anywhere,
into the identity bytes the usage meters read. `gzip`/`x-gzip` (including several concatenated
gzip members) and `deflate` (zlib-wrapped as RFC 9110 says, or raw deflate as some servers send)
are decoded; `identity` or no header passes bytes through. A stacked value such as
`"deflate, gzip"` is undone in reverse order. Corrupt data raises `DecodingError` with a clear
message, and so does an unsupported coding (br, zstd): the caller then stops metering and marks
the usage unparseable; it must never fail the response it is relaying.

Does not own: asking upstream for an encoding (headers), or what the bytes mean (usage/).
"""

from __future__ import annotations

import zlib
from typing import Any

__all__ = ["ContentDecoder", "DecodingError"]

# zlib wbits: 16 + MAX_WBITS reads gzip, MAX_WBITS reads zlib, -MAX_WBITS reads raw deflate.
_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_RAW = -zlib.MAX_WBITS


class DecodingError(ValueError):
    """The body could not be decoded with its Content-Encoding."""


class _Stage:
    """One coding (gzip or deflate) as a small machine: HEADER (format unknown) -> BODY."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._obj: Any = None  # a zlib decompress object once the format is known
        self._pending = b""  # deflate: bytes held until the first two decide zlib vs raw

    def decode(self, data: bytes) -> bytes:
        if self._obj is None:
            data = self._pending + data
            if self.coding == "deflate" and len(data) < 2:
                self._pending = data
                return b""
            self._pending = b""
            self._obj = zlib.decompressobj(self._wbits(data))
        return self._run(data)

    def flush(self) -> bytes:
        if self._obj is None:
            if self._pending:
                raise DecodingError(f"{self.coding} body ended after {len(self._pending)} byte(s)")
            return b""
        try:
            out = self._obj.flush()
        except zlib.error as exc:
            raise DecodingError(f"corrupt {self.coding} data: {exc}") from None
        if not self._obj.eof:
            raise DecodingError(f"{self.coding} body is truncated")
        return out

    def _wbits(self, head: bytes) -> int:
        if self.coding == "gzip":
            return _GZIP
        # RFC 9110 "deflate" is zlib-wrapped; a valid zlib header has CMF=8 and a check sum.
        cmf, flg = head[0], head[1]
        is_zlib = cmf & 0x0F == 8 and ((cmf << 8) | flg) % 31 == 0
        return _ZLIB if is_zlib else _RAW

    def _run(self, data: bytes) -> bytes:
        assert self._obj is not None
        out: list[bytes] = []
        while data:
            try:
                out.append(self._obj.decompress(data))
            except zlib.error as exc:
                raise DecodingError(f"corrupt {self.coding} data: {exc}") from None
            data = self._obj.unused_data
            if not data:
                break
            if self.coding != "gzip":
                raise DecodingError(f"{self.coding} body has bytes after its end")
            # Concatenated gzip members are one body (RFC 1952 §2.2).
            self._obj = zlib.decompressobj(_GZIP)
        return b"".join(out)


class ContentDecoder:
    """Decodes a body given its Content-Encoding header value (None: identity)."""

    def __init__(self, content_encoding: str | None) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        stages: list[_Stage] = []
        for coding in reversed(codings):  # the last coding applied is undone first
            if coding in ("gzip", "x-gzip"):
                stages.append(_Stage("gzip"))
            elif coding == "deflate":
                stages.append(_Stage("deflate"))
            else:
                self._unsupported = coding
                break
        else:
            self._unsupported = None
        self._stages = stages

    @property
    def is_identity(self) -> bool:
        return not self._stages and self._unsupported is None

    def decode(self, data: bytes) -> bytes:
        """The decoded bytes for the next chunk (possibly empty). Raises DecodingError."""
        self._check_supported()
        for stage in self._stages:
            data = stage.decode(data)
        return data

    def flush(self) -> bytes:
        """End of body: the last decoded bytes. Raises DecodingError if the body was cut."""
        self._check_supported()
        out = b""
        for stage in self._stages:
            out = stage.decode(out) if out else b""
            out += stage.flush()
        return out

    def _check_supported(self) -> None:
        if self._unsupported is not None:
            raise DecodingError(f"unsupported content-encoding {self._unsupported!r}")
