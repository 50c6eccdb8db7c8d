"""A bounded load test: 200 concurrent mixed streaming and non-streaming requests, OpenAI and
Anthropic, for a bounded time and count. Zero errors, one record per request, and the usage
recorded adds up exactly to the usage the fake upstream served."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from e2e.conftest import ProxyProcess, make_token
from meshproxy.adapters.testing import FakeUpstreamProcess

pytestmark = pytest.mark.e2e

CONCURRENCY = 200
SECONDS = 30.0
MAX_REQUESTS = 6000


def served_tokens(usage: dict[str, Any] | None, provider: str) -> int:
    """All tokens of one served usage object, by the provider's own convention."""
    if not usage:
        return 0
    if provider == "openai":
        return int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
    return sum(
        int(usage.get(key) or 0)
        for key in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                    "cache_creation_input_tokens")
    )  # fmt: skip


def recorded_tokens(usage: dict[str, Any]) -> int:
    return sum(
        usage[key]
        for key in ("input_tokens", "cache_read_tokens", "cache_write_5m_tokens",
                    "cache_write_1h_tokens", "input_audio_tokens", "input_image_tokens",
                    "output_tokens", "output_audio_tokens", "output_image_tokens")
    )  # fmt: skip


async def load(proxy: ProxyProcess) -> tuple[list[str], list[BaseException], float]:
    oa = openai.AsyncOpenAI(
        base_url=proxy.url + "/v1", api_key=make_token(), max_retries=0, timeout=60
    )
    an = anthropic.AsyncAnthropic(
        base_url=proxy.url + "/anthropic", api_key=make_token(), max_retries=0, timeout=60
    )
    ids: list[str] = []
    errors: list[BaseException] = []
    started = time.monotonic()
    budget = iter(range(MAX_REQUESTS))

    async def one(kind: int) -> str:
        messages = [{"role": "user", "content": f"load {kind}"}]
        if kind == 0:
            raw = await oa.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=messages,  # type: ignore[arg-type]
            )
            raw.parse()
            return raw.headers["x-meshproxy-request-id"]
        if kind == 1:
            async with oa.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini",
                messages=messages,
                stream=True,  # type: ignore[arg-type]
            ) as response:
                async for _ in await response.parse():
                    pass
                return response.headers["x-meshproxy-request-id"]
        if kind == 2:
            raw = await an.messages.with_raw_response.create(
                model="claude-haiku-4-5",
                max_tokens=30,
                messages=messages,  # type: ignore[arg-type]
            )
            await raw.parse()
            return raw.headers["x-meshproxy-request-id"]
        async with an.messages.with_streaming_response.create(
            model="claude-haiku-4-5",
            max_tokens=30,
            messages=messages,
            stream=True,  # type: ignore[arg-type]
        ) as response:
            async for _ in await response.parse():
                pass
            return response.headers["x-meshproxy-request-id"]

    async def worker(w: int) -> None:
        while time.monotonic() - started < SECONDS:
            n = next(budget, None)
            if n is None:
                return
            try:
                ids.append(await one((w + n) % 4))
            except Exception as exc:
                errors.append(exc)

    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    elapsed = time.monotonic() - started
    await oa.close()
    await an.close()
    return ids, errors, elapsed


def test_bounded_load_zero_errors_and_exact_sums(fake: FakeUpstreamProcess, tmp_path: Path) -> None:
    with ProxyProcess(fake.base_url, tmp_path, ["--no-ledger"]) as proxy:
        ids, errors, elapsed = asyncio.run(load(proxy))
        proxy.record(ids[-1], timeout=30)  # records are written as responses end
        deadline = time.monotonic() + 30
        while len(all_records := proxy.records()) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        by_id = {record["request_id"]: record for record in all_records}
        records = [by_id[request_id] for request_id in ids]
    assert errors == [], errors[:3]
    assert len(ids) >= 1000, f"only {len(ids)} requests in {elapsed:.1f}s"
    assert len(set(ids)) == len(ids)
    assert len(all_records) == len(ids)  # exactly one record per request, nothing extra
    assert all(r["outcome"] == "ok" and r["ending"] == "complete" for r in records)
    served = fake.served()
    assert len(served) == len(ids)
    assert sum(recorded_tokens(r["usage"]) for r in records) == sum(
        served_tokens(s.usage, s.provider) for s in served
    )
    print(f"\nload: {len(ids)} requests in {elapsed:.1f}s = {len(ids) / elapsed:.0f} req/s")
