"""The Redis store's lane: many requests' commands in one write, replies in order, each request in its
budget, against a real redis-server on loopback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.connection import AbstractConnection
from structlog.testing import capture_logs

from ascrm.core.answering import answer_event
from ascrm.core.calls import DecisionRecord, StoreUnavailableError, UnreadableRecordError
from ascrm.core.calls.redis import RedisCallStore
from ascrm.core.engine import RuleSet
from ascrm.core.protocol import Action, CallEvent, EventType
from ascrm.core.rules.compile import load_rules
from ascrm.service.settings import StateSettings
from tests.support.redis import RedisServer, needs_redis

pytestmark = [needs_redis, pytest.mark.anyio]
NOW = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Opener = Callable[..., RedisCallStore]


@pytest.fixture
async def open_store(redis_server: RedisServer) -> AsyncIterator[Opener]:
    prefix = f"lane-{uuid.uuid4().hex[:8]}:"
    opened: list[RedisCallStore] = []

    def opener(*, server: RedisServer = redis_server, timeout_ms: int = 1000) -> RedisCallStore:
        settings = StateSettings(backend="redis", redis_url=server.url, key_prefix=prefix, timeout_ms=timeout_ms)
        store = RedisCallStore(settings)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


def accepted(call_id: int, **fields: str) -> CallEvent:
    return CallEvent(call_id=call_id, event_type=EventType.CallAccepted, event_time=NOW, **fields)  # type: ignore[arg-type]


def transfer(rule: str) -> DecisionRecord:
    return DecisionRecord(NOW, "CallAccepted", Action.TransferEXT, "1001", rule, None, "r1")


def client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)


@pytest.fixture
def greet(tmp_path: Path) -> RuleSet:
    (tmp_path / "greet.yaml").write_text("rules:\n  - {id: greet, on: CallAccepted, do: {TransferEXT: '1001'}}\n")
    return load_rules(tmp_path / "greet.yaml", "Europe/Moscow")


async def test_concurrent_requests_share_writes_and_each_gets_its_own_reply(
    open_store: Opener, redis_server: RedisServer
) -> None:
    store, watcher = open_store(), client(redis_server)
    await store.update(accepted(1), NOW)  # connected, scripts loaded
    before = watcher.info("stats")
    calls = await asyncio.gather(*(store.update(accepted(100 + i, an=f"an-{i}"), NOW) for i in range(200)))
    after = watcher.info("stats")
    assert [(call.call_id, call.an) for call in calls] == [(100 + i, f"an-{i}") for i in range(200)]
    assert after["total_commands_processed"] - before["total_commands_processed"] >= 200
    # the 200 script calls reached redis-server in a few reads of its socket (with a connection per
    # request: about one read each); the watcher's INFO is one more
    reads = after["total_reads_processed"] - before["total_reads_processed"]
    assert reads <= 20, reads


async def test_a_record_is_not_waited_for_and_lands_before_what_follows(open_store: Opener) -> None:
    store, replica = open_store(), open_store()
    await store.update(accepted(7), NOW)
    written = store.record(7, transfer("greet"))
    assert not written.done()  # queued: the answer does not wait for it
    call = await store.get(7)  # queued after it on the same lane: sees it
    assert call is not None
    assert [record.rule_id for record in call.decisions] == ["greet"]
    assert written.done()
    assert written.exception() is None
    other = await replica.get(7)
    assert other is not None
    assert [record.rule_id for record in other.decisions] == ["greet"]


async def test_close_writes_what_is_queued(open_store: Opener) -> None:
    store = open_store()
    await store.update(accepted(8), NOW)
    for rule in ("one", "two", "three"):
        store.record(8, transfer(rule))
    await store.close()
    call = await open_store().get(8)
    assert call is not None
    assert [record.rule_id for record in call.decisions] == ["one", "two", "three"]


async def test_scripts_redis_forgot_are_sent_again_within_the_batch(
    open_store: Opener, redis_server: RedisServer
) -> None:
    store = open_store()
    await store.update(accepted(9), NOW)
    client(redis_server).script_flush()
    with capture_logs() as logs:
        calls = await asyncio.gather(*(store.update(accepted(200 + i), NOW) for i in range(50)))
    assert [call.call_id for call in calls] == list(range(200, 250))
    assert all(len(call.events) == 1 for call in calls)  # each applied once, none twice
    loaded = [entry for entry in logs if entry["event"] == "store_script_loaded"]
    assert [entry["script"] for entry in loaded] == ["update"]


async def test_an_error_reply_fails_its_own_request_only(open_store: Opener, redis_server: RedisServer) -> None:
    store = open_store()
    await store.update(accepted(10), NOW)
    client(redis_server).set(f"{store._prefix}call:{{11}}", "not a hash")
    results = await asyncio.gather(
        store.update(accepted(10), NOW), store.get(11), store.update(accepted(12), NOW), return_exceptions=True
    )
    assert not isinstance(results[0], BaseException)
    assert len(results[0].events) == 2
    assert isinstance(results[1], UnreadableRecordError)
    assert "WRONGTYPE" in results[1].reason
    assert not isinstance(results[2], BaseException)
    assert results[2].call_id == 12
    assert store.unreadable == 1


async def test_a_hung_redis_fails_queued_records_in_time_and_counts_them(
    open_store: Opener, own_redis: RedisServer, greet: RuleSet
) -> None:
    store = open_store(server=own_redis, timeout_ms=300)
    await store.update(accepted(20), NOW)
    errors: Counter[str] = Counter()
    own_redis.pause()
    try:
        started = time.monotonic()
        answered = await answer_event(store, greet, accepted(21), NOW, errors=errors)
        assert answered.decision.rule_id == "greet"  # decided from the event alone
        records = [store.record(20, transfer(f"r{i}")) for i in range(20)]
        done, pending = await asyncio.wait(records, timeout=2 * 0.3 + 0.5)
        assert not pending
        assert all(isinstance(future.exception(), StoreUnavailableError) for future in done)
        assert time.monotonic() - started < 3 * 0.3 + 0.5
        assert errors["update"] == 1  # the update failed: decided from the event alone, nothing recorded
    finally:
        own_redis.resume()
    call = await store.get(20)  # the lane recovered; nothing late was applied
    assert call is not None
    assert call.decisions == []


async def test_a_failed_record_is_logged_and_counted_without_failing_the_answer(
    open_store: Opener, greet: RuleSet
) -> None:
    store = open_store()
    loop = asyncio.get_running_loop()

    def failing(call_id: int, record: DecisionRecord) -> asyncio.Future[object]:
        future: asyncio.Future[object] = loop.create_future()
        loop.call_later(0.01, future.set_exception, StoreUnavailableError("redis: record took more than 1000 ms"))
        return future

    store.record = failing  # type: ignore[method-assign]
    errors: Counter[str] = Counter()
    with capture_logs() as logs:
        answered = await answer_event(store, greet, accepted(30), NOW, errors=errors)
        assert answered.decision.rule_id == "greet"
        assert errors["record"] == 0
        await asyncio.sleep(0.05)
    assert errors["record"] == 1
    warnings = [entry for entry in logs if entry["event"] == "store_unavailable"]
    assert warnings
    assert warnings[0]["lost"] == "decision record"
    assert warnings[0]["call_id"] == 30


async def test_replies_already_received_are_taken_without_a_read_each(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store()
    await store.update(accepted(40), NOW)
    reads = 0
    read_response = AbstractConnection.read_response

    async def counted(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await read_response(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "read_response", counted)
    calls = await asyncio.gather(*(store.update(accepted(300 + i, an=f"an-{i}"), NOW) for i in range(200)))
    assert [(call.call_id, call.an) for call in calls] == [(300 + i, f"an-{i}") for i in range(200)]
    assert 1 <= reads <= 40, reads  # about one per write: the rest were in hiredis's buffer already


async def test_commands_queued_over_many_turns_keep_their_order(open_store: Opener) -> None:
    store = open_store()
    await store.update(accepted(41), NOW)
    written = []
    for turn in range(12):  # records written at once (eagerly) and at the loop's turn, interleaved
        written += [store.record(41, transfer(f"r{turn}-{i}")) for i in range(turn % 11)]
        await asyncio.sleep(0)
    await asyncio.gather(*written)
    call = await store.get(41)
    assert call is not None
    assert [record.rule_id for record in call.decisions] == [
        f"r{turn}-{i}" for turn in range(12) for i in range(turn % 11)
    ]  # 56: fewer than a call keeps


async def test_a_busy_lane_gives_its_connection_back_every_fraction_of_a_second(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store()
    await store.update(accepted(42), NOW)
    pool = store._pool
    releases = 0
    release = pool.release

    async def counted(connection: AbstractConnection) -> None:
        nonlocal releases
        releases += 1
        await release(connection)

    monkeypatch.setattr(pool, "release", counted)
    loop = asyncio.get_running_loop()
    until = loop.time() + 2.6
    busy = 0
    while loop.time() < until:  # never idle: the next updates are queued before the last are answered
        pending = [store.update(accepted(500 + busy * 8 + i), NOW) for i in range(8)]
        busy += 1
        await asyncio.gather(*pending)
    assert releases >= 8, releases  # a failover's new master is reached without waiting for a lull
    until = loop.time() + 1.5  # and once the load stops, the connection is back in the pool within a second
    while pool._in_use_connections and loop.time() < until:
        await asyncio.sleep(0.02)
    assert not pool._in_use_connections


async def test_a_connection_redis_closed_while_the_lane_kept_it_is_not_written_to(
    open_store: Opener, own_redis: RedisServer
) -> None:
    store = open_store(server=own_redis, timeout_ms=500)
    await store.update(accepted(60), NOW)  # the lane now keeps its connection for the next command
    own_redis.kill()
    own_redis.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    until = started + 2
    refusals: list[str] = []
    while True:  # the kill reaches the kept connection's transport as the kernel tells it
        try:
            call = await store.update(accepted(61), NOW)
            break
        except StoreUnavailableError as exc:
            refusals.append(str(exc))
            assert loop.time() < until
            await asyncio.sleep(0.05)
    assert not [reason for reason in refusals if "took more than" in reason]  # refused at once, not lost
    assert call.call_id == 61
    assert loop.time() - started < 1
