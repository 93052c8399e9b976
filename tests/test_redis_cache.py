"""The folds a replica holds (redis_cache.py): bounded, never handed out, and never trusted beyond
what the script checked: another incarnation, a newer snapshot, another replica's entries.

The Redis cases run against a real redis-server (Debian's, on a free loopback port) for the module.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from ascrm.core.calls import CallState, DecisionRecord, StateSettings, UnreadableRecordError, stored
from ascrm.core.calls.redis import RedisCallStore
from ascrm.core.calls.redis_cache import FoldCache, state_bytes
from ascrm.core.calls.state import Command, Trim
from ascrm.core.engine import RuleSet
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, Decision, EventType, ServiceType
from tests.support.redis import RedisServer, needs_redis

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


def a_call(call_id: int, events: int = 1, field: str = "5") -> CallState:
    opening = CallEvent(call_id, T0, EventType.CallAccepted, ServiceType.MTSSecretary, "79161234567", "74951234567")
    call = CallState.begin(call_id, opening, T0)
    call.apply(opening, T0)
    for second in range(1, events):
        at = T0 + timedelta(seconds=second)
        call.apply(CallEvent(call_id, at, EventType.DTMF, dtmf=field, generic=field), at)
    call.decided(DecisionRecord(T0, "CallAccepted", Action.TransferEXT, "1021", "menu", None, "r1"))
    return call


# ----------------------------------------------------------------------------------------------------
# The cache itself


def test_a_state_is_held_as_a_copy_and_comes_back_unchanged() -> None:
    cache = FoldCache(1 << 20)
    call = a_call(1)
    cache.put(1, b"i1", 3, call)
    call.decided(DecisionRecord(T0, "poll", Action.Hangup, ""))  # the answer changes its own state…
    call.events.clear()
    held = cache.get(1)
    assert held is not None
    assert (held.incarnation, held.last) == (b"i1", 3)
    assert held.state == a_call(1)  # …not the one held


def test_a_newer_fold_of_the_same_hash_is_not_replaced_by_an_older_one() -> None:
    cache = FoldCache(1 << 20)
    cache.put(1, b"i1", 5, a_call(1, 5))
    cache.put(1, b"i1", 4, a_call(1, 4))  # an answer that read the hash earlier came back later
    held = cache.get(1)
    assert held is not None
    assert held.last == 5
    assert len(held.state.events) == 5
    cache.put(1, b"i2", 1, a_call(1, 1))  # another incarnation: always the newest
    held = cache.get(1)
    assert held is not None
    assert (held.incarnation, held.last) == (b"i2", 1)


def test_an_ended_call_is_let_go() -> None:
    cache = FoldCache(1 << 20)
    cache.put(1, b"i1", 1, a_call(1))
    ended = a_call(1)
    ended.ended_at = T0
    cache.put(1, b"i1", 2, ended)
    assert cache.get(1) is None
    assert (len(cache), cache.size) == (0, 0)


def test_the_byte_budget_drops_the_least_recently_used() -> None:
    one = state_bytes(a_call(1))
    cache = FoldCache(3 * one)
    for call_id in (1, 2, 3):
        cache.put(call_id, b"i", 1, a_call(call_id))
    assert cache.get(1) is not None  # 1 used again: 2 is now the least recently used
    cache.put(4, b"i", 1, a_call(4))
    assert cache.get(2) is None
    assert all(cache.get(call_id) is not None for call_id in (1, 3, 4))
    assert cache.size == 3 * one == sum(held.size for held in cache._held.values())


def test_a_call_bigger_than_the_budget_is_not_held() -> None:
    cache = FoldCache(state_bytes(a_call(1)) + 10)
    cache.put(1, b"i", 1, a_call(1))
    cache.put(1, b"i", 2, a_call(1, 200, "9" * 200))  # its newer fold is too big: the older goes too
    assert cache.get(1) is None
    assert cache.size == 0


def test_no_budget_holds_nothing() -> None:
    cache = FoldCache(0)
    cache.put(1, b"i", 1, a_call(1))
    assert cache.get(1) is None
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("events", "text"),
    [(1, "5"), (40, "12345"), (200, "x" * 300), (256, "сорок два" * 20)],
    ids=["one-event", "forty-events", "long-fields", "non-ascii"],
)
def test_the_size_estimate_is_not_below_the_real_size(events: int, text: str) -> None:
    """The budget is in real memory: the estimate of a state is at least what its copy takes."""
    call = a_call(7, events, text)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        copies = [call.copy() for _ in range(50)]
        taken = (tracemalloc.get_traced_memory()[0] - before) / len(copies)
    finally:
        tracemalloc.stop()
    assert taken > 0
    assert state_bytes(call) >= taken


def test_a_copy_has_every_field_and_lists_of_its_own() -> None:
    call = a_call(9, 3)
    call.transfer_results.append("busy")
    values = {
        "connected_at": T0,
        "ended_at": T0,
        "ended_by": "1",
        "fired_polls": frozenset({"escalate"}),
        "commands": (Command(1, Action.Hangup, "", T0),),
        "next_command_id": 2,
        "trim": Trim(3, 1, 2),
        "digits": "12",
    }
    for name, value in values.items():
        setattr(call, name, value)
    defaults = CallState(0, T0 - timedelta(days=1), T0 - timedelta(days=1))
    unset = [f.name for f in dataclasses.fields(CallState) if getattr(call, f.name) == getattr(defaults, f.name)]
    assert unset == []  # every field differs from its default, so a field copy() forgets shows
    copy = call.copy()
    assert copy == call
    copy.events.clear()
    copy.decisions.clear()
    copy.transfer_results.clear()
    assert call.events
    assert call.decisions
    assert call.transfer_results


def test_a_reply_of_what_came_since_needs_the_fold_it_follows() -> None:
    flat = [b"+", b"i1", b"v", b"2", b"n", b"2", b"k", b"0", b"cn", b"1", b"2", b'["P","2027-03-01T09:00:00+00:00"]']
    with pytest.raises(UnreadableRecordError, match="a fold that was not given"):
        stored.fold(1, flat, "k", max_call_bytes=65536, limit=1 << 20)
    folded = stored.fold(1, flat, "k", max_call_bytes=65536, limit=1 << 20, start=a_call(1))
    assert (folded.last, folded.incarnation, folded.call.connected_at) == (2, b"i1", T0)


_SMALL = [b"+", b"i1", b"v", b"2", b"n", b"2", b"k", b"0", b"cn", b"3"]
_UPDATED = [b"u", b"2027-03-01T09:00:05+00:00"]


@pytest.mark.parametrize(
    ("flat", "last", "expected"),
    [
        (_SMALL, 2, stored.Quiet(0, None, 3)),
        ([*_SMALL, *_UPDATED], 2, stored.Quiet(0, T0 + timedelta(seconds=5), 3)),
        (_SMALL, 1, None),  # an entry came since the fold held (n moved on)
        ([*_SMALL, b"2", b'["P","2027-03-01T09:00:00+00:00"]'], 1, None),  # …with the entry
        ([*_SMALL, b"c:2", b'[2,3,"p","2027-03-01T09:00:00+00:00"]'], 2, None),  # a pending command
        ([b"i", b"i1", *_SMALL[2:]], 2, None),  # the whole hash, not what came since
        ([b"+", b"i1", b"v", b"3", *_SMALL[4:]], 2, None),  # another layout
        (_SMALL[:-2], 2, None),  # no cn
        ([*_SMALL[:-1], b"x"], 2, None),  # a cn that is no number
        ([*_SMALL, b"u", b"yesterday"], 2, None),  # a time that is none
        ([*_SMALL, b"u"], 2, None),  # odd
    ],
)
def test_a_reply_that_brought_nothing_is_told_apart(
    flat: list[bytes], last: int, expected: stored.Quiet | None
) -> None:
    """Only a reply of the small fields alone, up to the entry held, leaves the fold held as it is."""
    assert stored.quiet(flat, last) == expected


# ----------------------------------------------------------------------------------------------------
# Against Redis


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[RedisCallStore, RedisCallStore, str]]:
    """A replica holding folds and one holding none, on one key prefix, and the prefix."""
    prefix = f"folds-{uuid.uuid4().hex[:8]}:"
    settings = StateSettings(backend="redis", redis_url=redis_server.url, key_prefix=prefix)
    holding, bare = RedisCallStore(settings), RedisCallStore(dataclasses.replace(settings, cache_mb=0))
    yield holding, bare, prefix
    await holding.close()
    await bare.close()


def no_rules(rules: RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
    return NO_ACTION


def _raw(store: RedisCallStore) -> redis.Redis:
    return redis.Redis(port=store._pool.connection_kwargs["port"])


@needs_redis
@pytest.mark.anyio
async def test_what_came_since_is_folded_as_the_whole_hash_would_be(
    replicas: tuple[RedisCallStore, RedisCallStore, str],
) -> None:
    """Events, polls, commands and records through both replicas: the replica holding folds answers
    from what came since, and its states equal the other's, which folds the whole hash every time."""
    holding, bare, _ = replicas
    rules = RuleSet(revision="r")
    now = T0
    await holding.update(CallEvent(5, now, EventType.CallAccepted, an="79161234567"), now)
    for step in range(60):  # past SNAPSHOT_EVERY several times: snapshots written by both
        now += timedelta(seconds=1)
        writer = bare if step % 3 == 0 else holding
        if step % 7 == 3:
            await writer.push(5, Action.PlayPrompt, f"p{step}", now)
        if step % 5 == 4:
            answered, decision = await holding.answer_poll(5, now, rules, no_rules)
            again, same = await bare.answer_poll(5, now, rules, no_rules)
            assert answered is not None
            assert again is not None
            if decision.action is not None:  # the first poll took the command: the other finds none
                assert same.action is None or same.command_id != decision.command_id
            continue
        await writer.record(5, DecisionRecord(now, "DTMF", Action.TransferEXT, str(step), "menu"))
        event = CallEvent(5, now, EventType.DTMF, dtmf=str(step % 10))
        got = await holding.update(event, now)
        assert got == await bare.get(5), f"step {step}"
    assert holding.folds.hits > 30
    assert bare.folds.hits == 0
    assert len(bare.folds) == 0


