"""The Redis outbox (core/notify/redis_outbox.py) on a real redis-server: the whole Outbox protocol, two
replicas sharing one outbox (a key stored once, a lease handed to one of them, a dead one's leases claimed
by the other after claim_after, a replica killed with SIGKILL included), and its bounds and failures."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis.asyncio import Redis

from ascrm.core.calls.config import StateSettings
from ascrm.core.calls.redis_connection import connection_pool
from ascrm.core.notify.message import Leased, Notification, NotifySettings, OutboxError, OutboxFullError
from ascrm.core.notify.redis_outbox import GROUP, MAX_BATCH, MAX_BODY, RedisOutbox
from ascrm.core.notify.redis_outbox_scripts import START
from tests.support.redis import RedisServer, needs_redis

pytestmark = needs_redis
NOW = 1_800_000_000.0
SETTINGS = NotifySettings(max_pending=5000, claim_after=0.4)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client_of(url: str) -> Redis:
    """A client as the service's: the call store's pool options (no retries, bounded connect)."""
    return Redis(connection_pool=connection_pool(StateSettings(redis_url=url), max_connections=4, timeout=1.0))


def note(key: str, target: str = "crm", body: bytes = b'{"n": 1}', created_at: float = NOW) -> Notification:
    return Notification(key, target, "missed", 42, created_at, body)


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[RedisOutbox, RedisOutbox]]:
    """Two replicas' outboxes (consumers a and b) on one Redis, each with its own client, a fresh prefix."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    clients = [client_of(redis_server.url), client_of(redis_server.url)]
    boxes = (
        RedisOutbox(clients[0], prefix, "a", SETTINGS),
        RedisOutbox(clients[1], prefix, "b", SETTINGS),
    )
    for box in boxes:
        await box.start()
        await box.start()  # idempotent
    yield boxes
    for client in clients:
        await client.aclose()


