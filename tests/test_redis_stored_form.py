"""The Redis store's stored form: a call folded from its hash equals the memory store's call after the
same requests; snapshots, the sweeper's lease, deadlines and forgotten scripts.

A real redis-server (Debian's, on a free loopback port, no persistence) runs for the module.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from ascrm.core.calls import (
    CallState,
    DecisionRecord,
    MemoryCallStore,
    StateSettings,
    StoreUnavailableError,
    UnreadableRecordError,
    codec,
    stored,
)
from ascrm.core.calls.redis import RedisCallStore
from ascrm.core.engine import RuleSet
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, Decision, EventType, ServiceType
from tests.support.redis import RedisServer, needs_redis

pytestmark = [needs_redis, pytest.mark.anyio]
T0 = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisCallStore, RedisCallStore, str]]:
    """Two replicas' Redis stores on one key prefix, and the prefix."""
    prefix = f"form-{uuid.uuid4().hex[:8]}:"
    settings = StateSettings(backend="redis", redis_url=redis_server.url, key_prefix=prefix, timeout_ms=1000)
    first, second = RedisCallStore(settings), RedisCallStore(settings)
    yield first, second, prefix
    await first.close()
    await second.close()


def no_rules(rules: RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
    return NO_ACTION


def random_event(rng: random.Random, call_id: int, at: datetime) -> CallEvent:
    """An event of any type, with fields short, long (clipped), non-ASCII or missing."""
    kind = rng.choice([EventType.DTMF, EventType.Transfer, EventType.GoToTransfer, EventType.RecStart, 99])
    text = rng.choice(["1", None, "сорок два", "x" * 1500, "9" * 40])  # the reader never gives ""
    return CallEvent(
        call_id=call_id,
        event_time=at,
        event_type=kind,
        service_type=ServiceType.MTSPBX if rng.random() < 0.1 else None,
        an=rng.choice([None, "79161234567", "79030000000"]),
        dtmf=text if kind == EventType.DTMF else None,
        result=rng.choice(["1", "0", "1280"]) if kind == EventType.Transfer else None,
        generic=text if rng.random() < 0.3 else None,
    )


async def test_a_folded_call_equals_the_memory_stores_after_the_same_requests(
    stores: tuple[RedisCallStore, RedisCallStore, str],
) -> None:
    """Hundreds of events (past the history budgets and the snapshots), polls, commands and records:
    every field of the state agrees, trims and history costs included."""
    first, second, _ = stores
    memory = MemoryCallStore(max_calls=1000)
    rng = random.Random(20270201)
    call_id, now = 4242, T0
    opening = CallEvent(call_id, now, EventType.CallAccepted, ServiceType.MTSSecretary, "79161234567", "74951234567")
    for store in (memory, first):
        await store.update(opening, now)
    rules = RuleSet(revision="test")
    for step in range(600):
        now += timedelta(seconds=1)
        replica = first if step % 2 else second
        roll = rng.random()
        if roll < 0.8:
            event = random_event(rng, call_id, now)
            expected, got = await memory.update(event, now), await replica.update(event, now)
        elif roll < 0.88:
            action, param = rng.choice([(Action.Hangup, ""), (Action.PlayPrompt, "hello")])
            pushed = [await store.push(call_id, action, param, now) for store in (memory, replica)]
            assert pushed[0] == pushed[1]
            continue
        elif roll < 0.96:
            expected_answer = await memory.answer_poll(call_id, now, rules, no_rules)
            got_answer = await replica.answer_poll(call_id, now, rules, no_rules)
            assert got_answer[1] == expected_answer[1]
            expected, got = expected_answer[0], got_answer[0]  # type: ignore[assignment]
        else:
            record = DecisionRecord(now, "DTMF", Action.TransferEXT, "1021", "menu", None, "r1")
            for store in (memory, replica):
                await store.record(call_id, record)
            continue
        assert got == expected, f"step {step}"
        await asyncio.sleep(0)  # the snapshots written meanwhile
    final = await second.get(call_id)
    assert final == await memory.get(call_id)
    assert final is not None
    assert len(final.events) == 256  # the event cap reached: the oldest went, the first stayed
    assert final.trimmed > 0
    assert first.folds.hits > 100
    assert second.folds.hits > 100


async def test_snapshots_keep_the_hash_short(stores: tuple[RedisCallStore, RedisCallStore, str]) -> None:
    first, _, prefix = stores
    for second in range(100):
        at = T0 + timedelta(seconds=second)
        await first.update(CallEvent(77, at, EventType.DTMF, dtmf=str(second % 10)), at)
    await asyncio.sleep(0.2)  # let the last snapshot land
    raw = redis.Redis(port=_port(first))
    try:
        fields = raw.hgetall(f"{prefix}call:{{77}}")
    finally:
        raw.close()
    entries = [name for name in fields if name.isdigit()]
    assert int(fields[b"n"]) == 100
    assert int(fields[b"k"]) >= 100 - stored.SNAPSHOT_EVERY
    assert len(entries) == 100 - int(fields[b"k"]) <= stored.SNAPSHOT_EVERY
    call = await first.get(77)
    assert call is not None
    assert len(call.events) == 100
    assert call.digits == "".join(str(second % 10) for second in range(100))[-128:]


async def test_one_replica_sweeps_at_a_time(stores: tuple[RedisCallStore, RedisCallStore, str]) -> None:
    first, second, prefix = stores
    for call_id in range(1, 6):
        at = T0 + timedelta(seconds=call_id)
        await first.update(CallEvent(call_id, at, EventType.CallAccepted, an="79161234567"), at)
    await first.sweep(T0)  # takes the lease
    raw = redis.Redis(port=_port(first))
    try:
        assert raw.get(f"{prefix}sweeper") is not None
        # the other replica's sweep does nothing while the lease is held: its cap is never applied
        capped = RedisCallStore(StateSettings(backend="redis", redis_url=f"redis://127.0.0.1:{_port(first)}/0",
                                              key_prefix=prefix, max_calls=2))  # fmt: skip
        try:
            await capped.sweep(T0 + timedelta(seconds=6))
            assert capped.evicted == 0
            assert raw.zcard(f"{prefix}calls") == 5
            raw.delete(f"{prefix}sweeper")  # the holder stopped: its lease lapsed
            await capped.sweep(T0 + timedelta(seconds=6))
            assert capped.evicted == 3
            assert raw.zcard(f"{prefix}calls") == 2
        finally:
            await capped.close()
    finally:
        raw.close()
    assert [await second.get(i) is not None for i in range(1, 6)] == [False, False, False, True, True]


async def test_a_script_past_its_deadline_changes_nothing(stores: tuple[RedisCallStore, RedisCallStore, str]) -> None:
    """What a hung Redis runs once it resumes, after its sender gave up, is not applied."""
    first, _, _ = stores
    await first.update(CallEvent(88, T0, EventType.CallAccepted, an="79161234567"), T0)
    await first.push(88, Action.Hangup, "", T0)
    first._clock_offset_ms = -60_000.0  # as if Redis's clock were a minute behind: every deadline is past
    with pytest.raises(StoreUnavailableError, match="after its deadline"):
        await first.answer_poll(88, T0, RuleSet(revision="test"), no_rules)
    with pytest.raises(StoreUnavailableError, match="after its deadline"):
        await first.update(CallEvent(88, T0, EventType.DTMF, dtmf="5"), T0)
    first._clock_offset_ms = 0.0
    assert await first.ping()  # measures the real offset again
    call = await first.get(88)
    assert call is not None
    assert call.digits == ""
    assert [command.action for command in call.commands] == [Action.Hangup]  # still pending
    _, decision = await first.answer_poll(88, T0, RuleSet(revision="test"), no_rules)
    assert decision.action == Action.Hangup


async def test_forgotten_scripts_are_sent_again(stores: tuple[RedisCallStore, RedisCallStore, str]) -> None:
    first, _, _ = stores
    raw = redis.Redis(port=_port(first))
    try:
        for round_ in range(3):
            raw.script_flush()
            at = T0 + timedelta(seconds=round_)
            call = await first.update(CallEvent(99, at, EventType.DTMF, dtmf=str(round_)), at)
            assert call.digits == "012"[: round_ + 1]
    finally:
        raw.close()


def _port(store: RedisCallStore) -> int:
    port: int = store._pool.connection_kwargs["port"]
    return port


async def test_a_call_begun_before_the_upgrade_keeps_its_history(
    stores: tuple[RedisCallStore, RedisCallStore, str],
) -> None:
    """The release before this layout kept a call as one JSON record at `<prefix>call:<id>`: the first
    event this release stores for the call starts from it."""
    first, _, prefix = stores
    before = CallState.begin(31, CallEvent(31, T0, EventType.CallAccepted, an="79161234567"), T0)
    before.apply(CallEvent(31, T0, EventType.CallAccepted, an="79161234567"), T0)
    before.apply(CallEvent(31, T0, EventType.DTMF, dtmf="12"), T0)
    before.decided(DecisionRecord(T0, "poll", Action.TransferEXT, "1021", "escalate", None, "r0"))
    raw = redis.Redis(port=_port(first))
    try:
        raw.set(f"{prefix}call:31", codec.encode(before), ex=600)
        raw.set(f"{prefix}call:{{32}}", b"another program's string")  # refused, changed in no way
        at = T0 + timedelta(seconds=5)
        call = await first.update(CallEvent(31, at, EventType.DTMF, dtmf="3"), at)
        assert call.digits == "123"
        assert call.an == "79161234567"
        assert [code for code, _, _ in call.events] == [EventType.CallAccepted, EventType.DTMF, EventType.DTMF]
        assert call.fired_polls == frozenset({"escalate"})
        with pytest.raises(UnreadableRecordError):
            await first.update(CallEvent(32, at, EventType.DTMF, dtmf="3"), at)
        assert raw.get(f"{prefix}call:{{32}}") == b"another program's string"
    finally:
        raw.close()


@pytest.mark.parametrize(
    "event",
    [
        CallEvent(7, T0, EventType.DTMF, None, dtmf="1"),
        CallEvent(7, T0, EventType.DTMF, None, an="7" * 1500, dtmf="2" * 1500, generic="д" * 1100),  # clipped
        CallEvent(7, None, 99, 7, generic="an unknown event type and service"),
        CallEvent(7, T0, EventType.EndCall, None, result="1"),
    ],
    ids=["short", "clipped", "unknown-codes", "end"],
)
def test_an_event_folded_as_sent_equals_it_read_back(event: CallEvent) -> None:
    """update() folds its own entry from what it sent (stored.Own), not read back: the same state."""
    opening = CallEvent(7, T0, EventType.CallAccepted, ServiceType.MTSSecretary, "7" * 1500, "74951234567")
    flat: list[bytes] = [b"v", b"2", b"k", b"0", b"cn", b"1"]
    own = None
    for number, (sent, at) in enumerate([(opening, T0), (event, T0 + timedelta(seconds=3))], start=1):
        entry, own = stored.event_entry(sent, at)
        flat += [str(number).encode(), entry]
    flat += [b"n", b"2", b"u", (T0 + timedelta(seconds=3)).isoformat().encode()]
    limits = {"max_call_bytes": 4096, "limit": codec.record_limit(4096)}
    read_back = stored.fold(7, flat, "k", **limits)
    as_sent = stored.fold(7, flat, "k", **limits, own=own)
    assert as_sent == read_back
    assert as_sent.call.trimmed == read_back.call.trimmed
