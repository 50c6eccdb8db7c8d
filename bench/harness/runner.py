"""`python -m bench`: meshproxy end to end against its floor and its peers, side by side.

Starts the bench upstream (upstream.py) and every server under test (servers.py) as separate
processes on 127.0.0.1, then drives each cell — (non-streaming | streaming) x (openai |
anthropic) x (concurrency 1 | 32) — against every server in turn with a fresh load-generator
process (loadgen.py), so the servers of one cell are measured minutes, not runs, apart. Around
each measured phase it reads the server's CPU time and peak RSS from /proc. Then the many-streams
rows (N slow streams held open at once), the micro rows (micro.py), the table, the targets, and
bench/results/latest.json.

    python -m bench [--quick] [--servers builtin,uvicorn] [--rows nonstream,stream,many,micro]

Every loop is bounded: each cell by its request count and --max-seconds, each process by a
timeout; all processes are stopped (by pid) on exit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import procs, servers
from bench.harness.payloads import SHAPES
from bench.harness.procs import ROOT, Managed, Sample
from bench.harness.servers import Server

RESULTS = ROOT / "bench" / "results"
_ROUND_KEYS = ("requests", "errors", "rps", "p50_ms", "p99_ms", "cpu_ms_per_request")
EXPECT = {  # a string the first responses of a cell must contain (checked during warm-up)
    ("nonstream", "openai"): '"usage"',
    ("nonstream", "anthropic"): '"usage"',
    ("stream", "openai"): "[DONE]",
    ("stream", "anthropic"): "message_stop",
}
TARGETS = {
    "added_p50_ms": 0.35,
    "cpu_ms_per_request": 0.5,
    "litellm_ratio": 25.0,
    "accounting_overhead": 0.10,
    "kib_per_stream": 20.0,
    "idle_rss_mb": 60.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="about 1/6 of the requests, short streams")
    p.add_argument(
        "--servers",
        default=",".join(servers.ALL),
        help=f"comma-separated subset of {','.join(servers.ALL)} (missing ones are skipped)",
    )
    p.add_argument(
        "--rows",
        default="nonstream,stream,many,micro",
        help="subset of nonstream,stream,many,micro",
    )
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--requests-c1", type=int, default=2000, help="non-streaming, concurrency 1")
    p.add_argument("--requests-cn", type=int, default=4000, help="non-streaming, concurrency >1")
    p.add_argument("--stream-requests", type=int, default=300, help="streaming, per cell")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="split each cell into this many rounds, servers in alternating order; the best"
        " round (by requests/s) is reported, every round is in the JSON",
    )
    p.add_argument(
        "--max-seconds", type=float, default=8.0, help="time cap of one cell (all its rounds)"
    )
    p.add_argument("--many-streams", type=int, default=1000, help="slow streams held at once")
    p.add_argument("--many-seconds", type=float, default=10.0, help="how long each stream lasts")
    p.add_argument(
        "--many-servers",
        default="builtin",
        help="servers of the many-streams rows (comma-separated)",
    )
    p.add_argument(
        "--many-streams-fallback",
        type=int,
        default=250,
        help="when fewer streams open than asked, run again with this many (0: do not)",
    )
    p.add_argument("--chunks", type=int, default=50, help="content deltas per stream")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    p.add_argument(
        "--profile-dir",
        type=Path,
        help="run meshproxy servers under cProfile, writing <server>.prof here (slows them)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.requests_c1 //= 6
        args.requests_cn //= 6
        args.stream_requests //= 5
        args.many_streams = min(args.many_streams, 200)
        args.many_streams_fallback = min(args.many_streams_fallback, 100)
        args.many_seconds = min(args.many_seconds, 4.0)
        args.max_seconds = min(args.max_seconds, 6.0)
    return args


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.logs = Path(tempfile.mkdtemp(prefix="meshproxy-bench-"))
        self.token = _token()
        self.upstream: Managed | None = None
        self.upstream_port = 0
        self.servers: list[Server] = []
        self.skipped: dict[str, str] = {}
        self.rows: list[dict[str, Any]] = []
        self.many: list[dict[str, Any]] = []
        self.idle: dict[str, dict[str, float]] = {}
        self.micro: dict[str, float] = {}

    # -- processes ---------------------------------------------------------------------------

    def start(self) -> None:
        self.upstream = Managed(
            "upstream",
            [
                sys.executable,
                "-m",
                "bench.harness.upstream",
                "--port",
                "0",
                "--chunks",
                str(self.args.chunks),
                "--max-seconds",
                "3600",
            ],
            env=servers.meshproxy_env(0),
            log_path=self.logs / "upstream.log",
            stdout_pipe=True,
        )
        self.upstream_port = self.upstream.read_port_line(15)
        wanted = [s for s in self.args.servers.split(",") if s]
        for name in wanted:
            if name not in servers.ALL:
                raise SystemExit(f"unknown server {name!r}; choose from {', '.join(servers.ALL)}")
            reason = servers.available(name)
            if reason:
                self.skipped[name] = reason
                log(f"skip {name}: {reason}")
                continue
            log(f"start {name} ...")
            try:
                server = servers.start(
                    name, self.upstream_port, self.logs, profile_dir=self.args.profile_dir
                )
            except RuntimeError as exc:
                self.skipped[name] = f"failed to start: {str(exc).splitlines()[0]}"
                log(str(exc))
                continue
            self.servers.append(server)
            self.warm(server)

    def warm(self, server: Server) -> None:
        before = Sample(server.pid)
        for mode in ("nonstream", "stream"):
            for shape in SHAPES:
                result = self.drive(server, mode, shape, 4, 40, 10.0)
                if result.get("errors") or not result.get("sample_ok", True):
                    log(f"  warm-up {server.name} {mode} {shape}: {_short(result)}")
        if server.pid is None:
            return
        time.sleep(0.5)
        after = Sample(server.pid)
        self.idle.setdefault(server.name, {})
        self.idle[server.name] = self.idle[server.name] or {
            "started_rss_mb": before.rss_kib / 1024,
            "idle_rss_mb": after.rss_kib / 1024,
        }
        log(
            f"  {server.name}: {', '.join(server.notes)}; RSS at start "
            f"{before.rss_kib / 1024:.1f} MB, idle after warm-up {after.rss_kib / 1024:.1f} MB"
        )

    def stop(self) -> None:
        for server in self.servers:
            if server.proc is not None:
                server.proc.stop()
        if self.upstream is not None:
            self.upstream.stop()

    # -- one cell ----------------------------------------------------------------------------

    def drive(
        self,
        server: Server,
        mode: str,
        shape: str,
        concurrency: int,
        requests: int,
        max_seconds: float,
        *,
        streams_mode: bool = False,
        chunk_delay: float | None = None,
    ) -> dict[str, Any]:
        spec = {
            "port": server.port,
            "kind": server.kind,
            "shape": shape,
            "token": server.token or self.token,
            "stream": mode == "stream",
            "concurrency": concurrency,
            "requests": requests,
            "max_seconds": max_seconds,
            "grace": 20.0,
            "expect": EXPECT[(mode, shape)],
            "mode": "streams" if streams_mode else "closed",
            "chunk_delay": chunk_delay,
            "open_timeout": min(5.0, max_seconds / 2),
        }
        gen = subprocess.Popen(
            [sys.executable, "-m", "bench.harness.loadgen", "--spec", json.dumps(spec)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert gen.stdin is not None and gen.stdout is not None
        result: dict[str, Any] = {}
        try:
            line = gen.stdout.readline().strip()
            if line != "READY":
                return {"errors": 1, "error_samples": [line or "load generator exited"]}
            procs.reset_peak(procs.tree(server.pid) if server.pid else [])
            before = Sample(server.pid)
            gen.stdin.write("GO\n")
            gen.stdin.flush()
            opened: dict[str, Any] | None = None
            at_open: Sample | None = None
            while True:
                line = gen.stdout.readline().strip()
                if line.startswith("OPEN "):
                    at_open = Sample(server.pid)
                    opened = json.loads(line[5:])
                elif line.startswith(("DONE ", "FAIL ")):
                    result = json.loads(line[5:])
                    break
                elif not line and gen.poll() is not None:
                    result = {"errors": 1, "error_samples": ["load generator died"]}
                    break
            after = Sample(server.pid)
        finally:
            try:
                gen.wait(max_seconds + 60)
            except subprocess.TimeoutExpired:
                gen.kill()
                gen.wait()
        if server.pid:
            done = max(int(result.get("requests", 0)), 1)
            result["cpu_s"] = after.cpu - before.cpu
            result["cpu_ms_per_request"] = result["cpu_s"] / done * 1000
            result["peak_rss_mb"] = max(after.hwm_kib, after.rss_kib) / 1024
            result["rss_before_mb"] = before.rss_kib / 1024
            result["rss_after_mb"] = after.rss_kib / 1024
            if at_open is not None and opened is not None:
                result["open"] = opened
                result["rss_open_mb"] = at_open.rss_kib / 1024
                result["cpu_s_at_open"] = at_open.cpu - before.cpu
        return result

    # -- the rows ----------------------------------------------------------------------------

    def cells(self) -> None:
        rows = self.args.rows.split(",")
        modes = [m for m in ("nonstream", "stream") if m in rows]
        for mode in modes:
            for shape in self.args.shapes.split(","):
                for concurrency in [int(c) for c in self.args.concurrency.split(",")]:
                    if mode == "stream":
                        n = self.args.stream_requests
                    else:
                        n = self.args.requests_c1 if concurrency == 1 else self.args.requests_cn
                    rounds: dict[str, list[dict[str, Any]]] = {s.name: [] for s in self.servers}
                    per_round = max(1, n // self.args.rounds)
                    per_round_seconds = self.args.max_seconds / self.args.rounds
                    for r in range(self.args.rounds):
                        order = self.servers if r % 2 == 0 else self.servers[::-1]
                        for server in order:
                            result = self.drive(
                                server, mode, shape, concurrency, per_round, per_round_seconds
                            )
                            rounds[server.name].append(result)
                    for server in self.servers:
                        runs = rounds[server.name]
                        best = max(runs, key=lambda x: x.get("rps", 0.0))
                        row = {
                            "server": server.name,
                            "mode": mode,
                            "shape": shape,
                            "concurrency": concurrency,
                            **best,
                            "rounds": [{k: x.get(k) for k in _ROUND_KEYS if k in x} for x in runs],
                        }
                        self.rows.append(row)
                        log(_row_line(row))
        for row in self.rows:
            direct = self._find("direct", row["mode"], row["shape"], row["concurrency"])
            if direct and row["server"] != "direct" and "p50_ms" in row:
                row["added_p50_ms"] = row["p50_ms"] - direct["p50_ms"]
                row["added_p99_ms"] = row["p99_ms"] - direct["p99_ms"]

    def wait_idle(self, server: Server, timeout: float = 20.0) -> None:
        """Wait until the server's CPU use drops below 5% (a previous cell may still drain)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = Sample(server.pid)
            time.sleep(0.5)
            after = Sample(server.pid)
            if after.cpu - before.cpu <= 0.025:
                return

    def many_streams(self) -> None:
        wanted = self.args.many_servers.split(",")
        n, seconds = self.args.many_streams, self.args.many_seconds
        for server in list(self.servers):
            if server.name not in wanted:
                continue
            row = self._many(server, n, seconds)
            opened = row.get("open_at_sample", 0)
            small = self.args.many_streams_fallback
            if opened < n and small and small < n:
                log(f"  only {opened}/{n} streams opened; again with {small}")
                self._many(server, small, seconds)

    def restart(self, server: Server) -> Server:
        """A fresh process, so memory the allocator kept from earlier cells does not hide the
        cost of the next streams."""
        index = [s.name for s in self.servers].index(server.name)
        current = self.servers[index]
        if current.proc is not None:
            current.proc.stop()
        fresh = servers.start(
            server.name, self.upstream_port, self.logs, profile_dir=self.args.profile_dir
        )
        self.servers[index] = fresh
        self.warm(fresh)
        return fresh

    def _many(self, server: Server, n: int, seconds: float) -> dict[str, Any]:
        delay = seconds / (self.args.chunks + 5)
        server = self.restart(server)
        self.wait_idle(server)
        idle = Sample(server.pid)
        result = self.drive(
            server,
            "stream",
            "anthropic",
            n,
            n,
            seconds * 2 + 5,
            streams_mode=True,
            chunk_delay=delay,
        )
        self.wait_idle(server)
        settled = Sample(server.pid)
        opened = result.get("open", {}).get("open", 0)
        row = {
            "server": server.name,
            "streams": n,
            "stream_seconds": seconds,
            "chunk_delay_s": delay,
            "open_at_sample": opened,
            "idle_rss_mb": idle.rss_kib / 1024,
            "rss_settled_after_mb": settled.rss_kib / 1024,
            **result,
        }
        if "rss_open_mb" in result and opened:
            delta_kib = (result["rss_open_mb"] - row["idle_rss_mb"]) * 1024
            row["kib_per_open_stream"] = delta_kib / opened
        if result.get("completed"):
            row["cpu_ms_per_stream"] = result["cpu_s"] / result["completed"] * 1e3
        self.many.append(row)
        log(
            f"  many-streams {server.name}: {opened}/{n} open, "
            f"{row.get('kib_per_open_stream', float('nan')):.1f} KiB/stream, "
            f"completed {result.get('completed')}, errors {result.get('errors')} "
            f"{result.get('error_samples', [])[:2]}"
        )
        return row

    def run_micro(self) -> None:
        argv = [sys.executable, "-m", "bench.harness.micro"]
        if self.args.quick:
            argv.append("--quick")
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            log(f"micro rows failed:\n{out.stderr[-2000:]}")
            return
        self.micro = json.loads(out.stdout)

    # -- report ------------------------------------------------------------------------------

    def _find(self, server: str, mode: str, shape: str, concurrency: int) -> dict[str, Any] | None:
        for row in self.rows:
            if (row["server"], row["mode"], row["shape"], row["concurrency"]) == (
                server,
                mode,
                shape,
                concurrency,
            ):
                return row
        return None

    def targets(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []

        def add(
            name: str, server: str, value: float | None, limit: float, ok: bool | None, how: str
        ):
            out.append(
                {
                    "target": name,
                    "server": server,
                    "value": value,
                    "limit": limit,
                    "met": ok,
                    "how": how,
                }
            )

        concurrencies = [int(c) for c in self.args.concurrency.split(",")]
        high = max(concurrencies)
        names = [s.name for s in self.servers if s.name in ("builtin", "uvicorn", "granian")]
        for name in names:
            for shape in self.args.shapes.split(","):
                row = self._find(name, "nonstream", shape, 1)
                if row and "added_p50_ms" in row:
                    v = row["added_p50_ms"]
                    add(
                        f"added p50, non-streaming, c=1, {shape}",
                        name,
                        v,
                        TARGETS["added_p50_ms"],
                        v <= TARGETS["added_p50_ms"],
                        "ms: p50 through the proxy minus p50 direct, same run",
                    )
            for shape in self.args.shapes.split(","):
                row = self._find(name, "nonstream", shape, high)
                if row and "cpu_ms_per_request" in row:
                    v = row["cpu_ms_per_request"]
                    add(
                        f"proxy CPU per non-streaming request, c={high}, {shape}",
                        name,
                        v,
                        TARGETS["cpu_ms_per_request"],
                        v <= TARGETS["cpu_ms_per_request"],
                        "ms: (utime+stime of the proxy process tree) / requests",
                    )
            lite = "litellm" in [s.name for s in self.servers]
            for shape in self.args.shapes.split(","):
                row = self._find(name, "nonstream", shape, high)
                peer = self._find("litellm", "nonstream", shape, high)
                if row and peer and peer.get("rps") and row.get("rps"):
                    v = row["rps"] / peer["rps"]
                    add(
                        f"throughput vs LiteLLM pass-through, non-streaming, c={high}, {shape}",
                        name,
                        v,
                        TARGETS["litellm_ratio"],
                        v >= TARGETS["litellm_ratio"],
                        "x: requests/s ratio, one worker each",
                    )
                elif not lite and name == names[0]:
                    why = self.skipped.get("litellm", "not selected (--servers)")
                    add(
                        f"throughput vs LiteLLM pass-through, {shape}",
                        name,
                        None,
                        TARGETS["litellm_ratio"],
                        None,
                        f"not measured: LiteLLM {why}",
                    )
            for row in [m for m in self.many if m["server"] == name]:
                v = row.get("kib_per_open_stream")
                full = row.get("open_at_sample") == row["streams"]
                add(
                    f"proxy memory per open idle stream ({row['streams']} streams)",
                    name,
                    v,
                    TARGETS["kib_per_stream"],
                    None if v is None else (v <= TARGETS["kib_per_stream"] and full),
                    "KiB: (RSS with all streams open - idle RSS) / open streams"
                    + ("" if full else f"; only {row.get('open_at_sample')} opened"),
                )
            if name in self.idle:
                v = self.idle[name]["idle_rss_mb"]
                add(
                    "idle RSS after warm-up",
                    name,
                    v,
                    TARGETS["idle_rss_mb"],
                    v <= TARGETS["idle_rss_mb"],
                    "MB: VmRSS of the process tree",
                )
        for shape in self.args.shapes.split(","):
            row = self._find("builtin", "stream", shape, high)
            base = self._find("builtin-noacct", "stream", shape, high)
            if row and base and base.get("cpu_ms_per_request"):
                v = row["cpu_ms_per_request"] / base["cpu_ms_per_request"] - 1
                add(
                    f"streaming accounting overhead (CPU/request), c={high}, {shape}",
                    "builtin",
                    v,
                    TARGETS["accounting_overhead"],
                    v <= TARGETS["accounting_overhead"],
                    "fraction: CPU per stream with accounting / without - 1",
                )
            if row and base and base.get("rps"):
                v = 1 - row["rps"] / base["rps"]
                add(
                    f"streaming accounting overhead (throughput), c={high}, {shape}",
                    "builtin",
                    v,
                    TARGETS["accounting_overhead"],
                    v <= TARGETS["accounting_overhead"],
                    "fraction: 1 - streams/s with accounting / without",
                )
        return out

    def report(self) -> dict[str, Any]:
        targets = self.targets()
        text = render(self.rows, self.many, self.idle, self.micro, targets, self.skipped)
        print(text)
        data = {
            "meta": meta(self.args, self.skipped),
            "rows": self.rows,
            "many_streams": self.many,
            "idle": self.idle,
            "micro": self.micro,
            "targets": targets,
            "table": text,
        }
        self.args.out.parent.mkdir(parents=True, exist_ok=True)
        self.args.out.write_text(json.dumps(data, indent=2, default=str) + "\n")
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        if self.args.out == RESULTS / "latest.json":
            (RESULTS / f"run-{stamp}.json").write_text(json.dumps(data, indent=2, default=str))
        print(f"\nresults: {self.args.out}   (process logs: {self.logs})")
        return data


# -- formatting -----------------------------------------------------------------------------


def _f(value: Any, fmt: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _short(result: dict[str, Any]) -> str:
    return f"errors={result.get('errors')} {result.get('error_samples', [])[:2]}"


def _row_line(row: dict[str, Any]) -> str:
    return (
        f"  {row['mode']:9} {row['shape']:9} c={row['concurrency']:<3} {row['server']:15}"
        f" n={row.get('requests', 0):<5} p50={_f(row.get('p50_ms'))}ms"
        f" p99={_f(row.get('p99_ms'))}ms rps={_f(row.get('rps'), '.0f')}"
        f" cpu={_f(row.get('cpu_ms_per_request'), '.3f')}ms/req"
        + (
            f" ERRORS={row['errors']} {row.get('error_samples', [])[:2]}"
            if row.get("errors")
            else ""
        )
    )


def render(
    rows: list[dict[str, Any]],
    many: list[dict[str, Any]],
    idle: dict[str, dict[str, float]],
    micro: dict[str, float],
    targets: list[dict[str, Any]],
    skipped: dict[str, str],
) -> str:
    lines: list[str] = []
    head = (
        f"{'cell':30} {'server':15} {'n':>5} {'err':>4} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'+p50 ms':>8} {'req/s':>7} {'CPU ms/req':>10} {'peak RSS MB':>11}"
    )
    lines += [head, "-" * len(head)]
    previous = None
    for row in rows:
        cell = f"{row['mode']} {row['shape']} c={row['concurrency']}"
        label = cell if cell != previous else ""
        if previous is not None and cell != previous:
            lines.append("")
        previous = cell
        lines.append(
            f"{label:30} {row['server']:15} {row.get('requests', 0):>5} {row.get('errors', 0):>4}"
            f" {_f(row.get('p50_ms')):>8} {_f(row.get('p99_ms')):>8}"
            f" {_f(row.get('added_p50_ms')):>8} {_f(row.get('rps'), '.0f'):>7}"
            f" {_f(row.get('cpu_ms_per_request'), '.3f'):>10}"
            f" {_f(row.get('peak_rss_mb'), '.1f'):>11}"
        )
    if many:
        lines += ["", "Many streams (slow Anthropic streams, all started at once)"]
        head = (
            f"{'server':15} {'streams':>7} {'open':>5} {'done':>5} {'err':>4} {'idle MB':>8}"
            f" {'open MB':>8} {'KiB/stream':>10} {'TTLB p50 s':>10} {'CPU ms/stream':>13}"
        )
        lines += [head, "-" * len(head)]
        for row in many:
            lines.append(
                f"{row['server']:15} {row['streams']:>7} {row.get('open_at_sample', 0):>5}"
                f" {row.get('completed', 0):>5} {row.get('errors', 0):>4}"
                f" {_f(row.get('idle_rss_mb'), '.1f'):>8} {_f(row.get('rss_open_mb'), '.1f'):>8}"
                f" {_f(row.get('kib_per_open_stream'), '.1f'):>10}"
                f" {_f((row.get('p50_ms') or math.nan) / 1000):>10}"
                f" {_f(row.get('cpu_ms_per_stream'), '.2f'):>13}"
            )
    if idle:
        lines += [
            "",
            "Idle RSS (MB): "
            + ", ".join(
                f"{name} {v['idle_rss_mb']:.1f} (at start {v['started_rss_mb']:.1f})"
                for name, v in idle.items()
            ),
        ]
    if micro:
        lines += ["", "Micro (in-process, one core)"]
        lines.append(
            f"  token verification: cold {micro['verify_cold_us']:.1f} us,"
            f" cached {micro['verify_cached_us']:.2f} us"
        )
        lines.append(
            "  usage machines MB/s: "
            f"anthropic stream {micro['anthropic_messages_stream_mb_s']:.1f},"
            f" openai chat stream {micro['openai_chat_stream_mb_s']:.1f}"
            f" (usage chunk stripped {micro['openai_chat_stream_stripped_mb_s']:.1f}),"
            f" responses stream {micro['openai_responses_stream_mb_s']:.1f},"
            f" chat JSON {micro['openai_chat_json_mb_s']:.1f}"
            f" (split-lines floor ~{micro['openai_chat_stream_split_lines_mb_s']:.0f})"
        )
        lines.append(f"  price: {micro['price_us_per_record']:.2f} us/record")
    if targets:
        lines += ["", "Targets"]
        for t in targets:
            mark = {True: "MET ", False: "MISS", None: "n/a "}[t["met"]]
            lines.append(
                f"  [{mark}] {t['server']:8} {t['target']}: {_f(t['value'], '.3f')}"
                f" (target {'>=' if 'LiteLLM' in t['target'] else '<='} {t['limit']:g}; {t['how']})"
            )
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    return "\n".join(lines)


def meta(args: argparse.Namespace, skipped: dict[str, str]) -> dict[str, Any]:
    def version(module: str) -> str | None:
        try:
            from importlib.metadata import version as v

            return v(module)
        except Exception:
            return None

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    )
    litellm = None
    peers_python = servers.PEERS / "bin" / "python"
    if peers_python.exists():
        litellm = subprocess.run(
            [
                str(peers_python),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit + ("-dirty" if dirty else ""),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {procs.cpu_count()} cores",
        "versions": {
            m: version(m) for m in ("h11", "httpcore", "anyio", "uvicorn", "granian", "PyJWT")
        }
        | {"litellm": litellm},
        "args": {k: str(v) for k, v in vars(args).items()},
        "skipped": skipped,
    }


def _token() -> str:
    from meshproxy_core.auth import mint_token

    return mint_token(
        servers.SECRET,
        project="bench",
        room="bench-room",
        participant="loadgen",
        now=time.time(),
        ttl=6 * 3600,
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    if args.profile_dir is not None:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
        args.profile_dir = args.profile_dir.resolve()
    bench = Bench(args)
    started = time.monotonic()
    try:
        bench.start()
        rows = args.rows.split(",")
        if {"nonstream", "stream"} & set(rows):
            bench.cells()
        if "many" in rows:
            bench.many_streams()
        if "micro" in rows:
            bench.run_micro()
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        bench.stop()
    bench.report()
    log(f"total {time.monotonic() - started:.0f}s")
    return 0
