"""The SSE parser against the WHATWG rules as WIRE.md §1 states them."""

from __future__ import annotations

import pytest

from meshproxy_core.sse import Event, SSEParser


def parse(*chunks: bytes) -> list[Event]:
    parser = SSEParser()
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return events


def pairs(events: list[Event]) -> list[tuple[str, bytes]]:
    return [(e.event, e.data) for e in events]


def test_framing_edge_cases_fixture(fixture_bytes) -> None:
    events = parse(fixture_bytes("sse_framing_edge_cases.sse"))
    assert pairs(events) == [
        ("message_start", b'{"type":"message_start","note":"no space after colon is legal"}'),
        (
            "content_block_delta",
            b'{"type":"content_block_delta",\n "note":"two data lines are joined with a single '
            b'LF; only ONE leading space is stripped"}',
        ),
        ("ping", b'{"type":"ping"}'),
        ("message", b"[DONE]"),
    ]
    assert events[2].id == b"42"
    assert events[2].retry == 3000
    assert events[0].id == b""
    assert events[0].retry is None


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending(eol: bytes) -> None:
    stream = b"event: a" + eol + b"data: 1" + eol + eol + b"data: 2" + eol + eol
    assert pairs(parse(stream)) == [("a", b"1"), ("message", b"2")]


def test_cr_at_chunk_end_then_lf_is_one_line_ending() -> None:
    # If the LF were a second line ending, the blank line would dispatch early: "1" alone.
    events = parse(b"data: 1\r", b"\ndata: 2\r\n\r\n")
    assert pairs(events) == [("message", b"1\n2")]


def test_lone_cr_at_chunk_end_is_a_line_ending() -> None:
    events = parse(b"data: 1\r", b"\r", b"data: 2\r\r")
    assert pairs(events) == [("message", b"1"), ("message", b"2")]


def test_dispatch_happens_without_waiting_for_more_bytes() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert pairs(parser.feed(b"\r")) == [("message", b"x")]


def test_data_with_and_without_space_and_only_one_space_stripped() -> None:
    assert pairs(parse(b"data:x\n\ndata: x\n\ndata:  x\n\n")) == [
        ("message", b"x"),
        ("message", b"x"),
        ("message", b" x"),
    ]


def test_comments_and_unknown_fields_are_ignored() -> None:
    assert pairs(parse(b": hi\nfoo: bar\ndata: 1\n: mid\n\n")) == [("message", b"1")]


def test_event_without_data_is_not_dispatched_and_resets_type() -> None:
    assert pairs(parse(b"event: ping\n\ndata: 1\n\n")) == [("message", b"1")]


def test_empty_data_line_dispatches_empty_data() -> None:
    assert pairs(parse(b"data\n\ndata:\n\n")) == [("message", b""), ("message", b"")]


def test_multiline_data_joined_with_lf() -> None:
    assert pairs(parse(b"data: a\ndata: b\ndata:\n\n")) == [("message", b"a\nb\n")]


def test_one_leading_bom_is_ignored_even_split() -> None:
    bom = b"\xef\xbb\xbf"
    assert pairs(parse(bom[:1], bom[1:2], bom[2:] + b"data: 1\n\n")) == [("message", b"1")]
    # A second BOM is part of the field name, so the line is an unknown field.
    assert pairs(parse(bom + bom + b"data: 1\n\ndata: 2\n\n")) == [("message", b"2")]


def test_partial_bom_prefix_that_is_not_a_bom() -> None:
    # "\xefdata" is an unknown field name, so only the second event is dispatched.
    assert pairs(parse(b"\xef", b"data: 1\n\ndata: 2\n\n")) == [("message", b"2")]


def test_trailing_event_without_blank_line_is_discarded() -> None:
    assert pairs(parse(b"data: 1\n\ndata: 2\n")) == [("message", b"1")]
    assert pairs(parse(b"data: 1\n\ndata: 2")) == [("message", b"1")]


def test_id_with_nul_is_ignored_and_id_persists() -> None:
    events = parse(b"id: 7\ndata: a\n\nid: x\x00y\ndata: b\n\n")
    assert [e.id for e in events] == [b"7", b"7"]


def test_retry_must_be_digits() -> None:
    events = parse(b"retry: 12a\ndata: a\n\nretry: 50\ndata: b\n\n")
    assert [e.retry for e in events] == [None, 50]


def test_no_line_length_cap() -> None:
    big = b"A" * 5_000_000
    chunks = [b"event: image\ndata: " + big[:1000]]
    chunks += [big[i : i + 65536] for i in range(1000, len(big), 65536)]
    chunks.append(b"\n\n")
    (event,) = parse(*chunks)
    assert event.event == "image"
    assert len(event.data) == 5_000_000


def test_raw_bytes_cover_the_stream_exactly() -> None:
    stream = b"\xef\xbb\xbf: c\r\ndata: 1\r\n\r\nevent: e\rdata: 2\r\rdata: tail"
    for cut in range(len(stream) + 1):
        parser = SSEParser(keep_raw=True)
        events = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert pairs(events) == [("message", b"1"), ("e", b"2")]
        assert b"".join(e.raw for e in events) + parser.pending_raw() == stream
        # Which bytes belong to which event never depends on the split.
        assert events[0].raw == b"\xef\xbb\xbf: c\r\ndata: 1\r\n\r"
        assert events[1].raw == b"\nevent: e\rdata: 2\r\r"


def test_raw_is_empty_without_keep_raw() -> None:
    (event,) = parse(b"data: 1\n\n")
    assert event.raw == b""


def test_anthropic_stream_fixture_event_names(fixture_bytes) -> None:
    events = parse(fixture_bytes("anthropic_messages_stream.sse"))
    assert [e.event for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
