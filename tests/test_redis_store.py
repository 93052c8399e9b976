"""The Redis call store: the memory store's semantics, atomicity across clients, outages; and two
`ascrm serve` processes sharing their calls through one Redis.

A real redis-server (Debian's, on a free loopback port, no persistence) runs for the module; the
outage tests start their own so they can stop and pause it. Store-level tests run against both the
memory store and the Redis store and expect the same answers.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from structlog.testing import capture_logs

from ascrm.core.calls import (
    CallEndedError,
    CallState,
    CallStore,
    DecisionRecord,
    MemoryCallStore,
    StoreUnavailableError,
    UnknownCallError,
)
from ascrm.core.calls.redis import RedisCallStore
from ascrm.core.engine import RuleSet
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, Decision, EventType
from ascrm.service.settings import StateSettings
from tests.support.metrics import scrape
from tests.support.redis import RedisServer, needs_redis
from tests.support.server import PASSWORD, USER, Server, platform_config, start_server
from tests.support.waiting import wait_until

pytestmark = needs_redis
BUDGET_MARGIN = 0.5  # seconds a request may take beyond the store's budget during an outage


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ----------------------------------------------------------------------------------------------------
# Both stores, behind one interface


@dataclass
class Backend:
    """Makes stores of one kind for a test; `replica` is a second client of the same calls."""

    name: str
    redis: RedisServer | None
    prefix: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}:")
    opened: list[CallStore] = field(default_factory=list)

    def store(self, *, ttl: int = 3600, grace: int = 300, max_calls: int = 1000, timeout_ms: int = 1000) -> CallStore:
        if self.redis is None:
            memory = MemoryCallStore(
                ttl=timedelta(seconds=ttl), ended_grace=timedelta(seconds=grace), max_calls=max_calls
            )
            self.opened.append(memory)
            return memory
        settings = StateSettings(
            backend="redis",
            redis_url=self.redis.url,
            key_prefix=self.prefix,
            ttl_seconds=ttl,
            ended_grace_seconds=grace,
            max_calls=max_calls,
            timeout_ms=timeout_ms,
        )
        store = RedisCallStore(settings)
        self.opened.append(store)
        return store

    def replica(self, store: CallStore, **options: Any) -> CallStore:
        """Another process's view of the same calls: the same object for the memory store."""
        return store if self.redis is None else self.store(**options)

    async def let_time_pass(self, store: CallStore, now: datetime, seconds: float) -> datetime:
        """Past TTLs of `seconds`: memory's clock is the `now` it is given; Redis has a real one."""
        later = now + timedelta(seconds=seconds + 1.5)
        if self.redis is None:  # any later event makes the memory store sweep
            await store.update(ev(999_999, EventType.CallAccepted), later)
        return later


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    made = Backend(request.param, request.getfixturevalue("redis_server") if request.param == "redis" else None)
    yield made
    for store in made.opened:
        await store.close()


def ev(call_id: int, event_type: EventType | int, at: datetime | None = None, **fields: str) -> CallEvent:
    return CallEvent(call_id=call_id, event_type=event_type, event_time=at, **fields)  # type: ignore[arg-type]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def eventually(check: Callable[[], Awaitable[bool]], deadline: float = 5) -> bool:
    """Await check until it is true or the deadline passes; its last answer."""
    stop_at = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > stop_at:
            return False
        await asyncio.sleep(0.05)
    return True


async def start_call(
    store: CallStore, call_id: int, now: datetime, an: str = "79161234567", un: str = "74951234567"
) -> CallState:
    return await store.update(ev(call_id, EventType.CallAccepted, now, an=an, un=un), now)


# ----------------------------------------------------------------------------------------------------
# The same semantics as the memory store


@pytest.mark.anyio
async def test_events_build_up_the_state_and_get_reads_it(backend: Backend) -> None:
    store = backend.store()
    other = backend.replica(store)
    now = utc_now()
    await start_call(store, 1, now)
    await other.update(ev(1, EventType.DTMF, now, dtmf="1"), now)
    await store.update(ev(1, EventType.DTMF, now, dtmf="2"), now)
    returned = await other.update(ev(1, EventType.Transfer, now + timedelta(seconds=10), result="1280"), now)
    assert returned.digits == "12"
    assert returned.connected_at == now + timedelta(seconds=10)
    assert [code for code, _, _ in returned.events] == [1, 4, 4, 9]
    for reader in (store, other):
        got = await reader.get(1)
        assert got is not None
        assert got == returned
        assert (got.an, got.un) == ("79161234567", "74951234567")
    assert await store.get(2) is None


