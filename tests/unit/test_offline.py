"""Offline accounting: HAR files, the capture log and plain bodies, replayed through the exchange.

Expected numbers are worked out by hand from the fixtures and the shipped price book
(USD per 1M tokens: gpt-4o-mini input 0.15, cache_read 0.075, output 0.60; claude-sonnet-4-5
input 3.00, cache_read 0.30, output 15.00; whisper-1 0.006 per minute, whole seconds).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from meshproxy_core.capture import CapturedExchange
from meshproxy_core.config import ProxyConfig
from meshproxy_core.exchange import Proxy
from meshproxy_core.offline import (
    OFFLINE_PRINCIPAL,
    ParseProblem,
    PlainInputError,
    SummaryRow,
    account_exchange,
    add_usage,
    infer_endpoint,
    read_capture,
    read_har,
    read_plain,
    resolve_endpoint,
    summarise,
)
from meshproxy_core.pricing import PriceBook
from meshproxy_core.records import ImageCount, Outcome, Principal, Usage, UsageSource

OFFLINE = Path(__file__).parent.parent / "fixtures" / "offline"
ENV = {"OPENAI_API_KEY": "offline", "ANTHROPIC_API_KEY": "offline", "MESHAGENT_SECRET": "offline"}


@pytest.fixture(scope="module")
def proxy() -> Proxy:
    return Proxy(ProxyConfig.from_mapping({}, ENV), prices=PriceBook.default())


def har_items() -> list[tuple[int, CapturedExchange | ParseProblem]]:
    return list(read_har((OFFLINE / "session.har").read_text(encoding="utf-8")))


def exchanges(items: list) -> list[tuple[int, CapturedExchange]]:
    return [(n, item) for n, item in items if isinstance(item, CapturedExchange)]


# -- HAR ---------------------------------------------------------------------------------------


def test_har_entries_are_numbered_by_the_line_they_start_on() -> None:
    items = har_items()
    assert [n for n, _ in items] == [10, 83, 148, 210, 250]
    lines = (OFFLINE / "session.har").read_text().splitlines()
    assert all(lines[n - 1].strip() == "{" for n, _ in items)


def test_har_skips_unrelated_entries_and_reports_broken_ones() -> None:
    problems = {n: item for n, item in har_items() if isinstance(item, ParseProblem)}
    assert problems == {
        210: ParseProblem(
            "skipped: GET https://example.com/static/app.js is not a proxied endpoint",
            skipped=True,
        ),
        250: ParseProblem("'response.status' is not an HTTP status"),
    }


def test_har_maps_provider_hosts_onto_the_proxy_routes() -> None:
    found = {n: ex for n, ex in exchanges(har_items())}
    assert found[10].target == "/openai/v1/chat/completions"
    assert found[83].target == "/rooms/team-a/openai/v1/chat/completions"
    assert found[148].target == "/anthropic/v1/messages"


def test_har_redacts_credentials_and_drops_pseudo_headers() -> None:
    for _, ex in exchanges(har_items()):
        text = json.dumps([ex.request_headers, ex.response_headers])
        assert "must-never-leak" not in text
        assert not any(name.startswith(":") for name, _ in ex.request_headers)
    first = exchanges(har_items())[0][1]
    assert ("authorization", "[redacted]") in first.request_headers


def test_har_content_is_decoded_so_content_encoding_is_dropped() -> None:
    for _, ex in exchanges(har_items()):
        names = {name for name, _ in ex.response_headers}
        assert "content-encoding" not in names
        assert "content-length" not in names
    anthropic = exchanges(har_items())[2][1]
    assert anthropic.response_body.startswith(b"event: message_start\n")  # was base64 in the HAR


def test_har_ids_and_times() -> None:
    found = {n: ex for n, ex in exchanges(har_items())}
    assert found[10].request_id == "har-10"
    assert found[83].request_id == "req_proxy_0001"  # the proxy's own id, from its header
    assert found[10].started_at == 1_796_032_800.0  # 2026-11-30T10:00:00Z
    assert found[10].ended_at == 1_796_032_800.8125  # + 812.5 ms
    assert found[10].principal is None


def test_har_accounting_gives_the_hand_computed_numbers(proxy: Proxy) -> None:
    records = {n: account_exchange(proxy, ex) for n, ex in exchanges(har_items())}

    chat = records[10]  # 100 prompt (40 cached) + 20 completion
    assert (chat.provider, chat.endpoint, chat.outcome) == (
        "openai",
        "chat.completions",
        Outcome.OK,
    )
    assert chat.usage == Usage(input_tokens=60, cache_read_tokens=40, output_tokens=20)
    # 60 x 0.15 + 40 x 0.075 + 20 x 0.60 = 9 + 3 + 12 = 24 micro-dollars
    assert chat.cost is not None and chat.cost.total == Decimal("0.000024")
    assert chat.principal == OFFLINE_PRINCIPAL
    assert chat.upstream_request_id == "req_upstream_001"

    stream = records[83]  # through the proxy, room mount, session header; 12 + 5 tokens
    assert stream.stream and stream.usage == Usage(input_tokens=12, output_tokens=5)
    # 12 x 0.15 + 5 x 0.60 = 1.8 + 3 = 4.8 micro-dollars
    assert stream.cost is not None and stream.cost.total == Decimal("0.0000048")
    assert stream.principal == Principal("offline", "team-a", "offline", session="s-42")

    claude = records[148]  # 25 input, 100 cache read, 15 output (cumulative, not 1 + 15)
    assert claude.usage == Usage(input_tokens=25, cache_read_tokens=100, output_tokens=15)
    # 25 x 3 + 100 x 0.30 + 15 x 15 = 75 + 30 + 225 = 330 micro-dollars
    assert claude.cost is not None and claude.cost.total == Decimal("0.00033")
    assert claude.model == "claude-sonnet-4-5"


def test_har_summary(proxy: Proxy) -> None:
    rows = summarise(account_exchange(proxy, ex) for _, ex in exchanges(har_items()))
    assert [(r.room, r.model, r.requests, r.cost) for r in rows] == [
        ("offline", "claude-sonnet-4-5", 1, Decimal("0.00033")),
        ("offline", "gpt-4o-mini", 1, Decimal("0.000024")),
        ("team-a", "gpt-4o-mini", 1, Decimal("0.0000048")),
    ]


def test_a_har_cut_short_keeps_the_entries_before_the_cut() -> None:
    text = (OFFLINE / "session.har").read_text()
    cut = text[: text.index('"url": "https://api.anthropic.com')]
    items = list(read_har(cut))
    assert [n for n, item in items if isinstance(item, CapturedExchange)] == [10, 83]
    number, problem = items[-1]
    assert isinstance(problem, ParseProblem) and problem.reason.startswith("not valid JSON")
    assert number == cut.count("\n") + 1  # the line where the text stops


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", 1, "not a HAR file"),
        ("[]", 1, "not a HAR file"),
        ('{"foo": 1}', 1, "not a HAR file: no 'log'"),
        ('{"log": {"version": "1.2"}}', 1, "not a HAR file: no 'entries'"),
        ('{"log": {"entries": {}}}', 1, "'log.entries' is not a list"),
        ('{"log":\n {"entries" []}}', 2, "expected ':'"),
        ("{\n\n  nope", 3, "expected a member name"),
        ('{"log": {"entries": [' + "[" * 100_000, 1, ""),
    ],
)
def test_har_that_is_not_a_har_is_one_problem(text: str, line: int, reason: str) -> None:
    items = list(read_har(text))
    assert len(items) == 1
    number, problem = items[0]
    assert isinstance(problem, ParseProblem)
    assert number == line and reason in problem.reason


def test_har_problems_after_a_bad_entry_keep_going_until_the_json_breaks() -> None:
    items = list(read_har('{"log": {"entries": [1,\n 2 3]}}'))
    assert [(n, p.reason) for n, p in items if isinstance(p, ParseProblem)] == [
        (1, "entry is not an object"),
        (2, "entry is not an object"),
        (2, "not valid JSON: expected ',' or ']' after an entry"),
    ]


def test_har_with_a_bom_and_an_empty_entry_list() -> None:
    assert list(read_har('\ufeff{"log": {"entries": []}}')) == []


def har_entry(**changes: object) -> str:
    entry: dict[str, object] = {
        "request": {"method": "POST", "url": "https://api.openai.com/v1/embeddings"},
        "response": {"status": 200, "content": {"mimeType": "application/json", "text": "{}"}},
    }
    entry.update(changes)
    return json.dumps({"log": {"entries": [entry]}})


@pytest.mark.parametrize(
    ("entry", "reason", "skipped"),
    [
        (har_entry(request={"method": "OPTIONS", "url": "https://api.openai.com/v1/embeddings"}),
         "not a proxied endpoint", True),
        (har_entry(request={"method": "GET", "url": "https://api.openai.com/dashboard"}),
         "not an LLM API call", True),
        (har_entry(response={"status": 0}), "has no response recorded", True),
        (har_entry(request={"url": "x"}), "no 'request.method'", False),
        (har_entry(response=None), "no 'request' or 'response'", False),
        (har_entry(response={"status": 200, "content": {"text": "@@", "encoding": "base64"}}),
         "'response.content.text' is not valid base64", False),
        (har_entry(response={"status": 200, "content": {"text": "x", "encoding": "gzip"}}),
         "not base64", False),
        (har_entry(request={"method": "POST", "url": "https://api.openai.com/v1/embeddings",
                            "postData": {"text": 5}}), "'request.postData.text'", False),
        (json.dumps({"log": {"entries": ["text"]}}), "entry is not an object", False),
    ],
)  # fmt: skip
def test_har_entry_problems(entry: str, reason: str, skipped: bool) -> None:
    [(number, problem)] = list(read_har(entry))
    assert isinstance(problem, ParseProblem)
    assert reason in problem.reason and problem.skipped is skipped and number == 1


def test_har_never_shows_a_query_string() -> None:
    text = har_entry(request={"method": "GET", "url": "https://example.com/a?key=secret"})
    [(_, problem)] = list(read_har(text))
    assert isinstance(problem, ParseProblem) and "secret" not in problem.reason


def test_har_body_left_out_is_marked_truncated(proxy: Proxy) -> None:
    text = har_entry(response={"status": 200, "content": {"size": 300, "mimeType": "text/plain"}})
    [(_, ex)] = list(read_har(text))
    assert isinstance(ex, CapturedExchange) and ex.truncated and ex.response_body == b""
    assert account_exchange(proxy, ex).partial


def test_har_mount() -> None:
    text = har_entry(request={"method": "POST", "url": "http://h/llm/openai/v1/embeddings"})
    [(_, plain)] = list(read_har(text))
    [(_, mounted)] = list(read_har(text, mount="/llm"))
    assert isinstance(plain, ParseProblem) and isinstance(mounted, CapturedExchange)


# -- the capture log ---------------------------------------------------------------------------


def capture_items() -> list[tuple[int, CapturedExchange | ParseProblem]]:
    return list(read_capture((OFFLINE / "capture.jsonl").read_bytes().splitlines()))


def test_capture_log_lines_and_problems() -> None:
    items = capture_items()
    assert [n for n, _ in items] == [1, 2, 4, 5, 6]  # line 3 is blank
    assert items[2] == (
        4,
        ParseProblem("not a JSON line: Expecting value: line 1 column 1 (char 0)"),
    )
    assert items[3] == (5, ParseProblem("not a capture line: 'capture' must be 1, got 2"))


def test_capture_log_accounting(proxy: Proxy) -> None:
    records = [account_exchange(proxy, ex) for _, ex in exchanges(capture_items())]
    chat, claude, gone = records

    # The upstream body is gzip in the log; the exchange decodes it as it did live.
    assert chat.request_id == "req_cap_0001"
    assert chat.usage == Usage(input_tokens=200, output_tokens=50)
    # 200 x 0.15 + 50 x 0.60 = 30 + 30 = 60 micro-dollars
    assert chat.cost is not None and chat.cost.total == Decimal("0.00006")
    assert chat.principal == Principal("acme", "room-1", "alice")

    assert claude.usage == Usage(input_tokens=25, output_tokens=15)
    # 25 x 3 + 15 x 15 = 75 + 225 = 300 micro-dollars
    assert claude.cost is not None and claude.cost.total == Decimal("0.0003")
    assert claude.principal == Principal("acme", "room-1", "bob", session="s-7")

    # The client left before any response: no usage, and the ending the proxy saw.
    assert gone.outcome is Outcome.FAILED and gone.ending.value == "client_gone"
    assert gone.usage.is_zero() and gone.cost is None

    rows = summarise(records)
    assert [(r.participant, r.model, r.requests, r.cost_text()) for r in rows] == [
        ("alice", "gpt-4o-mini", 2, "0.00006"),
        ("bob", "claude-sonnet-4-5", 1, "0.0003"),
    ]


def test_capture_reader_takes_text_lines_and_skips_blank_ones() -> None:
    text = (OFFLINE / "capture.jsonl").read_text()
    assert [n for n, _ in read_capture(text.splitlines())] == [1, 2, 4, 5, 6]
    assert list(read_capture(["", "   ", "\n"])) == []


# -- replay edge cases -------------------------------------------------------------------------


def captured(**changes: object) -> CapturedExchange:
    fields: dict[str, object] = dict(
        request_id="r1",
        started_at=5.0,
        ended_at=6.0,
        principal=None,
        method="POST",
        target="/openai/v1/chat/completions",
        request_headers=[("content-type", "application/json")],
        request_body=b'{"model":"gpt-4o-mini"}',
        status=200,
        response_headers=[("content-type", "application/json")],
        response_body=(
            Path(__file__).parent.parent / "fixtures" / "openai_chat_completion.json"
        ).read_bytes(),
    )
    fields.update(changes)
    return CapturedExchange(**fields)  # type: ignore[arg-type]


def test_replay_without_a_response_head(proxy: Proxy) -> None:
    failed = account_exchange(proxy, captured(status=0, ending="upstream_failed"))
    assert failed.outcome is Outcome.FAILED and failed.status == 502
    timed_out = account_exchange(proxy, captured(status=0, ending="timeout"))
    assert timed_out.status == 504
    assert (timed_out.started_at, timed_out.ended_at) == (5.0, 6.0)


def test_replay_of_a_refused_request_is_refused_again(proxy: Proxy) -> None:
    record = account_exchange(proxy, captured(target="/openai/v1/files"))
    assert record.outcome is Outcome.REJECTED and record.reject_reason == "path_not_allowed"
    bad_body = account_exchange(proxy, captured(request_body=b"{"))
    assert bad_body.outcome is Outcome.REJECTED


def test_replay_of_a_truncated_capture_is_partial(proxy: Proxy) -> None:
    full = account_exchange(proxy, captured())
    cut = account_exchange(proxy, captured(truncated=True))
    assert not full.partial and cut.partial


def test_replay_accounts_models_the_book_cannot_price(proxy: Proxy) -> None:
    body = (
        b'{"object":"chat.completion","model":"my-local-model","choices":[],'
        b'"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}'
    )
    record = account_exchange(
        proxy, captured(request_body=b'{"model":"my-local-model"}', response_body=body)
    )
    assert record.outcome is Outcome.OK  # not refused as unpriced: it was answered long ago
    assert record.usage == Usage(input_tokens=7, output_tokens=3)
    [row] = summarise([record])
    assert row.cost is None and row.cost_incomplete and row.cost_text() == "n/a"


# -- plain bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "provider", "endpoint"),
    [
        ("openai_chat_completion.json", "openai", "chat.completions"),
        ("openai_chat_stream_include_usage.sse", "openai", "chat.completions"),
        ("openai_responses.json", "openai", "responses"),
        ("openai_responses_stream.sse", "openai", "responses"),
        ("openai_responses_compact.json", "openai", "responses.compact"),
        ("openai_responses_input_tokens.json", "openai", "responses.input_tokens"),
        ("openai_embeddings.json", "openai", "embeddings"),
        ("openai_images_gpt_image_1.json", "openai", "images.generations"),
        ("openai_speech_stream.sse", "openai", "audio.speech"),
        ("openai_transcription_gpt4o.json", "openai", "audio.transcriptions"),
        ("openai_transcription_whisper.json", "openai", "audio.transcriptions"),
        ("openai_transcription_whisper_json.json", "openai", "audio.transcriptions"),
        ("anthropic_message.json", "anthropic", "messages"),
        ("anthropic_messages_stream.sse", "anthropic", "messages"),
        ("anthropic_count_tokens.json", "anthropic", "messages.count_tokens"),
        ("anthropic_batch_results.jsonl", "anthropic", "messages.batches.results"),
        ("anthropic_batch_create_response.json", "anthropic", "messages.batches"),
        ("anthropic_complete_legacy.json", "anthropic", "complete"),
        ("anthropic_complete_legacy_stream.sse", "anthropic", "complete"),
    ],
)
def test_plain_bodies_name_their_endpoint(
    fixture_bytes, name: str, provider: str, endpoint: str
) -> None:
    assert infer_endpoint(fixture_bytes(name)) == (provider, endpoint)


def test_transcript_stream_is_inferred() -> None:
    body = b'data: {"type":"transcript.text.done","text":"hi","usage":{"input_tokens":3}}\n\n'
    assert infer_endpoint(body) == ("openai", "audio.transcriptions")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfb\x90audio", "raw audio or a text transcript"),
        (b"Hello there", "raw audio or a text transcript"),
        (b"{not json", "not valid JSON"),
        (b'{"error":{"message":"bad key","type":"invalid_request_error"}}', "error body"),
        (b'{"type":"error","error":{"type":"overloaded_error"}}', "error body"),
        (b'{"text":"ambiguous: transcription or translation"}', "give --provider"),
        (b"event: ping\ndata: {}\n\n", "no event says which endpoint"),
    ],
)
def test_plain_bodies_that_name_nothing_fail_clearly(body: bytes, reason: str) -> None:
    with pytest.raises(PlainInputError, match=reason):
        read_plain(body)


def test_plain_chat_json_is_accounted(proxy: Proxy, fixture_bytes) -> None:
    record = account_exchange(proxy, read_plain(fixture_bytes("openai_chat_completion.json")))
    # 1536 prompt (1024 cached), 412 completion (320 reasoning), o4-mini: 1.10 / 0.275 / 4.40
    assert record.usage == Usage(
        input_tokens=512, cache_read_tokens=1024, output_tokens=412, reasoning_tokens=320
    )
    # 512 x 1.10 + 1024 x 0.275 + 412 x 4.40 = 563.2 + 281.6 + 1812.8 = 2657.6 micro-dollars
    assert record.cost is not None and record.cost.total == Decimal("0.0026576")
    assert record.model is None and record.response_model == "o4-mini-2025-04-16"
    assert summarise([record])[0].model == "o4-mini-2025-04-16"


def test_plain_stream_is_a_streamed_request(proxy: Proxy, fixture_bytes) -> None:
    ex = read_plain(fixture_bytes("openai_chat_stream_include_usage.sse"), model="gpt-3.5-turbo")
    assert ex.response_headers == (("content-type", "text/event-stream"),)
    assert json.loads(ex.request_body)["stream"] is True
    record = account_exchange(proxy, ex)
    assert record.stream and record.usage == Usage(input_tokens=10, output_tokens=5)
    assert record.model == "gpt-3.5-turbo"


def test_plain_with_the_model_given_prices_what_the_body_cannot(
    proxy: Proxy, fixture_bytes
) -> None:
    body = fixture_bytes("openai_transcription_whisper_json.json")
    unpriced = account_exchange(proxy, read_plain(body))
    assert summarise([unpriced])[0].cost is None
    record = account_exchange(proxy, read_plain(body, model="whisper-1"))
    assert record.usage.audio_seconds == 9
    # 9 s x 0.006 / 60 = 0.0009
    assert record.cost is not None and record.cost.total == Decimal("0.0009")


@pytest.mark.parametrize(
    ("endpoint", "provider", "expected"),
    [
        ("chat", None, ("openai", "chat.completions")),
        ("chat.completions", None, ("openai", "chat.completions")),
        ("/v1/chat/completions", None, ("openai", "chat.completions")),
        ("/anthropic/v1/messages", None, ("anthropic", "messages")),
        ("v1/messages", "anthropic", ("anthropic", "messages")),
        (
            "/v1/messages/batches/msgbatch_1/results",
            None,
            ("anthropic", "messages.batches.results"),
        ),
        ("translations", None, ("openai", "audio.translations")),
        ("models", "anthropic", ("anthropic", "models")),
    ],
)
def test_endpoint_names(endpoint: str, provider: str | None, expected: tuple[str, str]) -> None:
    assert resolve_endpoint(endpoint, provider) == expected


def test_endpoint_errors() -> None:
    with pytest.raises(PlainInputError, match="unknown endpoint"):
        resolve_endpoint("/v1/files")
    with pytest.raises(PlainInputError, match="is an anthropic endpoint, not openai"):
        resolve_endpoint("messages", "openai")


def test_plain_given_provider_must_match_the_body(fixture_bytes) -> None:
    with pytest.raises(PlainInputError, match="looks like anthropic messages, not openai"):
        read_plain(fixture_bytes("anthropic_message.json"), provider="openai")
    with pytest.raises(PlainInputError, match="unknown provider"):
        read_plain(b"{}", provider="azure")


def test_plain_explicit_endpoint_reads_a_text_transcript(proxy: Proxy) -> None:
    ex = read_plain(b"hello world", endpoint="transcriptions", model="whisper-1")
    assert ex.target == "/openai/v1/audio/transcriptions"
    assert ex.response_headers == (("content-type", "text/plain"),)
    record = account_exchange(proxy, ex)
    assert record.outcome is Outcome.OK and record.usage_source is UsageSource.NONE


def test_plain_batch_results_are_a_get_with_no_body(proxy: Proxy, fixture_bytes) -> None:
    ex = read_plain(fixture_bytes("anthropic_batch_results.jsonl"))
    assert ex.method == "GET" and ex.request_body == b""
    record = account_exchange(proxy, ex)
    assert record.endpoint == "messages.batches.results" and record.line_items


# -- summary -----------------------------------------------------------------------------------


def test_summary_adds_money_exactly(proxy: Proxy) -> None:
    one = account_exchange(proxy, exchanges(har_items())[1][1])  # 0.0000048
    rows = summarise([one] * 1000)
    assert rows[0].requests == 1000
    assert rows[0].cost == Decimal("0.0048")  # no float, no 28-digit context rounding
    assert rows[0].usage == Usage(input_tokens=12_000, output_tokens=5_000)


def test_summary_zero_usage_costs_zero_not_na(proxy: Proxy, fixture_bytes) -> None:
    free = account_exchange(proxy, read_plain(fixture_bytes("anthropic_count_tokens.json")))
    [row] = summarise([free])
    assert row.cost == 0 and not row.cost_incomplete and row.model == "-"


def test_summary_groups_missing_identity_under_dashes() -> None:
    from meshproxy_core.records import Ending, UsageRecord

    record = UsageRecord(
        id="x",
        request_id="x",
        provider="",
        endpoint="",
        method="GET",
        path="",
        status=404,
        outcome=Outcome.REJECTED,
        ending=Ending.COMPLETE,
        started_at=0.0,
        ended_at=0.0,
    )
    assert summarise([record]) == [
        SummaryRow("-", "-", "-", "-", requests=1, usage=Usage(), cost=Decimal(0))
    ]


def test_add_usage_merges_images() -> None:
    a = Usage(output_tokens=1, images=(ImageCount("1024x1024", "hd", 1),))
    b = Usage(
        output_tokens=2,
        audio_seconds=Decimal("1.5"),
        images=(ImageCount("1024x1024", "hd", 2), ImageCount("512x512", "standard", 1)),
    )
    assert add_usage(a, b) == Usage(
        output_tokens=3,
        audio_seconds=Decimal("1.5"),
        images=(ImageCount("1024x1024", "hd", 3), ImageCount("512x512", "standard", 1)),
    )
