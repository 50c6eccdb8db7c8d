"""Properties of the capture format and the offline readers: lines round trip exactly; garbage
never raises out of a reader, it becomes a problem at a line that exists; replays never raise."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from meshproxy_core.capture import CapturedExchange, from_json_line, to_json_line
from meshproxy_core.config import ProxyConfig
from meshproxy_core.exchange import Proxy
from meshproxy_core.offline import (
    ParseProblem,
    PlainInputError,
    account_exchange,
    read_capture,
    read_har,
    read_plain,
    summarise,
)
from meshproxy_core.pricing import PriceBook
from meshproxy_core.records import Ending, Principal

PROXY = Proxy(
    ProxyConfig.from_mapping(
        {}, {"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a", "MESHAGENT_SECRET": "s"}
    ),
    prices=PriceBook.default(),
)

latin1 = st.text(st.characters(max_codepoint=0xFF), max_size=20)
times = st.floats(allow_nan=False, allow_infinity=False, width=64)
principals = st.none() | st.builds(
    Principal,
    project=st.text(max_size=10),
    room=st.text(max_size=10),
    participant=st.text(max_size=10),
    session=st.none() | st.text(max_size=10),
)
TARGETS = [
    "/openai/v1/chat/completions",
    "/v1/responses",
    "/openai/v1/embeddings",
    "/openai/v1/audio/transcriptions",
    "/openai/v1/images/generations",
    "/anthropic/v1/messages",
    "/anthropic/v1/messages/batches/b1/results",
    "/rooms/r1/anthropic/v1/messages",
    "/openai/v1/files",
]

captures = st.builds(
    CapturedExchange,
    request_id=st.text(max_size=20),
    started_at=times,
    ended_at=times,
    principal=principals,
    method=st.sampled_from(["POST", "GET", "DELETE"]) | st.text(max_size=8),
    target=st.sampled_from(TARGETS) | st.text(max_size=30),
    request_headers=st.lists(st.tuples(latin1, latin1), max_size=4),
    request_body=st.binary(max_size=200),
    status=st.integers(0, 999),
    response_headers=st.lists(st.tuples(latin1, latin1), max_size=4),
    response_body=st.binary(max_size=400),
    truncated=st.booleans(),
    ending=st.sampled_from([e.value for e in Ending]),
)


@given(captures)
def test_capture_lines_round_trip(ex: CapturedExchange) -> None:
    line = to_json_line(ex)
    assert line.isascii() and line.count(b"\n") == 1
    assert from_json_line(line) == ex


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(st.lists(st.binary(max_size=80) | st.text(max_size=80).map(str.encode), max_size=10))
def test_garbage_capture_lines_become_problems_at_their_line(lines: list[bytes]) -> None:
    # Each item is one line: the reader takes what a file iterator gives.
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    seen = list(read_capture(lines))
    assert [n for n, _ in seen] == [i + 1 for i, line in enumerate(lines) if line.strip()]
    assert all(isinstance(item, ParseProblem) for _, item in seen)


@given(st.lists(json_values, max_size=6))
def test_json_lines_that_are_not_captures_become_problems(values: list[Any]) -> None:
    lines = [json.dumps(value) for value in values]
    seen = list(read_capture(lines))
    assert len(seen) == len(lines)
    assert all(isinstance(item, ParseProblem) and item.reason for _, item in seen)


@given(st.text(max_size=300))
def test_garbage_har_text_never_raises(text: str) -> None:
    line_count = text.count("\n") + 1
    for number, item in read_har(text):
        assert 1 <= number <= line_count
        assert isinstance(item, ParseProblem | CapturedExchange)


@given(st.lists(json_values, max_size=6), st.booleans())
def test_har_shaped_garbage_yields_one_item_per_entry(entries: list[Any], pretty: bool) -> None:
    text = json.dumps({"log": {"version": "1.2", "entries": entries}}, indent=2 if pretty else None)
    seen = list(read_har(text))
    assert len(seen) == len(entries)
    line_count = text.count("\n") + 1
    assert all(1 <= number <= line_count for number, _ in seen)


har_entries = st.fixed_dictionaries(
    {
        "request": st.fixed_dictionaries(
            {
                "method": st.sampled_from(["POST", "GET", "OPTIONS"]),
                "url": st.sampled_from(
                    [
                        "https://api.openai.com/v1/chat/completions",
                        "https://api.anthropic.com/v1/messages",
                        "http://localhost:8787/openai/v1/embeddings",
                        "https://api.openai.com/v1/../v1/chat/completions",
                        "https://example.com/",
                        "not a url",
                        "http://[::1",
                    ]
                ),
            },
            optional={
                "headers": json_values,
                "postData": json_values
                | st.fixed_dictionaries(
                    {"text": st.text(max_size=40)}, optional={"mimeType": st.text()}
                ),
            },
        ),
        "response": st.fixed_dictionaries(
            {"status": st.integers(-1, 1200) | json_values},
            optional={
                "headers": json_values,
                "content": json_values
                | st.fixed_dictionaries(
                    {"text": st.text(max_size=60)},
                    optional={"encoding": st.sampled_from(["base64", "x"]), "size": json_values},
                ),
            },
        ),
    },
    optional={"startedDateTime": st.text(max_size=30) | json_values, "time": json_values},
)


@given(st.lists(har_entries, max_size=4))
def test_har_entries_never_raise_and_replay(entries: list[Any]) -> None:
    text = json.dumps({"log": {"entries": entries}})
    seen = list(read_har(text))
    assert len(seen) == len(entries)
    records = [
        account_exchange(PROXY, item) for _, item in seen if not isinstance(item, ParseProblem)
    ]
    summarise(records)


@given(captures)
def test_replay_never_raises(ex: CapturedExchange) -> None:
    record = account_exchange(PROXY, ex)
    assert record.request_id == (ex.request_id or "offline")
    if ex.truncated:
        assert record.partial
    summarise([record])


plain_bodies = st.binary(max_size=300) | st.sampled_from(
    [b"data: ", b"event: message_start\ndata: {", b'{"object":"list","data":[1]}', b'{"x":1}\n{']
).flatmap(lambda head: st.binary(max_size=60).map(lambda tail: head + tail))


@given(plain_bodies)
def test_plain_bodies_are_read_or_refused_clearly(body: bytes) -> None:
    try:
        ex = read_plain(body)
    except PlainInputError as exc:
        assert str(exc)
        return
    account_exchange(PROXY, ex)
