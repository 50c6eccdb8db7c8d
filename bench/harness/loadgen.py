"""The load generator: a raw-socket HTTP/1.1 keep-alive client on asyncio, one process per cell.

Talks to the runner over stdin/stdout so the runner can sample the server's CPU and memory around
the measured phase only:

    loadgen connects, warms up          -> prints "READY"
    runner samples, writes "GO"         -> loadgen runs the measured phase
    (streams mode) all streams open     -> prints "OPEN {json}"   (runner samples memory)
    loadgen finishes                    -> prints "DONE {json}"

Modes:
  closed   `concurrency` connections, each sending its next request when the last one ended,
           until `requests` were sent or `max_seconds` passed. Latency is measured per request
           with time.perf_counter, from the write to the last byte of the response (for a stream:
           time to last byte).
  streams  `requests` connections, one (slow) stream each, all started at once; "OPEN" once every
           stream has its first byte (or `open_timeout` passed), then waits for them to end.

Bounded: no request is sent after `max_seconds`; in-flight ones are cut `grace` seconds later.
Connects to 127.0.0.1 only.

    python -m bench.harness.loadgen --spec '{"port": 8787, "kind": "meshproxy", ...}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from typing import Any

from bench.harness import payloads

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.IGNORECASE)
HOST = "127.0.0.1"
perf = time.perf_counter


class Failed(Exception):
    pass


class Conn(asyncio.Protocol):
    """One keep-alive connection; `request()` sends one request and awaits its whole response."""

    def __init__(self, capture: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.fut: asyncio.Future[tuple[int, float, bytes]] | None = None
        self.lost = False
        self.capture = capture
        self._reset()

    def _reset(self) -> None:
        self.head_done = False
        self.status = 0
        self.length = -1
        self.chunked = False
        self.pos = 0
        self.first = 0.0
        self.last = 0.0
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(Failed(f"connection lost ({exc or 'eof'})"))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, float, bytes]]:
        if self.lost or self.transport is None:
            raise Failed("connection closed")
        self._reset()
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.fut

    def data_received(self, data: bytes) -> None:
        if not self.first:
            self.first = perf()
        self.buf += data
        try:
            self._parse()
        except (ValueError, IndexError) as exc:
            if self.fut is not None and not self.fut.done():
                self.fut.set_exception(Failed(f"bad response: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def _parse(self) -> None:
        buf = self.buf
        if not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[: end + 2])
            del buf[: end + 4]
            self.status = int(head[9:12])
            if self.status == 100:
                return self._parse()
            self.head_done = True
            self.chunked = _CHUNKED.search(head) is not None
            match = _CONTENT_LENGTH.search(head)
            self.length = int(match.group(1)) if match else -1
            if not self.chunked and self.length < 0:
                raise ValueError("response without length (close-delimited) is not supported")
        if self.chunked:
            pos = self.pos
            while True:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    break
                size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
                if size == 0:
                    if len(buf) < line_end + 4:
                        break
                    if self.capture:
                        self.body += buf[:line_end]
                    del buf[: line_end + 4]
                    return self._done()
                nxt = line_end + 2 + size + 2
                if len(buf) < nxt:
                    break
                pos = nxt
            if self.capture:
                self.body += buf[:pos]
            del buf[:pos]
            self.pos = 0
        elif len(buf) >= self.length:
            if self.capture:
                self.body += buf[: self.length]
            del buf[: self.length]
            self._done()

    def _done(self) -> None:
        self.last = perf()
        fut = self.fut
        self.fut = None
        if fut is not None and not fut.done():
            fut.set_result((self.status, self.first, bytes(self.body)))


async def connect(capture: bool = False) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Conn(capture), HOST, PORT)
    return conn


PORT = 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(latencies: list[float], prefix: str = "") -> dict[str, float]:
    ms = [x * 1000 for x in latencies]
    return {
        f"{prefix}p50_ms": percentile(ms, 50),
        f"{prefix}p90_ms": percentile(ms, 90),
        f"{prefix}p99_ms": percentile(ms, 99),
        f"{prefix}mean_ms": sum(ms) / len(ms) if ms else float("nan"),
        f"{prefix}max_ms": max(ms) if ms else float("nan"),
    }


async def read_line() -> str:
    loop = asyncio.get_running_loop()
    return (await loop.run_in_executor(None, sys.stdin.readline)).strip()


def emit(tag: str, data: dict[str, Any] | None = None) -> None:
    sys.stdout.write(tag + (" " + json.dumps(data) if data is not None else "") + "\n")
    sys.stdout.flush()


def check(body: bytes, expect: str) -> bool:
    return expect.encode() in body


async def closed_loop(spec: dict[str, Any], req: bytes) -> None:
    concurrency = int(spec["concurrency"])
    total = int(spec["requests"])
    expect = spec.get("expect", "")
    conns = [await connect(capture=True) for _ in range(concurrency)]
    errors: list[str] = []
    # Warm-up: not measured, not sampled (the runner samples after READY).
    ok_sample = True
    for _ in range(int(spec.get("warmup", 2))):
        for conn in conns:
            try:
                status, _, body = await asyncio.wait_for(conn.request(req), 30)
            except (Failed, TimeoutError) as exc:
                emit("FAIL", {"error": f"warm-up: {exc}"})
                return
            if status != 200 or not check(body, expect):
                ok_sample = False
                errors.append(f"warm-up status {status}: {body[:300]!r}")
    for conn in conns:
        conn.capture = False
    emit("READY")
    if await read_line() != "GO":
        return
    latencies: list[float] = []
    ttfbs: list[float] = []
    issued = 0
    failed = 0
    start = perf()
    deadline = start + float(spec["max_seconds"])

    async def worker(conn: Conn) -> None:
        nonlocal issued, failed
        while issued < total and perf() < deadline:
            issued += 1
            t0 = perf()
            try:
                if conn.lost:
                    conn = await connect()
                status, first, _ = await conn.request(req)
            except (Failed, OSError) as exc:
                failed += 1
                if len(errors) < 5:
                    errors.append(str(exc))
                continue
            t1 = perf()
            if status != 200:
                failed += 1
                if len(errors) < 5:
                    errors.append(f"status {status}")
                continue
            latencies.append(t1 - t0)
            ttfbs.append(first - t0)

    try:
        async with asyncio.timeout(float(spec["max_seconds"]) + float(spec.get("grace", 30))):
            await asyncio.gather(*(worker(c) for c in conns))
    except TimeoutError:
        errors.append("cut at max_seconds + grace")
    elapsed = perf() - start
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    result: dict[str, Any] = {
        "requests": len(latencies),
        "issued": issued,
        "errors": issued - len(latencies),
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "sample_ok": ok_sample,
        "error_samples": errors[:5],
        **summary(latencies),
        **summary(ttfbs, "ttfb_"),
    }
    emit("DONE", result)


async def streams(spec: dict[str, Any], req: bytes) -> None:
    total = int(spec["requests"])
    batch = 50
    conns: list[Conn] = []
    for i in range(0, total, batch):
        conns += await asyncio.gather(*(connect() for _ in range(min(batch, total - i))))
    emit("READY")
    if await read_line() != "GO":
        return
    start = perf()
    futures = []
    for conn in conns:
        futures.append(conn.request(req))
    open_timeout = float(spec.get("open_timeout", 5.0))
    while perf() - start < open_timeout:
        opened = sum(1 for c in conns if c.first)
        if opened == total:
            break
        await asyncio.sleep(0.05)
    opened = sum(1 for c in conns if c.first)
    first_ok = sorted(c.first - start for c in conns if c.first)
    emit(
        "OPEN",
        {
            "open": opened,
            "after_s": perf() - start,
            "first_byte_p50_ms": (percentile(first_ok, 50) * 1000 if first_ok else None),
        },
    )
    done, pending = await asyncio.wait(
        futures, timeout=max(0.0, float(spec["max_seconds"]) - (perf() - start))
    )
    firsts: list[float] = []
    lasts: list[float] = []
    failures: list[str] = []
    for conn, fut in zip(conns, futures, strict=True):
        if fut not in done:
            continue
        exc = fut.exception()
        if exc is not None:
            failures.append(str(exc))
            continue
        status, first, _ = fut.result()
        if status != 200:
            failures.append(f"status {status}")
            continue
        firsts.append(first - start)
        lasts.append(conn.last - start)
    for fut in pending:
        fut.cancel()
    elapsed = perf() - start
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    result = {
        "requests": total,
        "completed": len(lasts),
        "errors": len(failures) + len(pending),
        "cut": len(pending),
        "elapsed_s": elapsed,
        "error_samples": sorted(set(failures))[:5],
        **summary(firsts, "ttfb_"),
        **summary(lasts),
    }
    emit("DONE", result)


def main(argv: list[str] | None = None) -> int:
    global PORT
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True, help="JSON cell description")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    PORT = int(spec["port"])
    req = payloads.request(
        spec["kind"],
        spec["shape"],
        f"{HOST}:{PORT}",
        spec["token"],
        stream=bool(spec["stream"]),
        chunk_delay=spec.get("chunk_delay"),
    )
    runner = streams if spec.get("mode") == "streams" else closed_loop
    try:
        asyncio.run(runner(spec, req))
    except (OSError, Failed) as exc:
        emit("FAIL", {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
