"""Properties of the path policy: no input reaches a path outside the allow-list."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from meshproxy_core.errors import ProxyError
from meshproxy_core.routes import match_route

# The allow-list written independently of the implementation, as regular expressions over the
# upstream path; `{id}` segments are plain ASCII ids.
_ID = r"[A-Za-z0-9_\-.:@~]+"
ALLOWED = {
    "openai": [
        r"/chat/completions",
        r"/responses",
        r"/responses/compact",
        r"/responses/input_tokens",
        r"/embeddings",
        r"/audio/(speech|transcriptions|translations)",
        r"/images/(generations|edits|variations)",
        r"/models",
        rf"/models/{_ID}",
    ],
    "anthropic": [
        r"/messages",
        r"/messages/count_tokens",
        r"/messages/batches",
        rf"/messages/batches/{_ID}",
        rf"/messages/batches/{_ID}/(cancel|results)",
        r"/complete",
        r"/models",
        rf"/models/{_ID}",
    ],
}
PREFIXES = {"openai": ["/openai/v1", "/v1"], "anthropic": ["/anthropic/v1"]}

pieces = st.sampled_from(
    [
        "/",
        "//",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        "\x00",
        "?",
        "#",
        "v1",
        "openai",
        "anthropic",
        "rooms",
        "r1",
        "chat",
        "completions",
        "messages",
        "batches",
        "models",
        "responses",
        "abc",
        " ",
        "é",
        "%",
        "~",
        ":",
        "@",
        "\t",
        "\r\n",
        "http:",
        "results",
        "cancel",
        "files",
        "count_tokens",
        "images",
        "generations",
    ]
)
targets = st.lists(pieces, max_size=14).map("".join) | st.text(max_size=60)


@given(targets, st.sampled_from(["GET", "POST", "DELETE", "PUT"]))
def test_no_target_escapes_the_allow_list(target: str, method: str) -> None:
    try:
        route = match_route(method, target)
    except ProxyError as refusal:
        assert refusal.status in (404, 405)
        return
    assert any(re.fullmatch(p, route.upstream_path) for p in ALLOWED[route.provider])
    # What goes upstream is literally what the client wrote after a known prefix: no decoding,
    # no collapsing, so the proxy and the provider cannot disagree about the path.
    path = target.split("?", 1)[0]
    room_prefix = f"/rooms/{route.room}" if route.room is not None else ""
    assert any(path == room_prefix + p + route.upstream_path for p in PREFIXES[route.provider])
    assert all(c.isascii() and c.isprintable() for c in target)
    assert "%" not in path and "\\" not in path and "//" not in path
    assert "/./" not in path + "/" and "/../" not in path + "/"
