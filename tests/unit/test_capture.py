"""The capture log: its JSON-lines format, the tap an adapter feeds, and replays that give the
live proxy's numbers back."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest

from meshproxy_core.auth import mint_token
from meshproxy_core.capture import (
    CapturedExchange,
    CaptureFormatError,
    CaptureTap,
    from_json_line,
    to_json_line,
)
from meshproxy_core.config import ProxyConfig
from meshproxy_core.exchange import Forward, NeedBody, Proxy
from meshproxy_core.offline import account_exchange
from meshproxy_core.pricing import PriceBook
from meshproxy_core.records import Ending, Principal, UsageRecord

CAPTURE = Path(__file__).parent.parent / "fixtures" / "offline" / "capture.jsonl"
SECRET = "capture-secret-" + "k" * 40
NOW = 1_900_000_000.0


def sample(**changes: object) -> CapturedExchange:
    fields: dict[str, object] = dict(
        request_id="req_1",
        started_at=1.5,
        ended_at=2.25,
        principal=Principal("p", "r", "ada", session="s"),
        method="POST",
        target="/openai/v1/chat/completions?x=1",
        request_headers=[("authorization", "[redacted]"), ("content-type", "application/json")],
        request_body=b'{"model":"gpt-4o-mini"}',
        status=200,
        response_headers=[("content-type", "application/json"), ("content-encoding", "gzip")],
        response_body=bytes(range(256)),
        truncated=False,
        ending="complete",
    )
    fields.update(changes)
    return CapturedExchange(**fields)  # type: ignore[arg-type]


def line_obj(**changes: object) -> dict[str, object]:
    obj = json.loads(to_json_line(sample()))
    obj.update(changes)
    return obj


# -- the format --------------------------------------------------------------------------------


def test_a_line_round_trips_exactly() -> None:
    ex = sample()
    line = to_json_line(ex)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.isascii()
    assert from_json_line(line) == ex
    assert from_json_line(line.decode().rstrip("\n")) == ex


def test_bodies_are_base64_and_headers_are_pairs() -> None:
    obj = json.loads(to_json_line(sample()))
    assert obj["capture"] == 1
    assert base64.b64decode(obj["response_body_b64"]) == bytes(range(256))
    assert obj["request_headers"][0] == ["authorization", "[redacted]"]
    assert obj["principal"] == {"project": "p", "room": "r", "participant": "ada", "session": "s"}


def test_no_principal_and_no_response_round_trip() -> None:
    ex = sample(principal=None, status=0, response_headers=[], response_body=b"", ending="timeout")
    assert from_json_line(to_json_line(ex)) == ex


def test_unknown_keys_are_ignored() -> None:
    obj = line_obj(future_field={"anything": 1})
    assert from_json_line(json.dumps(obj)) == sample()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not a JSON line"),
        (b"\xff\xfe", "not a JSON line"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"request_id": "x"}', "'capture' must be 1, got nothing"),
        (json.dumps(line_obj(capture=2)), "'capture' must be 1, got 2"),
        (json.dumps(line_obj(capture=True)), "'capture' must be 1"),
        (json.dumps(line_obj(ending="exploded")), "'ending' must be one of"),
        (json.dumps(line_obj(status=True)), "'status' must be an integer"),
        (json.dumps(line_obj(status=1000)), "'status' must be 0"),
        (json.dumps(line_obj(request_body_b64="***")), "'request_body_b64' is not valid base64"),
        (json.dumps(line_obj(response_body_b64=None)), "'response_body_b64' must be a string"),
        (json.dumps(line_obj(started_at="yesterday")), "'started_at' must be a number"),
        (json.dumps(line_obj(started_at=float("nan"))), "'started_at' must be a number"),
        (json.dumps(line_obj(ended_at=10**400)), "'ended_at' must be a number"),
        (json.dumps(line_obj(request_headers=[["a"]])), "'request_headers' must be a list"),
        (json.dumps(line_obj(response_headers=[["a", "\u20ac"]])), "latin-1"),
        (json.dumps(line_obj(principal=[])), "'principal' must be an object or null"),
        (json.dumps(line_obj(principal={"project": "p"})), "missing 'principal.room'"),
        (json.dumps(line_obj(truncated="no")), "'truncated' must be true or false"),
        (json.dumps({k: v for k, v in line_obj().items() if k != "method"}), "missing 'method'"),
    ],
)
def test_bad_lines_say_why(line: str | bytes, reason: str) -> None:
    with pytest.raises(CaptureFormatError, match=reason.replace("(", r"\(")):
        from_json_line(line)


def test_the_fixture_log_is_stable_and_holds_no_credentials() -> None:
    raw = CAPTURE.read_bytes()
    lines = raw.splitlines(keepends=True)
    for index in (0, 1, 5):
        # Written by the tap; reading and writing again gives the same bytes.
        assert to_json_line(from_json_line(lines[index])) == lines[index]
    for secret in (b"room-token", b"__cf_bm", b"sk-"):
        assert secret not in raw


# -- the tap -----------------------------------------------------------------------------------


def record(**changes: object) -> UsageRecord:
    from meshproxy_core.records import Outcome

    fields: dict[str, object] = dict(
        id="req_9",
        request_id="req_9",
        provider="openai",
        endpoint="chat.completions",
        method="POST",
        path="/chat/completions",
        status=200,
        outcome=Outcome.OK,
        ending=Ending.COMPLETE,
        started_at=10.0,
        ended_at=11.0,
        principal=Principal("p", "r", "ada", session="s", role="agent", models=("openai/*",)),
    )
    fields.update(changes)
    return UsageRecord(**fields)  # type: ignore[arg-type]


def test_tap_redacts_credentials_and_keeps_the_wire_form() -> None:
    tap = CaptureTap(1024)
    tap.request(
        "POST",
        "/openai/v1/chat/completions",
        [
            (b"Authorization", b"Bearer room-token"),
            (b"X-Api-Key", b"room-token"),
            (b"Cookie", b"session=1"),
            (b"Content-Type", b"application/json"),
        ],
        b"{}",
    )
    tap.response_head(
        200,
        [
            (b"content-type", b"application/json"),
            (b"content-encoding", b"gzip"),
            (b"set-cookie", b"__cf_bm=provider-session"),
        ],
    )
    tap.response_data(b"\x1f\x8b")
    tap.response_data(b"rest")
    ex = tap.finish(record())
    assert ex.request_headers == (
        ("authorization", "[redacted]"),
        ("x-api-key", "[redacted]"),
        ("cookie", "[redacted]"),
        ("content-type", "application/json"),
    )
    assert ("content-encoding", "gzip") in ex.response_headers
    assert ("set-cookie", "[redacted]") in ex.response_headers
    assert ex.response_body == b"\x1f\x8brest"
    assert not ex.truncated
    line = to_json_line(ex)
    assert b"room-token" not in line and b"provider-session" not in line


def test_tap_takes_identity_times_and_ending_from_the_record() -> None:
    tap = CaptureTap(16)
    tap.request("POST", "/v1/embeddings", [], b"{}")
    ex = tap.finish(record(ending=Ending.CLIENT_GONE))
    assert (ex.request_id, ex.started_at, ex.ended_at) == ("req_9", 10.0, 11.0)
    # Grants and role are the token's business: the log keeps who, not what they may do.
    assert ex.principal == Principal("p", "r", "ada", session="s")
    assert ex.status == 0 and ex.response_body == b""  # no response head was seen
    assert ex.ending == "client_gone"


def test_tap_bounds_each_body_and_marks_the_capture_truncated() -> None:
    tap = CaptureTap(4)
    tap.request("POST", "/v1/embeddings", [], b"12345678")
    tap.response_head(200, [])
    for chunk in (b"ab", b"cd", b"ef"):
        tap.response_data(chunk)
    ex = tap.finish(record())
    assert ex.request_body == b"1234"
    assert ex.response_body == b"abcd"
    assert ex.truncated


def test_tap_with_room_to_spare_is_not_truncated() -> None:
    tap = CaptureTap(4)
    tap.request("POST", "/v1/embeddings", [], b"1234")
    tap.response_head(200, [])
    tap.response_data(b"abcd")
    tap.response_data(b"")
    assert not tap.finish(record()).truncated


def test_tap_refuses_a_negative_bound() -> None:
    with pytest.raises(ValueError):
        CaptureTap(-1)


# -- live exchange, capture, replay: the same numbers -------------------------------------------


def live_proxy() -> Proxy:
    env = {"MESHAGENT_SECRET": SECRET, "OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y"}
    return Proxy(ProxyConfig.from_mapping({}, env), prices=PriceBook.default())


@pytest.mark.parametrize("compressed", [False, True])
def test_a_replayed_capture_gives_the_live_record(fixture_bytes, compressed: bool) -> None:
    proxy = live_proxy()
    token = mint_token(SECRET, project="acme", room="lab", participant="ada", now=NOW, ttl=60)
    headers = [
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
        (b"meshagent-session-id", b"s-1"),
    ]
    body = b'{"model":"gpt-3.5-turbo","stream":true,"messages":[]}'
    stream = fixture_bytes("openai_chat_stream_include_usage.sse")
    upstream = gzip.compress(stream, mtime=0) if compressed else stream
    response_headers = [(b"content-type", b"text/event-stream")]
    if compressed:
        response_headers.append((b"content-encoding", b"gzip"))

    tap = CaptureTap(1 << 20)
    ex = proxy.exchange(now=NOW, request_id="req_live")
    assert isinstance(
        ex.request_head("POST", "/openai/v1/chat/completions", headers, content_length=len(body)),
        NeedBody,
    )
    tap.request("POST", "/openai/v1/chat/completions", headers, body)
    assert isinstance(ex.request_body(body), Forward)
    ex.response_head(200, response_headers)
    tap.response_head(200, response_headers)
    for i in range(0, len(upstream), 50):
        ex.response_data(upstream[i : i + 50])
        tap.response_data(upstream[i : i + 50])
    ex.finish(Ending.COMPLETE, now=NOW + 2)
    live = ex.record
    assert live is not None

    captured = from_json_line(to_json_line(tap.finish(live)))
    assert token.encode() not in to_json_line(tap.finish(live))
    replayed = account_exchange(live_proxy(), captured)

    assert replayed.usage == live.usage
    assert replayed.cost == live.cost
    assert live.usage.input_tokens == 10 and live.usage.output_tokens == 5
    for name in ("id", "outcome", "ending", "status", "model", "response_model", "endpoint"):
        assert getattr(replayed, name) == getattr(live, name), name
    assert (replayed.started_at, replayed.ended_at) == (NOW, NOW + 2)
    assert replayed.principal == Principal("acme", "lab", "ada", session="s-1")
