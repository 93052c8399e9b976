"""The storage codec of call state: records round-trip, version 0 records (written before records
carried a version) still read, the previous release reads version 1, and every kind of garbage is
refused with UnreadableRecordError saying why."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from ascrm.core.calls import UnreadableRecordError, codec
from ascrm.core.calls.state import MAX_FIELD_CHARS, CallState, Command, DecisionRecord, Trim
from ascrm.core.protocol import Action, CallEvent, EventType, ServiceType, parse_code
from ascrm.errors import AscrmError
from ascrm.service.callview import call_view

MSK = timezone(timedelta(hours=3))
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=MSK)
NOW = datetime(2026, 11, 27, 7, 0, 30, 250000, tzinfo=UTC)
KEY = "ascrm:call:7001"

V0_RECORD = (  # written by the release before the versioned codec: CallState.to_json(), no "v"
    '{"call_id":7001,"an":"79161234567","un":"74951234567","service_type":1,"state":"connected",'
    '"started_at":"2026-11-27T10:00:00+03:00","updated_at":"2026-11-27T07:00:30.250000+00:00",'
    '"connected_at":"2026-11-27T10:00:09+03:00","ended_at":null,"ended_by":null,"digits":"1",'
    '"transfer_results":["1280"],"events":[{"event":"CallAccepted","code":1,'
    '"at":"2026-11-27T10:00:00+03:00","fields":{"DN1":"74950000001"}},{"event":"DTMF","code":4,'
    '"at":"2026-11-27T10:00:04+03:00","fields":{"DTMF":"1"}},{"event":"Transfer","code":9,'
    '"at":"2026-11-27T10:00:09+03:00","fields":{"DN1":"74951112233","Generic":"Отдел продаж",'
    '"Result":"1280"}},{"event":"42","code":42,"at":"2026-11-27T10:00:11+03:00","fields":{}}],'
    '"fired_polls":["escalate"],"decisions":[{"at":"2026-11-27T07:00:30.250000+00:00",'
    '"trigger":"DTMF","action":"TransferDN","param":"74951112233","rule":"menu-sales","command":null,'
    '"revision":"95e8b37761a2"},{"at":"2026-11-27T07:00:30.250000+00:00","trigger":"poll",'
    '"action":"PlayPrompt","param":"hold-music","rule":null,"command":1,"revision":"95e8b37761a2"},'
    '{"at":"2026-11-27T07:00:30.250000+00:00","trigger":"poll","action":"TransferPBX",'
    '"param":"PBX4951001","rule":"escalate","command":null,"revision":"95e8b37761a2"}],'
    '"commands":[{"id":2,"action":"Hangup","param":"",'
    '"pushed_at":"2026-11-27T07:00:30.250000+00:00"}],"next_command_id":3,"trimmed":0}'
).encode()


def ev(event_type: EventType | int, seconds: float, **fields: Any) -> CallEvent:
    return CallEvent(call_id=7001, event_type=event_type, event_time=T0 + timedelta(seconds=seconds), **fields)


def v0_call() -> CallState:
    """The call V0_RECORD holds, built by its events."""
    first = ev(EventType.CallAccepted, 0, an="79161234567", un="74951234567", service_type=ServiceType.MTSSecretary)
    first = first._replace(dn1="74950000001")
    call = CallState.begin(7001, first, NOW)
    call.apply(first, NOW)
    call.apply(ev(EventType.DTMF, 4, dtmf="1"), NOW)
    call.apply(ev(EventType.Transfer, 9, dn1="74951112233", result="1280", generic="Отдел продаж"), NOW)
    call.apply(ev(42, 11), NOW)
    call.decided(DecisionRecord(NOW, "DTMF", Action.TransferDN, "74951112233", "menu-sales", None, "95e8b37761a2"))
    call.push(Action.PlayPrompt, "hold-music", NOW)
    call.push(Action.Hangup, "", NOW)
    command = call.take_command()
    assert command is not None
    call.decided(DecisionRecord(NOW, "poll", command.action, command.param, None, command.id, "95e8b37761a2"))
    call.decided(DecisionRecord(NOW, "poll", Action.TransferPBX, "PBX4951001", "escalate", None, "95e8b37761a2"))
    return call


def rich_call() -> CallState:
    """A call with a bit of everything: a zone's times, trimmed fields, an unknown code, an end."""
    start = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=ZoneInfo("Europe/Moscow"))
    call_id = 9_000_000_000_000_000_001

    def event(event_type: EventType | int, seconds: float, **fields: Any) -> CallEvent:
        return CallEvent(
            call_id=call_id, event_type=event_type, event_time=start + timedelta(seconds=seconds), **fields
        )

    first = event(EventType.CallAccepted, 0, an="79161234567", un="74951234567", service_type=ServiceType.MTSPBX)
    first = first._replace(generic="x" * (MAX_FIELD_CHARS + 5))  # truncated: counted in trimmed
    call = CallState.begin(call_id, first, NOW)
    call.apply(first, NOW, 4096)
    for second, digit in enumerate("1234567890" * 3):
        call.apply(event(EventType.DTMF, 1 + second, dtmf=digit), NOW, 4096)  # past the budget: trimmed
    call.apply(event(EventType.Transfer, 40, dn2="ünïcødé ☎", result="1289"), NOW, 4096)
    call.apply(event(EventType.Transfer, 50, result="1280"), NOW, 4096)
    call.apply(event(77, 60), NOW, 4096)  # a code outside the protocol's table
    call.polled(NOW + timedelta(minutes=1))
    call.decided(DecisionRecord(NOW, "poll", Action.TransferPBX, "PBX4951001", "escalate", None, None))
    call.push(Action.PlayPrompt, "menu", NOW)
    call.apply(event(EventType.EndCall, 300, result="3"), NOW, 4096)
    assert (call.ended, len(call.commands), call.fired_polls) == (True, 1, {"escalate"})
    assert call.trimmed > 1
    return call


