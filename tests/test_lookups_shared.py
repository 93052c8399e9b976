"""Look-ups of two replicas sharing a real redis-server on loopback: one request per cache period, one rate;
a Redis that is paused or down costs a look-up no more than its deadline."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from ascrm.core.calls.config import StateSettings
from ascrm.core.calls.redis_connection import connection_pool
from ascrm.core.lookups.lookups import Lookups
from ascrm.core.lookups.request import LookupRequest
from ascrm.core.lookups.shared import RedisSharedStore
from ascrm.core.lookups.source import SourceSettings
from tests.support.crm_standin import CrmStandIn, crm_standin
from tests.support.redis import RedisServer, needs_redis

pytestmark = [needs_redis, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def value(answer: Any) -> str | None:
    return answer.get("value") if isinstance(answer, dict) else None


async def _replicas(url: str, wall: float | None = None) -> AsyncIterator[tuple[Lookups, Lookups, RedisSharedStore]]:
    prefix = f"lk-{uuid.uuid4().hex[:8]}:"
    pool = connection_pool(StateSettings(backend="redis", redis_url=url), max_connections=8, timeout=0.2)
    store = (
        RedisSharedStore(pool, prefix=prefix)
        if wall is None
        else RedisSharedStore(pool, prefix=prefix, wall=lambda: wall)
    )
    first, second = Lookups(shared=store), Lookups(shared=store)
    yield first, second, store
    await first.close()
    await second.close()
    await store.close()
    await pool.aclose()


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[Lookups, Lookups, RedisSharedStore]]:
    async for made in _replicas(redis_server.url):
        yield made


@pytest.fixture
async def standin() -> AsyncIterator[CrmStandIn]:
    async with crm_standin() as running:
        yield running


def deadline(seconds: float = 1.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def until_shared(store: RedisSharedStore, source: str, key: str) -> None:
    for _ in range(100):
        if await store.get(source, key) is not None:
            return
        await asyncio.sleep(0.01)
    pytest.fail("the answer never reached Redis")


async def test_two_replicas_send_one_request_per_cache_period(
    standin: CrmStandIn, replicas: tuple[Lookups, Lookups, RedisSharedStore]
) -> None:
    first, second, store = replicas
    source = SourceSettings("owner", ttl=60)
    ask = LookupRequest("GET", standin.url + "/owner")
    assert (await first.look_up(source, ask, value, deadline=deadline())).outcome == "fetched"
    await until_shared(store, "owner", ask.key())
    answer = await second.look_up(source, ask, value, deadline=deadline())
    assert (answer.value, answer.outcome, standin.requests) == ("ivanov", "hit", 1)


async def test_a_miss_is_shared_too(standin: CrmStandIn, replicas: tuple[Lookups, Lookups, RedisSharedStore]) -> None:
    first, second, store = replicas
    standin.mode = "404"
    ask = LookupRequest("GET", standin.url + "/nobody")
    assert (await first.look_up(SourceSettings("owner"), ask, value, deadline=deadline())).outcome == "miss"
    await until_shared(store, "owner", ask.key())
    answer = await second.look_up(SourceSettings("owner"), ask, value, deadline=deadline())
    assert (answer.value, answer.outcome, standin.requests) == (None, "hit", 1)


async def test_the_rate_is_shared_by_the_replicas(standin: CrmStandIn, redis_server: RedisServer) -> None:
    """Each replica's own bucket holds 50; the replicas' one-second window (its second held still) lets 2 through."""
    async for first, second, _ in _replicas(redis_server.url, wall=5000.5):
        await _alternate(first, second, standin)


async def _alternate(first: Lookups, second: Lookups, standin: CrmStandIn) -> None:
    source = SourceSettings("owner", rate=2, burst=50, ttl=0)
    outcomes = []
    for n in range(4):
        lookups = first if n % 2 else second
        ask = LookupRequest("GET", f"{standin.url}/{n}")
        outcomes.append((await lookups.look_up(source, ask, value, deadline=deadline())).outcome)
    assert outcomes == ["fetched", "fetched", "rate_limited", "rate_limited"]
    assert standin.requests == 2


async def test_a_paused_redis_costs_no_more_than_the_deadline(standin: CrmStandIn, own_redis: RedisServer) -> None:
    async for first, _, _ in _replicas(own_redis.url):
        ask = LookupRequest("GET", standin.url + "/owner")
        source = SourceSettings("owner")
        own_redis.pause()
        try:
            loop = asyncio.get_running_loop()
            with capture_logs() as logs:
                for n in range(3):
                    started = loop.time()
                    answer = await first.look_up(source, ask, value, deadline=deadline(0.3))
                    assert answer.outcome in ({"fetched"} if n == 0 else {"hit"})
                    assert loop.time() - started < 0.3 + 0.05
            assert [entry["event"] for entry in logs].count("lookup_shared_unavailable") == 1
        finally:
            own_redis.resume()
        assert standin.requests == 1


async def test_a_stopped_redis_leaves_the_local_cache_and_limits(standin: CrmStandIn, own_redis: RedisServer) -> None:
    async for first, _, _ in _replicas(own_redis.url):
        own_redis.stop()
        source = SourceSettings("owner", rate=1, burst=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        ask = LookupRequest("GET", standin.url + "/owner")
        assert (await first.look_up(source, ask, value, deadline=deadline(0.3))).outcome == "fetched"
        assert (await first.look_up(source, ask, value, deadline=deadline(0.3))).outcome == "hit"
        other = LookupRequest("GET", standin.url + "/other")
        assert (await first.look_up(source, other, value, deadline=deadline(0.3))).outcome == "rate_limited"
        assert loop.time() - started < 0.9
        assert standin.requests == 1
