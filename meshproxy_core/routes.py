"""The path policy: which request targets may reach a provider, and what kind of endpoint each is.

Owns: strict normalisation of the request target, the provider prefixes (`/openai/v1`, the `/v1`
alias, `/anthropic/v1`, and the same under `/rooms/{room}/`), the allow-list of endpoints with
their methods, and the `EndpointKind` of every allowed path.

Why the list is this tight: every room shares one provider key, so the provider cannot tell rooms
apart. An endpoint that reads stored objects by id (`GET /responses/{id}`, files, vector stores,
fine-tunes) would let one room read another's data. Such paths stay closed unless the proxy can
prove the object belongs to the caller's room.

Normalisation is deliberately a refusal, not a repair: a target with percent-escapes, dot
segments, empty segments, backslashes, control or non-ASCII bytes is rejected outright, because
every allowed path is plain ASCII and any "repair" is a chance for the proxy and the upstream to
disagree about which path was meant.

Does not own: authentication (auth), or what happens to the body (exchange).
"""

from __future__ import annotations

import enum
import re

import attrs

from .errors import MethodNotAllowed, PathNotAllowed

__all__ = ["MAX_TARGET_LENGTH", "EndpointKind", "Route", "claims_path", "match_route"]

MAX_TARGET_LENGTH = 2048  # bytes of path + query; longer targets are refused

# One path segment: what model ids (`ft:gpt-4o:org::id`, `claude-3-5-sonnet@2024`), batch ids and
# room names need, and nothing that has meaning to a URL parser or a file system.
_SEGMENT = re.compile(r"[A-Za-z0-9_\-.:@~]{1,256}")


class EndpointKind(enum.Enum):
    CHAT_COMPLETIONS = "chat.completions"
    RESPONSES = "responses"
    RESPONSES_COMPACT = "responses.compact"
    RESPONSES_INPUT_TOKENS = "responses.input_tokens"
    EMBEDDINGS = "embeddings"
    AUDIO_SPEECH = "audio.speech"
    AUDIO_TRANSCRIPTIONS = "audio.transcriptions"
    AUDIO_TRANSLATIONS = "audio.translations"
    IMAGES_GENERATIONS = "images.generations"
    IMAGES_EDITS = "images.edits"
    IMAGES_VARIATIONS = "images.variations"
    MODELS = "models"
    MESSAGES = "messages"
    MESSAGES_COUNT_TOKENS = "messages.count_tokens"
    MESSAGE_BATCHES = "messages.batches"
    MESSAGE_BATCH_RESULTS = "messages.batches.results"
    COMPLETE = "complete"


# Endpoints that never cost anything: no model check, no price check.
FREE_KINDS = frozenset(
    {
        EndpointKind.MODELS,
        EndpointKind.MESSAGES_COUNT_TOKENS,
        EndpointKind.RESPONSES_INPUT_TOKENS,
    }
)

# Endpoints whose body is multipart/form-data rather than JSON.
MULTIPART_KINDS = frozenset(
    {
        EndpointKind.AUDIO_TRANSCRIPTIONS,
        EndpointKind.AUDIO_TRANSLATIONS,
        EndpointKind.IMAGES_EDITS,
        EndpointKind.IMAGES_VARIATIONS,
    }
)

_ID = "{id}"  # a placeholder segment in the tables below: any one `_SEGMENT`


def _table(
    rows: list[tuple[str, str, EndpointKind]],
) -> dict[tuple[str, ...], dict[str, EndpointKind]]:
    table: dict[tuple[str, ...], dict[str, EndpointKind]] = {}
    for method, path, kind in rows:
        table.setdefault(tuple(path.strip("/").split("/")), {})[method] = kind
    return table


_OPENAI = _table(
    [
        ("POST", "/chat/completions", EndpointKind.CHAT_COMPLETIONS),
        ("POST", "/responses", EndpointKind.RESPONSES),
        ("POST", "/responses/compact", EndpointKind.RESPONSES_COMPACT),
        ("POST", "/responses/input_tokens", EndpointKind.RESPONSES_INPUT_TOKENS),
        ("POST", "/embeddings", EndpointKind.EMBEDDINGS),
        ("POST", "/audio/speech", EndpointKind.AUDIO_SPEECH),
        ("POST", "/audio/transcriptions", EndpointKind.AUDIO_TRANSCRIPTIONS),
        ("POST", "/audio/translations", EndpointKind.AUDIO_TRANSLATIONS),
        ("POST", "/images/generations", EndpointKind.IMAGES_GENERATIONS),
        ("POST", "/images/edits", EndpointKind.IMAGES_EDITS),
        ("POST", "/images/variations", EndpointKind.IMAGES_VARIATIONS),
        ("GET", "/models", EndpointKind.MODELS),
        # GET only: DELETE /models/{id} deletes a fine-tuned model for every room.
        ("GET", "/models/{id}", EndpointKind.MODELS),
    ]
)