@pytest.mark.anyio
async def test_put_lease_delivered_round_trip(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, _ = pair
    body = bytes(range(256)) * 4  # any bytes survive
    assert await a.put([note("1:missed:x", body=body), note("2:missed:x")]) == 2
    leased = await a.lease(10, NOW)
    assert [lease.notification for lease in leased] == [note("1:missed:x", body=body), note("2:missed:x")]
    assert [lease.attempts for lease in leased] == [0, 0]
    assert await a.lease(10, NOW + 3600) == []  # leased: nobody else's, not even this replica's again
    for lease in leased:
        await a.delivered(lease)
    await asyncio.sleep(SETTINGS.claim_after + 0.1)
    assert await a.lease(10, NOW + 3600) == []  # delivered: never leased again, not even once claimable
    assert await a.listing("pending", 10, 0) == []
    assert await a.pending_counts() == {}
    assert await a.put([note("1:missed:x")]) == 0  # its key stays known after its delivery


@pytest.mark.anyio
async def test_a_key_is_stored_once_across_replicas(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, b = pair
    stored = await asyncio.gather(*(box.put([note("7:ended:x"), note("8:ended:x")]) for box in (a, b) * 5))
    assert sum(stored) == 2
    assert await a.put([note("9:ended:x"), note("9:ended:x"), note("7:ended:x")]) == 1  # repeats in a batch
    assert len(await b.listing("pending", 10, 0)) == 3


@pytest.mark.anyio
async def test_full_refuses_the_whole_batch(redis_server: RedisServer) -> None:
    client = client_of(redis_server.url)
    box = RedisOutbox(client, f"t{uuid.uuid4().hex[:8]}:", "a", replace(SETTINGS, max_pending=3))
    await box.start()
    assert await box.put([note("1"), note("2")]) == 2
    with pytest.raises(OutboxFullError, match="3 notifications"):
        await box.put([note("3"), note("4")])
    assert [listed.notification.key for listed in await box.listing("pending", 10, 0)] == ["1", "2"]
    assert await box.put([note("1"), note("2"), note("3")]) == 1  # known keys do not count
    with pytest.raises(OutboxFullError):
        await box.put([note("4")])
    leased = await box.lease(1, NOW)
    await box.delivered(leased[0])
    assert await box.put([note("4")]) == 1  # room again once one is delivered
    await client.aclose()


@pytest.mark.anyio
async def test_concurrent_leases_never_hand_one_entry_to_both(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, b = pair
    keys = {f"{i}:missed:x" for i in range(300)}
    for start in range(0, 300, 100):
        await a.put([note(f"{i}:missed:x") for i in range(start, start + 100)])
    leases = await asyncio.gather(*(box.lease(7, NOW) for box in (a, b) * 30))
    handed = [lease.notification.key for batch in leases for lease in batch]
    assert len(handed) == len(set(handed)) == 300
    assert set(handed) == keys


@pytest.mark.anyio
async def test_a_retry_is_not_leased_before_it_is_due(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, b = pair
    await a.put([note("1:missed:x")])
    [leased] = await a.lease(10, NOW)
    await a.retry_at(leased, NOW + 30, "HTTP 503")
    [listed] = await a.listing("pending", 10, 0)
    assert (listed.state, listed.attempts, listed.due_at, listed.last_error) == ("pending", 1, NOW + 30, "HTTP 503")
    assert await a.lease(10, NOW + 29.9) == []
    assert await b.lease(10, NOW + 29.9) == []
    await asyncio.sleep(SETTINGS.claim_after + 0.1)
    assert await b.lease(10, NOW + 29.9) == []  # out of everybody's hands, however long
    [again] = await b.lease(10, NOW + 30)
    assert (again.notification, again.attempts) == (note("1:missed:x"), 1)
    assert await a.lease(10, NOW + 60) == []  # moved once, to one replica
    assert await a.pending_counts() == {"crm": 1}


@pytest.mark.anyio
async def test_a_lease_never_settled_is_claimed_after_claim_after(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, b = pair
    await a.put([note(f"{i}") for i in range(5)])
    held = await a.lease(5, NOW)
    started = time.monotonic()
    assert await b.lease(10, NOW) == []  # held by a
    claimed: dict[str, Leased] = {}
    while not claimed and time.monotonic() - started < 5:
        claimed = {lease.notification.key: lease for lease in await b.lease(10, NOW)}
        await asyncio.sleep(0.05)
    assert time.monotonic() - started >= SETTINGS.claim_after - 0.05
    assert sorted(claimed) == [str(i) for i in range(5)]
    assert {lease.handle for lease in held} == {lease.handle for lease in claimed.values()}
    # a was only slow: whoever settles first wins, the other changes nothing
    await b.delivered(claimed[held[0].notification.key])
    await a.retry_at(held[0], NOW, "late")  # no effect: b delivered it
    await a.fail(held[1], "late")  # a settles first
    await b.retry_at(claimed[held[1].notification.key], NOW, "HTTP 500")  # no effect: a failed it first
    assert [listed.notification.key for listed in await a.listing("failed", 10, 0)] == [held[1].notification.key]
    pending = sorted(listed.notification.key for listed in await a.listing("pending", 10, 0))
    assert pending == sorted(lease.notification.key for lease in held[2:])
    assert await a.pending_counts() == {"crm": 3}


@pytest.mark.anyio
async def test_a_delivery_by_either_holder_removes_it(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, b = pair
    await a.put([note("1")])
    [held] = await a.lease(1, NOW)
    await asyncio.sleep(SETTINGS.claim_after + 0.1)
    [claimed] = await b.lease(1, NOW)
    await b.retry_at(claimed, NOW + 5, "HTTP 500")  # b settles first: a retry later
    await a.delivered(held)  # but a did deliver it: it is gone, not retried
    assert await a.listing("pending", 10, 0) == []
    assert await b.lease(10, NOW + 10) == []
    assert await a.pending_counts() == {}


@pytest.mark.anyio
async def test_failed_list_retry_and_its_bound(redis_server: RedisServer) -> None:
    client = client_of(redis_server.url)
    box = RedisOutbox(client, f"t{uuid.uuid4().hex[:8]}:", "a", replace(SETTINGS, max_pending=3))
    await box.start()
    for i in range(5):
        await box.put([note(str(i), created_at=NOW + i)])
        [leased] = await box.lease(1, NOW)
        await box.fail(leased, f"HTTP 40{i}")
    failed = await box.listing("failed", 10, 0)
    assert [listed.notification.key for listed in failed] == ["2", "3", "4"]  # the oldest two dropped
    assert {(listed.state, listed.attempts, listed.due_at) for listed in failed} == {("failed", 1, None)}
    assert failed[0].last_error == "HTTP 402"
    assert await box.pending_counts() == {}
    assert await box.retry("0", NOW) is False  # dropped: not failed any more
    assert await box.retry("nope", NOW) is False
    assert await box.retry("3", NOW + 100) is True
    assert await box.retry("3", NOW + 100) is False  # pending now
    [listed] = await box.listing("pending", 10, 0)
    assert (listed.attempts, listed.due_at, listed.notification.created_at) == (0, NOW + 100, NOW + 100)
    [leased] = await box.lease(5, NOW + 100)
    assert (leased.notification.key, leased.attempts, leased.notification.body) == ("3", 0, b'{"n": 1}')
    assert await box.put([note("3")]) == 0  # still known
    await box.put([note("5"), note("6")])
    with pytest.raises(OutboxFullError):
        await box.retry("2", NOW)  # three pending: no room
    await client.aclose()


@pytest.mark.anyio
async def test_pending_counts_by_target(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, b = pair
    await a.put([note(f"b{i}", target="bitrix") for i in range(4)] + [note(f"h{i}", target="hook") for i in range(2)])
    assert await b.pending_counts() == {"bitrix": 4, "hook": 2}
    leased = {lease.notification.key: lease for lease in await a.lease(10, NOW)}
    await a.delivered(leased["b0"])
    await a.fail(leased["h0"], "HTTP 410")
    await a.fail(leased["h1"], "HTTP 410")
    await a.retry_at(leased["b1"], NOW + 60, "HTTP 503")  # still pending
    assert await b.pending_counts() == {"bitrix": 3}
    await a.retry("h1", NOW)
    assert await b.pending_counts() == {"bitrix": 3, "hook": 1}


@pytest.mark.anyio
async def test_listing_pages_oldest_first_and_is_bounded(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, _ = pair
    for start in range(0, 1100, MAX_BATCH // 2):
        await a.put([note(f"{i:05}") for i in range(start, min(start + MAX_BATCH // 2, 1100))])
    keys = [f"{i:05}" for i in range(1100)]
    pages = [await a.listing("pending", 10, offset) for offset in (0, 10, 1095)]
    assert [[listed.notification.key for listed in page] for page in pages] == [keys[:10], keys[10:20], keys[1095:]]
    assert len(await a.listing("pending", 5000, 0)) == MAX_BATCH
    assert await a.listing("pending", 0, 0) == []
    assert await a.listing("pending", 10, 5000) == []
    assert [listed.notification.key for listed in await a.listing("pending", 2, -5)] == keys[:2]
    with pytest.raises(ValueError, match="nan"):
        await a.lease(10, float("nan"))
    with pytest.raises(ValueError, match="'gone'"):
        await a.listing("gone", 10, 0)  # type: ignore[arg-type]
    assert len(await a.lease(5000, NOW)) == MAX_BATCH


@pytest.mark.anyio
async def test_sizes_are_bounded(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, _ = pair
    with pytest.raises(OutboxError, match=f"'big'.*{MAX_BODY + 1} bytes"):
        await a.put([note("fine"), note("big", body=b"x" * (MAX_BODY + 1))])
    with pytest.raises(OutboxError, match=f"at most {MAX_BATCH}"):
        await a.put([note(str(i)) for i in range(MAX_BATCH + 1)])
    with pytest.raises(OutboxError, match="1 to 512 characters"):
        await a.put([note("k" * 513)])
    assert await a.listing("pending", 10, 0) == []  # none of those batches stored anything
    assert await a.put([note("max", body=b"x" * MAX_BODY)]) == 1
    await a.retry_at((await a.lease(1, NOW))[0], NOW, "E" * 10_000)
    [listed] = await a.listing("pending", 1, 0)
    assert listed.last_error == "E" * 200
    assert len(listed.notification.body) == MAX_BODY


@pytest.mark.anyio
async def test_scripts_flushed_from_redis_are_loaded_again(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, _ = pair
    client = a._client
    await a.put([note("1")])
    await client.script_flush()
    await a.put([note("2")])
    await client.script_flush()
    leased = await a.lease(10, NOW)
    await client.script_flush()
    await a.delivered(leased[0])
    assert [listed.notification.key for listed in await a.listing("pending", 10, 0)] == ["2"]


@pytest.mark.anyio
async def test_a_lost_group_is_created_again(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, b = pair
    await a.put([note("1")])
    await a._client.xgroup_destroy(a._keys[0], "delivery")
    [leased] = await b.lease(10, NOW)  # the group again, from the stream's start
    assert leased.notification.key == "1"


@pytest.mark.anyio
async def test_redis_down_or_hung_is_an_outbox_error_quickly(own_redis: RedisServer) -> None:
    client = client_of(own_redis.url)
    box = RedisOutbox(client, "t:", "a", SETTINGS, timeout=0.5)
    await box.start()
    await box.put([note("1")])
    own_redis.pause()  # accepts, never answers
    started = time.monotonic()
    with pytest.raises(OutboxError, match="lease: TimeoutError") as hung:
        await box.lease(10, NOW)
    assert time.monotonic() - started < 1.5
    assert "127.0.0.1" not in str(hung.value)
    own_redis.resume()
    own_redis.stop()
    for call in (box.put([note("2")]), box.lease(1, NOW), box.listing("failed", 1, 0), box.pending_counts()):
        started = time.monotonic()
        with pytest.raises(OutboxError, match="redis outbox") as down:
            await call
        assert time.monotonic() - started < 1.5
        assert "127.0.0.1" not in str(down.value)
        assert str(own_redis.port) not in str(down.value)
    own_redis.start()  # back, empty (no persistence): no scripts, no group; the pool reconnects
    assert await box.put([note("3")]) == 1
    [leased] = await box.lease(10, NOW)
    assert leased.notification.key == "3"
    await box.delivered(leased)
    await client.aclose()


REPLICA = """
import asyncio, sys
from redis.asyncio import Redis
from ascrm.core.notify.message import NotifySettings
from ascrm.core.notify.redis_outbox import RedisOutbox

async def main() -> None:
    box = RedisOutbox(Redis.from_url(sys.argv[1]), sys.argv[2], "dying", NotifySettings(claim_after=1.0))
    await box.start()
    leased = await box.lease(int(sys.argv[3]), 1.8e9)
    print(len(leased), flush=True)
    await asyncio.sleep(3600)  # never settles: killed

asyncio.run(main())
"""


@pytest.mark.anyio
async def test_a_replica_killed_mid_way_has_its_leases_delivered_by_another(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    client = client_of(redis_server.url)
    survivor = RedisOutbox(client, prefix, "survivor", replace(SETTINGS, claim_after=1.0))
    await survivor.start()
    await survivor.put([note(f"{i}") for i in range(10)])
    replica = subprocess.Popen(
        [sys.executable, "-c", REPLICA, redis_server.url, prefix, "6"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert replica.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(replica.stdout.readline), 20)
        assert line.strip() == b"6"  # it holds six
        replica.send_signal(signal.SIGKILL)
        replica.wait(5)
        killed = time.monotonic()
        delivered: list[str] = []
        while len(delivered) < 10 and time.monotonic() - killed < 10:
            for leased in await survivor.lease(10, NOW):
                if len(delivered) >= 4:  # the free four come first; the dead replica's only after claim_after
                    assert time.monotonic() - killed >= 1.0 - 0.3
                await survivor.delivered(leased)
                delivered.append(leased.notification.key)
            await asyncio.sleep(0.05)
        assert sorted(delivered, key=int) == [str(i) for i in range(10)]
        assert await survivor.listing("pending", 10, 0) == []
    finally:
        if replica.poll() is None:
            replica.kill()
            replica.wait()
        await client.aclose()


@pytest.mark.anyio
async def test_start_drops_only_consumers_that_hold_nothing(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, b = pair
    await a.put([note("1"), note("2")])
    [held] = await b.lease(1, NOW)  # b holds one
    await a.delivered((await a.lease(1, NOW))[0])  # a is a consumer too, holding nothing
    dropped = await a._run(START, GROUP, "a", -1)  # every other consumer counts as idle long enough
    assert dropped == 0  # b holds one: kept, or its lease would never be claimed
    await b.delivered(held)
    assert await a._run(START, GROUP, "a", -1) == 1
    names = {bytes(entry["name"]).decode() for entry in await a._client.xinfo_consumers(a._keys[0], GROUP)}
    assert names == {"a"}


@pytest.mark.anyio
async def test_due_retries_move_back_once_and_a_few_at_a_time(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, b = pair
    await a.put([note(f"{i}") for i in range(200)])
    for lease in await a.lease(200, NOW):
        await a.retry_at(lease, NOW + 1, "HTTP 503")
    assert await a.lease(10, NOW + 1) != []
    assert await a._client.zcard(a._keys[2]) == 190  # a lease moves at most its limit out of the later set
    leases = await asyncio.gather(*(box.lease(9, NOW + 1) for box in (a, b) * 20))
    handed = [lease.notification.key for batch in leases for lease in batch]
    assert len(handed) == len(set(handed)) == 190
    assert {lease.attempts for batch in leases for lease in batch} == {1}


@pytest.mark.anyio
async def test_nothing_is_left_behind_but_the_markers(pair: tuple[RedisOutbox, RedisOutbox]) -> None:
    a, _ = pair
    prefix = a._keys[0].removesuffix("notify:stream")
    await a.put([note(f"{i}") for i in range(6)])
    leased = await a.lease(6, NOW)
    for lease in leased[:3]:
        await a.delivered(lease)
    await a.retry_at(leased[3], NOW, "HTTP 500")
    for lease in leased[4:]:
        await a.fail(lease, "HTTP 400")
    await a.delivered((await a.lease(1, NOW))[0])
    await a.retry("4", NOW)
    await a.delivered((await a.lease(1, NOW))[0])
    await a.retry("5", NOW)
    await a.delivered((await a.lease(1, NOW))[0])
    keys = {bytes(key).decode().removeprefix(prefix) async for key in a._client.scan_iter(f"{prefix}*")}
    assert keys == {"notify:stream", "notify:seq", "notify:claim"} | {f"notify:key:{i}" for i in range(6)}
    assert await a._client.xlen(a._keys[0]) == 0
    assert (await a._client.xpending(a._keys[0], GROUP))["pending"] == 0  # the group holds no lease either
    ttl = await a._client.ttl(f"{prefix}notify:key:0")
    assert SETTINGS.give_up_after + 86400 - 5 < ttl <= SETTINGS.give_up_after + 86400
