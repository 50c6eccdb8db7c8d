"""The incremental SSE parser agrees with a simple whole-stream reference, split anywhere."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from meshproxy_core.sse import SSEParser

BOM = b"\xef\xbb\xbf"


def reference(stream: bytes) -> list[tuple[str, bytes, bytes, int | None]]:
    """WHATWG §9.2.6 over the whole stream at once: split lines, then interpret them."""
    if stream.startswith(BOM):
        stream = stream[len(BOM) :]
    lines = re.split(rb"\r\n|\r|\n", stream)[:-1]  # the unterminated remainder is not a line
    events = []
    event_type, data, last_id, retry = b"", None, b"", None
    for line in lines:
        if line == b"":
            if data is not None:
                name = event_type.decode("utf-8", "replace") if event_type else "message"
                events.append((name, data, last_id, retry))
            event_type, data = b"", None
            continue
        if line.startswith(b":"):
            continue
        if b":" in line:
            field, value = line.split(b":", 1)
            if value.startswith(b" "):
                value = value[1:]
        else:
            field, value = line, b""
        if field == b"data":
            data = value if data is None else data + b"\n" + value
        elif field == b"event":
            event_type = value
        elif field == b"id" and b"\0" not in value:
            last_id = value
        elif field == b"retry" and value and all(48 <= c <= 57 for c in value):
            retry = int(value)
    return events


_values = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_field_line = st.tuples(
    st.sampled_from([b"data", b"event", b"id", b"retry", b"dat", b"", b"data "]),
    st.sampled_from([b":", b": ", b":  ", b""]),
    st.one_of(_values, st.sampled_from([b"[DONE]", b"12", b'{"usage":null}', b"x\x00"])),
).map(b"".join)
_line = st.one_of(_field_line, st.just(b""), _values.map(lambda v: b":" + v))
_eol = st.sampled_from([b"\n", b"\r", b"\r\n"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_line, _eol), max_size=30))
    body = b"".join(line + eol for line, eol in lines)
    if draw(st.booleans()):
        body += draw(_values)  # an unterminated tail
    if draw(st.booleans()):
        body = BOM + body
    return body


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(stream[start:point])
        start = point
    pieces.append(stream[start:])
    return pieces


def parse(pieces: list[bytes], keep_raw: bool = False):
    parser = SSEParser(keep_raw=keep_raw)
    events = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return parser, events


@given(streams(), st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_matches_reference_split_anywhere(stream: bytes, cuts: list[int]) -> None:
    _, events = parse(split(stream, cuts))
    assert [(e.event, e.data, e.id, e.retry) for e in events] == reference(stream)


@given(streams(), st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_raw_segments_independent_of_split(stream: bytes, cuts: list[int]) -> None:
    whole_parser, whole = parse([stream], keep_raw=True)
    parser, events = parse(split(stream, cuts), keep_raw=True)
    assert [e.raw for e in events] == [e.raw for e in whole]
    assert b"".join(e.raw for e in events) + parser.pending_raw() == stream
    assert parser.pending_raw() == whole_parser.pending_raw()


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_arbitrary_bytes_never_raise(stream: bytes, cuts: list[int]) -> None:
    _, events = parse(split(stream, cuts))
    assert [(e.event, e.data, e.id, e.retry) for e in events] == reference(stream)
