"""The path policy: exactly the allow-list, strict normalisation, the right refusal."""

from __future__ import annotations

import pytest

from meshproxy_core.errors import MethodNotAllowed, PathNotAllowed
from meshproxy_core.routes import EndpointKind, match_route

ALLOWED = [
    ("POST", "/openai/v1/chat/completions", "openai", EndpointKind.CHAT_COMPLETIONS),
    ("POST", "/v1/chat/completions", "openai", EndpointKind.CHAT_COMPLETIONS),
    ("POST", "/v1/responses", "openai", EndpointKind.RESPONSES),
    ("POST", "/v1/responses/compact", "openai", EndpointKind.RESPONSES_COMPACT),
    ("POST", "/v1/responses/input_tokens", "openai", EndpointKind.RESPONSES_INPUT_TOKENS),
    ("POST", "/openai/v1/embeddings", "openai", EndpointKind.EMBEDDINGS),
    ("POST", "/openai/v1/audio/speech", "openai", EndpointKind.AUDIO_SPEECH),
    ("POST", "/openai/v1/audio/transcriptions", "openai", EndpointKind.AUDIO_TRANSCRIPTIONS),
    ("POST", "/openai/v1/audio/translations", "openai", EndpointKind.AUDIO_TRANSLATIONS),
    ("POST", "/openai/v1/images/generations", "openai", EndpointKind.IMAGES_GENERATIONS),
    ("POST", "/openai/v1/images/edits", "openai", EndpointKind.IMAGES_EDITS),
    ("POST", "/openai/v1/images/variations", "openai", EndpointKind.IMAGES_VARIATIONS),
    ("GET", "/openai/v1/models", "openai", EndpointKind.MODELS),
    ("GET", "/v1/models/gpt-4o-mini", "openai", EndpointKind.MODELS),
    ("GET", "/v1/models/ft:gpt-4o-mini:org::abc123", "openai", EndpointKind.MODELS),
    ("POST", "/anthropic/v1/messages", "anthropic", EndpointKind.MESSAGES),
    (
        "POST",
        "/anthropic/v1/messages/count_tokens",
        "anthropic",
        EndpointKind.MESSAGES_COUNT_TOKENS,
    ),
    ("POST", "/anthropic/v1/messages/batches", "anthropic", EndpointKind.MESSAGE_BATCHES),
    ("GET", "/anthropic/v1/messages/batches", "anthropic", EndpointKind.MESSAGE_BATCHES),
    (
        "GET",
        "/anthropic/v1/messages/batches/msgbatch_01",
        "anthropic",
        EndpointKind.MESSAGE_BATCHES,
    ),
    (
        "DELETE",
        "/anthropic/v1/messages/batches/msgbatch_01",
        "anthropic",
        EndpointKind.MESSAGE_BATCHES,
    ),
    (
        "POST",
        "/anthropic/v1/messages/batches/msgbatch_01/cancel",
        "anthropic",
        EndpointKind.MESSAGE_BATCHES,
    ),
    (
        "GET",
        "/anthropic/v1/messages/batches/msgbatch_01/results",
        "anthropic",
        EndpointKind.MESSAGE_BATCH_RESULTS,
    ),
    ("POST", "/anthropic/v1/complete", "anthropic", EndpointKind.COMPLETE),
    ("GET", "/anthropic/v1/models", "anthropic", EndpointKind.MODELS),
    ("GET", "/anthropic/v1/models/claude-sonnet-4-5", "anthropic", EndpointKind.MODELS),
]


@pytest.mark.parametrize(("method", "target", "provider", "kind"), ALLOWED)
def test_allowed_paths_resolve(method: str, target: str, provider: str, kind: EndpointKind) -> None:
    route = match_route(method, target)
    assert (route.provider, route.kind, route.room) == (provider, kind, None)
    assert target.endswith(route.upstream_path)


@pytest.mark.parametrize(("method", "target", "provider", "kind"), ALLOWED)
def test_allowed_paths_under_a_room_mount(
    method: str, target: str, provider: str, kind: EndpointKind
) -> None:
    route = match_route(method, "/rooms/room-7" + target)
    assert (route.provider, route.kind, route.room) == (provider, kind, "room-7")


def test_query_passes_through_unchanged() -> None:
    route = match_route("GET", "/anthropic/v1/messages/batches?limit=2&after_id=x%20y")
    assert route.query == "limit=2&after_id=x%20y"
    assert route.upstream_path == "/messages/batches"


def test_configured_mount_is_required_and_stripped() -> None:
    route = match_route("POST", "/llm/openai/v1/chat/completions", mount="/llm")
    assert route.kind is EndpointKind.CHAT_COMPLETIONS
    with pytest.raises(PathNotAllowed):
        match_route("POST", "/openai/v1/chat/completions", mount="/llm")


REFUSED = [
    "/openai/v1/files",
    "/openai/v1/responses/resp_123",  # stored objects by id: another room's data
    "/openai/v1/responses/resp_123/input_items",
    "/openai/v1/batches",
    "/openai/v1/fine_tuning/jobs",
    "/openai/v1/vector_stores",
    "/openai/v1/chat/completions/",
    "/openai/v1/chat/completions/chatcmpl-1",
    "/openai/v1/images",
    "/openai/v1/images/generations/x",
    "/anthropic/v1/files",
    "/anthropic/v1/messages/batches/a/b",
    "/anthropic/v2/messages",
    "/v2/chat/completions",
    "/",
    "",
    "*",
    "http://evil.example/v1/chat/completions",
    "//v1/chat/completions",
    "/v1//chat/completions",
    "/v1/./chat/completions",
    "/v1/x/../chat/completions",
    "/v1/chat/%63ompletions",
    "/v1/chat%2fcompletions",
    "/v1/%2e%2e/v1/chat/completions",
    "/v1\\chat\\completions",
    "/v1/chat/completions\x00",
    "/v1/chat/completions#frag",
    "/v1/chat/compl etions",
    "/v1/chat/complétions",
    "/rooms/../v1/chat/completions",
    "/rooms/a/rooms/b/v1/chat/completions",
    "/rooms//v1/chat/completions",
    "/v1/models/" + "a" * 3000,
    "/openai/v1/../../admin",
]


@pytest.mark.parametrize("target", REFUSED)
def test_refused_targets(target: str) -> None:
    with pytest.raises(PathNotAllowed) as info:
        match_route("POST", target)
    assert info.value.status == 404
    assert info.value.code == "path_not_allowed"


@pytest.mark.parametrize(
    ("method", "target", "allowed"),
    [
        ("GET", "/v1/chat/completions", ("POST",)),
        ("DELETE", "/v1/models/ft:gpt-4o:org::x", ("GET",)),
        ("PUT", "/anthropic/v1/messages/batches", ("GET", "POST")),
    ],
)
def test_wrong_method(method: str, target: str, allowed: tuple[str, ...]) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        match_route(method, target)
    assert info.value.status == 405
    assert info.value.allowed == allowed


def test_refusal_uses_the_provider_shape_of_the_path() -> None:
    with pytest.raises(PathNotAllowed) as info:
        match_route("POST", "/anthropic/v1/files")
    assert info.value.provider == "anthropic"
    with pytest.raises(PathNotAllowed) as info:
        match_route("POST", "/openai/v1/files")
    assert info.value.provider == "openai"
