"""Refusals: each with the right status, a provider-shaped body, the SDK's normal exception,
and nothing forwarded upstream."""

from __future__ import annotations

import http.client
import json
import time

import anthropic
import jwt
import openai
import pytest

from meshproxy.adapters.testing import FakeUpstreamProcess

from .conftest import SECRET, ProxyProcess, make_token

pytestmark = pytest.mark.e2e

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}


def raw_request(
    proxy: ProxyProcess,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=False, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body or method == "POST":
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def oa(proxy: ProxyProcess, token: str, base: str = "/openai/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + base, api_key=token, max_retries=0, timeout=10)


@pytest.mark.parametrize(
    "target",
    [
        "/openai/v1/files",
        "/openai/v1/responses/resp_abc",
        "/openai/v1/../v1/chat/completions",
        "/openai/v1/chat/%63ompletions",
        "/openai/v1/chat%2Fcompletions",
        "/openai/v1//chat/completions",
        "/openai/v1/chat/completions/",
        "/admin",
        "/openai/v1/models/" + "m" * 3000,
    ],
)
def test_unlisted_and_tricky_paths_are_404(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str, target: str
) -> None:
    status, headers, body = raw_request(
        proxy, "POST", target, {"authorization": f"Bearer {token}"}, json.dumps(CHAT).encode()
    )
    assert status == 404
    error = json.loads(body)["error"]
    assert error["code"] == "path_not_allowed" and error["type"] == "invalid_request_error"
    assert headers["content-type"] == "application/json"
    assert fake.received() == []


def test_unlisted_path_raises_sdk_not_found(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oa(proxy, token).files.list()
    assert info.value.code == "path_not_allowed"
    with pytest.raises(anthropic.NotFoundError) as ainfo:
        anthropic.Anthropic(
            base_url=proxy.url + "/anthropic", api_key=token, max_retries=0
        ).beta.files.list()
    assert ainfo.value.body["type"] == "error"  # type: ignore[index]
    assert fake.received() == []


def test_wrong_method_is_405(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    status, headers, body = raw_request(
        proxy, "GET", "/openai/v1/chat/completions", {"authorization": f"Bearer {token}"}
    )
    assert status == 405
    assert headers["allow"] == "POST"
    assert json.loads(body)["error"]["code"] == "method_not_allowed"
    assert fake.received() == []


def _forged_tokens() -> dict[str, str]:
    now = time.time()
    good = jwt.decode(make_token(), SECRET, algorithms=["HS256"])
    header_none = {"alg": "none", "typ": "JWT"}
    import base64

    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return {
        "expired": make_token(ttl=-120, now=now - 10),
        "forged": jwt.encode(good, "wrong-secret-" + "y" * 32, algorithm="HS256"),
        "alg_none": f"{b64(header_none)}.{b64(good)}.",
        "garbage": "not-a-token",
    }


@pytest.mark.parametrize("kind", ["expired", "forged", "alg_none", "garbage", "missing"])
def test_bad_tokens_are_401_openai(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, kind: str
) -> None:
    token = _forged_tokens().get(kind, "")
    client = oa(proxy, token or "placeholder")
    if kind == "missing":
        client = openai.OpenAI(
            base_url=proxy.url + "/openai/v1",
            api_key="x",
            max_retries=0,
            default_headers={"Authorization": ""},
        )
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert info.value.code == "invalid_token"
    assert info.value.message if hasattr(info.value, "message") else True
    assert "signature" not in str(info.value).lower()
    assert fake.received() == []


@pytest.mark.parametrize("kind", ["expired", "forged", "alg_none"])
def test_bad_tokens_are_401_anthropic(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, kind: str
) -> None:
    client = anthropic.Anthropic(
        base_url=proxy.url + "/anthropic", api_key=_forged_tokens()[kind], max_retries=0
    )
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert fake.received() == []


def test_openai_path_refuses_x_api_key(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    status, _, body = raw_request(
        proxy,
        "POST",
        "/openai/v1/chat/completions",
        {"x-api-key": token, "content-type": "application/json"},
        json.dumps(CHAT).encode(),
    )
    assert status == 401
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert fake.received() == []


def test_disallowed_model_is_403(proxy: ProxyProcess, fake: FakeUpstreamProcess) -> None:
    token = make_token(models=["openai/gpt-4o-mini", "anthropic/claude-haiku*"])
    oa(proxy, token).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    with pytest.raises(openai.PermissionDeniedError) as info:
        oa(proxy, token).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "model_not_allowed"
    with pytest.raises(anthropic.PermissionDeniedError):
        anthropic.Anthropic(
            base_url=proxy.url + "/anthropic", api_key=token, max_retries=0
        ).messages.create(
            model="claude-opus-4-1", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert len(fake.received()) == 1


def test_oversized_body_is_413(proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str) -> None:
    body = b'{"model":"gpt-4o-mini","input":"' + b"a" * (33 * 1024 * 1024) + b'"}'
    try:
        status, _, response = raw_request(
            proxy,
            "POST",
            "/openai/v1/embeddings",
            {"authorization": f"Bearer {token}", "content-type": "application/json"},
            body,
        )
    except (ConnectionResetError, BrokenPipeError):
        pytest.fail("the proxy must answer 413, not drop the connection")
    assert status == 413
    assert json.loads(response)["error"]["code"] == "body_too_large"
    assert fake.received() == []


def test_invalid_json_body_is_400(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    status, _, body = raw_request(
        proxy,
        "POST",
        "/openai/v1/chat/completions",
        {"authorization": f"Bearer {token}", "content-type": "application/json"},
        b"{not json",
    )
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert b"not json" not in body
    assert fake.received() == []


def test_rejections_are_recorded(proxy: ProxyProcess, fake: FakeUpstreamProcess) -> None:
    token = make_token(models=["openai/gpt-4o-mini"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        oa(proxy, token).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    request_id = info.value.response.headers["x-meshproxy-request-id"]
    record = proxy.record(request_id)
    assert record["outcome"] == "rejected"
    assert record["reject_reason"] == "model_not_allowed"
    assert record["status"] == 403


def test_no_secret_in_responses_or_logs(
    proxy: ProxyProcess, fake: FakeUpstreamProcess, token: str
) -> None:
    from .conftest import ANTHROPIC_KEY, OPENAI_KEY

    raw = oa(proxy, token).chat.completions.with_raw_response.create(**CHAT)  # type: ignore
    seen = repr(dict(raw.headers)) + raw.text
    log = proxy.log()
    records = proxy.records_path.read_text()
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, token, SECRET):
        assert secret not in seen
        assert secret not in log
        assert secret not in records
