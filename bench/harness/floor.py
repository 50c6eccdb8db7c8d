"""BENCHMARK ONLY: the cheapest possible Python relay, as a floor for what an asyncio proxy costs.

One upstream connection per client connection (opened on connect, kept alive), the request line's
`/openai/v1/…` or `/anthropic/v1/…` rewritten to `/v1/…`, every other byte piped unchanged both
ways: no auth, no header rewriting, no accounting, no HTTP parsing of the response. Not a proxy
anyone should run; it shows how much of meshproxy's cost is the I/O stack rather than its logic.

    python -m bench.harness.floor --port N --upstream-port M
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_PREFIX = re.compile(rb"^(POST|GET) /(?:openai|anthropic)/v1/")


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.upstream: asyncio.Transport | None = None
        self.pending = bytearray()
        self.body_left = 0
        self.ready = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(
                lambda: _Upstream(self.transport), "127.0.0.1", self.upstream_port
            )
        except OSError:
            self.transport.close()
            return
        self.upstream = upstream  # type: ignore[assignment]
        self.ready = True
        if self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if not self.ready:
            self.pending += data
            return
        assert self.upstream is not None
        out = bytearray()
        buf = self.pending + data
        self.pending = bytearray()
        while buf:
            if self.body_left:
                take = min(self.body_left, len(buf))
                out += buf[:take]
                del buf[:take]
                self.body_left -= take
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.pending = buf
                break
            head = bytes(buf[: end + 4])
            del buf[: end + 4]
            match = _CONTENT_LENGTH.search(head)
            self.body_left = int(match.group(1)) if match else 0
            out += _PREFIX.sub(rb"\1 /v1/", head, count=1)
        if out:
            self.upstream.write(bytes(out))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Client(upstream_port), "127.0.0.1", port, backlog=4096
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.upstream_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
