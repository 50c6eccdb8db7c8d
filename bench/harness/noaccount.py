"""BENCHMARK ONLY: `meshproxy serve` with usage accounting replaced by a pass-through.

The baseline for "streaming with usage accounting costs at most 10% over relaying without it":
the same server, the same exchange (routing, auth, header rewriting, record), but every response
goes through a meter that returns the bytes it is given and reports nothing. Done by patching
`meter_for` inside this process only; never used by tests or by the proxy itself.

    python -m bench.harness.noaccount serve --no-ledger --port N     (same arguments as serve)
    python -m bench.harness.noaccount --asgi uvicorn ARGS...         (uvicorn, same app)
"""

from __future__ import annotations

import sys

import meshproxy_core.exchange
import meshproxy_core.usage.select
from meshproxy_core.records import UsageSource
from meshproxy_core.usage import Metering, RequestFacts, UsageMeter


class PassThroughMeter:
    """Returns every byte unchanged; no parsing, no usage."""

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self, complete: bool) -> tuple[bytes, Metering]:
        return b"", Metering(source=UsageSource.NONE)


def pass_through_meter(facts: RequestFacts, status: int, content_type: str | None) -> UsageMeter:
    return PassThroughMeter(facts)


def patch() -> None:
    # exchange.py bound the name at import: patch both places.
    meshproxy_core.usage.select.meter_for = pass_through_meter
    meshproxy_core.exchange.meter_for = pass_through_meter  # type: ignore[attr-defined]


def main() -> int:
    patch()
    argv = sys.argv[1:]
    if argv[:1] == ["--asgi"]:
        import runpy

        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__")
        return 0
    from meshproxy.adapters.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
