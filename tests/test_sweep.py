"""Expired calls leave the admin listing and the metrics on a timer, with no further traffic, for the
memory store and the Redis store."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from ascrm.core.calls.store import StoreUnavailableError
from ascrm.core.calls.sweeper import sweep_periodically
from tests.support.metrics import scrape, value
from tests.support.redis import RedisServer
from tests.support.server import Server, ServerFactory, platform_config
from tests.support.waiting import wait_until

ADMIN = ("ops", "sweep-pässword")


@pytest.fixture(params=["memory", "redis"])
def swept_server(request: pytest.FixtureRequest, serve: ServerFactory) -> Server:
    """A server whose calls expire one second after their last event and whose sweep runs every 100 ms."""
    state: dict[str, Any] = {"ttl_seconds": 1, "ended_grace_seconds": 1, "sweep_interval_ms": 100}
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        state |= {"backend": "redis", "redis_url": redis.url, "key_prefix": f"sweep-{uuid.uuid4().hex[:8]}:"}
    return serve(platform_config(state=state), admin=ADMIN)


def listed(admin: httpx.Client) -> list[int]:
    response = admin.get("/admin/calls")
    assert response.status_code == 200, response.text
    return [call["call_id"] for call in response.json()["calls"]]


def tracked(admin: httpx.Client) -> float:
    samples = scrape(admin)
    assert ("ascrm_calls_tracked", ()) in samples
    return value(samples, "ascrm_calls_tracked")


def test_expired_calls_disappear_without_traffic(swept_server: Server) -> None:
    with swept_server.client() as platform, swept_server.client(auth=ADMIN) as admin:
        for call_id, event_type in ((501, 1), (502, 15)):  # one idle past the TTL, one ended past the grace
            body = {"CallID": call_id, "EventType": event_type, "AN": "79161234567", "UN": "74951234567"}
            assert platform.post("/CallEvent", json=body).status_code == 200
        assert sorted(listed(admin)) == [501, 502]
        assert tracked(admin) == 2
        # the metrics first: the Redis store's listing sweeps by itself, its call counts do not
        wait_until(lambda: tracked(admin) == 0, "the expired calls swept from the metrics", timeout=6)
        assert listed(admin) == []


class FlakyStore:
    """A store whose sweeps fail a few times, then succeed."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sweeps: list[datetime] = []

    async def sweep(self, now: datetime) -> None:
        self.sweeps.append(now)
        if len(self.sweeps) <= self.failures:
            raise StoreUnavailableError("redis: sweep took more than 1000 ms")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_an_outage_is_logged_once_and_the_sweeps_go_on() -> None:
    store, stop = FlakyStore(failures=3), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(sweep_periodically(store, lambda: datetime.now(UTC), 0.01, stop))
        async with asyncio.timeout(5):
            while len(store.sweeps) < 6:
                await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 1)
    assert [entry["event"] for entry in logs] == ["store_sweep_failed", "store_sweep_recovered"]
    assert logs[0]["log_level"] == "warning"