@needs_redis
@pytest.mark.anyio
async def test_polls_that_bring_nothing_keep_the_fold_held_up_to_date(
    replicas: tuple[RedisCallStore, RedisCallStore, str],
) -> None:
    """Polls of a talking call bring only the small fields: the replica holding the fold brings it up to
    date in place, hands out copies, and its calls equal the whole hash's after each poll, a command
    pushed by the other replica and a later event included."""
    holding, bare, _ = replicas
    rules = RuleSet(revision="r")
    now = T0
    await holding.update(CallEvent(6, now, EventType.CallAccepted, an="79161234567"), now)
    for step in range(1, 12):
        now += timedelta(seconds=3)
        if step == 6:
            await bare.push(6, Action.PlayPrompt, "hold-music", now)
        answered, decision = await holding.answer_poll(6, now, rules, no_rules)
        assert answered is not None
        assert answered == await bare.get(6), f"poll {step}"
        assert answered.updated_at == now
        assert (decision.action, decision.param) == ((Action.PlayPrompt, "hold-music") if step == 6 else (None, ""))
        answered.events.clear()  # an answer's copy is its own
    held = holding.folds.get(6)
    assert held is not None
    assert held.state == await bare.get(6)
    now += timedelta(seconds=1)
    command, _ = await bare.push(6, Action.PlayPrompt, "survey", now)
    got = await holding.update(CallEvent(6, now, EventType.DTMF, dtmf="5"), now)
    assert got == await bare.get(6)
    assert [pending.id for pending in got.commands] == [command.id]  # held with its pending command…
    assert await bare.cancel(6, command.id)
    now += timedelta(seconds=3)
    answered, decision = await holding.answer_poll(6, now, rules, no_rules)
    assert decision.action is None
    assert answered == await bare.get(6)
    assert answered is not None
    assert answered.commands == ()  # …which a poll that brought nothing else no longer shows
    assert holding.folds.hits >= 12


