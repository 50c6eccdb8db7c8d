"""One room can never reach another room's stored objects: two proxy replicas sharing one
ledger (SQLite file, or PostgreSQL started by the suite), two rooms, the official SDKs."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

import pg_server
from meshproxy.adapters.testing import FakeUpstreamProcess

from .conftest import ProxyProcess, make_token

pytestmark = pytest.mark.e2e

_names = itertools.count()
BATCH = [
    {
        "custom_id": "q1",
        "params": {
            "model": "claude-haiku-4-5",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}],
        },
    }
]


@pytest.fixture(params=["sqlite", "postgresql"])
def replicas(
    request: pytest.FixtureRequest, fake: FakeUpstreamProcess, tmp_path: Path
) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    if request.param == "sqlite":
        url = str(tmp_path / "shared-ledger.sqlite3")
    else:
        reason = pg_server.why_unavailable()
        if reason:
            pytest.skip(reason)
        url = pg_server.shared_server().new_database(f"own_{next(_names)}_{int(time.time())}")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    with (
        ProxyProcess(fake.base_url, one, ["--ledger", url]) as a,
        ProxyProcess(fake.base_url, two, ["--ledger", url]) as b,
    ):
        yield a, b


def claude(proxy: ProxyProcess, room: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=proxy.url + "/anthropic",
        api_key=make_token(room=room),
        max_retries=0,
        timeout=10,
    )


def gpt(proxy: ProxyProcess, room: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=proxy.url + "/v1", api_key=make_token(room=room), max_retries=0, timeout=10
    )


def test_batches_belong_to_the_room_that_created_them(
    replicas: tuple[ProxyProcess, ProxyProcess], fake: FakeUpstreamProcess
) -> None:
    first, second = replicas
    batch = claude(first, "room-a").messages.batches.create(requests=BATCH)  # type: ignore[arg-type]
    upstream_seen = len(fake.received())
    intruder = claude(second, "room-b")
    for attempt in (
        lambda: intruder.messages.batches.retrieve(batch.id),
        lambda: list(intruder.messages.batches.results(batch.id)),
        lambda: intruder.messages.batches.cancel(batch.id),
        lambda: intruder.messages.batches.delete(batch.id),
    ):
        with pytest.raises(anthropic.NotFoundError):
            attempt()
    assert len(fake.received()) == upstream_seen  # refused before reaching the provider
    assert [b.id for b in intruder.messages.batches.list()] == []
    owner = claude(second, "room-a")  # the other replica knows the owner through the ledger
    assert owner.messages.batches.retrieve(batch.id).id == batch.id
    assert [b.id for b in owner.messages.batches.list()] == [batch.id]
    results = list(owner.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] == ["q1"]


def test_listing_pages_through_only_the_rooms_batches(
    replicas: tuple[ProxyProcess, ProxyProcess],
) -> None:
    first, second = replicas
    mine = [claude(first, "room-a").messages.batches.create(requests=BATCH) for _ in range(3)]  # type: ignore[arg-type]
    for _ in range(2):
        claude(first, "room-b").messages.batches.create(requests=BATCH)  # type: ignore[arg-type]
    listed = [b.id for b in claude(second, "room-a").messages.batches.list(limit=2)]
    assert sorted(listed) == sorted(b.id for b in mine)


def test_previous_response_must_be_the_rooms_own(
    replicas: tuple[ProxyProcess, ProxyProcess],
) -> None:
    first, second = replicas
    earlier = gpt(first, "room-a").responses.create(model="gpt-4o-mini", input="remember 7")
    with pytest.raises(openai.NotFoundError) as info:
        gpt(second, "room-b").responses.create(
            model="gpt-4o-mini", input="what number?", previous_response_id=earlier.id
        )
    assert info.value.code == "object_not_found"
    follow_up = gpt(second, "room-a").responses.create(
        model="gpt-4o-mini", input="what number?", previous_response_id=earlier.id
    )
    assert follow_up.output_text
