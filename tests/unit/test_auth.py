"""Room tokens: extraction by provider rule, HS256 verification, grants."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from meshproxy_core.auth import (
    HS256Verifier,
    check_model_grant,
    extract_token,
    mint_token,
    model_matches,
)
from meshproxy_core.errors import AuthenticationFailed, ModelNotAllowed

SECRET = "s3cret-for-tests-only-" + "0123456789abcdef" * 3
NOW = 1_800_000_000.0
NO_CLOCK = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}


def _token(**overrides: object) -> str:
    params: dict = dict(project="p1", room="r1", participant="alice", now=NOW, ttl=600)
    params.update(overrides)
    return mint_token(SECRET, **params)  # type: ignore[arg-type]


def test_openai_takes_only_bearer() -> None:
    assert extract_token("openai", [(b"authorization", b"Bearer abc")]) == "abc"
    assert extract_token("openai", [(b"Authorization", b"bearer   abc ")]) == "abc"
    with pytest.raises(AuthenticationFailed):
        extract_token("openai", [(b"x-api-key", b"abc")])
    with pytest.raises(AuthenticationFailed):
        extract_token("openai", [(b"authorization", b"Basic abc")])
    with pytest.raises(AuthenticationFailed):
        extract_token("openai", [])


def test_anthropic_takes_bearer_or_x_api_key() -> None:
    assert extract_token("anthropic", [(b"x-api-key", b"k1")]) == "k1"
    assert extract_token("anthropic", [(b"authorization", b"Bearer k2")]) == "k2"
    with pytest.raises(AuthenticationFailed):
        extract_token("anthropic", [(b"x-api-key", b"  ")])


def test_valid_token_gives_principal() -> None:
    token = _token(models=["openai/gpt-4o*"], session="s-9", kid="key-a")
    principal = HS256Verifier({"": SECRET}).verify(token, now=NOW + 10)
    assert principal.project == "p1"
    assert principal.room == "r1"
    assert principal.participant == "alice"
    assert principal.session == "s-9"
    assert principal.role == "agent"
    assert principal.api_key_id == "key-a"
    assert principal.models == ("openai/gpt-4o*",)


def test_kid_selects_secret() -> None:
    token = mint_token(
        "other-secret-0123456789abcdef0123",
        project="p",
        room="r",
        participant="a",
        now=NOW,
        kid="k2",
    )
    verifier = HS256Verifier({"": SECRET, "k2": "other-secret-0123456789abcdef0123"})
    assert verifier.verify(token, now=NOW).project == "p"
    with pytest.raises(AuthenticationFailed):
        HS256Verifier({"": SECRET}).verify(token, now=NOW)


def test_expired_token_refused_after_leeway() -> None:
    token = _token(ttl=60)
    verifier = HS256Verifier({"": SECRET}, leeway=5)
    assert verifier.verify(token, now=NOW + 64).room == "r1"
    with pytest.raises(AuthenticationFailed):
        verifier.verify(token, now=NOW + 66)


def test_cached_token_still_expires() -> None:
    token = _token(ttl=60)
    verifier = HS256Verifier({"": SECRET}, leeway=0)
    verifier.verify(token, now=NOW)
    with pytest.raises(AuthenticationFailed):
        verifier.verify(token, now=NOW + 61)


def test_not_before_in_the_future_refused() -> None:
    claims = jwt.decode(_token(), SECRET, algorithms=["HS256"], options=NO_CLOCK)
    claims["nbf"] = NOW + 1000
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(AuthenticationFailed):
        HS256Verifier({"": SECRET}).verify(token, now=NOW)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_refused() -> None:
    claims = jwt.decode(_token(), SECRET, algorithms=["HS256"], options=NO_CLOCK)
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(AuthenticationFailed):
        HS256Verifier({"": SECRET}).verify(forged, now=NOW)


def test_other_algorithms_refused() -> None:
    claims = jwt.decode(_token(), SECRET, algorithms=["HS256"], options=NO_CLOCK)
    token = jwt.encode(claims, SECRET, algorithm="HS512")
    with pytest.raises(AuthenticationFailed):
        HS256Verifier({"": SECRET}).verify(token, now=NOW)


def test_forged_signature_refused() -> None:
    token = mint_token(
        "not-the-secret-0123456789abcdef012", project="p", room="r", participant="a", now=NOW
    )
    with pytest.raises(AuthenticationFailed) as info:
        HS256Verifier({"": SECRET}).verify(token, now=NOW)
    assert info.value.message == "Invalid or missing room token."


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "x" * 5000, "é.é.é"])
def test_garbage_refused(garbage: str) -> None:
    with pytest.raises(AuthenticationFailed):
        HS256Verifier({"": SECRET}).verify(garbage, now=NOW)


def _with_grants(grants: list) -> str:
    claims = {"name": "a", "sub": "p", "exp": int(NOW + 600), "grants": grants}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    "grants",
    [
        [{"name": "api", "scope": {"llm": {}}}],  # no room grant
        [{"name": "room", "scope": "r"}],  # no api grant
        [{"name": "room", "scope": "r"}, {"name": "api", "scope": {"storage": {}}}],  # no llm
        [{"name": "room", "scope": "r"}, {"name": "api", "scope": {"llm": {"models": "x"}}}],
        [{"name": "room", "scope": ""}, {"name": "api", "scope": {"llm": {}}}],
    ],
)
def test_tokens_without_required_grants_refused(grants: list) -> None:
    with pytest.raises(AuthenticationFailed):
        HS256Verifier({"": SECRET}).verify(_with_grants(grants), now=NOW)


def test_model_patterns() -> None:
    assert model_matches("openai/gpt-4o*", "openai", "gpt-4o-mini")
    assert model_matches("openai/gpt-4o", "openai", "gpt-4o")
    assert not model_matches("openai/gpt-4o", "openai", "gpt-4o-mini")
    assert not model_matches("openai/gpt-4o*", "anthropic", "gpt-4o")
    assert not model_matches("openai/gpt-4?", "openai", "gpt-4o")
    assert model_matches("anthropic/*", "anthropic", "claude-haiku-4-5")


def test_model_grant() -> None:
    verifier = HS256Verifier({"": SECRET})
    principal = verifier.verify(_token(models=["openai/gpt-4o-mini"]), now=NOW)
    check_model_grant(principal, "openai", "gpt-4o-mini")
    with pytest.raises(ModelNotAllowed) as info:
        check_model_grant(principal, "openai", "gpt-4o")
    assert info.value.status == 403 and info.value.code == "model_not_allowed"
    unrestricted = verifier.verify(_token(), now=NOW)
    check_model_grant(unrestricted, "anthropic", "anything")