_ANTHROPIC = _table(
    [
        ("POST", "/messages", EndpointKind.MESSAGES),
        ("POST", "/messages/count_tokens", EndpointKind.MESSAGES_COUNT_TOKENS),
        ("POST", "/messages/batches", EndpointKind.MESSAGE_BATCHES),
        ("GET", "/messages/batches", EndpointKind.MESSAGE_BATCHES),
        ("GET", "/messages/batches/{id}", EndpointKind.MESSAGE_BATCHES),
        ("DELETE", "/messages/batches/{id}", EndpointKind.MESSAGE_BATCHES),
        ("POST", "/messages/batches/{id}/cancel", EndpointKind.MESSAGE_BATCHES),
        ("GET", "/messages/batches/{id}/results", EndpointKind.MESSAGE_BATCH_RESULTS),
        ("POST", "/complete", EndpointKind.COMPLETE),
        ("GET", "/models", EndpointKind.MODELS),
        ("GET", "/models/{id}", EndpointKind.MODELS),
    ]
)

_PROVIDER_TABLES = {"openai": _OPENAI, "anthropic": _ANTHROPIC}

# Prefix segments after the optional `/rooms/{room}` mount.
_PREFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("openai", "v1"), "openai"),
    (("anthropic", "v1"), "anthropic"),
    (("v1",), "openai"),
)


@attrs.frozen
class Route:
    """An allowed request target, resolved."""

    provider: str
    kind: EndpointKind
    method: str
    upstream_path: str  # path under the provider's base URL, e.g. "/chat/completions"
    query: str  # raw query string without "?", passed through unchanged
    room: str | None  # the `{room}` of a `/rooms/{room}/...` mount
    object_id: str | None  # the `{id}` segment (model or batch id), if any


def match_route(method: str, target: str, *, mount: str = "") -> Route:
    """Resolve a request target against the allow-list; raise a `ProxyError` if it is refused.

    `mount` is an optional prefix (e.g. "/llm") under which an embedding app serves the proxy.
    """
    path, query = _split_target(target)
    provider = _provider_hint(path, mount)
    segments = _segments(path, provider)
    if mount:
        mount_segments = tuple(mount.strip("/").split("/"))
        if segments[: len(mount_segments)] != mount_segments:
            raise PathNotAllowed(provider)
        segments = segments[len(mount_segments) :]
    room: str | None = None
    if len(segments) >= 2 and segments[0] == "rooms":
        room, segments = segments[1], segments[2:]
    for prefix, name in _PREFIXES:
        if segments[: len(prefix)] == prefix:
            return _match_endpoint(name, method, segments[len(prefix) :], query, room)
    raise PathNotAllowed(provider)


_CLAIMED_FIRST_SEGMENTS = ("openai", "anthropic", "v1", "rooms")


def claims_path(path: str, *, mount: str = "") -> bool:
    """Whether a path belongs to the proxy (under `mount`), so middleware in front of another
    app answers it, allowed or refused, instead of passing it on. Only the first segment after
    the mount counts: everything under the proxy's prefixes is the proxy's to refuse."""
    if mount:
        if path != mount and not path.startswith(mount + "/"):
            return False
        path = path[len(mount) :]
    first = path.lstrip("/").split("/", 1)[0]
    return path.startswith("/") and first in _CLAIMED_FIRST_SEGMENTS


def _split_target(target: str) -> tuple[str, str]:
    if len(target) > MAX_TARGET_LENGTH or not target.startswith("/"):
        # Absolute-form ("http://host/...") and asterisk-form targets are never proxied.
        raise PathNotAllowed(None)
    # isprintable() is False for every control character and DEL; a space is printable.
    if not (target.isascii() and target.isprintable()) or " " in target:
        raise PathNotAllowed(None)
    if "#" in target:
        raise PathNotAllowed(None)
    path, _, query = target.partition("?")
    return path, query


def _provider_hint(path: str, mount: str) -> str | None:
    """Which provider's error shape to use for a refusal, guessed from the path alone."""
    return "anthropic" if "/anthropic/" in path + "/" else ("openai" if path else None)


def _segments(path: str, provider: str | None) -> tuple[str, ...]:
    if "%" in path or "\\" in path:
        raise PathNotAllowed(provider)
    segments = tuple(path[1:].split("/"))
    for segment in segments:
        if segment in (".", "..") or not _SEGMENT.fullmatch(segment):
            raise PathNotAllowed(provider)
    return segments


def _match_endpoint(
    provider: str, method: str, rest: tuple[str, ...], query: str, room: str | None
) -> Route:
    table = _PROVIDER_TABLES[provider]
    object_id: str | None = None
    methods = table.get(rest)
    if methods is None:
        for pattern, candidate in table.items():
            if len(pattern) == len(rest) and all(
                p == s or (p == _ID and s not in ("", ".", ".."))
                for p, s in zip(pattern, rest, strict=True)
            ):
                methods = candidate
                object_id = next(s for p, s in zip(pattern, rest, strict=True) if p == _ID)
                break
    if methods is None:
        raise PathNotAllowed(provider)
    kind = methods.get(method)
    if kind is None:
        raise MethodNotAllowed(provider, tuple(sorted(methods)))
    return Route(
        provider=provider,
        kind=kind,
        method=method,
        upstream_path="/" + "/".join(rest),
        query=query,
        room=room,
        object_id=object_id,
    )