# ----------------------------------------------------------------------------------------------------
# Round trips and versions


@pytest.mark.parametrize("make", [rich_call, v0_call])
def test_a_call_survives_its_record(make: Any) -> None:
    call = make()
    raw = codec.encode(call)
    assert orjson.loads(raw)["v"] == codec.VERSION == 1
    again = codec.decode(raw, key=KEY)
    assert dataclasses.replace(again, trim=call.trim) == call  # the record keeps the trims' total only
    assert again.trim == (Trim(call.trimmed) if call.trimmed else None)
    assert again.history_blocks == call.history_blocks  # recounted as apply() counts it
    assert codec.encode(again) == raw
    assert again.events[-2][0] == 77 or make is v0_call


def test_a_version_0_record_still_reads() -> None:
    call = codec.decode(V0_RECORD, key=KEY)
    assert call == v0_call()
    assert call.commands == (Command(2, Action.Hangup, "", NOW),)
    assert call.events[3] == (42, T0 + timedelta(seconds=11), None)
    assert call_view(call) == orjson.loads(V0_RECORD)  # the admin view is the previous release's to_json()


def test_a_version_0_record_without_trimmed_reads_as_untrimmed() -> None:
    data = orjson.loads(V0_RECORD)
    data["trimmed"] = 3
    assert codec.decode(orjson.dumps(data)).trimmed == 3
    del data["trimmed"]
    assert codec.decode(orjson.dumps(data)).trim is None


