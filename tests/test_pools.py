"""Pools: `{pool.NAME}` picks a member by the pool's strategy, never one the call was offered already,
skips resting and off-schedule members, and is missing (the next rule decides) when none is left; a
bad `pools:` entry is refused with its file and line."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ascrm.core.answering import answer_event, answer_poll
from ascrm.core.calls import MemoryCallStore
from ascrm.core.calls.config import StateSettings
from ascrm.core.calls.redis import RedisCallStore
from ascrm.core.pools.keeper import MemoryPools
from ascrm.core.pools.redis_pools import RedisPools
from ascrm.core.protocol import Action, CallEvent, EventType, ServiceType
from ascrm.core.rules import RulesError, load_rules
from ascrm.service.poolview import pools_view
from tests.support.redis import RedisServer, needs_redis

NOW = datetime(2027, 3, 16, 7, 30, tzinfo=UTC)  # a Tuesday, 10:30 in Moscow
BUSY, NO_ANSWER, CONNECTED = "1289", "1284", "1280"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def rules_of(tmp_path: Path, pools: str, extra: str = "") -> object:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"""
schedules:
  day: {{mon-fri: "09:00-18:00"}}
  night: {{mon-fri: "20:00-23:00"}}
pools:
{pools}
rules:
  - id: first
    on: CallAccepted
    do: {{TransferEXT: "{{pool.sales}}"}}
  - id: next
    on: ShortTransfer
    if: {{last_transfer_result: [busy, no_answer]}}
    do: {{TransferEXT: "{{pool.sales}}"}}
  - id: duty
    on: [CallAccepted, ShortTransfer]
    do: {{TransferDN: "74950000000"}}
{extra}
"""
    )
    return load_rules(path, "Europe/Moscow")


def accepted(call_id: int) -> CallEvent:
    return CallEvent(call_id, NOW, EventType.CallAccepted, ServiceType.MTSSecretary, "79161234567", "74951234567")


def result(call_id: int, ext: str, code: str) -> CallEvent:
    kind, service = EventType.ShortTransfer, ServiceType.MTSSecretary
    return CallEvent(call_id, NOW, kind, service, "79161234567", "74951234567", ext1=ext, result=code)


async def picks(rules: object, pools: MemoryPools, calls: int, store: MemoryCallStore | None = None) -> list[str]:
    store = store or MemoryCallStore()
    out = []
    for call_id in range(1, calls + 1):
        answered = await answer_event(store, rules, accepted(call_id), NOW, pools=pools)  # type: ignore[arg-type]
        out.append(answered.decision.param)
    return out


@pytest.mark.anyio
async def test_round_robin_gives_each_member_its_turn(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, '  sales: {strategy: round_robin, members: ["1001", "1002", "1003"]}')
    got = await picks(rules, MemoryPools(), 3000)
    assert got[:4] == ["1001", "1002", "1003", "1001"]
    assert Counter(got) == {"1001": 1000, "1002": 1000, "1003": 1000}


@pytest.mark.anyio
async def test_weighted_shares_follow_the_weights(tmp_path: Path) -> None:
    members = '["1001", {to: "1002", weight: 2}, {to: "1003", weight: 3}]'
    rules = rules_of(tmp_path, f"  sales: {{strategy: weighted, members: {members}}}")
    got = Counter(await picks(rules, MemoryPools(), 6000))
    for member, weight in (("1001", 1), ("1002", 2), ("1003", 3)):
        assert abs(got[member] - 1000 * weight) <= 0.02 * 1000 * weight, got


@pytest.mark.anyio
async def test_random_and_in_order(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, '  sales: {strategy: random, members: ["1001", "1002", "1003"]}')
    got = Counter(await picks(rules, MemoryPools(draw=random.Random(7).random), 3000))
    assert set(got) == {"1001", "1002", "1003"}
    assert min(got.values()) > 850, got
    rules = rules_of(tmp_path, '  sales: {strategy: in_order, members: ["1001", "1002", "1003"]}')
    assert set(await picks(rules, MemoryPools(), 20)) == {"1001"}


@pytest.mark.anyio
async def test_least_recent_never_picks_a_member_used_more_recently_than_another_available(tmp_path: Path) -> None:
    members = [f"10{index:02d}" for index in range(6)]
    rules = rules_of(tmp_path, f"  sales: {{strategy: least_recent, members: {members}, rest_after_busy: 1h}}")
    pools, store = MemoryPools(), MemoryCallStore()
    chooser = random.Random(3)
    last_used: dict[str, int] = {}
    pool = rules.pools["sales"]  # type: ignore[attr-defined]
    for call_id in range(1, 601):
        resting = set(chooser.sample(members, chooser.randint(0, 4)))
        counters = pools.counters(pool)
        counters.resting = {member: (NOW + timedelta(hours=1)).timestamp() * 2 for member in resting}
        answered = await answer_event(store, rules, accepted(call_id), NOW, pools=pools)  # type: ignore[arg-type]
        picked = answered.decision.param
        available = [member for member in members if member not in resting]
        assert picked in available
        assert all(last_used.get(picked, 0) <= last_used.get(other, 0) for other in available), call_id
        last_used[picked] = call_id


@pytest.mark.anyio
async def test_a_call_that_met_two_busy_members_is_offered_the_third_then_the_next_rule_decides(
    tmp_path: Path,
) -> None:
    pool = '  sales: {strategy: round_robin, members: ["1001", "1002", "1003"], rest_after_busy: 0}'
    rules = rules_of(tmp_path, pool)
    pools, store = MemoryPools(), MemoryCallStore()
    first = await answer_event(store, rules, accepted(1), NOW, pools=pools)  # type: ignore[arg-type]
    assert (first.decision.action, first.decision.param) == (Action.TransferEXT, "1001")
    second = await answer_event(store, rules, result(1, "1001", BUSY), NOW, pools=pools)  # type: ignore[arg-type]
    assert second.decision.param == "1002"
    third = await answer_event(store, rules, result(1, "1002", NO_ANSWER), NOW, pools=pools)  # type: ignore[arg-type]
    assert (third.decision.rule_id, third.decision.param) == ("next", "1003")
    assert [used.outcome for used in third.lookups] == ["picked 1003"]
    last = await answer_event(store, rules, result(1, "1003", BUSY), NOW, pools=pools)  # type: ignore[arg-type]
    assert (last.decision.rule_id, last.decision.param) == ("duty", "74950000000")
    assert [(used.source, used.outcome) for used in last.lookups] == [("pool.sales", "none left")]


@pytest.mark.anyio
async def test_a_busy_result_rests_the_member_for_every_call_until_rest_after_busy(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, '  sales: {strategy: in_order, members: ["1001", "1002"], rest_after_busy: 30s}')
    clock = [NOW.timestamp()]
    pools, store = MemoryPools(clock=lambda: clock[0]), MemoryCallStore()
    assert (await answer_event(store, rules, accepted(1), NOW, pools=pools)).decision.param == "1001"  # type: ignore[arg-type]
    await answer_event(store, rules, result(1, "1001", BUSY), NOW, pools=pools)  # type: ignore[arg-type]
    assert (await answer_event(store, rules, accepted(2), NOW, pools=pools)).decision.param == "1002"  # type: ignore[arg-type]
    clock[0] += 31
    assert (await answer_event(store, rules, accepted(3), NOW, pools=pools)).decision.param == "1001"  # type: ignore[arg-type]
    await answer_event(store, rules, result(3, "1001", CONNECTED), NOW, pools=pools)  # type: ignore[arg-type]
    states = {state.to: state for state in await pools.states(rules.pools["sales"])}  # type: ignore[attr-defined]
    assert (states["1001"].offered, states["1001"].answered, states["1001"].resting_until) == (2, 1, None)


@pytest.mark.anyio
async def test_every_member_resting_or_off_schedule_leaves_the_value_missing(tmp_path: Path) -> None:
    members = '[{to: "1001", time: night}, {to: "1002", time: day}]'
    rules = rules_of(tmp_path, f"  sales: {{strategy: round_robin, members: {members}}}")
    pools, store = MemoryPools(clock=NOW.timestamp), MemoryCallStore()
    assert await picks(rules, pools, 3, store) == ["1002"] * 3  # 10:30 Moscow: night is closed
    pools.rest(rules.pools["sales"], "1002")  # type: ignore[attr-defined]
    answered = await answer_event(store, rules, accepted(9), NOW, pools=pools)  # type: ignore[arg-type]
    assert answered.decision.rule_id == "duty"
    assert [used.outcome for used in answered.lookups] == ["all resting"]


@pytest.mark.anyio
async def test_the_state_survives_a_reload_when_the_members_did_not_change(tmp_path: Path) -> None:
    pools = MemoryPools()
    rules = rules_of(tmp_path, '  sales: {members: ["1001", "1002", "1003"]}')
    assert await picks(rules, pools, 1) == ["1001"]
    again = rules_of(tmp_path, '  sales: {members: ["1001", "1002", "1003"], rest_after_busy: 10s}')
    assert await picks(again, pools, 1) == ["1002"]
    changed = rules_of(tmp_path, '  sales: {members: ["1001", "1002", "1004"]}')
    assert await picks(changed, pools, 1) == ["1001"]


@pytest.mark.parametrize(
    ("pools", "line", "message"),
    [
        ('  sales: {strategy: fastest, members: ["1001"]}', 6, "unknown strategy 'fastest'"),
        ('  sales: {strategy: weighted, members: [{to: "1001", weight: 0}]}', 6, "weight: 0 is not a whole number"),
        ('  sales: {members: [{to: "1001", time: lunch}]}', 6, "time: no schedule named 'lunch'"),
        ('  sales:\n    members:\n      - "1001"\n      - "1001"', 9, "member '1001' is listed twice"),
        ("  sales: {members: [" + ", ".join(f'"{n}"' for n in range(1000, 1101)) + "]}", 6, "more than 100"),
        ('  sales: {members: ["1001"], rest_after_busy: forever}', 6, "rest_after_busy: 'forever' is not a duration"),
        ("  sales: {members: []}", 6, "members: a list of one or more"),
        ('  sales: {members: ["10 01"]}', 6, "is not an extension or a number"),
        ('  sales: {members: ["1001"], size: 3}', 6, "unknown key 'size'"),
    ],
)
def test_a_bad_pool_is_refused_with_its_file_and_line(tmp_path: Path, pools: str, line: int, message: str) -> None:
    with pytest.raises(RulesError) as caught:
        rules_of(tmp_path, pools)
    text = str(caught.value)
    assert f"rules.yaml:{line}" in text, text
    assert message in text, text
    assert "pool 'sales'" in text, text


def test_a_rule_naming_an_unknown_pool_is_refused(tmp_path: Path) -> None:
    extra = '  - {id: other, on: DTMF, do: {TransferEXT: "{pool.support}"}}'
    with pytest.raises(RulesError) as caught:
        rules_of(tmp_path, '  sales: {members: ["1001"]}', extra)
    assert "rules.yaml:" in str(caught.value)
    assert "no pool named 'support'" in str(caught.value)


@needs_redis
@pytest.mark.anyio
@pytest.mark.parametrize("strategy", ["round_robin", "weighted", "least_recent", "random", "in_order"])
async def test_the_redis_script_picks_as_this_process_does(
    tmp_path: Path, redis_server: RedisServer, strategy: str
) -> None:
    """The same picks, member for member, from Redis's script and from the in-process keeper, with
    candidates and rests drawn at random (the script is what replicas share)."""
    members = '["1001", {to: "1002", weight: 2}, {to: "1003", weight: 3}, "1004", {to: "1005", weight: 5}]'
    pool = rules_of(tmp_path, f"  sales: {{strategy: {strategy}, members: {members}, rest_after_busy: 1h}}")
    sales = pool.pools["sales"]  # type: ignore[attr-defined]
    draws = random.Random(11)
    draw_values = [draws.random() for _ in range(400)]
    settings = StateSettings(backend="redis", redis_url=redis_server.url, key_prefix=f"p-{strategy}:")
    store = RedisCallStore(settings)
    try:
        shared = RedisPools(store, draw=iter(draw_values).__next__)
        local = MemoryPools(draw=iter(draw_values).__next__)
        chooser = random.Random(5)
        for step in range(400):
            candidates = [member for member in sales.members if chooser.random() < 0.8]
            if step % 50 == 7:
                resting = chooser.choice(sales.members).to
                shared.rest(sales, resting)
                local.rest(sales, resting)
            deadline = asyncio.get_running_loop().time() + 1
            assert await shared.pick(sales, candidates, deadline) == local.pick_now(sales, candidates), step
        shown = {state.to: (state.offered, state.resting_until is not None) for state in await shared.states(sales)}
        assert shown == {
            state.to: (state.offered, state.resting_until is not None) for state in await local.states(sales)
        }
    finally:
        await store.close()


@needs_redis
@pytest.mark.anyio
async def test_a_hung_redis_costs_a_pick_no_more_than_the_budget(tmp_path: Path, own_redis: RedisServer) -> None:
    """Redis paused: the pick is made from this process's state once the decision's budget is spent."""
    rules = rules_of(tmp_path, '  sales: {strategy: round_robin, members: ["1001", "1002", "1003"]}')
    store = RedisCallStore(StateSettings(backend="redis", redis_url=own_redis.url, key_prefix="hung:"))
    try:
        pools = RedisPools(store)
        sales = rules.pools["sales"]  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        assert await pools.pick(sales, sales.members, loop.time() + 1) == "1001"  # from Redis
        own_redis.pause()
        try:
            began = loop.time()
            answered = await answer_event(MemoryCallStore(), rules, accepted(1), NOW, pools=pools, budget=0.2)  # type: ignore[arg-type]
            took = loop.time() - began
        finally:
            own_redis.resume()
        assert answered.decision.param == "1001"  # this process's own turn: its first pick
        assert took < 0.5, took
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_poll_rule_picks_from_a_pool(tmp_path: Path) -> None:
    extra = '  - {id: escalate, on: poll, if: {talk_seconds: {gt: 60}}, do: {TransferPBX: "{pool.groups}"}}'
    path = tmp_path / "poll.yaml"
    path.write_text(f"""
