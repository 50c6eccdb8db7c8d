"""Test harness: a fake OpenAI + Anthropic upstream, also run as the built-in simulated provider.

Owns: re-exporting the public API of `upstream` (the server, scripting, process helper) and
`scenarios` (generated replies and their usage). Does not own: token minting
(`meshproxy_core.auth`).
"""

from meshproxy.adapters.testing.scenarios import (
    ReceivedRequest,
    Reply,
    Simulator,
    expected_usage,
)
from meshproxy.adapters.testing.upstream import (
    FakeUpstream,
    FakeUpstreamProcess,
    Scripted,
    ServedExchange,
    recording,
    serve_simulated_provider,
)

__all__ = [
    "FakeUpstream",
    "FakeUpstreamProcess",
    "ReceivedRequest",
    "Reply",
    "Scripted",
    "ServedExchange",
    "Simulator",
    "expected_usage",
    "recording",
    "serve_simulated_provider",
]