def previous_release_reader(data: dict[str, Any]) -> CallState:
    """CallState.from_json() of the release before the versioned codec (its reader of Redis records)."""
    return CallState(
        call_id=data["call_id"],
        started_at=datetime.fromisoformat(data["started_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
        an=data["an"],
        un=data["un"],
        service_type=None if data["service_type"] is None else parse_code(data["service_type"], ServiceType),
        events=[
            (
                parse_code(item["code"], EventType) or item["code"],
                datetime.fromisoformat(item["at"]),
                tuple(part for pair in item["fields"].items() for part in pair) or None,
            )
            for item in data["events"]
        ],
        digits=data["digits"],
        transfer_results=list(data["transfer_results"]),
        connected_at=None if data["connected_at"] is None else datetime.fromisoformat(data["connected_at"]),
        ended_at=None if data["ended_at"] is None else datetime.fromisoformat(data["ended_at"]),
        ended_by=data["ended_by"],
        fired_polls=frozenset(data["fired_polls"]),
        decisions=[
            DecisionRecord(
                datetime.fromisoformat(item["at"]),
                item["trigger"],
                Action[item["action"]],
                item["param"],
                item["rule"],
                item["command"],
                item["revision"],
            )
            for item in data["decisions"]
        ],
        commands=tuple(
            Command(item["id"], Action[item["action"]], item["param"], datetime.fromisoformat(item["pushed_at"]))
            for item in data["commands"]
        ),
        next_command_id=data["next_command_id"],
        trim=Trim(data["trimmed"]) if data.get("trimmed") else None,
        history_blocks=0,
    )


@pytest.mark.parametrize("make", [rich_call, v0_call])
def test_the_previous_release_reads_version_1(make: Any) -> None:
    """Replicas of both releases share one Redis during a rolling upgrade (and a rollback)."""
    call = make()
    read = previous_release_reader(orjson.loads(codec.encode(call)))
    assert dataclasses.replace(read, trim=call.trim, history_blocks=call.history_blocks) == call


def test_facts_read_the_listing_filters_of_both_versions() -> None:
    assert codec.facts(V0_RECORD) == ("79161234567", "74951234567", "connected")
    assert codec.facts(codec.encode(rich_call())) == ("79161234567", "74951234567", "ended")
    with pytest.raises(UnreadableRecordError, match="version 2"):
        codec.facts(b'{"v": 2, "an": "1"}')


# ----------------------------------------------------------------------------------------------------
# Garbage


def v0_with(**changes: Any) -> bytes:
    """V0_RECORD with top-level keys changed (a value of None for `_drop` names keys to delete)."""
    data = orjson.loads(V0_RECORD)
    for name in changes.pop("_drop", ()):
        del data[name]
    data.update(changes)
    return orjson.dumps(data)


def v0_item(section: str, index: int, **changes: Any) -> bytes:
    """V0_RECORD with keys of one item of a section changed (`_drop`: keys to delete)."""
    data = orjson.loads(V0_RECORD)
    item = data[section][index]
    for name in changes.pop("_drop", ()):
        del item[name]
    item.update(changes)
    return orjson.dumps(data)


NOT_A_RECORD = [
    pytest.param(b"", "not JSON", id="empty"),
    pytest.param(b"\x80\x81 binary", "not JSON", id="binary"),
    pytest.param(b'{"call_id": 7001, "an": ', "not JSON", id="cut-short"),
    pytest.param(b"null", "not a JSON object but NoneType None", id="null"),
    pytest.param(b"[1, 2]", "not a JSON object but list [1, 2]", id="list"),
    pytest.param(b'"a string"', "not a JSON object but str 'a string'", id="string"),
    pytest.param(
        b'{"v": 2, "call_id": 7001}',
        "version 2 is not one this release reads (0 to 1) (written by a newer",
        id="future",
    ),
    pytest.param(b'{"v": -1}', "version -1 is not one this release reads", id="negative-version"),
    pytest.param(b'{"v": "1"}', "v: not a version number but str '1'", id="version-string"),
    pytest.param(b'{"v": true}', "v: not a version number but bool True", id="version-bool"),
    pytest.param(b'{"v": 1.0}', "v: not a version number but float 1.0", id="version-float"),
    pytest.param(b"{}", "no 'call_id'", id="empty-object"),
]

WRONG_SHAPE = [
    pytest.param(v0_with(_drop=["call_id"]), "no 'call_id'", id="no-call-id"),
    pytest.param(v0_with(_drop=["events"]), "no 'events'", id="no-events"),
    pytest.param(v0_with(v=1, _drop=["trimmed"]), "no 'trimmed'", id="v1-without-trimmed"),
    pytest.param(v0_with(call_id="7001"), "call_id: not an integer of at least 0 but str '7001'", id="call-id-string"),
    pytest.param(v0_with(call_id=True), "call_id: not an integer of at least 0 but bool True", id="call-id-bool"),
    pytest.param(v0_with(call_id=-5), "call_id: not an integer of at least 0 but int -5", id="call-id-negative"),
    pytest.param(v0_with(an=79161234567), "an: not a string or null but int 79161234567", id="an-number"),
    pytest.param(v0_with(service_type="MTSPBX"), "service_type: not a service code but str 'MTSPBX'", id="service"),
    pytest.param(v0_with(digits=None), "digits: not a string but NoneType None", id="digits-null"),
    pytest.param(v0_with(started_at="yesterday"), "started_at: not an ISO 8601 time but str 'yesterday'", id="time"),
    pytest.param(v0_with(started_at="2026-11-27T10:00:00"), "started_at: a time without its UTC offset", id="naive"),
    pytest.param(v0_with(updated_at=1764226800), "updated_at: not a time but int 1764226800", id="unix-time"),
    pytest.param(v0_with(connected_at=[]), "connected_at: not a time but list []", id="connected-list"),
    pytest.param(v0_with(transfer_results="1280"), "transfer_results: not a list but str '1280'", id="results"),
    pytest.param(v0_with(transfer_results=[1280]), "transfer_results: not all strings: list [1280]", id="result-int"),
    pytest.param(v0_with(fired_polls={"a": 1}), "fired_polls: not a list but dict {'a': 1}", id="polls-object"),
    pytest.param(v0_with(events={}), "events: not a list but dict {}", id="events-object"),
    pytest.param(v0_with(events=[7]), "events[0]: not an object but int 7", id="event-int"),
    pytest.param(v0_item("events", 2, _drop=["at"]), "events[2]: no 'at'", id="event-no-at"),
    pytest.param(v0_item("events", 1, code="DTMF"), "events[1]: code: not an event code but str 'DTMF'", id="code"),
    pytest.param(v0_item("events", 1, fields={"DTMF": 1}), "events[1]: fields: not an object of strings", id="field"),
    pytest.param(v0_item("events", 1, fields=["DTMF", "1"]), "events[1]: fields: not an object of strings", id="list"),
    pytest.param(v0_item("events", 3, at="2026-13-01T00:00:00+03:00"), "events[3]: at: not an ISO 8601", id="at"),
    pytest.param(
        v0_item("decisions", 1, action="Teleport"), "decisions[1]: action: not an action name but str", id="action"
    ),
    pytest.param(v0_item("decisions", 0, action=1), "decisions[0]: action: not an action name but int 1", id="code"),
    pytest.param(v0_item("decisions", 2, _drop=["rule"]), "decisions[2]: no 'rule'", id="decision-no-rule"),
    pytest.param(v0_item("decisions", 1, command=0), "decisions[1]: command: not an integer of at least 1", id="cmd"),
    pytest.param(v0_item("commands", 0, id="2"), "commands[0]: id: not an integer of at least 1 but str '2'", id="id"),
    pytest.param(v0_item("commands", 0, param=None), "commands[0]: param: not a string but NoneType None", id="param"),
    pytest.param(
        v0_with(commands=[[2, "Hangup", "", "2026-11-27T07:00:30+00:00"]]), "commands[0]: list indices", id="tuple"
    ),
    pytest.param(v0_with(next_command_id=0), "next_command_id: not an integer of at least 1 but int 0", id="next"),
    pytest.param(v0_with(trimmed=-1), "trimmed: not an integer of at least 0 but int -1", id="trimmed-negative"),
    pytest.param(v0_with(an="x" * 100), None, id="long-values-are-fine"),
]


@pytest.mark.parametrize(("raw", "reason"), [*NOT_A_RECORD, *WRONG_SHAPE])
def test_garbage_is_refused_with_the_key_and_the_reason(raw: bytes, reason: str | None) -> None:
    if reason is None:
        assert codec.decode(raw, key=KEY).call_id == 7001
        return
    with pytest.raises(UnreadableRecordError) as caught:
        codec.decode(raw, key=KEY)
    error = caught.value
    assert isinstance(error, AscrmError)
    assert error.key == KEY
    assert reason in error.reason
    assert str(error) == f"the call record at {KEY} cannot be read: {error.reason}"
    assert len(error.reason) <= 200


def test_a_bad_value_is_shown_shortened() -> None:
    with pytest.raises(UnreadableRecordError) as caught:
        codec.decode(v0_with(an=["7" * 500]))
    assert caught.value.reason == "an: not a string or null but list " + repr(["7" * 500])[:39] + "…"
    assert str(caught.value).startswith("the call record cannot be read: an: ")  # no key given


@pytest.mark.parametrize(
    ("size", "limit", "refused"),
    [(len(V0_RECORD), len(V0_RECORD), False), (len(V0_RECORD), len(V0_RECORD) - 1, True)],
)
def test_a_record_over_the_size_limit_is_refused_unread(size: int, limit: int, refused: bool) -> None:
    if not refused:
        assert codec.decode(V0_RECORD, limit=limit).call_id == 7001
        return
    with pytest.raises(UnreadableRecordError, match=f"{size} bytes, over the limit of {limit}"):
        codec.decode(V0_RECORD, limit=limit)
    with pytest.raises(UnreadableRecordError, match="over the limit"):
        codec.facts(V0_RECORD, limit=limit)


def test_the_size_limit_leaves_room_for_any_call_the_budgets_allow() -> None:
    assert codec.record_limit(64 * 1024) == codec.MAX_RECORD_BYTES
    assert codec.record_limit(16 * 1024 * 1024) == 128 * 1024 * 1024
    # the worst history: every field at its limit, in control characters (six bytes each in JSON)
    budget = 64 * 1024
    call = CallState.begin(1, CallEvent(call_id=1, event_type=EventType.CallAccepted), NOW)
    for second in range(600):
        fields = dict.fromkeys(("dn1", "dn2", "ext1", "ext2", "generic"), "\x01" * MAX_FIELD_CHARS)
        call.apply(CallEvent(call_id=1, event_type=EventType.GoToTransfer, event_time=NOW, **fields), NOW, budget)
        call.decided(DecisionRecord(NOW, "poll", Action.PlayPrompt, "p" * 255, "r" * 200, None, "v" * 64))
        del second
    raw = codec.encode(call)
    assert len(raw) < codec.record_limit(budget)
    assert codec.decode(raw, limit=codec.record_limit(budget)).history_blocks == call.history_blocks
