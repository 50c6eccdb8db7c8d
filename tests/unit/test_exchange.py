"""The exchange driven with plain bytes and no sockets: decisions, rewriting, records."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal

import pytest

from meshproxy_core.auth import mint_token
from meshproxy_core.config import ProxyConfig
from meshproxy_core.exchange import (
    CheckOwnership,
    Exchange,
    ExchangeStateError,
    Forward,
    NeedBody,
    Proxy,
    Reject,
)
from meshproxy_core.pricing import PriceBook
from meshproxy_core.records import Ending, Outcome, UsageSource

SECRET = "unit-secret-" + "z" * 40
NOW = 1_900_000_000.0
ENV = {
    "MESHAGENT_SECRET": SECRET,
    "OPENAI_API_KEY": "sk-openai-server",
    "OPENAI_BASE_URL": "http://up/v1",
    "ANTHROPIC_API_KEY": "sk-ant-server",
    "ANTHROPIC_BASE_URL": "http://ant",
}


def proxy(**env: str) -> Proxy:
    ids = iter(f"req_{i}" for i in range(1000))
    return Proxy(
        ProxyConfig.from_mapping({}, {**ENV, **env}),
        prices=PriceBook.default(),
        ids=lambda: next(ids),
    )


def token(**kw: object) -> str:
    args: dict = dict(project="p", room="r", participant="bob", now=NOW, ttl=600)
    args.update(kw)
    return mint_token(SECRET, **args)  # type: ignore[arg-type]


def start(
    p: Proxy, target: str, body: dict | bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[Exchange, Forward | Reject]:
    ex = p.exchange(now=NOW)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = headers if headers is not None else [(b"authorization", f"Bearer {token()}".encode())]
    head = [*head, (b"content-type", b"application/json")]
    decision = ex.request_head("POST", target, head, content_length=len(raw))
    if isinstance(decision, Reject):
        return ex, decision
    assert isinstance(decision, NeedBody)
    return ex, ex.request_body(raw)


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CHAT_RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "yo"}}],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 400},
    },
}


def test_forward_rewrites_credentials_and_url() -> None:
    _, forward = start(proxy(), "/openai/v1/chat/completions?x=1", CHAT)
    assert isinstance(forward, Forward)
    assert forward.url == "http://up/v1/chat/completions?x=1"
    headers = dict(forward.headers)
    assert headers[b"authorization"] == b"Bearer sk-openai-server"
    assert token().encode() not in b"".join(v for _, v in forward.headers)
    assert json.loads(forward.body) == CHAT


def test_json_response_record_and_cost() -> None:
    ex, forward = start(proxy(), "/openai/v1/chat/completions", CHAT)
    assert isinstance(forward, Forward)
    head = ex.response_head(200, [(b"content-type", b"application/json")])
    assert head.status == 200
    body = json.dumps(CHAT_RESPONSE).encode()
    delivered = b"".join(ex.response_data(body[i : i + 7]) for i in range(0, len(body), 7))
    delivered += ex.finish(Ending.COMPLETE, now=NOW + 1.5)
    assert delivered == body
    record = ex.record
    assert record is not None
    assert record.outcome is Outcome.OK and record.status == 200
    assert record.usage.input_tokens == 600 and record.usage.cache_read_tokens == 400
    assert record.usage.output_tokens == 200
    assert record.usage_source is UsageSource.REPORTED
    assert record.response_model == "gpt-4o-mini-2024-07-18"
    assert record.principal is not None and record.principal.participant == "bob"
    assert record.ended_at - record.started_at == 1.5
    assert record.cost is not None and record.cost.total > 0


def test_gzip_response_passes_through_unchanged_and_is_counted() -> None:
    ex, _ = start(
        proxy(),
        "/openai/v1/chat/completions",
        CHAT,
        [(b"authorization", f"Bearer {token()}".encode()), (b"accept-encoding", b"gzip")],
    )
    ex.response_head(200, [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")])
    compressed = gzip.compress(json.dumps(CHAT_RESPONSE).encode())
    delivered = b"".join(
        ex.response_data(compressed[i : i + 5]) for i in range(0, len(compressed), 5)
    )
    delivered += ex.finish(Ending.COMPLETE, now=NOW)
    assert delivered == compressed
    assert ex.record is not None and ex.record.usage.output_tokens == 200


def test_stream_without_include_usage_is_rewritten_and_stripped() -> None:
    ex, forward = start(proxy(), "/v1/chat/completions", {**CHAT, "stream": True})
    assert isinstance(forward, Forward)
    assert json.loads(forward.body)["stream_options"] == {"include_usage": True}
    assert dict(forward.headers)[b"accept-encoding"] == b"identity"
    head = ex.response_head(
        200, [(b"content-type", b"text/event-stream"), (b"content-length", b"999")]
    )
    assert b"content-length" not in dict(head.headers)
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "yo"}}],
        "usage": None,
    }
    usage_chunk = {**chunk, "choices": [], "usage": CHAT_RESPONSE["usage"]}
    stream = (
        f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage_chunk)}\n\ndata: [DONE]\n\n"
    ).encode()
    delivered = b"".join(ex.response_data(stream[i : i + 3]) for i in range(0, len(stream), 3))
    delivered += ex.finish(Ending.COMPLETE, now=NOW)
    assert b'"usage": {' not in delivered and b"prompt_tokens" not in delivered
    assert delivered.endswith(b"data: [DONE]\n\n")
    assert ex.record is not None and ex.record.usage.cache_read_tokens == 400


def test_cut_anthropic_stream_gets_error_event_and_partial_record() -> None:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 10,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    ex, _ = start(proxy(), "/anthropic/v1/messages", body, [(b"x-api-key", token().encode())])
    ex.response_head(200, [(b"content-type", b"text/event-stream; charset=utf-8")])
    start_event = {
        "type": "message_start",
        "message": {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [],
            "usage": {"input_tokens": 321, "output_tokens": 1},
        },
    }
    ex.response_data(f"event: message_start\ndata: {json.dumps(start_event)}\n\n".encode())
    tail = ex.finish(Ending.UPSTREAM_FAILED, now=NOW)
    assert b"event: error\n" in tail and b'"type":"error"' in tail
    record = ex.record
    assert record is not None and record.partial and record.outcome is Outcome.PARTIAL
    assert record.usage.input_tokens == 321


def test_upstream_unreachable_gives_502_in_provider_shape() -> None:
    ex, _ = start(
        proxy(),
        "/anthropic/v1/messages",
        {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": []},
        [(b"x-api-key", token().encode())],
    )
    reject = ex.upstream_failed(Ending.UPSTREAM_FAILED, now=NOW)
    assert reject.status == 502
    assert json.loads(reject.body)["error"]["type"] == "api_error"
    assert ex.record is not None and ex.record.outcome is Outcome.FAILED
    timeout_ex, _ = start(proxy(), "/v1/chat/completions", CHAT)
    assert timeout_ex.upstream_failed(Ending.TIMEOUT, now=NOW).status == 504


def test_rejections_are_records() -> None:
    ex, reject = start(proxy(), "/v1/files", CHAT)
    assert isinstance(reject, Reject) and reject.status == 404
    assert ex.record is not None and ex.record.outcome is Outcome.REJECTED
    assert ex.record.reject_reason == "path_not_allowed"
    ex, reject = start(proxy(), "/v1/chat/completions", CHAT, [])
    assert isinstance(reject, Reject) and reject.status == 401
    ex, reject = start(proxy(), "/v1/chat/completions", {**CHAT, "model": "no-such-model-x"})
    assert isinstance(reject, Reject) and reject.status == 400
    assert json.loads(reject.body)["error"]["code"] == "model_not_priced"
    assert ex.record is not None and ex.record.reject_reason == "model_not_priced"


def test_declared_body_over_limit_refused_before_reading() -> None:
    p = proxy()
    ex = p.exchange(now=NOW)
    decision = ex.request_head(
        "POST",
        "/v1/embeddings",
        [(b"authorization", f"Bearer {token()}".encode())],
        content_length=p.config.max_body_bytes + 1,
    )
    assert isinstance(decision, Reject) and decision.status == 413


def test_out_of_order_calls_are_adapter_bugs() -> None:
    ex = proxy().exchange(now=NOW)
    with pytest.raises(ExchangeStateError):
        ex.response_data(b"x")
    with pytest.raises(ExchangeStateError):
        ex.request_body(b"{}")


def test_abandon_before_response_is_recorded_once() -> None:
    ex, _ = start(proxy(), "/v1/chat/completions", CHAT)
    ex.abandon(Ending.CLIENT_GONE, now=NOW)
    first = ex.record
    ex.abandon(Ending.SHUTDOWN, now=NOW)
    assert ex.record is first and first is not None
    assert first.outcome is Outcome.FAILED and first.ending is Ending.CLIENT_GONE


def _batch_line(custom_id: str, model: str, usage: dict) -> str:
    message = {
        "id": "msg",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "usage": {**usage, "service_tier": "batch"},
    }
    return json.dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}})


def test_batch_results_priced_per_line_by_each_lines_model() -> None:
    ex = proxy().exchange(now=NOW)
    decision = ex.request_head(
        "GET",
        "/anthropic/v1/messages/batches/msgbatch_9/results",
        [(b"x-api-key", token().encode())],
        content_length=None,
    )
    assert isinstance(decision, NeedBody)
    assert isinstance(ex.request_body(b""), CheckOwnership)
    assert isinstance(ex.ownership_known(owner=("p", "r")), Forward)
    ex.response_head(200, [(b"content-type", b"application/binary")])
    lines = [
        _batch_line(
            "a", "claude-haiku-4-5-20251001", {"input_tokens": 1000, "output_tokens": 2000}
        ),
        json.dumps(
            {
                "custom_id": "b",
                "result": {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": "invalid_request_error", "message": "x"},
                    },
                },
            }
        ),
        _batch_line("c", "claude-sonnet-4-5", {"input_tokens": 1000, "output_tokens": 1000}),
    ]
    body = ("\n".join(lines) + "\n").encode()
    assert ex.response_data(body) == body
    ex.finish(Ending.COMPLETE, now=NOW)
    record = ex.record
    assert record is not None and record.batch_id == "msgbatch_9"
    assert record.batch_custom_ids == ("a", "c")
    assert [item.key for item in record.line_items] == ["a", "c"]
    # Batch: half the list rates. haiku-4-5 $1/$5 per M -> 1000*0.5/1e6 + 2000*2.5/1e6 = 0.0055;
    # sonnet-4-5 $3/$15 per M -> 1000*1.5/1e6 + 1000*7.5/1e6 = 0.009.
    costs = [item.cost.total for item in record.line_items if item.cost is not None]
    assert costs == [Decimal("0.0055"), Decimal("0.009")]
    assert record.cost is not None and record.cost.total == Decimal("0.0145")
    assert record.usage.input_tokens == 2000 and record.usage.output_tokens == 3000


def _get(p: Proxy, target: str) -> tuple[Exchange, object]:
    ex = p.exchange(now=NOW)
    decision = ex.request_head("GET", target, [(b"x-api-key", token().encode())], content_length=0)
    assert isinstance(decision, NeedBody)
    return ex, ex.request_body(b"")


def test_another_rooms_batch_is_not_found_and_never_forwarded() -> None:
    ex, check = _get(proxy(), "/anthropic/v1/messages/batches/msgbatch_other")
    assert isinstance(check, CheckOwnership)
    assert (check.check.object_id, check.project, check.room) == ("msgbatch_other", "p", "r")
    reject = ex.ownership_known(owner=("p", "another-room"))
    assert isinstance(reject, Reject) and reject.status == 404
    body = json.loads(reject.body)
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert ex.record is not None and ex.record.reject_reason == "object_not_found"
    ex, _ = _get(proxy(), "/anthropic/v1/messages/batches/msgbatch_unknown")
    assert isinstance(ex.ownership_known(owner=None), Reject)
    ex, _ = _get(proxy(), "/anthropic/v1/messages/batches/msgbatch_mine")
    assert isinstance(ex.ownership_known(owner=("p", "r")), Forward)


def _batch(i: int) -> dict:
    return {"id": f"msgbatch_{i}", "type": "message_batch", "results_url": None}


def test_batch_listing_is_filtered_to_the_callers_room() -> None:
    ex, check = _get(proxy(), "/anthropic/v1/messages/batches?limit=2&after_id=msgbatch_0")
    assert isinstance(check, CheckOwnership) and check.check.list_owned
    forward = ex.ownership_known(owned_ids={"msgbatch_2", "msgbatch_4", "msgbatch_5"})
    assert isinstance(forward, Forward)
    assert forward.url.endswith("/messages/batches?after_id=msgbatch_0&limit=1000")
    ex.response_head(200, [(b"content-type", b"application/json"), (b"content-length", b"9")])
    page = {
        "data": [_batch(i) for i in range(1, 7)],
        "has_more": False,
        "first_id": "msgbatch_1",
        "last_id": "msgbatch_6",
    }
    assert ex.response_data(json.dumps(page).encode()) == b""
    out = json.loads(ex.finish(Ending.COMPLETE, now=NOW))
    assert [b["id"] for b in out["data"]] == ["msgbatch_2", "msgbatch_4"]
    assert (out["first_id"], out["last_id"], out["has_more"]) == ("msgbatch_2", "msgbatch_4", True)


def test_previous_response_of_another_room_is_refused() -> None:
    body = {"model": "gpt-4o-mini", "input": "go on", "previous_response_id": "resp_theirs"}
    ex, check = start(proxy(), "/openai/v1/responses", body)
    assert isinstance(check, CheckOwnership) and check.check.kind == "openai.response"
    reject = ex.ownership_known(owner=("p", "other"))
    assert isinstance(reject, Reject) and reject.status == 404
    assert json.loads(reject.body)["error"]["code"] == "object_not_found"
    ex, check = start(
        proxy(), "/openai/v1/responses", {**body, "previous_response_id": "resp_mine"}
    )
    assert isinstance(ex.ownership_known(owner=("p", "r")), Forward)


def test_conversations_cannot_be_named() -> None:
    body = {"model": "gpt-4o-mini", "input": "x", "conversation": "conv_123"}
    _, reject = start(proxy(), "/openai/v1/responses", body)
    assert isinstance(reject, Reject) and reject.status == 404


def test_created_objects_are_on_the_record() -> None:
    ex, forward = start(proxy(), "/openai/v1/responses", {"model": "gpt-4o-mini", "input": "x"})
    assert isinstance(forward, Forward)
    ex.response_head(200, [(b"content-type", b"application/json")])
    response = {
        "id": "resp_new",
        "object": "response",
        "model": "gpt-4o-mini",
        "status": "completed",
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }
    ex.response_data(json.dumps(response).encode())
    ex.finish(Ending.COMPLETE, now=NOW)
    assert ex.record is not None
    assert (ex.record.created_object_kind, ex.record.created_object_id) == (
        "openai.response",
        "resp_new",
    )
    create = {
        "requests": [
            {
                "custom_id": "a",
                "params": {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": []},
            }
        ]
    }
    ex, forward = start(
        proxy(), "/anthropic/v1/messages/batches", create, [(b"x-api-key", token().encode())]
    )
    assert isinstance(forward, Forward)
    ex.response_head(200, [(b"content-type", b"application/json")])
    ex.response_data(json.dumps(_batch(77)).encode())
    ex.finish(Ending.COMPLETE, now=NOW)
    assert ex.record is not None and ex.record.created_object_id == "msgbatch_77"
    assert ex.record.created_object_kind == "anthropic.message_batch"


def test_project_prices_override_list_prices_for_that_project_only() -> None:
    document = {
        "projects": {
            "negotiated": {
                "prices": {
                    "providers": {
                        "openai": {
                            "models": {
                                "gpt-4o-mini": {
                                    "source": "contract 42",
                                    "effective": "2026-11-01",
                                    "rates": {"input": Decimal("0.10"), "output": Decimal("0.40")},
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    p = Proxy(ProxyConfig.from_mapping(document, ENV), prices=PriceBook.default())
    costs = {}
    for project in ("negotiated", "list-price"):
        ex = p.exchange(now=NOW)
        auth_header = f"Bearer {token(project=project)}".encode()
        body = json.dumps(CHAT).encode()
        ex.request_head(
            "POST",
            "/v1/chat/completions",
            [(b"authorization", auth_header), (b"content-type", b"application/json")],
            content_length=len(body),
        )
        ex.request_body(body)
        ex.response_head(200, [(b"content-type", b"application/json")])
        ex.response_data(json.dumps(CHAT_RESPONSE).encode())
        ex.finish(Ending.COMPLETE, now=NOW)
        assert ex.record is not None and ex.record.cost is not None
        costs[project] = ex.record.cost.total
    # 600 input + 400 cached (no cache rate in the contract: incomplete) ... priced parts only:
    # negotiated: 600 x 0.10/1e6 + 200 x 0.40/1e6 = 0.00006 + 0.00008 = 0.00014
    assert costs["negotiated"] == Decimal("0.00014")
    # list: gpt-4o-mini $0.15 in, $0.075 cached, $0.60 out per 1M
    # = 600 x 0.15/1e6 + 400 x 0.075/1e6 + 200 x 0.60/1e6 = 0.00009 + 0.00003 + 0.00012
    assert costs["list-price"] == Decimal("0.00024")


def test_batch_creation_checks_every_requests_model() -> None:
    def create(names: list[str], **grant: object) -> Forward | Reject | CheckOwnership:
        body = {
            "requests": [
                {"custom_id": f"c{i}", "params": {"model": m, "max_tokens": 5, "messages": []}}
                for i, m in enumerate(names)
            ]
        }
        _, decision = start(
            proxy(),
            "/anthropic/v1/messages/batches",
            body,
            [(b"x-api-key", token(**grant).encode())],
        )
        return decision

    assert isinstance(create(["claude-haiku-4-5", "claude-sonnet-4-5"]), Forward)
    unpriced = create(["claude-haiku-4-5", "claude-unknown-7"])
    assert isinstance(unpriced, Reject) and json.loads(unpriced.body)["error"]["code"] == (
        "model_not_priced"
    )
    denied = create(["claude-sonnet-4-5"], models=["anthropic/claude-haiku*"])
    assert isinstance(denied, Reject) and denied.status == 403
