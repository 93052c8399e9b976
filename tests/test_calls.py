"""Call state: how events update it, and the in-memory store's TTL and cap (with a fake clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest
from structlog.testing import capture_logs

from ascrm.core.calls import CallState, MemoryCallStore, codec
from ascrm.core.protocol import CallEvent, EventType, ServiceType

T0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def ev(call_id: int, event_type: EventType | int, at: datetime | None = None, **fields: str) -> CallEvent:
    return CallEvent(call_id=call_id, event_type=event_type, event_time=at, **fields)  # type: ignore[arg-type]


def test_events_build_up_the_state() -> None:
    first = CallEvent(
        call_id=1,
        event_type=EventType.CallAccepted,
        event_time=T0,
        an="7916",
        un="7495",
        service_type=ServiceType.MTSSecretary,
    )
    call = CallState.begin(1, first, T0)
    call.apply(first, T0)
    for i, digit in enumerate("12"):
        call.apply(ev(1, EventType.DTMF, T0 + timedelta(seconds=5 + i), dtmf=digit), T0)
    call.apply(ev(1, EventType.Transfer, T0 + timedelta(seconds=10), result="1289"), T0)
    call.apply(ev(1, EventType.Transfer, T0 + timedelta(seconds=20), result="1280"), T0)
    call.apply(ev(1, EventType.EndCall, T0 + timedelta(seconds=90), result="1"), T0)
    assert (call.an, call.un, call.service_type) == ("7916", "7495", ServiceType.MTSSecretary)
    assert call.digits == "12"
    assert call.transfer_results == ["1289", "1280"]
    assert call.connected_at == T0 + timedelta(seconds=20)
    assert call.ended
    assert [code for code, _, _ in call.events] == [1, 4, 4, 9, 9, 15]
    assert call.events[1][2] == ("DTMF", "1")
    assert call.events[3][2] == ("Result", "1289")
    assert call.ended_by == "1"


def test_event_without_time_uses_the_server_clock() -> None:
    call = CallState.begin(1, ev(1, EventType.CallAccepted), T0)
    call.apply(ev(1, EventType.CallAccepted), T0)
    assert call.started_at == T0
    assert call.events == [(EventType.CallAccepted, T0, None)]


def update(store: MemoryCallStore, event: CallEvent, now: datetime) -> CallState:
    async def main() -> CallState:
        return await store.update(event, now)

    return anyio.run(main)


def get(store: MemoryCallStore, call_id: int) -> CallState | None:
    async def main() -> CallState | None:
        return await store.get(call_id)

    return anyio.run(main)


def test_store_keeps_calls_and_expires_idle_ones() -> None:
    store = MemoryCallStore(ttl=timedelta(hours=4))
    update(store, ev(1, EventType.CallAccepted), T0)
    update(store, ev(2, EventType.CallAccepted), T0 + timedelta(hours=1))
    update(store, ev(1, EventType.DTMF, dtmf="5"), T0 + timedelta(hours=3))  # 1 is active again
    assert get(store, 1) is not None
    update(store, ev(3, EventType.CallAccepted), T0 + timedelta(hours=5, minutes=1))  # 2 idle > 4 h
    assert get(store, 2) is None
    assert get(store, 1) is not None
    assert len(store) == 2


def test_store_cap_evicts_the_oldest_with_a_warning() -> None:
    store = MemoryCallStore(max_calls=3)
    with capture_logs() as logs:
        for call_id in range(1, 6):
            update(store, ev(call_id, EventType.CallAccepted), T0 + timedelta(seconds=call_id))
    assert len(store) == 3
    assert [get(store, i) is not None for i in range(1, 6)] == [False, False, True, True, True]
    evicted = [entry for entry in logs if entry["event"] == "call_evicted"]
    assert [entry["call_id"] for entry in evicted] == [1, 2]
    assert evicted[0]["log_level"] == "warning"


@pytest.mark.parametrize("call_id", [None, 0])
def test_events_without_a_call_id_are_not_stored(call_id: int | None) -> None:
    store = MemoryCallStore()
    call = update(store, CallEvent(call_id=call_id, event_type=EventType.CallAccepted), T0)
    assert call.call_id == 0
    assert len(store) == 0


def test_one_call_history_is_bounded() -> None:
    from ascrm.core.calls.state import MAX_DIGITS, MAX_EVENTS

    call = CallState.begin(1, ev(1, EventType.CallAccepted), T0)
    for i in range(MAX_EVENTS * 4):
        call.apply(ev(1, EventType.DTMF, dtmf=str(i % 10)), T0)
        call.apply(ev(1, EventType.Transfer, result="1289"), T0)
    assert len(call.events) == MAX_EVENTS
    assert len(call.transfer_results) == MAX_EVENTS
    assert len(call.digits) == MAX_DIGITS
    newest = "".join(str(i % 10) for i in range(MAX_EVENTS * 4))[-MAX_DIGITS:]
    assert call.digits == newest  # the newest digits are kept


def test_ended_calls_stay_for_the_grace_period_then_go() -> None:
    store = MemoryCallStore(ended_grace=timedelta(minutes=5))
    update(store, ev(1, EventType.CallAccepted), T0)
    update(store, ev(1, EventType.EndCall, result="1"), T0 + timedelta(seconds=30))
    update(store, ev(2, EventType.CallAccepted), T0 + timedelta(minutes=4))
    assert get(store, 1) is not None  # late polls and the admin API still see it
    update(store, ev(3, EventType.CallAccepted), T0 + timedelta(minutes=5, seconds=31))
    assert get(store, 1) is None
    assert get(store, 2) is not None


def test_summary_of_an_ended_call() -> None:
    call = CallState.begin(9, ev(9, EventType.CallAccepted, T0, an="7916"), T0)
    for event in (
        ev(9, EventType.CallAccepted, T0, an="7916"),
        ev(9, EventType.Transfer, T0 + timedelta(seconds=10), dn1="74951112233", result="1289"),
        ev(9, EventType.Transfer, T0 + timedelta(seconds=20), dn1="74959990000", result="1280"),
        ev(9, EventType.EndCall, T0 + timedelta(seconds=80), result="2"),
    ):
        call.apply(event, T0)
    summary = call.summary(T0 + timedelta(hours=1))
    assert summary["duration_seconds"] == 80.0
    assert summary["talk_seconds"] == 60.0
    assert summary["ended_by"] == "2"
    assert [t["Result"] for t in summary["transfers"]] == ["1289", "1280"]
    assert summary["transfers"][0]["DN1"] == "74951112233"


def test_state_survives_its_record() -> None:
    from ascrm.core.calls.state import DecisionRecord
    from ascrm.core.protocol import Action

    call = CallState.begin(5, ev(5, EventType.CallAccepted, T0, an="7916", un="7495"), T0)
    call.apply(ev(5, EventType.CallAccepted, T0, an="7916", un="7495"), T0)
    call.apply(ev(5, EventType.DTMF, T0 + timedelta(seconds=3), dtmf="7"), T0)
    call.apply(ev(5, 42, T0 + timedelta(seconds=4)), T0)
    call.decided(DecisionRecord(T0, "poll", Action.TransferPBX, "PBX123", "escalate", None, "abc"))
    call.push(Action.BackFromConsultCall, "", T0)
    again = codec.decode(codec.encode(call))
    assert again == call
    assert again.fired_polls == {"escalate"}