@needs_redis
@pytest.mark.anyio
async def test_a_call_that_comes_back_under_its_call_id_is_not_taken_for_the_one_held(
    replicas: tuple[RedisCallStore, RedisCallStore, str],
) -> None:
    holding, bare, prefix = replicas
    for second in range(5):
        at = T0 + timedelta(seconds=second)
        await holding.update(CallEvent(8, at, EventType.DTMF, dtmf="1"), at)
    assert holding.folds.get(8) is not None
    raw = _raw(holding)
    try:
        raw.delete(f"{prefix}call:{{8}}")  # expired (or evicted) between two events
    finally:
        raw.close()
    at = T0 + timedelta(minutes=5)
    for second in range(6):  # the new hash has more entries than the fold held here
        await bare.update(CallEvent(8, at + timedelta(seconds=second), EventType.DTMF, dtmf="3"), at)
    at += timedelta(minutes=1)
    misses = holding.folds.misses
    call = await holding.update(CallEvent(8, at, EventType.DTMF, dtmf="2"), at)
    assert call.digits == "3333332"
    assert len(call.events) == 7
    assert call == await bare.get(8)
    assert holding.folds.misses == misses + 1


@needs_redis
@pytest.mark.anyio
async def test_a_snapshot_past_the_fold_held_brings_the_whole_hash(
    replicas: tuple[RedisCallStore, RedisCallStore, str],
) -> None:
    """Another replica's events and snapshot drop the entries after the fold held here: the script
    answers the whole hash, and the state has every event."""
    holding, bare, _ = replicas
    await holding.update(CallEvent(9, T0, EventType.CallAccepted, an="79161234567"), T0)
    for second in range(1, 3 * stored.SNAPSHOT_EVERY):
        at = T0 + timedelta(seconds=second)
        await bare.update(CallEvent(9, at, EventType.DTMF, dtmf=str(second % 10)), at)
    at = T0 + timedelta(minutes=1)
    hits, misses = holding.folds.hits, holding.folds.misses
    call = await holding.update(CallEvent(9, at, EventType.DTMF, dtmf="0"), at)
    assert len(call.events) == 3 * stored.SNAPSHOT_EVERY + 1
    assert call == await bare.get(9)
    assert (holding.folds.hits, holding.folds.misses) == (hits, misses + 1)


@needs_redis
@pytest.mark.anyio
async def test_many_calls_stay_within_the_budget(redis_server: RedisServer) -> None:
    """A flood of distinct calls cannot grow a replica's memory past state.cache_mb."""
    prefix = f"flood-{uuid.uuid4().hex[:8]}:"
    settings = StateSettings(backend="redis", redis_url=redis_server.url, key_prefix=prefix, cache_mb=1)
    store = RedisCallStore(settings)
    try:
        for call_id in range(1, 3001):
            event = CallEvent(call_id, T0, EventType.CallAccepted, an="7" * 1000, un="8" * 1000)
            await store.update(event, T0)
        assert 0 < store.folds.size <= 1 << 20
        assert len(store.folds) < 3000
        assert store.folds.get(3000) is not None
        assert store.folds.get(1) is None
    finally:
        await store.close()