@pytest.mark.anyio
@pytest.mark.parametrize("call_id", [None, 0])
async def test_events_without_a_call_id_are_not_stored(backend: Backend, call_id: int | None) -> None:
    store = backend.store()
    call = await store.update(CallEvent(call_id=call_id, event_type=EventType.CallAccepted), utc_now())
    assert call.call_id == 0
    assert call.events[0][0] == EventType.CallAccepted
    assert await store.calls() == ([], 0)


def no_rules(rules: RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
    return NO_ACTION


async def poll(store: CallStore, call_id: int, now: datetime) -> tuple[CallState | None, int | None]:
    """A poll as the server answers it, with no rule to fire: the call, and the id of the command delivered."""
    call, decision = await store.answer_poll(call_id, now, RuleSet(revision="test"), no_rules)
    return call, decision.command_id


@pytest.mark.anyio
async def test_poll_connects_the_call_and_unknown_calls_are_none(backend: Backend) -> None:
    store = backend.store()
    now = utc_now()
    assert await poll(store, 5, now) == (None, None)
    await start_call(store, 5, now)
    later = now + timedelta(seconds=30)
    call, command = await poll(store, 5, later)
    assert call is not None
    assert command is None
    assert (call.connected_at, call.updated_at) == (later, later)
    stored = await store.get(5)
    assert stored is not None
    assert stored.connected_at == later
    assert stored.decisions == []  # no action: nothing recorded


@pytest.mark.anyio
async def test_commands_are_delivered_in_order_once(backend: Backend) -> None:
    store = backend.store()
    other = backend.replica(store)
    now = utc_now()
    await start_call(store, 7, now)
    first, position = await store.push(7, Action.TransferEXT, "1234", now)
    assert (first.id, position) == (1, 1)
    second, position = await other.push(7, Action.PlayPrompt, "hello", now)
    assert (second.id, position) == (2, 2)
    assert (await poll(other, 7, now))[1] == first.id
    assert (await poll(store, 7, now))[1] == second.id
    assert (await poll(other, 7, now))[1] is None
    call = await store.get(7)
    assert call is not None
    assert [(d.action, d.param, d.command_id) for d in call.decisions] == [
        (Action.TransferEXT, "1234", 1),
        (Action.PlayPrompt, "hello", 2),
    ]


@pytest.mark.anyio
async def test_concurrent_polls_take_each_command_once(backend: Backend) -> None:
    store = backend.store()
    clients = [store, *(backend.replica(store) for _ in range(3))]  # four processes polling
    now = utc_now()
    await start_call(store, 8, now)
    for i in range(20):
        await store.push(8, Action.PlayPrompt, f"prompt-{i}", now)
    polls = [poll(client, 8, now) for client in itertools.islice(itertools.cycle(clients), 40)]
    taken = [command for _, command in await asyncio.gather(*polls) if command is not None]
    assert sorted(taken) == list(range(1, 21))


@pytest.mark.anyio
async def test_simultaneous_polls_fire_a_one_shot_poll_rule_once(backend: Backend) -> None:
    store = backend.store()
    clients = [store, *(backend.replica(store) for _ in range(3))]  # four processes polled at once
    now = utc_now()
    await start_call(store, 11, now)
    await store.push(11, Action.BackFromConsultCall, "", now)

    def one_shot(rules: RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
        fired = "escalate" in call.fired_polls  # a poll rule without repeat: true
        return NO_ACTION if fired else Decision(Action.TransferPBX, "PBX4951001", "escalate")

    rules = RuleSet(revision="rev")
    polls = [client.answer_poll(11, now, rules, one_shot) for client in itertools.islice(itertools.cycle(clients), 20)]
    answers = [decision for _, decision in await asyncio.gather(*polls) if decision.action is not None]
    assert sorted(decision.action.name for decision in answers if decision.action) == [
        "BackFromConsultCall",
        "TransferPBX",
    ]
    call = await store.get(11)
    assert call is not None
    assert [(d.trigger, d.rule_id, d.command_id) for d in call.decisions] == [
        ("poll", None, 1),
        ("poll", "escalate", None),
    ]
    assert await store.answer_poll(404, now, rules, one_shot) == (None, NO_ACTION)


@pytest.mark.anyio
async def test_a_repeating_poll_rule_answers_every_poll(backend: Backend) -> None:
    """A poll rule with `repeat: true` answers every poll, on every replica, at once too."""
    store = backend.store(timeout_ms=1000)
    clients = [store, backend.replica(store)]
    now = utc_now()
    await start_call(store, 12, now)

    def repeating(rules: RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
        return Decision(Action.PlayPrompt, "still-here", "remind")  # repeat: true ignores fired_polls

    rules = RuleSet(revision="rev")
    started = time.monotonic()
    for client in clients * 2:
        assert (await client.answer_poll(12, now, rules, repeating))[1].action == Action.PlayPrompt
    together = await asyncio.gather(*(client.answer_poll(12, now, rules, repeating) for client in clients * 3))
    assert [decision.action for _, decision in together] == [Action.PlayPrompt] * 6
    assert time.monotonic() - started < 1  # each answered at once, not at the end of a budget
    call = await store.get(12)
    assert call is not None
    assert [(d.trigger, d.rule_id) for d in call.decisions] == [("poll", "remind")] * 10


@pytest.mark.anyio
async def test_cancel_drops_a_pending_command(backend: Backend) -> None:
    store = backend.store()
    other = backend.replica(store)
    now = utc_now()
    await start_call(store, 9, now)
    first, _ = await store.push(9, Action.Hangup, "", now)
    second, _ = await store.push(9, Action.PlayPrompt, "bye", now)
    assert await other.cancel(9, first.id) is True
    assert await store.cancel(9, first.id) is False
    assert (await poll(other, 9, now))[1] == second.id
    with pytest.raises(UnknownCallError):
        await store.cancel(404, 1)
    with pytest.raises(UnknownCallError):
        await store.push(404, Action.Hangup, "", now)


@pytest.mark.anyio
async def test_records_and_fired_poll_rules(backend: Backend) -> None:
    store = backend.store()
    other = backend.replica(store)
    now = utc_now()
    await start_call(store, 10, now)
    await store.record(10, DecisionRecord(now, "poll", Action.TransferPBX, "PBX4951001", "poll-once", None, "r1"))
    await other.record(10, DecisionRecord(now, "DTMF", Action.TransferEXT, "1234", "menu", None, "r1"))
    await store.record(404, DecisionRecord(now, "poll", Action.Hangup, "", "x"))  # unknown: ignored
    call = await other.get(10)
    assert call is not None
    assert call.fired_polls == {"poll-once"}  # event decisions are no poll rules
    assert [(d.trigger, d.rule_id) for d in call.decisions] == [("poll", "poll-once"), ("DTMF", "menu")]
    assert await store.get(404) is None


@pytest.mark.anyio
async def test_an_ended_call_takes_no_commands(backend: Backend) -> None:
    store = backend.store()
    now = utc_now()
    await start_call(store, 11, now)
    await store.update(ev(11, EventType.EndCall, now, result="1"), now)
    call = await store.get(11)
    assert call is not None
    assert call.ended
    assert call.ended_by == "1"
    with pytest.raises(CallEndedError):
        await store.push(11, Action.Hangup, "", now)


@pytest.mark.anyio
async def test_calls_lists_newest_first_with_filters(backend: Backend) -> None:
    store = backend.store()
    now = utc_now()
    await start_call(store, 21, now, an="111", un="900")
    await start_call(store, 22, now + timedelta(seconds=1), an="222", un="900")
    await start_call(store, 23, now + timedelta(seconds=2), an="111", un="901")
    await store.update(ev(21, EventType.Transfer, result="1280"), now + timedelta(seconds=3))  # 21: connected
    await store.update(ev(23, EventType.EndCall, result="2"), now + timedelta(seconds=4))  # 23: ended

    def ids(found: tuple[list[CallState], int]) -> tuple[list[int], int]:
        return [call.call_id for call in found[0]], found[1]

    assert ids(await store.calls()) == ([23, 21, 22], 3)
    assert ids(await store.calls(offset=1, limit=1)) == ([21], 3)
    assert ids(await store.calls(limit=0)) == ([], 3)
    assert ids(await store.calls(an="111")) == ([23, 21], 2)
    assert ids(await store.calls(un="900")) == ([21, 22], 2)
    assert ids(await store.calls(state="live")) == ([22], 1)
    assert ids(await store.calls(state="connected")) == ([21], 1)
    assert ids(await store.calls(state="ended", an="111")) == ([23], 1)
    assert ids(await store.calls(an="111", offset=1)) == ([21], 2)
    assert ids(await store.calls(an="nobody")) == ([], 0)


@pytest.mark.anyio
async def test_idle_and_ended_calls_expire(backend: Backend) -> None:
    store = backend.store(ttl=1, grace=1)
    now = utc_now()
    await start_call(store, 31, now)
    await start_call(store, 32, now)
    await store.update(ev(32, EventType.EndCall, result="1"), now)
    assert (await store.calls())[1] == 2
    later = await backend.let_time_pass(store, now, 1)

    async def gone() -> bool:
        return await store.get(31) is None and await store.get(32) is None

    assert await eventually(gone)
    assert [call.call_id for call in (await store.calls())[0] if call.call_id != 999_999] == []
    # an event for an expired call starts a new one
    call = await store.update(ev(31, EventType.DTMF, dtmf="5"), later)
    assert [code for code, _, _ in call.events] == [EventType.DTMF]


@pytest.mark.anyio
async def test_the_cap_evicts_the_oldest_with_a_warning(backend: Backend) -> None:
    store = backend.store(max_calls=3)
    now = utc_now()
    with capture_logs() as logs:
        for call_id in range(1, 6):
            await start_call(store, call_id, now + timedelta(seconds=call_id))
        await store.sweep(now + timedelta(seconds=6))  # Redis: the cap is kept by the sweeps
    assert [await store.get(i) is not None for i in range(1, 6)] == [False, False, True, True, True]
    evicted = [entry for entry in logs if entry["event"] == "call_evicted"]
    assert [entry["call_id"] for entry in evicted] == [1, 2]
    assert evicted[0]["log_level"] == "warning"
    assert evicted[0]["max_calls"] == 3
    assert (await store.calls())[1] == 3


# ----------------------------------------------------------------------------------------------------
# Redis: atomic across clients, bounded in time, back after an outage


@pytest.fixture
async def redis_backend(redis_server: RedisServer) -> AsyncIterator[Backend]:
    made = Backend("redis", redis_server)
    yield made
    for store in made.opened:
        await store.close()


@pytest.mark.anyio
async def test_concurrent_updates_from_two_clients_lose_no_event(redis_backend: Backend) -> None:
    first = redis_backend.store()
    second = redis_backend.store()
    now = utc_now()
    events = [ev(41, EventType.DTMF, now, dtmf=str(i % 10)) for i in range(50)]
    clients = itertools.cycle((first, second))
    await asyncio.gather(*(next(clients).update(event, now) for event in events))
    call = await first.get(41)
    assert call is not None
    assert len(call.events) == 50
    assert sorted(call.digits) == sorted(str(i % 10) for i in range(50))


@pytest.mark.anyio
async def test_a_hung_redis_costs_one_budget_and_leaves_no_stale_reply(redis_backend: Backend) -> None:
    assert redis_backend.redis is not None
    store = redis_backend.store(timeout_ms=300)
    now = utc_now()
    for call_id in (51, 52, 53):
        await start_call(store, call_id, now, an=f"an-{call_id}")
    redis_backend.redis.pause()
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(store.get(51 + i % 3) for i in range(6)), return_exceptions=True)
        assert all(isinstance(result, StoreUnavailableError) for result in results), results
        assert await store.ping() is False
        with pytest.raises(StoreUnavailableError):
            await store.update(ev(51, EventType.DTMF, dtmf="9"), now)
        assert time.monotonic() - started < 3 * 0.3 + BUDGET_MARGIN
    finally:
        redis_backend.redis.resume()
    # every reply now answers its own command: the interrupted ones were never handed to anyone
    for _ in range(3):
        got = await asyncio.gather(*(store.get(call_id) for call_id in (53, 51, 52)))
        assert [(call.call_id, call.an) for call in got if call] == [(53, "an-53"), (51, "an-51"), (52, "an-52")]
    assert await store.ping() is True
    call = await store.get(51)
    assert call is not None
    assert call.digits == ""  # the update cut short was not applied later


@pytest.mark.anyio
async def test_the_store_reconnects_after_a_restart(own_redis: RedisServer) -> None:
    made = Backend("redis", own_redis)
    store = made.store(timeout_ms=500)
    try:
        now = utc_now()
        await start_call(store, 61, now)
        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.update(ev(61, EventType.DTMF, dtmf="1"), now)
        with pytest.raises(StoreUnavailableError):
            await store.get(61)
        assert await store.ping() is False
        assert time.monotonic() - started < 3 * 0.5 + BUDGET_MARGIN
        own_redis.start()  # empty: no persistence

        async def back() -> bool:
            return await store.ping()

        assert await eventually(back)
        assert await store.get(61) is None
        await start_call(store, 61, now)
        assert await store.get(61) is not None
    finally:
        await store.close()


# ----------------------------------------------------------------------------------------------------
# End to end: two `ascrm serve` processes on one Redis answer as one process does

RULES = """
rules:
  - {id: menu-123, on: DTMF, if: {digits: "123"}, do: {TransferEXT: "1234"}}
  - {id: poll-once, on: poll, if: {UN: "74950000001"}, do: {TransferPBX: PBX4951001}}
  - {id: long-talk, on: RecStart, if: {talk_seconds: {gt: 600}}, do: {PlayPrompt: long-talk}}
"""
T0 = datetime(2027, 1, 11, 10, 15, tzinfo=UTC)
_CALL_IDS = itertools.count(7_000_001)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def noop(call_id: int) -> dict[str, Any]:
    return {"CallID": call_id, "EventType": 0, "Param": ""}


def body(call_id: int, event_type: int, seconds: float = 0, **fields: Any) -> dict[str, Any]:
    return {"CallID": call_id, "EventTime": at(seconds), "UN": "74950000001", "EventType": event_type, **fields}


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(RULES)
    return path


def serve(tmp: Path, rules: Path, state: dict[str, Any] | None = None) -> Server:
    config = platform_config(rules=str(rules), **({"state": state} if state else {}))
    return start_server(tmp, config)


def redis_state(redis: RedisServer, prefix: str) -> dict[str, Any]:
    return {"backend": "redis", "redis_url": redis.url, "key_prefix": prefix, "timeout_ms": 1000}


def one_call(posts: Iterator[httpx.Client], polls: Iterator[httpx.Client]) -> list[dict[str, Any]]:
    """A call's events and polls, each sent to the next client of its kind; every answer."""
    call_id = next(_CALL_IDS)
    steps: list[tuple[str, dict[str, Any] | None]] = [
        ("POST", body(call_id, 1)),  # CallAccepted
        ("POST", body(call_id, 4, 5, DTMF="1")),
        ("POST", body(call_id, 4, 6, DTMF="2")),
        ("POST", body(call_id, 4, 7, DTMF="3")),  # digits "123" across processes
        ("POST", body(call_id, 9, 10, Result="1280")),  # Transfer, connected at 10 s
        ("GET", None),  # the poll rule answers once, whichever process is polled
        ("GET", None),
        ("GET", None),
        ("POST", body(call_id, 13, 500)),  # RecStart: 490 s of talk
        ("POST", body(call_id, 13, 700)),  # 690 s
        ("POST", body(call_id, 15, 800, Result="1")),  # EndCall
    ]
    answers = []
    for method, data in steps:
        if method == "POST":
            response = next(posts).post("/CallEvent", json=data)
        else:
            response = next(polls).get(f"/CallEvent/{call_id}")
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["CallID"] == call_id
        answers.append({**answer, "CallID": 0})
    return answers


EXPECTED = [
    noop(0),
    noop(0),
    noop(0),
    {"CallID": 0, "EventType": 2, "Param": "1234"},
    noop(0),
    {"CallID": 0, "EventType": 5, "Param": "PBX4951001"},
    noop(0),
    noop(0),
    noop(0),
    {"CallID": 0, "EventType": 3, "Param": "long-talk"},
    noop(0),
]


def test_two_processes_on_one_redis_answer_as_one_process(
    tmp_path: Path, redis_server: RedisServer, rules_file: Path
) -> None:
    single = serve(tmp_path / "single", rules_file)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}:"
    first = serve(tmp_path / "first", rules_file, redis_state(redis_server, prefix))
    second = serve(tmp_path / "second", rules_file, redis_state(redis_server, prefix))
    try:
        alone = single.client()
        assert one_call(itertools.repeat(alone), itertools.repeat(alone)) == EXPECTED
        a, b = first.client(), second.client()
        # events alternate between the processes, polls go to the other one than the last event
        assert one_call(itertools.cycle((a, b)), itertools.cycle((b, a))) == EXPECTED
        assert one_call(itertools.repeat(a), itertools.repeat(b)) == EXPECTED
        for server in (first, second):
            bad = [e for e in server.logs() if e.get("event") in ("store_unavailable", "decision_failed")]
            assert bad == []
    finally:
        for server in (single, first, second):
            server.stop()


def test_requests_are_answered_in_time_while_redis_is_down_or_hung(
    tmp_path: Path, own_redis: RedisServer, rules_file: Path
) -> None:
    server = serve(tmp_path / "ascrm", rules_file, redis_state(own_redis, "outage:"))
    http = server.client()

    def timed(method: str, call_id: int, data: dict[str, Any] | None = None) -> dict[str, Any]:
        started = time.monotonic()
        response = http.post("/CallEvent", json=data) if method == "POST" else http.get(f"/CallEvent/{call_id}")
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert elapsed < 1.0 + BUDGET_MARGIN, f"{method} took {elapsed:.2f} s"
        answer: dict[str, Any] = response.json()
        return answer

    def served_from_redis() -> bool:
        """A new call's digits add up, so its state is stored again."""
        call_id = next(_CALL_IDS)
        answers = [timed("POST", call_id, body(call_id, 4, i, DTMF=digit)) for i, digit in enumerate("123")]
        return answers[-1]["EventType"] == 2

    def outage(call_id: int) -> None:
        """Events and a poll during the outage: answered in time, decided without the call's state."""
        assert timed("POST", call_id, body(call_id, 4, 6, DTMF="2")) == noop(call_id)
        assert timed("GET", call_id) == noop(call_id)  # the poll rule needs the call: not known now
        assert timed("POST", call_id, body(call_id, 4, 7, DTMF="3")) == noop(call_id)

    try:
        assert served_from_redis()
        call_id = next(_CALL_IDS)
        timed("POST", call_id, body(call_id, 1))
        timed("POST", call_id, body(call_id, 4, 5, DTMF="1"))

        root = server.base_url
        assert httpx.get(f"{root}/ready", timeout=5).json()["store"] == "ok"
        own_redis.stop()  # down: connections refused
        outage(call_id)
        assert server.logged("store_unavailable", call_id=call_id)
        # /ready answers from the background check (health.check_interval_ms): it follows within an interval
        wait_until(lambda: httpx.get(f"{root}/ready", timeout=5).status_code == 503, "/ready to answer 503")
        assert httpx.get(f"{root}/ready", timeout=5).json()["store"] == "unavailable"
        assert httpx.get(f"{root}/health", timeout=5).status_code == 200  # alive all along
        own_redis.start()  # back, empty
        wait_until(served_from_redis, "a call's state stored in Redis again", timeout=10)
        wait_until(lambda: httpx.get(f"{root}/ready", timeout=5).status_code == 200, "/ready to answer 200")

        call_id = next(_CALL_IDS)
        timed("POST", call_id, body(call_id, 1))
        timed("POST", call_id, body(call_id, 4, 5, DTMF="1"))
        logged = len(server.logged("store_unavailable"))
        own_redis.pause()  # hung: connections accepted, nothing answered
        try:
            outage(call_id)
        finally:
            own_redis.resume()
        assert len(server.logged("store_unavailable")) >= logged + 3
        wait_until(served_from_redis, "a call's state stored in Redis again", timeout=10)

        # the call's stored state survived, without the events of the outage: "1" + "2", "3" again
        assert timed("POST", call_id, body(call_id, 4, 8, DTMF="2")) == noop(call_id)
        assert timed("POST", call_id, body(call_id, 4, 9, DTMF="3")) == {
            "CallID": call_id,
            "EventType": 2,
            "Param": "1234",
        }
        assert timed("GET", call_id) == {"CallID": call_id, "EventType": 5, "Param": "PBX4951001"}
    finally:
        server.stop()


ADMIN = ("ops", "unreadable-pw")


def test_unreadable_records_are_answered_logged_counted_and_left_alone(
    tmp_path: Path, redis_server: RedisServer, rules_file: Path
) -> None:
    """A string where a call's hash belongs, a newer release's hash and a hash with a garbled entry: the
    platform is answered as during an outage, the admin API says which record and why, each read is
    logged and counted, and the records stay as they were."""
    prefix = f"unreadable-{uuid.uuid4().hex[:8]}:"
    auth = {
        "platform": [{"user": USER, "password": "${TEST_PLATFORM_PASSWORD}"}],
        "admin": [{"user": ADMIN[0], "password": "${TEST_ADMIN_PASSWORD}"}],
    }
    config = platform_config(auth=auth, rules=str(rules_file), state=redis_state(redis_server, prefix))
    env = {"TEST_PLATFORM_PASSWORD": PASSWORD, "TEST_ADMIN_PASSWORD": ADMIN[1]}
    garbage, future, garbled, fine = (next(_CALL_IDS) for _ in range(4))
    written = redis.Redis.from_url(redis_server.url)
    key = {call_id: f"{prefix}call:{{{call_id}}}" for call_id in (garbage, future, garbled)}
    written.set(key[garbage], b"\x00\xffnot a hash at all", ex=600)
    written.hset(key[future], mapping={"v": "99", "an": "79161234567", "n": "1", "1": "[]"})
    written.hset(key[garbled], mapping={"v": "2", "an": "79161234567", "n": "1", "k": "0", "1": "not json"})
    for call_id in key:
        written.zadd(f"{prefix}calls", {str(call_id): time.time()})
    before = {call_id: written.dump(name) for call_id, name in key.items()}
    server = start_server(tmp_path / "ascrm", config, env=env)
    try:
        http, admin = server.client(), server.client(auth=ADMIN)
        # the platform: answered 200 as during a store outage, decided from the event alone
        answer = http.post("/CallEvent", json=body(garbage, 4, 5, DTMF="123"))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"CallID": garbage, "EventType": 2, "Param": "1234"}  # menu-123, from this event
        assert http.get(f"/CallEvent/{future}").json() == noop(future)  # the poll rule would need the call
        assert http.get(f"/CallEvent/{garbled}").json() == noop(garbled)
        assert http.post("/CallEvent", json=body(fine, 1)).json() == noop(fine)
        for call_id, name in key.items():
            entry = server.logged("call_record_unreadable", call_id=call_id)[0]
            assert entry["level"] == "warning"
            assert entry["key"] == name
            assert len(entry["reason"]) <= 200
        for call_id in (garbage, future):  # left as they were, for a newer release or ops
            assert written.dump(key[call_id]) == before[call_id]
        assert written.hget(key[garbled], "1") == b"not json"  # this layout's hash: polled, its entry kept
        [wrong_type] = server.logged("call_record_unreadable", call_id=garbage)
        assert wrong_type["reason"].startswith("not a call's hash (WRONGTYPE)")
        [newer] = server.logged("call_record_unreadable", call_id=future)
        assert newer["reason"] == "layout version '99' is not one this release reads (2)"
        [broken] = server.logged("call_record_unreadable", call_id=garbled)
        assert broken["reason"].startswith("JSONDecodeError: ")
        assert not server.logged("decision_failed", timeout=0)
        assert "Traceback" not in server.log_path.read_text()

        # the admin API: a JSON error naming the record and why; the listing leaves them out
        shown = admin.get(f"/admin/calls/{future}")
        assert shown.status_code == 500
        assert shown.json() == {"error": "internal_error", "message": f"{codec_error(key[future], newer)}"}
        pushed = admin.post(f"/admin/calls/{garbage}/commands", json={"action": "Hangup"})
        assert (pushed.status_code, pushed.json()["error"]) == (500, "internal_error")
        assert admin.delete(f"/admin/calls/{garbage}/commands/1").status_code == 500
        listing = admin.get("/admin/calls")
        assert listing.status_code == 200
        assert [call["call_id"] for call in listing.json()["calls"]] == [fine]
        assert admin.get("/admin/calls", params={"an": "79161234567"}).json()["calls"] == []
        for call_id in (garbage, future):
            assert written.dump(key[call_id]) == before[call_id]

        # counted: three platform requests, three admin requests, each record in the listing, and the
        # two with an AN in the filtered one (the string is refused before its AN is looked at: counted)
        samples = scrape(admin)
        assert samples[("ascrm_store_errors_total", (("operation", "decode"),))] == 3 + 3 + 3 + 3
        assert ("ascrm_store_errors_total", (("operation", "update"),)) not in samples  # Redis answered
    finally:
        written.close()
        server.stop()


def codec_error(key: str, logged: dict[str, Any]) -> str:
    return f"the call record at {key} cannot be read: {logged['reason']}"
