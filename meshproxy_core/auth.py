"""Room tokens: where they are read from, how they are verified, and what they grant.

Owns: extracting the token by provider rule (OpenAI: `Authorization: Bearer` only; Anthropic:
Bearer or `x-api-key`, as each SDK sends it), the `TokenVerifier` protocol, the default HS256
verifier for MeshAgent participant tokens, the model-grant check, and minting dev tokens.

The default token shape (MeshAgent participant token):
  {"name": participant, "sub": project, "kid"?: api key id, "exp": ..., "session"?: ...,
   "grants": [{"name": "room", "scope": "<room>"}, {"name": "role", "scope": "agent"},
              {"name": "api", "scope": {"llm": {"models": ["openai/gpt-4o*", ...]}}}]}
A token without a room grant, or whose api grant carries no `llm` scope, grants nothing here.

Failures never say what was wrong with a signature: every verification failure is the same
"invalid token" refusal, so the proxy is no oracle for forging tokens.

Does not own: which paths need a token (routes) or what is done with the principal (exchange).
The clock is an argument: the core reads no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import jwt

from .errors import AuthenticationFailed, ModelNotAllowed
from .records import Principal

__all__ = [
    "HS256Verifier",
    "TokenVerifier",
    "check_model_grant",
    "extract_token",
    "mint_token",
    "model_matches",
]

Headers = Sequence[tuple[bytes, bytes]]


class TokenVerifier(Protocol):
    """Turns a room token into a `Principal`, or raises `AuthenticationFailed`."""

    def verify(self, token: str, *, now: float) -> Principal: ...


def extract_token(provider: str, headers: Headers) -> str:
    """The room token the client sent, by the provider's own credential rule."""
    bearer: str | None = None
    api_key: str | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization":
            scheme, _, credential = value.partition(b" ")
            if scheme.lower() == b"bearer" and credential.strip():
                bearer = credential.strip().decode("latin-1")
        elif lowered == b"x-api-key" and value.strip():
            api_key = value.strip().decode("latin-1")
    if bearer is not None:
        return bearer
    # The Anthropic SDK sends its key as x-api-key; OpenAI's never does, so only Anthropic paths
    # accept it (a room token in x-api-key on an OpenAI path is refused like a missing one).
    if provider == "anthropic" and api_key is not None:
        return api_key
    raise AuthenticationFailed(provider)


class HS256Verifier:
    """Verifies HS256 JWTs in the MeshAgent participant-token shape.

    `secrets` maps a key id (`kid` in the JWT header, else in the claims) to its secret; the
    entry under "" is the default secret (`MESHAGENT_SECRET`). Verified tokens are cached until
    they expire, so the signature is checked once per token, not once per request.
    """

    def __init__(
        self,
        secrets: Mapping[str, str],
        *,
        leeway: float = 30.0,
        cache_size: int = 4096,
    ) -> None:
        if not secrets or not all(secrets.values()):
            raise ValueError("HS256Verifier needs at least one non-empty secret")
        self._secrets = dict(secrets)
        self._leeway = leeway
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size

    def verify(self, token: str, *, now: float) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            principal, expires = cached
            if now <= expires + self._leeway:
                self._cache.move_to_end(token)
                return principal
            del self._cache[token]
        principal, expires = self._verify_uncached(token, now)
        self._cache[token] = (principal, expires)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    def _verify_uncached(self, token: str, now: float) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
            secret = self._secret_for(header, token)
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],  # never "none", never a key-confusion algorithm
                # PyJWT would read the machine clock for exp/nbf/iat; the core takes time as an
                # argument, so those are checked below against `now`.
                options={
                    "require": ["exp", "sub", "name"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
            raise AuthenticationFailed(None) from exc
        expires = _number(claims.get("exp"))
        # Expiry is checked against the caller's clock, not the machine's: the core reads no clock.
        if expires is None or now > expires + self._leeway:
            raise AuthenticationFailed(None)
        not_before = _number(claims.get("nbf"))
        if not_before is not None and now < not_before - self._leeway:
            raise AuthenticationFailed(None)
        return principal_from_claims(claims), expires

    def _secret_for(self, header: Mapping[str, Any], token: str) -> str:
        kid = header.get("kid")
        if kid is None:
            kid = jwt.decode(token, options={"verify_signature": False}).get("kid")
        if kid is not None and str(kid) in self._secrets:
            return self._secrets[str(kid)]
        if "" in self._secrets:
            return self._secrets[""]
        raise KeyError("no secret for this token")


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Read a `Principal` out of verified MeshAgent participant-token claims."""
    grants = claims.get("grants")
    if not isinstance(grants, list):
        raise AuthenticationFailed(None)
    room: str | None = None
    role: str | None = None
    llm: Mapping[str, Any] | None = None
    for grant in grants:
        if not isinstance(grant, Mapping):
            continue
        name, scope = grant.get("name"), grant.get("scope")
        if name == "room" and isinstance(scope, str) and scope:
            room = scope
        elif name == "role" and isinstance(scope, str):
            role = scope
        elif name == "api" and isinstance(scope, Mapping) and isinstance(scope.get("llm"), Mapping):
            llm = scope["llm"]
    if room is None or llm is None:
        raise AuthenticationFailed(None)
    models = llm.get("models")
    if models is not None and not (
        isinstance(models, list) and all(isinstance(m, str) for m in models)
    ):
        raise AuthenticationFailed(None)
    session = claims.get("session")
    kid = claims.get("kid")
    return Principal(
        project=str(claims["sub"]),
        room=room,
        participant=str(claims["name"]),
        session=session if isinstance(session, str) else None,
        role=role,
        api_key_id=str(kid) if kid is not None else None,
        models=tuple(models) if models is not None else None,
    )


def model_matches(pattern: str, provider: str, model: str) -> bool:
    """`provider/model` pattern match; a trailing `*` is a prefix match, nothing else is special."""
    target = f"{provider}/{model}"
    if pattern.endswith("*"):
        return target.startswith(pattern[:-1])
    return target == pattern


def check_model_grant(principal: Principal, provider: str, model: str | None) -> None:
    """Refuse a model the token does not grant. A token without a models list grants every
    model; a request without a model is left to the provider to refuse."""
    if principal.models is None or model is None:
        return
    if not any(model_matches(pattern, provider, model) for pattern in principal.models):
        raise ModelNotAllowed(provider, model)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def mint_token(
    secret: str,
    *,
    project: str,
    room: str,
    participant: str,
    now: float,
    ttl: float = 3600.0,
    models: Sequence[str] | None = None,
    role: str | None = "agent",
    session: str | None = None,
    kid: str | None = None,
) -> str:
    """A signed HS256 room token in the MeshAgent participant-token shape (for dev and tests)."""
    llm: dict[str, Any] = {} if models is None else {"models": list(models)}
    grants: list[dict[str, Any]] = [{"name": "room", "scope": room}]
    if role is not None:
        grants.append({"name": "role", "scope": role})
    grants.append({"name": "api", "scope": {"llm": llm}})
    claims: dict[str, Any] = {
        "name": participant,
        "sub": project,
        "iat": int(now),
        "exp": int(now + ttl),
        "grants": grants,
    }
    if session is not None:
        claims["session"] = session
    headers: dict[str, Any] | None = None
    if kid is not None:
        claims["kid"] = kid
        headers = {"kid": kid}
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)
