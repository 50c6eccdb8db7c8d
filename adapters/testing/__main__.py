"""`python -m meshproxy.adapters.testing`: run the fake upstream as a process.

Owns: argument parsing, the one stdout line `listening on http://HOST:PORT` (flushed, so a parent
can read the port), and a clean exit on SIGTERM/SIGINT. Does not own: the server (upstream.py).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

import anyio

from meshproxy.adapters.testing.upstream import FakeUpstream


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m meshproxy.adapters.testing",
        description="A fake OpenAI + Anthropic upstream on a loopback address.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks per stream")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--openai-key", default=None, help="require this OpenAI key (else 401)")
    parser.add_argument("--anthropic-key", default=None, help="require this Anthropic key")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    fake = FakeUpstream(
        chunks=args.chunks,
        chunk_delay=args.chunk_delay,
        openai_key=args.openai_key,
        anthropic_key=args.anthropic_key,
    )
    # Install the signal handlers before announcing the port: a parent may send SIGTERM as soon
    # as it has read the line, and must get a clean exit, not the default kill.
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            await tg.start(fake.serve, args.host, args.port)
            print(f"listening on {fake.base_url}", flush=True)
            async for _ in signals:
                break
            tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # A SIGINT that arrives before the signal receiver is set up is a KeyboardInterrupt.
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(_run, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