pools:
  groups: {{strategy: round_robin, members: [PBX4951001, PBX4951002]}}
rules:
{extra}
""")
    rules = load_rules(path, "Europe/Moscow")
    pools, store = MemoryPools(), MemoryCallStore()
    for call_id in (1, 2):
        await answer_event(store, rules, accepted(call_id), NOW, pools=pools)
        await answer_event(store, rules, result(call_id, "1050", CONNECTED), NOW, pools=pools)
    later = NOW + timedelta(seconds=120)
    first = await answer_poll(store, rules, 1, later, pools=pools)
    second = await answer_poll(store, rules, 2, later, pools=pools)
    assert (first.decision.param, second.decision.param) == ("PBX4951001", "PBX4951002")


@pytest.mark.anyio
async def test_the_admin_view_says_which_members_are_resting_or_off_schedule(tmp_path: Path) -> None:
    members = '[{to: "1001", time: night}, {to: "1002", time: day}, "1003"]'
    rules = rules_of(tmp_path, f"  sales: {{strategy: weighted, members: {members}}}")
    pools = MemoryPools()
    pools.rest(rules.pools["sales"], "1003")  # type: ignore[attr-defined]
    [view] = await pools_view(rules.pools, pools, NOW)  # type: ignore[attr-defined]
    states = {member["to"]: member["state"] for member in view["members"]}
    assert states == {"1001": "off_schedule", "1002": "available", "1003": "resting"}
    assert view["members"][2]["resting_until"] is not None
