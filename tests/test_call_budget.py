"""The per-call byte budget: field values truncated, the oldest history trimmed past
state.max_call_bytes, what routing reads kept; memory and Redis records stay bounded under a flood of
huge fields."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from ascrm.core.calls import codec
from ascrm.core.calls.state import MAX_FIELD_CHARS, CallState
from ascrm.core.protocol import CallEvent, EventType
from tests.support.metrics import parse_samples, value
from tests.support.redis import RedisServer
from tests.support.server import Server, ServerFactory, platform_config

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
BUDGET = 16 * 1024
HUGE = "7" * 60_000
ADMIN = ("ops", "budget-pässword")


def ev(event_type: EventType | int, seconds: float = 0, **fields: str) -> CallEvent:
    return CallEvent(call_id=1, event_time=T0 + timedelta(seconds=seconds), event_type=event_type, **fields)  # type: ignore[arg-type]


def flooded(events: int, budget: int = BUDGET) -> CallState:
    """A call that began normally, then took events with huge fields."""
    first = ev(EventType.CallAccepted, an="79161234567", un="74951234567", dn1="74950000001")
    call = CallState.begin(1, first, T0)
    call.apply(first, T0, budget)
    call.apply(ev(EventType.Transfer, 1, result="1280"), T0, budget)
    for i in range(events):
        kind = (EventType.DTMF, EventType.RecStart, EventType.Transfer, EventType.GoToTransfer)[i % 4]
        call.apply(ev(kind, 2 + i, dtmf="1", generic=HUGE, dn2=HUGE, result="1289"), T0, budget)
        assert call.history_bytes <= budget, i
    return call


# ----------------------------------------------------------------------------------------------------
# The call state


def test_fields_are_truncated_and_counted() -> None:
    call = CallState.begin(1, ev(EventType.CallAccepted, an=HUGE), T0)
    call.apply(ev(EventType.CallAccepted, an=HUGE, generic=HUGE), T0)
    assert call.an == HUGE[:MAX_FIELD_CHARS]
    [(_, _, news)] = call.events
    assert news == ("Generic", HUGE[:MAX_FIELD_CHARS])
    assert (call.last_trim.truncated, call.last_trim.dropped) == (1, 0)
    assert call.trimmed == 1


@pytest.mark.parametrize(("events", "budget"), [(10, BUDGET), (255, BUDGET), (1000, BUDGET), (1000, 4096)])
def test_history_is_trimmed_within_the_budget_keeping_what_routing_reads(events: int, budget: int) -> None:
    call = flooded(events, budget)
    assert call.history_bytes <= budget
    assert len(codec.encode(call)) < budget + 120 * len(call.events)
    first = call.events[0]
    assert first[0] == EventType.CallAccepted  # the first event, with its fields
    assert first[2] is not None
    assert call.events[-1][2] is not None  # the newest, with its fields
    happened = {record[0] for record in call.events}
    assert happened >= {EventType.CallAccepted, EventType.DTMF, EventType.RecStart, EventType.Transfer}
    assert call.transfer_results[-1] == "1289"  # the latest result: what conditions read
    assert call.connected_at == T0 + timedelta(seconds=1)
    assert call.digits == "1" * min(events // 4 + (events % 4 > 0), 128)
    assert call.trimmed > 0


def test_the_budget_survives_the_redis_codec() -> None:
    call = flooded(300)
    again = codec.decode(codec.encode(call))
    assert again.history_bytes == call.history_bytes
    assert again.trimmed == call.trimmed  # the total; what the latest event cut is not stored
    assert dataclasses.replace(again, trim=call.trim) == call


def test_a_record_of_an_earlier_version_reads_as_untrimmed() -> None:
    data = orjson.loads(codec.encode(flooded(3)))
    del data["trimmed"], data["v"]  # version 0, from before the per-call budgets
    assert codec.decode(orjson.dumps(data)).trimmed == 0


def test_small_calls_are_untouched() -> None:
    call = CallState.begin(1, ev(EventType.CallAccepted, an="79161234567"), T0)
    for i in range(200):
        call.apply(ev(EventType.DTMF, i, dtmf=str(i % 10)), T0)
    assert call.trimmed == 0
    assert all(news is not None for _, _, news in call.events)


# ----------------------------------------------------------------------------------------------------
# A running server under the attack: 10 calls x 256 events x 60 KB fields


@pytest.fixture(params=["memory", "redis"])
def budget_server(request: pytest.FixtureRequest, serve: ServerFactory) -> Server:
    state: dict[str, Any] = {}
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        state = {"backend": "redis", "redis_url": redis.url, "key_prefix": f"budget-{uuid.uuid4().hex[:8]}:"}
    return serve(platform_config(state=state), admin=ADMIN)


def attack(platform: httpx.Client, calls: range, events: int = 256) -> None:
    field = "7" * 60_000
    for call_id in calls:
        for i in range(events):
            body = {"CallID": call_id, "EventType": 4 if i else 1, "AN": "79161234567", "Generic": field}
            response = platform.post("/CallEvent", content=orjson.dumps(body))
            assert response.status_code == 200, response.text


def test_memory_and_records_stay_bounded_under_the_attack(budget_server: Server) -> None:
    with budget_server.client() as platform, budget_server.client(auth=ADMIN) as admin:
        attack(platform, range(900, 902), events=8)  # warm up: the allocator's first arenas
        before = budget_server.rss_bytes()
        attack(platform, range(1001, 1011))
        grown = budget_server.rss_bytes() - before
        details = [admin.get(f"/admin/calls/{call_id}") for call_id in range(1001, 1011)]
        metrics = parse_samples(admin.get("/metrics").text)
    sizes = [len(detail.content) for detail in details]
    print(f"rss grown by {grown / 2**20:.1f} MiB; records up to {max(sizes) / 1024:.0f} KiB")
    assert grown < 40 * 2**20  # unbounded, this was about 150 MiB
    assert max(sizes) < 128 * 1024  # 64 KiB of history, plus the JSON of 256 event records
    assert all(detail.json()["trimmed"] > 0 for detail in details)
    assert value(metrics, "ascrm_call_history_trimmed_total", kind="field_truncated") == 10 * 256 + 2 * 8
    assert value(metrics, "ascrm_call_history_trimmed_total", kind="record_dropped") > 10 * 200

    assert len(budget_server.logged("call_history_trimmed")) == 10 + 2  # once per call (with the warm-up's)
