"""An unauthenticated `/ready` flood against a server on Redis: the platform's requests keep their state.

`/ready` answers from the background store check, so the flood sends Redis nothing and takes no
connection the platform's requests need, even with a Redis that accepts only a few clients.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.redis import RedisServer, needs_redis
from tests.support.server import PASSWORD, Server, ServerFactory, platform_config

pytestmark = needs_redis

FLOOD_CONNECTIONS = 48
FLOOD_SECONDS = 4.0
FLOOD_MAX_REQUESTS = 4000
MAXCLIENTS = 12  # a Redis at its client limit: what an unbounded number of health checks would reach
RULES = 'rules:\n  - {id: menu-123, on: DTMF, if: {digits: "123"}, do: {TransferEXT: "1234"}}\n'


def redis_cli(redis: RedisServer, *args: str) -> str:
    command = ["redis-cli", "-p", str(redis.port), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout


def connections_made(redis: RedisServer) -> int:
    """How many client connections Redis has accepted so far."""
    info = redis_cli(redis, "INFO", "stats")
    for line in info.splitlines():
        if line.startswith("total_connections_received:"):
            return int(line.split(":")[1])
    raise AssertionError(f"redis-cli could not ask Redis (at its client limit?): {info!r}")


def ping_calls(redis: RedisServer) -> int:
    """How many PING commands Redis has run so far."""
    for line in redis_cli(redis, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_ping:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def flood(base_url: str, path: str, stop_at: float) -> list[int]:
    """Unauthenticated GETs of path on many connections until stop_at (or FLOOD_MAX_REQUESTS); the statuses."""
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=FLOOD_CONNECTIONS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10) as anonymous:

        async def worker() -> None:
            while time.monotonic() < stop_at and len(statuses) < FLOOD_MAX_REQUESTS:
                statuses.append((await anonymous.get(path)).status_code)

        await asyncio.gather(*(worker() for _ in range(FLOOD_CONNECTIONS)))
    return statuses


async def platform(base_url: str, calls: int) -> list[dict[str, Any]]:
    """Calls whose three DTMF digits must add up in the store to be transferred; every last answer."""
    answers = []
    async with httpx.AsyncClient(base_url=base_url, auth=("autosecretary", PASSWORD), timeout=10) as http:
        for call_id in range(8_100_001, 8_100_001 + calls):
            await http.post("/CallEvent", json={"CallID": call_id, "EventType": 1, "UN": "74950000001"})
            for digit in "123":
                answer = await http.post("/CallEvent", json={"CallID": call_id, "EventType": 4, "DTMF": digit})
            answers.append(answer.json())
    return answers


async def both(server: Server, path: str, calls: int) -> tuple[list[int], list[dict[str, Any]]]:
    stop_at = time.monotonic() + FLOOD_SECONDS
    flooding = asyncio.create_task(flood(server.base_url, path, stop_at))
    await asyncio.sleep(0.5)  # the flood is under way
    answers = await platform(server.base_url, calls)
    return await flooding, answers


@pytest.mark.parametrize("path", ["/ready", "/metrics"])
def test_a_health_check_flood_leaves_the_platform_its_redis_connections(
    tmp_path: Path, path: str, serve: ServerFactory, own_redis: RedisServer
) -> None:
    """/ready costs Redis nothing; concurrent scrapes of public metrics share one store call."""
    redis = own_redis
    (tmp_path / "rules.yaml").write_text(RULES)
    state = {"backend": "redis", "redis_url": redis.url, "key_prefix": "flood:", "timeout_ms": 1000}
    config = platform_config(rules=str(tmp_path / "rules.yaml"), state=state, metrics={"public": True})
    server = serve(config, folder=tmp_path / "ascrm")
    try:
        redis_cli(redis, "CONFIG", "SET", "maxclients", str(MAXCLIENTS))
        pings_before, connections_before, started = ping_calls(redis), connections_made(redis), time.monotonic()
        statuses, answers = asyncio.run(both(server, path, calls=10))
        elapsed = time.monotonic() - started
        pings = ping_calls(redis) - pings_before
        connections = connections_made(redis) - connections_before - 2  # redis-cli's own two
        assert connections <= 4  # the platform's and the background check's: none per health check
        assert [answer["Param"] for answer in answers] == ["1234"] * 10  # every call's state was kept
        assert [e for e in server.logs() if e.get("event") == "store_unavailable"] == []
        assert len(statuses) > 100  # a real flood
        assert statuses.count(200) == len(statuses)
        if path == "/ready":
            assert pings <= elapsed / 1.0 + 3  # the background check's (health.check_interval_ms), not one per /ready
    finally:
        server.stop()
