"""Rule conditions (`compile_conditions`) against call states, and `load_rules`: first match and the index."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ascrm.core.calls.state import CallState
from ascrm.core.engine import RuleSet, decide
from ascrm.core.lookups.looked_up import LOOKED_UP, NeedsLookup
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, Decision, EventType, ServiceType
from ascrm.core.rules import load_rules
from ascrm.core.rules.conditions import (
    CONDITIONS,
    ConditionError,
    Definitions,
    Predicate,
    compile_conditions,
    every,
    schedule_path,
    some,
)
from ascrm.core.rules.lists import inline_map, normalize_ru, number_list
from ascrm.core.rules.schedule import parse_schedule

NOW = datetime(2027, 1, 11, 7, 15, tzinfo=UTC)  # Monday 10:15 in Moscow: the server clock
T0 = NOW - timedelta(hours=1)  # when the calls below start

E = EventType
ACCEPTED, ANSWERED, HELLO, DTMF, IVR = E.CallAccepted, E.CallAnswered, E.HelloMessage, E.DTMF, E.RunIVR
TRANSFER, SHORT, PREPARE, REC = E.Transfer, E.ShortTransfer, E.PrepareToConnect, E.RecStart


def ev(event_type: EventType | int, at: float | str | None = 0, **fields: Any) -> CallEvent:
    """A CallEvent `at` seconds after T0 (or at an ISO time; None: no EventTime), service 1 by default."""
    moment = T0 + timedelta(seconds=at) if isinstance(at, (int, float)) else at
    when = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    fields.setdefault("service_type", ServiceType.MTSSecretary)
    return CallEvent(call_id=1, event_time=when, event_type=event_type, **fields)


def definitions(kind: str = "plain") -> Definitions:
    """Fresh definitions (compile_conditions records index hints in them): plain, ru, or vladivostok."""
    normalize = normalize_ru if kind == "ru" else None
    office = {"mon-fri": "09:00-18:00", "except": ["2027-01-13"], "include": {"2027-01-16": "10:00-14:00"}}
    zone = "Asia/Vladivostok" if kind == "vladivostok" else "Europe/Moscow"
    return Definitions(
        schedules={
            "office": parse_schedule(office, "Europe/Moscow"),
            "night": parse_schedule({"daily": "22:00-06:00", "except": ["2027-01-14"]}, "Europe/Moscow"),
        },
        lists={
            "vip": number_list(["8 916 123-45-67", "7916555*"] if normalize else ["79161234567", "7916555*"], normalize)
        },
        maps={"managers": inline_map({"89031112233" if normalize else "79031112233": "1005"}, normalize)},
        timezone=zone,
        normalize=normalize,
    )


def holds(
    spec: dict[str, Any],
    history: list[CallEvent],
    event: CallEvent | None,
    kind: str = "plain",
) -> bool:
    """Whether spec holds for event (None: a poll) after history, as the server applies them."""
    predicate = compile_conditions(spec, definitions(kind))
    events = [*history, *([event] if event is not None else [])]
    call = CallState.begin(1, events[0] if events else CallEvent(call_id=1), NOW)
    for each in events:
        call.apply(each, NOW)
    if event is None:
        call.polled(NOW)
    return predicate(event, call, NOW)


def case(
    case_id: str,
    spec: dict[str, Any],
    history: list[CallEvent],
    event: CallEvent | None,
    expected: bool,
    *,
    kind: str = "plain",
) -> Any:
    """One row of a condition table."""
    return pytest.param(spec, history, event, kind, expected, id=case_id)


AN = "79161234567"
STRING_CASES = [
    case("exact", {"AN": AN}, [], ev(ACCEPTED, an=AN), True),
    case("exact-other", {"AN": AN}, [], ev(ACCEPTED, an="79161234568"), False),
    case("exact-int-spec", {"AN": 79161234567}, [], ev(ACCEPTED, an=AN), True),
    case("exact-as-written", {"AN": AN}, [], ev(ACCEPTED, an="+79161234567"), False),
    case("exact-missing", {"AN": AN}, [], ev(ACCEPTED), False),
    case("list", {"AN": ["74950000000", AN]}, [], ev(ACCEPTED, an=AN), True),
    case("list-other", {"AN": ["74950000000", AN]}, [], ev(ACCEPTED, an="7495"), False),
    case("list-star-prefix", {"AN": ["74950000000", "7916*"]}, [], ev(ACCEPTED, an="79160000000"), True),
    case("list-star-prefix-other", {"AN": ["74950000000", "7916*"]}, [], ev(ACCEPTED, an="79170000000"), False),
    case("list-star-alone", {"AN": ["*"]}, [], ev(ACCEPTED, an="1"), True),
    case("list-star-alone-missing", {"AN": ["*"]}, [], ev(ACCEPTED), False),
    case("prefix", {"AN": {"prefix": "7916"}}, [], ev(ACCEPTED, an=AN), True),
    case("prefix-list", {"AN": {"prefix": ["7495", "7916"]}}, [], ev(ACCEPTED, an=AN), True),
    case("prefix-other", {"AN": {"prefix": ["7495", "7903"]}}, [], ev(ACCEPTED, an=AN), False),
    case("prefix-longer-than-value", {"AN": {"prefix": "79161"}}, [], ev(ACCEPTED, an="7916"), False),
    case("prefix-missing", {"AN": {"prefix": "7"}}, [], ev(ACCEPTED), False),
    case("regex-searched", {"AN": {"regex": "1234"}}, [], ev(ACCEPTED, an=AN), True),
    case("regex-anchored", {"AN": {"regex": "^1234"}}, [], ev(ACCEPTED, an=AN), False),
    case("regex-full", {"AN": {"regex": r"^7916\d{7}$"}}, [], ev(ACCEPTED, an=AN), True),
    case("regex-empty-missing", {"AN": {"regex": ""}}, [], ev(ACCEPTED), False),
    case("in-list-exact", {"AN": {"in": "vip"}}, [], ev(ACCEPTED, an=AN), True),
    case("in-list-prefix", {"AN": {"in": "vip"}}, [], ev(ACCEPTED, an="79165550000"), True),
    case("in-list-other", {"AN": {"in": "vip"}}, [], ev(ACCEPTED, an="79165560000"), False),
    case("in-list-missing", {"AN": {"in": "vip"}}, [], ev(ACCEPTED), False),
    case("in-map", {"AN": {"in": "managers"}}, [], ev(ACCEPTED, an="79031112233"), True),
    case("in-map-other", {"AN": {"in": "managers"}}, [], ev(ACCEPTED, an=AN), False),
    case("not", {"AN": {"not": AN}}, [], ev(ACCEPTED, an="79160000000"), True),
    case("not-same", {"AN": {"not": AN}}, [], ev(ACCEPTED, an=AN), False),
    case("not-missing", {"AN": {"not": AN}}, [], ev(ACCEPTED), True),
    case("not-in", {"AN": {"not": {"in": "vip"}}}, [], ev(ACCEPTED, an="79165550000"), False),
    case("not-prefix-missing", {"AN": {"not": {"prefix": "7"}}}, [], ev(ACCEPTED), True),
    case("not-not", {"AN": {"not": {"not": AN}}}, [], ev(ACCEPTED, an=AN), True),
    case("UN", {"UN": "74951234567"}, [], ev(ACCEPTED, un="74951234567"), True),
    case("DN1", {"DN1": {"prefix": "7495"}}, [], ev(TRANSFER, dn1="74951234567"), True),
    case("DN2", {"DN2": "74951234567"}, [], ev(E.OperatorTransfer, dn2="74951234567"), True),
    case("EXT1", {"EXT1": ["1001", "1002"]}, [], ev(E.ShortTransfer, ext1="1002"), True),
    case("EXT2", {"EXT2": {"regex": "^2"}}, [], ev(E.OperatorTransfer, ext2="2001"), True),
    case("Generic", {"Generic": "78001234567"}, [], ev(ACCEPTED, generic="78001234567"), True),
    case("Result", {"Result": ["1", "3"]}, [], ev(E.EndCall, result="3"), True),
    case("Result-other", {"Result": ["1", "3"]}, [], ev(E.EndCall, result="2"), False),
    case("DTMF-the-events", {"DTMF": "3"}, [ev(DTMF, dtmf="1"), ev(DTMF, dtmf="2")], ev(DTMF, dtmf="3"), True),
    case("DTMF-not-so-far", {"DTMF": "123"}, [ev(DTMF, dtmf="1"), ev(DTMF, dtmf="2")], ev(DTMF, dtmf="3"), False),
    case("digits-so-far", {"digits": "123"}, [ev(DTMF, dtmf="1"), ev(DTMF, dtmf="2")], ev(DTMF, dtmf="3"), True),
    case("digits-multi-digit-events", {"digits": "1234"}, [ev(DTMF, dtmf="12")], ev(DTMF, dtmf="34"), True),
    case("digits-on-later-event", {"digits": "12"}, [ev(DTMF, dtmf="1"), ev(DTMF, dtmf="2")], ev(PREPARE), True),
    case("digits-none", {"digits": {"regex": ""}}, [ev(ACCEPTED)], ev(PREPARE), False),
    case("digits-none-not", {"digits": {"not": "1"}}, [ev(ACCEPTED)], ev(PREPARE), True),
    case("poll-AN-is-the-calls", {"AN": AN}, [ev(ACCEPTED, an=AN)], None, True),
    case("event-AN-before-the-calls", {"AN": "79160000002"}, [ev(ACCEPTED, an=AN)], ev(DTMF, an="79160000002"), True),
    case("event-AN-not-the-calls", {"AN": AN}, [ev(ACCEPTED, an=AN)], ev(DTMF, an="79160000002"), False),
    case("event-without-AN-the-calls", {"AN": AN}, [ev(ACCEPTED, an=AN)], ev(DTMF, dtmf="1"), True),
    case("poll-UN-is-the-calls", {"UN": "74951234567"}, [ev(ACCEPTED, un="74951234567")], None, True),
    case("poll-digits", {"digits": "42"}, [ev(DTMF, dtmf="4"), ev(DTMF, dtmf="2")], None, True),
    case("poll-has-no-DN1", {"DN1": "74951234567"}, [ev(ACCEPTED, dn1="74951234567")], None, False),
    case("poll-has-no-DN1-not", {"DN1": {"not": "1"}}, [ev(ACCEPTED, dn1="74951234567")], None, True),
    case("two-fields-all-hold", {"AN": AN, "DTMF": "1"}, [ev(ACCEPTED, an=AN)], ev(DTMF, an=AN, dtmf="1"), True),
    case("two-fields-one-fails", {"AN": AN, "DTMF": "1"}, [ev(ACCEPTED, an=AN)], ev(DTMF, an=AN, dtmf="2"), False),
]

NORMALIZE_CASES = [
    case("ru-plus-and-separators", {"AN": AN}, [], ev(ACCEPTED, an="+7 (916) 123-45-67"), True, kind="ru"),
    case("ru-eight", {"AN": AN}, [], ev(ACCEPTED, an="89161234567"), True, kind="ru"),
    case("ru-ten-digits", {"AN": AN}, [], ev(ACCEPTED, an="9161234567"), True, kind="ru"),
    case("ru-other", {"AN": AN}, [], ev(ACCEPTED, an="+7 916 123-45-68"), False, kind="ru"),
    case("ru-spec-normalized", {"AN": "8 916 123 45 67"}, [], ev(ACCEPTED, an=AN), True, kind="ru"),
    case("ru-list", {"AN": ["74950000000", "89161234567"]}, [], ev(ACCEPTED, an="+79161234567"), True, kind="ru"),
    case("ru-prefix", {"AN": {"prefix": "+7 916"}}, [], ev(ACCEPTED, an="8 916 000 00 00"), True, kind="ru"),
    case("ru-regex-sees-7", {"AN": {"regex": "^7916"}}, [], ev(ACCEPTED, an="89161234567"), True, kind="ru"),
    case("ru-in-list", {"AN": {"in": "vip"}}, [], ev(ACCEPTED, an="+7 916 123-45-67"), True, kind="ru"),
    case("ru-in-list-prefix", {"AN": {"in": "vip"}}, [], ev(ACCEPTED, an="8 916 555 00 00"), True, kind="ru"),
    case("ru-in-map", {"AN": {"in": "managers"}}, [], ev(ACCEPTED, an="+7 903 111 22 33"), True, kind="ru"),
    case("ru-UN", {"UN": "84951234567"}, [], ev(ACCEPTED, un="+7 495 123 45 67"), True, kind="ru"),
    case("ru-DN1", {"DN1": "74951234567"}, [], ev(TRANSFER, dn1="84951234567"), True, kind="ru"),
    case("ru-DN2", {"DN2": "74951234567"}, [], ev(E.OperatorTransfer, dn2="4951234567"), True, kind="ru"),
    case("ru-Generic", {"Generic": "78001234567"}, [], ev(ACCEPTED, generic="8 800 123-45-67"), True, kind="ru"),
    case("ru-not", {"AN": {"not": AN}}, [], ev(ACCEPTED, an="89161234567"), False, kind="ru"),
    case(
        "ru-not-spec-normalized", {"AN": {"not": "89161234567"}}, [], ev(ACCEPTED, an="+79161234567"), False, kind="ru"
    ),
    case("ru-poll", {"AN": AN}, [ev(ACCEPTED, an="89161234567")], None, True, kind="ru"),
    case("ru-missing", {"DN1": "74951234567"}, [], ev(TRANSFER), False, kind="ru"),
    case("ru-missing-not", {"DN1": {"not": "74951234567"}}, [], ev(TRANSFER), True, kind="ru"),
    case("ru-EXT1-as-written", {"EXT1": "89161234567"}, [], ev(SHORT, ext1="79161234567"), False, kind="ru"),
    case("ru-DTMF-as-written", {"DTMF": "89161234567"}, [], ev(DTMF, dtmf="79161234567"), False, kind="ru"),
]

TIME_CASES = [
    case("office-open", {"time": "office"}, [], ev(ANSWERED, "2027-01-11T10:15:00+03:00"), True),
    case("office-opens-at-nine", {"time": "office"}, [], ev(ANSWERED, "2027-01-11T09:00:00+03:00"), True),
    case("office-before-nine", {"time": "office"}, [], ev(ANSWERED, "2027-01-11T08:59:59+03:00"), False),
    case("office-closes-at-six", {"time": "office"}, [], ev(ANSWERED, "2027-01-11T18:00:00+03:00"), False),
    case("office-sunday", {"time": "office"}, [], ev(ANSWERED, "2027-01-10T12:00:00+03:00"), False),
    case("office-holiday", {"time": "office"}, [], ev(ANSWERED, "2027-01-13T12:00:00+03:00"), False),
    case("office-working-saturday", {"time": "office"}, [], ev(ANSWERED, "2027-01-16T13:59:00+03:00"), True),
    case("office-working-saturday-late", {"time": "office"}, [], ev(ANSWERED, "2027-01-16T14:00:00+03:00"), False),
    case("office-offset-utc-open", {"time": "office"}, [], ev(ANSWERED, "2027-01-11T06:30:00+00:00"), True),
    case("office-offset-utc-closed", {"time": "office"}, [], ev(ANSWERED, "2027-01-11T16:30:00+00:00"), False),
    case("office-offset-plus2", {"time": "office"}, [], ev(ANSWERED, "2027-01-11T08:30:00+02:00"), True),
    case("office-offset-plus10", {"time": "office"}, [], ev(ANSWERED, "2027-01-12T10:00:00+10:00"), False),
    case("office-no-event-time-now", {"time": "office"}, [], ev(ANSWERED, None), True),
    case("office-poll-now", {"time": "office"}, [ev(ANSWERED, "2027-01-10T12:00:00+03:00")], None, True),
    case("not-office-evening", {"time": {"not": "office"}}, [], ev(ANSWERED, "2027-01-11T20:00:00+03:00"), True),
    case("not-office-open", {"time": {"not": "office"}}, [], ev(ANSWERED, "2027-01-11T10:15:00+03:00"), False),
    case("not-office-holiday", {"time": {"not": "office"}}, [], ev(ANSWERED, "2027-01-13T12:00:00+03:00"), True),
    case("inline", {"time": {"sat-sun": "10:00-12:00"}}, [], ev(ANSWERED, "2027-01-16T11:00:00+03:00"), True),
    case("inline-weekday", {"time": {"sat-sun": "10:00-12:00"}}, [], ev(ANSWERED, "2027-01-11T11:00:00+03:00"), False),
    case(
        "inline-two-intervals",
        {"time": {"mon-fri": ["09:00-13:00", "14:00-18:00"]}},
        [],
        ev(ANSWERED, "2027-01-11T13:30:00+03:00"),
        False,
    ),
    case(
        "inline-own-zone",
        {"time": {"timezone": "Asia/Vladivostok", "daily": "09:00-10:00"}},
        [],
        ev(ANSWERED, "2027-01-11T02:30:00+03:00"),
        True,
    ),
    case(
        "inline-file-zone",
        {"time": {"daily": "09:00-10:00"}},
        [],
        ev(ANSWERED, "2027-01-11T09:30:00+10:00"),
        True,
        kind="vladivostok",
    ),
    case(
        "inline-file-zone-not-moscow",
        {"time": {"daily": "09:00-10:00"}},
        [],
        ev(ANSWERED, "2027-01-11T09:30:00+03:00"),
        False,
        kind="vladivostok",
    ),
    case(
        "named-keeps-its-zone",
        {"time": "office"},
        [],
        ev(ANSWERED, "2027-01-11T10:15:00+03:00"),
        True,
        kind="vladivostok",
    ),
    case(
        "not-inline", {"time": {"not": {"sat-sun": "00:00-24:00"}}}, [], ev(ANSWERED, "2027-01-11T12:00:00+03:00"), True
    ),
    case("night-evening", {"time": "night"}, [], ev(ANSWERED, "2027-01-11T23:30:00+03:00"), True),
    case("night-after-midnight", {"time": "night"}, [], ev(ANSWERED, "2027-01-12T05:59:00+03:00"), True),
    case("night-ends-at-six", {"time": "night"}, [], ev(ANSWERED, "2027-01-12T06:00:00+03:00"), False),
    case("night-not-yet", {"time": "night"}, [], ev(ANSWERED, "2027-01-11T21:59:00+03:00"), False),
    case("night-into-holiday", {"time": "night"}, [], ev(ANSWERED, "2027-01-14T02:00:00+03:00"), True),
    case("night-of-holiday", {"time": "night"}, [], ev(ANSWERED, "2027-01-14T23:00:00+03:00"), False),
    case("night-after-holiday", {"time": "night"}, [], ev(ANSWERED, "2027-01-15T02:00:00+03:00"), False),
]

SERVICE_CASES = [
    case("name", {"service": "MTSSecretary"}, [], ev(ACCEPTED, service_type=ServiceType.MTSSecretary), True),
    case("name-other", {"service": "MTSSecretary"}, [], ev(ACCEPTED, service_type=ServiceType.MTSPBX), False),
    case("code", {"service": 2}, [], ev(ACCEPTED, service_type=ServiceType.MTSPBX), True),
    case("code-text", {"service": "2"}, [], ev(ACCEPTED, service_type=ServiceType.MTSPBX), True),
    case("list", {"service": ["MTSQuality", 4]}, [], ev(ACCEPTED, service_type=ServiceType.MTSSubCLID), True),
    case("list-other", {"service": ["MTSQuality", 4]}, [], ev(ACCEPTED, service_type=ServiceType.MTSSecretary), False),
    case("future-code", {"service": 7}, [], ev(ACCEPTED, service_type=7), True),
    case("missing", {"service": [1, 2, 3, 4]}, [], ev(ACCEPTED, service_type=None), False),
    case("poll-the-calls", {"service": "MTSPBX"}, [ev(ACCEPTED, service_type=ServiceType.MTSPBX)], None, True),
    case(
        "event-before-the-calls",
        {"service": "MTSPBX"},
        [ev(ACCEPTED, service_type=ServiceType.MTSSecretary)],
        ev(ANSWERED, service_type=ServiceType.MTSPBX),
        True,
    ),
    case(
        "event-without-the-calls",
        {"service": "MTSQuality"},
        [ev(ACCEPTED, service_type=ServiceType.MTSQuality)],
        ev(ANSWERED, service_type=None),
        True,
    ),
]

CONNECTED = [ev(ACCEPTED, 0), ev(TRANSFER, 100, result="1280")]  # talk time from T0+100
DURATION_CASES = [
    case("talk-gt", {"talk_seconds": {"gt": 600}}, CONNECTED, ev(REC, 800), True),
    case("talk-gt-equal", {"talk_seconds": {"gt": 600}}, CONNECTED, ev(REC, 700), False),
    case("talk-gt-less", {"talk_seconds": {"gt": 600}}, CONNECTED, ev(REC, 200), False),
    case("talk-ge-equal", {"talk_seconds": {"ge": 600}}, CONNECTED, ev(REC, 700), True),
    case("talk-gte-equal", {"talk_seconds": {"gte": 600}}, CONNECTED, ev(REC, 700), True),
    case("talk-lt", {"talk_seconds": {"lt": 600}}, CONNECTED, ev(REC, 699), True),
    case("talk-lt-equal", {"talk_seconds": {"lt": 600}}, CONNECTED, ev(REC, 700), False),
    case("talk-le-equal", {"talk_seconds": {"le": 600}}, CONNECTED, ev(REC, 700), True),
    case("talk-lte-more", {"talk_seconds": {"lte": 600}}, CONNECTED, ev(REC, 701), False),
    case("talk-eq", {"talk_seconds": {"eq": 30}}, CONNECTED, ev(REC, 130), True),
    case("talk-eq-other", {"talk_seconds": {"eq": 30}}, CONNECTED, ev(REC, 131), False),
    case("talk-ne", {"talk_seconds": {"ne": 30}}, CONNECTED, ev(REC, 131), True),
    case("talk-ne-equal", {"talk_seconds": {"ne": 30}}, CONNECTED, ev(REC, 130), False),
    case("talk-number-is-eq", {"talk_seconds": 30}, CONNECTED, ev(REC, 130), True),
    case("talk-float", {"talk_seconds": {"gt": 29.5}}, CONNECTED, ev(REC, 130), True),
    case("talk-range", {"talk_seconds": {"ge": 600, "lt": 900}}, CONNECTED, ev(REC, 999), True),
    case("talk-range-out", {"talk_seconds": {"ge": 600, "lt": 900}}, CONNECTED, ev(REC, 1000), False),
    case("talk-short-transfer", {"talk_seconds": 50}, [ev(SHORT, 0, result="1280")], ev(REC, 50), True),
    case(
        "talk-first-connection",
        {"talk_seconds": 700},
        [*CONNECTED, ev(TRANSFER, 500, result="1280")],
        ev(REC, 800),
        True,
    ),
    case("talk-never-connected", {"talk_seconds": {"ge": 0}}, [ev(TRANSFER, 0, result="1289")], ev(REC, 900), False),
    case("talk-poll-server-clock", {"talk_seconds": 3500}, CONNECTED, None, True),  # NOW is T0 + 3600
    case("talk-poll-first-poll", {"talk_seconds": 0}, [ev(ACCEPTED, 0)], None, True),
    case("talk-no-event-time", {"talk_seconds": 3500}, CONNECTED, ev(REC, None), True),
    case("call-ge", {"call_seconds": {"ge": 120}}, [ev(ACCEPTED, 0), ev(HELLO, 5)], ev(ANSWERED, 130), True),
    case("call-ge-less", {"call_seconds": {"ge": 120}}, [ev(ACCEPTED, 0), ev(HELLO, 5)], ev(ANSWERED, 119), False),
    case("call-range", {"call_seconds": {"gt": 10, "le": 20}}, [ev(ACCEPTED, 0)], ev(ANSWERED, 20), True),
    case("call-range-low", {"call_seconds": {"gt": 10, "le": 20}}, [ev(ACCEPTED, 0)], ev(ANSWERED, 10), False),
    case("call-first-event", {"call_seconds": 0}, [], ev(ACCEPTED, 0), True),
    case("call-poll", {"call_seconds": 3600}, [ev(ACCEPTED, 0)], None, True),
]

TRANSFER_CASES = [
    case("busy", {"last_transfer_result": "busy"}, [ev(TRANSFER, result="1289")], ev(PREPARE), True),
    case("busy-short", {"last_transfer_result": "busy"}, [ev(SHORT, result="1289")], ev(PREPARE), True),
    case("busy-other", {"last_transfer_result": "busy"}, [ev(TRANSFER, result="1284")], ev(PREPARE), False),
    case("no-answer", {"last_transfer_result": "no_answer"}, [ev(TRANSFER, result="1284")], ev(PREPARE), True),
    case("connected", {"last_transfer_result": "connected"}, [ev(TRANSFER, result="1280")], ev(PREPARE), True),
    case("code-int", {"last_transfer_result": 486}, [ev(TRANSFER, result="486")], ev(PREPARE), True),
    case("code-text", {"last_transfer_result": "603"}, [ev(TRANSFER, result="603")], ev(PREPARE), True),
    case("list", {"last_transfer_result": ["busy", "no_answer"]}, [ev(TRANSFER, result="1284")], ev(PREPARE), True),
    case("list-other", {"last_transfer_result": ["busy", 486]}, [ev(TRANSFER, result="487")], ev(PREPARE), False),
    case(
        "last-counts",
        {"last_transfer_result": "busy"},
        [ev(TRANSFER, result="1289"), ev(TRANSFER, result="1280")],
        ev(PREPARE),
        False,
    ),
    case(
        "other-events-keep-it",
        {"last_transfer_result": "busy"},
        [ev(TRANSFER, result="1289"), ev(DTMF, dtmf="1"), ev(HELLO)],
        ev(PREPARE),
        True,
    ),
    case("none-yet", {"last_transfer_result": ["busy", "no_answer", "connected"]}, [ev(ACCEPTED)], ev(PREPARE), False),
    case("on-the-transfer-itself", {"last_transfer_result": "busy"}, [], ev(TRANSFER, result="1289"), True),
    case("poll", {"last_transfer_result": "connected"}, [ev(TRANSFER, result="1280")], None, True),
]

SEEN_CASES = [
    case("all-seen", {"seen": ["HelloMessage", 7]}, [ev(IVR), ev(HELLO)], ev(ANSWERED), True),
    case("one-missing", {"seen": ["HelloMessage", 7]}, [ev(HELLO)], ev(ANSWERED), False),
    case("one-name", {"seen": "DTMF"}, [ev(DTMF, dtmf="1")], ev(ANSWERED), True),
    case("one-code", {"seen": 4}, [ev(HELLO)], ev(ANSWERED), False),
    case("the-current-event", {"seen": "CallAnswered"}, [], ev(ANSWERED), True),
    case("future-code", {"seen": 42}, [ev(42)], ev(ANSWERED), True),
    case("future-code-other", {"seen": 42}, [ev(43)], ev(ANSWERED), False),
    case("poll", {"seen": ["CallAccepted", "Transfer"]}, [ev(ACCEPTED), ev(TRANSFER, result="1280")], None, True),
]

LOGIC_CASES = [
    case("any-first", {"any": [{"AN": AN}, {"DTMF": "1"}]}, [], ev(DTMF, an=AN, dtmf="2"), True),
    case("any-second", {"any": [{"AN": AN}, {"DTMF": "1"}]}, [], ev(DTMF, an="1", dtmf="1"), True),
    case("any-none", {"any": [{"AN": AN}, {"DTMF": "1"}]}, [], ev(DTMF, an="1", dtmf="2"), False),
    case("all-both", {"all": [{"AN": AN}, {"DTMF": "1"}]}, [], ev(DTMF, an=AN, dtmf="1"), True),
    case("all-one", {"all": [{"AN": AN}, {"DTMF": "1"}]}, [], ev(DTMF, an=AN, dtmf="2"), False),
    case("not", {"not": {"AN": AN}}, [], ev(ACCEPTED, an="1"), True),
    case("not-holds", {"not": {"AN": AN}}, [], ev(ACCEPTED, an=AN), False),
    case("not-missing-field", {"not": {"AN": AN}}, [], ev(ACCEPTED), True),
    case("not-of-two-both", {"not": {"AN": {"in": "vip"}, "time": "office"}}, [], ev(ACCEPTED, an=AN), False),
    case(
        "not-of-two-one",
        {"not": {"AN": {"in": "vip"}, "time": "office"}},
        [],
        ev(ACCEPTED, "2027-01-11T20:00:00+03:00", an=AN),
        True,
    ),
    case(
        "nested",
        {"any": [{"all": [{"AN": {"prefix": "7916"}}, {"not": {"time": "office"}}]}, {"seen": "DTMF"}]},
        [],
        ev(ACCEPTED, "2027-01-11T20:00:00+03:00", an=AN),
        True,
    ),
    case(
        "nested-none",
        {"any": [{"all": [{"AN": {"prefix": "7916"}}, {"not": {"time": "office"}}]}, {"seen": "DTMF"}]},
        [],
        ev(ACCEPTED, an=AN),
        False,
    ),
    case("with-top-level", {"AN": AN, "any": [{"DTMF": "1"}, {"DTMF": "2"}]}, [], ev(DTMF, an="1", dtmf="1"), False),
    case("not-time-on-poll", {"not": {"time": "office"}}, [ev(ACCEPTED)], None, False),
    case("two-event-then-call", {"DTMF": "1", "seen": "CallAccepted"}, [ev(ACCEPTED)], ev(DTMF, dtmf="1"), True),
    case("two-call-then-event", {"seen": "CallAccepted", "DTMF": "1"}, [ev(ACCEPTED)], ev(DTMF, dtmf="1"), True),
    case("two-clock-then-event", {"time": "office", "DTMF": "1"}, [ev(ACCEPTED)], ev(DTMF, None, dtmf="1"), True),
    case("two-event-then-clock", {"DTMF": "1", "time": "office"}, [ev(ACCEPTED)], ev(DTMF, None, dtmf="1"), True),
    case(
        "three-event-call-clock",
        {"DTMF": "1", "seen": "CallAccepted", "time": "office"},
        [ev(ACCEPTED)],
        ev(DTMF, None, dtmf="1"),
        True,
    ),
    case(
        "three-clock-call-event",
        {"time": "office", "seen": "CallAccepted", "DTMF": "1"},
        [ev(ACCEPTED)],
        ev(DTMF, None, dtmf="1"),
        True,
    ),
    case("any-time-on-poll", {"any": [{"time": "office"}]}, [ev(ANSWERED, "2027-01-10T12:00:00+03:00")], None, True),
    case("any-talk-on-poll", {"any": [{"DTMF": "1"}, {"talk_seconds": 3500}]}, CONNECTED, None, True),
]


@pytest.mark.parametrize(("spec", "history", "event", "kind", "expected"), STRING_CASES)
def test_string_fields(spec: dict[str, Any], history: list[CallEvent], event: Any, kind: str, expected: bool) -> None:
    assert holds(spec, history, event, kind) is expected


@pytest.mark.parametrize(("spec", "history", "event", "kind", "expected"), NORMALIZE_CASES)
def test_normalize_ru(spec: dict[str, Any], history: list[CallEvent], event: Any, kind: str, expected: bool) -> None:
    assert holds(spec, history, event, kind) is expected


@pytest.mark.parametrize(("spec", "history", "event", "kind", "expected"), TIME_CASES)
def test_time(spec: dict[str, Any], history: list[CallEvent], event: Any, kind: str, expected: bool) -> None:
    assert holds(spec, history, event, kind) is expected


@pytest.mark.parametrize(("spec", "history", "event", "kind", "expected"), SERVICE_CASES)
def test_service(spec: dict[str, Any], history: list[CallEvent], event: Any, kind: str, expected: bool) -> None:
    assert holds(spec, history, event, kind) is expected


@pytest.mark.parametrize(("spec", "history", "event", "kind", "expected"), DURATION_CASES)
def test_durations(spec: dict[str, Any], history: list[CallEvent], event: Any, kind: str, expected: bool) -> None:
    assert holds(spec, history, event, kind) is expected


@pytest.mark.parametrize(("spec", "history", "event", "kind", "expected"), TRANSFER_CASES)
def test_last_transfer_result(
    spec: dict[str, Any], history: list[CallEvent], event: Any, kind: str, expected: bool
) -> None:
    assert holds(spec, history, event, kind) is expected


@pytest.mark.parametrize(("spec", "history", "event", "kind", "expected"), SEEN_CASES)
def test_seen(spec: dict[str, Any], history: list[CallEvent], event: Any, kind: str, expected: bool) -> None:
    assert holds(spec, history, event, kind) is expected


@pytest.mark.parametrize(("spec", "history", "event", "kind", "expected"), LOGIC_CASES)
def test_any_all_not(spec: dict[str, Any], history: list[CallEvent], event: Any, kind: str, expected: bool) -> None:
    assert holds(spec, history, event, kind) is expected


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        pytest.param({"ANI": "1"}, ("ANI",), "unknown condition 'ANI'", id="unknown-condition"),
        pytest.param({"AN": {"regex": "("}}, ("AN", "regex"), "bad regex '('", id="bad-regex"),
        pytest.param({"AN": {"in": "nope"}}, ("AN", "in"), "no list or map named 'nope'", id="unknown-list"),
        pytest.param({"AN": {"like": "1"}}, ("AN", "like"), "unknown matcher 'like'", id="unknown-matcher"),
        pytest.param({"AN": {"prefix": "1", "regex": "2"}}, ("AN",), "expected a value", id="two-matchers"),
        pytest.param({"AN": True}, ("AN",), "expected a value", id="bool-value"),
        pytest.param({"AN": ["79*1"]}, ("AN",), "'*' inside", id="star-inside"),
        pytest.param({"time": "nope"}, ("time",), "no schedule named 'nope'", id="unknown-schedule"),
        pytest.param({"time": {"mon-fri": "9-18"}}, ("time", "mon-fri"), "inline schedule", id="bad-inline"),
        pytest.param({"time": 5}, ("time",), "schedule name", id="time-number"),
        pytest.param({"service": "MTSFoo"}, ("service",), "unknown ServiceType 'MTSFoo'", id="unknown-service"),
        pytest.param({"seen": "Nope"}, ("seen",), "unknown EventType 'Nope'", id="unknown-event"),
        pytest.param(
            {"AN": {"prefix": "79*"}},
            ("AN", "prefix"),
            "prefix '79*': write the digits a number starts with, no '*'",
            id="prefix-star",
        ),
        pytest.param({"AN": {"prefix": " "}}, ("AN", "prefix"), "prefix ' ': write the digits", id="prefix-blank"),
        pytest.param({"AN": {"regex": 5}}, ("AN", "regex"), "a regex is a string", id="regex-number"),
        pytest.param(
            {"AN": {"prefix": "1", "in": "vip"}},
            ("AN",),
            "expected a value, a list, or one of {prefix: …}, {regex: …}, {in: …}, {not: …}",
            id="two-matchers-message",
        ),
        pytest.param({"AN": [True]}, ("AN",), "expected a number or text, not True", id="bool-in-list"),
        pytest.param({"AN": [1.5]}, ("AN",), "expected a number or text, not 1.5", id="float-in-list"),
        pytest.param(
            {"talk_seconds": {"gtt": 1}},
            ("talk_seconds", "gtt"),
            "unknown comparison 'gtt' (gt, ge, lt, le, eq, ne)",
            id="comparison-message",
        ),
        pytest.param(
            {"talk_seconds": {"gt": "ten"}},
            ("talk_seconds", "gt"),
            "talk_seconds.gt takes a number of seconds, not 'ten'",
            id="limit-message",
        ),
        pytest.param(
            {"last_transfer_result": "hung_up"},
            ("last_transfer_result",),
            "last_transfer_result: 'hung_up' is not one of busy, no_answer, connected or a result code",
            id="result-names",
        ),
        pytest.param(
            {"service": [1.5]},
            ("service",),
            "unknown ServiceType 1.5 (known: MTSSecretary, MTSPBX, MTSQuality, MTSSubCLID, or a number)",
            id="service-names",
        ),
        pytest.param({"talk_seconds": {"gtt": 1}}, ("talk_seconds", "gtt"), "unknown comparison", id="comparison"),
        pytest.param({"talk_seconds": {"gt": "ten"}}, ("talk_seconds", "gt"), "number of seconds", id="limit"),
        pytest.param({"call_seconds": "600"}, ("call_seconds",), "takes a number", id="duration-text"),
        pytest.param({"last_transfer_result": "hung_up"}, ("last_transfer_result",), "hung_up", id="result"),
        pytest.param({"any": []}, ("any",), "list of condition mappings", id="any-empty"),
        pytest.param({"all": {"AN": "1"}}, ("all",), "list of condition mappings", id="all-mapping"),
        pytest.param({"any": [{"AN": "1"}, {"XX": 1}]}, ("any", 1, "XX"), "unknown condition", id="any-inner"),
        pytest.param({"not": {}}, ("not",), "mapping of conditions", id="not-empty"),
        pytest.param(
            {"all": [{"not": {"AN": {"regex": "["}}}]}, ("all", 0, "not", "AN", "regex"), "bad regex", id="deep"
        ),
    ],
)
def test_condition_errors_name_the_path(spec: dict[str, Any], path: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ConditionError) as raised:
        compile_conditions(spec, definitions())
    assert raised.value.path == path
    assert message in raised.value.message
    assert str(raised.value) == raised.value.message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"AN": {"prefix": "1", "in": "vip"}},
            "expected a value, a list, or one of {prefix: …}, {regex: …}, {in: …}, {not: …}",
        ),
        ({"AN": {"regex": 5}}, "a regex is a string"),
        ({"time": 5}, "'time' takes a schedule name, an inline schedule, or {not: …}"),
        ({"time": ["office"]}, "'time' takes a schedule name, an inline schedule, or {not: …}"),
        ({"not": {}}, "'not' takes a mapping of conditions"),
        ({"not": [{"AN": "1"}]}, "'not' takes a mapping of conditions"),
        ({"AN": {"like": "1"}}, "unknown matcher 'like' (use prefix, regex, in or not)"),
        ({"ANI": "1"}, "unknown condition 'ANI' (known: " + ", ".join(CONDITIONS) + ")"),
        (
            {"service": 2.0},  # a float is no code, even a whole one
            "service: unknown ServiceType 2.0 (known: MTSSecretary, MTSPBX, MTSQuality, MTSSubCLID, or a number)",
        ),
        (
            {"seen": [4.0]},
            "seen: unknown EventType 4.0 (known: " + ", ".join(e.name for e in EventType) + ", or a number)",
        ),
    ],
)
def test_condition_errors_in_full(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConditionError) as raised:
        compile_conditions(spec, definitions())
    assert raised.value.message == message


@pytest.mark.parametrize(
    ("spec", "about_key"),
    [
        ({"ANI": "1"}, True),  # the key is wrong: the error points at it
        ({"talk_seconds": {"gtt": 1}}, True),
        ({"talk_seconds": {"gt": "ten"}}, False),  # the value is wrong: the error points at it
        ({"AN": {"regex": 5}}, False),
        ({"AN": {"like": "1"}}, True),  # an unknown matcher: its key
        ({"any": [{"AN": "1"}, {"XX": 1}]}, True),  # inside any/all/not, as at the top
        ({"all": [{"talk_seconds": {"gtt": 1}}]}, True),
        ({"not": {"XX": 1}}, True),
        ({"any": [{"AN": {"regex": 5}}]}, False),
    ],
)
def test_condition_errors_point_at_the_key_or_the_value(spec: dict[str, Any], about_key: bool) -> None:
    with pytest.raises(ConditionError) as raised:
        compile_conditions(spec, definitions())
    assert raised.value.about_key is about_key


@pytest.mark.parametrize(
    ("spec", "key", "path"),
    [
        ({"mon-fri": "x"}, "mon-fri", ("mon-fri",)),
        ({"except": ["2027-01-01", "x"]}, "except[1]", ("except", 1)),
        ({"include": {"2027-02-20": "x"}}, "include[2027-02-20]", ("include", "2027-02-20")),
        ({"include": {"2027-02-20": "x"}}, "include[2027-02-21]", ("include",)),  # not one of its keys
        ({"include": {"2027-02-XX": "x"}}, "include[2027-02-XX]", ("include", "2027-02-XX")),  # only the ']' goes
        ({"except": "2027-01-01"}, "except[0]", ("except",)),  # not a list
        ({"mon-fri": "x"}, "timezone", ()),  # not in the spec
    ],
)
def test_schedule_path_finds_a_schedule_error_in_its_spec(
    spec: dict[str, Any], key: str, path: tuple[Any, ...]
) -> None:
    assert schedule_path(spec, key) == path


# ----------------------------------------------------------------------------------------------------
# load_rules: first match wins, and the index never changes which rule that is


def rule_set(tmp_path: Path, *files: str) -> RuleSet:
    folder = tmp_path / "rules"
    folder.mkdir()
    for number, text in enumerate(files):
        (folder / f"{number:02d}.yaml").write_text(text)
    return load_rules(folder, "Europe/Moscow")


def answer(rules: RuleSet, event: CallEvent | None, history: tuple[CallEvent, ...] = ()) -> Decision:
    events = [*history, *([event] if event is not None else [])]
    call = CallState.begin(1, events[0], NOW)
    for each in events:
        call.apply(each, NOW)
    if event is None:
        call.polled(NOW)
    return decide(rules, event, call, NOW)


def prompt(rule: str) -> Decision:
    return Decision(Action.PlayPrompt, rule, rule)


ORDER_RULES = """
rules:
  - {id: vip-prefix, on: CallAccepted, if: {AN: {prefix: "7916555"}}, do: {PlayPrompt: vip-prefix}}
  - {id: exact, on: CallAccepted, if: {AN: "79165550001"}, do: {PlayPrompt: exact}}
  - {id: exact-list, on: CallAccepted, if: {AN: ["79160000001", "79160000002"]}, do: {PlayPrompt: exact-list}}
  - {id: exact-again, on: CallAccepted, if: {AN: "79160000002"}, do: {PlayPrompt: exact-again}}
  - {id: exact-first, on: CallAccepted, if: {AN: "79030000001"}, do: {PlayPrompt: exact-first}}
  - {id: prefix-after, on: CallAccepted, if: {AN: {prefix: "7903"}}, do: {PlayPrompt: prefix-after}}
  - {id: un-exact, on: CallAccepted, if: {UN: "74951110000", AN: {prefix: "7904"}}, do: {PlayPrompt: un-exact}}
  - {id: two-exact, on: CallAccepted, if: {AN: "79050000001", UN: "74952220000"}, do: {PlayPrompt: two-exact}}
  - {id: in-any, on: CallAccepted, if: {any: [{AN: "79060000001"}, {AN: "79060000002"}]}, do: {PlayPrompt: in-any}}
  - {id: not-exact, on: CallAccepted, if: {AN: {not: "79070000001"}, UN: "74953330000"}, do: {PlayPrompt: not-exact}}
  - {id: digits, on: DTMF, if: {digits: "12"}, do: {PlayPrompt: digits}}
  - {id: on-dtmf, on: DTMF, if: {AN: "79030000001"}, do: {PlayPrompt: on-dtmf}}
  - {id: poll-an, on: poll, if: {AN: "79080000001"}, do: {TransferPBX: PBX4951234}}
  - {id: everyone, on: [CallAccepted, 42], if: {AN: {prefix: "7"}}, do: {PlayPrompt: everyone}}
  - {id: not-condition, on: HelloMessage, if: {not: {AN: "79090000001"}}, do: {PlayPrompt: not-condition}}
  - {id: any-cond, on: RunIVR, if: {any: [{AN: "79090000001"}, {UN: "74955550000"}]}, do: {PlayPrompt: any-cond}}
"""


@pytest.mark.parametrize(
    ("event", "history", "expected"),
    [
        pytest.param(ev(ACCEPTED, an="79165550001"), (), "vip-prefix", id="scan-rule-before-exact"),
        pytest.param(ev(ACCEPTED, an="79160000001"), (), "exact-list", id="exact-list-first-value"),
        pytest.param(ev(ACCEPTED, an="79160000002"), (), "exact-list", id="exact-list-before-exact"),
        pytest.param(ev(ACCEPTED, an="79030000001"), (), "exact-first", id="exact-before-prefix"),
        pytest.param(ev(ACCEPTED, an="79030000002"), (), "prefix-after", id="prefix-after-exact"),
        pytest.param(ev(ACCEPTED, an="79040000001", un="74951110000"), (), "un-exact", id="indexed-by-UN"),
        pytest.param(ev(ACCEPTED, an="79040000001", un="74951110001"), (), "everyone", id="UN-other"),
        pytest.param(ev(ACCEPTED, an="79050000001", un="74952220000"), (), "two-exact", id="two-exact-fields"),
        pytest.param(ev(ACCEPTED, an="79050000001", un="74952220001"), (), "everyone", id="two-exact-one-fails"),
        pytest.param(ev(ACCEPTED, an="79060000002"), (), "in-any", id="exact-inside-any"),
        pytest.param(ev(ACCEPTED, an="79070000002", un="74953330000"), (), "not-exact", id="exact-inside-not"),
        pytest.param(ev(ACCEPTED, an="79070000001", un="74953330000"), (), "everyone", id="exact-inside-not-same"),
        pytest.param(ev(DTMF, dtmf="2"), (ev(DTMF, dtmf="1"),), "digits", id="indexed-by-digits"),
        pytest.param(ev(DTMF, an="79030000001", dtmf="9"), (), "on-dtmf", id="other-event"),
        pytest.param(ev(42, an="79990000000"), (), "everyone", id="future-code"),
        pytest.param(ev(ACCEPTED), (), None, id="no-AN"),
        pytest.param(ev(ACCEPTED, an="89160000001"), (), None, id="none"),
        pytest.param(ev(E.EndCall, an="79030000001"), (), None, id="no-rule-for-event"),
        pytest.param(ev(HELLO, an="79090000002"), (), "not-condition", id="exact-inside-a-not-condition"),
        pytest.param(ev(HELLO, an="79090000001"), (), None, id="exact-inside-a-not-condition-same"),
        pytest.param(ev(IVR, an="79090000002", un="74955550000"), (), "any-cond", id="exact-inside-any-other"),
    ],
)
def test_first_matching_rule_answers(
    tmp_path: Path, event: CallEvent, history: tuple[CallEvent, ...], expected: str | None
) -> None:
    rules = rule_set(tmp_path, ORDER_RULES)
    assert answer(rules, event, history) == (prompt(expected) if expected else NO_ACTION)


def test_poll_rule_found_by_the_calls_an(tmp_path: Path) -> None:
    rules = rule_set(tmp_path, ORDER_RULES)
    decision = Decision(Action.TransferPBX, "PBX4951234", "poll-an")
    assert answer(rules, None, (ev(ACCEPTED, an="79080000001"),)) == decision
    assert answer(rules, None, (ev(ACCEPTED, an="79080000002"),)) == NO_ACTION


def test_index_and_normalize_per_file(tmp_path: Path) -> None:
    plain = 'rules:\n  - {id: plain, on: CallAccepted, if: {AN: "79161234567"}, do: {PlayPrompt: plain}}\n'
    ru = "normalize: ru\nrules:\n  - {id: ru, on: [CallAccepted, DTMF], if: {AN: 89161234567}, do: {PlayPrompt: ru}}\n"
    rules = rule_set(tmp_path, plain, ru)
    assert answer(rules, ev(ACCEPTED, an="79161234567")) == prompt("plain")
    assert answer(rules, ev(ACCEPTED, an="+7 916 123-45-67")) == prompt("ru")
    assert answer(rules, ev(DTMF, an="79161234567")) == prompt("ru")
    assert answer(rules, ev(ACCEPTED, an="+7 916 123-45-68")) == NO_ACTION


def test_outgoing_poll_transfer_pbx_literal(tmp_path: Path) -> None:
    """docs/rules.md: TransferPBX on outgoing-call polls takes 8000 + area code + number; a literal one loads."""
    text = """
rules:
  - id: outgoing-supervisor
    on: poll
    if: {service: MTSPBX}
    do: {TransferPBX: "80004951234567101"}
"""
    rules = rule_set(tmp_path, text)
    history = (ev(ACCEPTED, service_type=ServiceType.MTSPBX),)
    assert answer(rules, None, history) == Decision(Action.TransferPBX, "80004951234567101", "outgoing-supervisor")


# ----------------------------------------------------------------------------------------------------
# 10,000 exact-AN rules

MANY = 10_000


def many_an(number: int) -> str:
    return f"7900{number:07d}"


@pytest.fixture(scope="module")
def many_rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    lines = ["rules:"]
    lines += [
        f'  - {{id: r{n}, on: CallAccepted, if: {{AN: "{many_an(n)}"}}, do: {{PlayPrompt: p{n}}}}}' for n in range(MANY)
    ]
    folder = tmp_path_factory.mktemp("many")
    (folder / "many.yaml").write_text("\n".join(lines) + "\n")
    return load_rules(folder / "many.yaml", "Europe/Moscow")


@pytest.mark.parametrize("number", [0, 1, 4_999, 9_998, 9_999], ids=lambda n: f"rule-{n}")
def test_many_exact_rules_answer_the_right_one(many_rules: RuleSet, number: int) -> None:
    event = ev(ACCEPTED, an=many_an(number))
    assert answer(many_rules, event) == Decision(Action.PlayPrompt, f"p{number}", f"r{number}")
    assert many_rules.index is not None
    call = CallState.begin(1, event, NOW)
    assert [rule.id for rule in many_rules.index.candidates(event, call)] == [f"r{number}"]


@pytest.mark.parametrize("an", [many_an(MANY), "+79000000000", "7900000000", None], ids=repr)
def test_many_exact_rules_an_matching_none(many_rules: RuleSet, an: str | None) -> None:
    event = ev(ACCEPTED, an=an)
    assert answer(many_rules, event) == NO_ACTION
    assert many_rules.index is not None
    assert list(many_rules.index.candidates(event, CallState.begin(1, event, NOW))) == []


@pytest.mark.parametrize("values", list(itertools.chain.from_iterable(
    itertools.product((False, True), repeat=n) for n in range(5)
)))  # fmt: skip
def test_every_and_some_agree_with_all_and_any_asking_in_order_until_decided(values: tuple[bool, ...]) -> None:
    asked: list[int] = []

    def part(index: int, value: bool) -> Predicate:
        def ask(event: object, call: object, now: object) -> bool:
            asked.append(index)
            return value

        return ask

    parts = [part(index, value) for index, value in enumerate(values)]
    for combine, reference, decisive in ((every, all, False), (some, any, True)):
        asked.clear()
        assert combine(parts)(None, None, None) is reference(values)  # type: ignore[arg-type]
        stop = values.index(decisive) + 1 if decisive in values else len(values)
        assert asked == list(range(stop))  # asked in order, none after the answer is known


# ----------------------------------------------------------------------------------------------------
# sources: read like fields, from the values looked up for the decision, and asked after the rest


@dataclass
class Looked:
    """The looked-up values of one decision (what the deciding step sets in LOOKED_UP)."""

    values: dict[str, str | None]
    asked: list[str] = field(default_factory=list)

    def value(self, name: str) -> str | None:
        self.asked.append(name)
        return self.values.get(name)


def with_sources(spec: dict[str, Any], event: CallEvent | None, looked: Looked | None) -> bool:
    """Whether spec holds, with the sources owner and region, their values as looked (None: not yet)."""
    defs = replace(definitions(), sources=frozenset({"owner", "region"}))
    predicate = compile_conditions(spec, defs)
    call = CallState.begin(1, event or ev(ACCEPTED, an=AN), NOW)
    if event is not None:
        call.apply(event, NOW)
    token = LOOKED_UP.set(looked) if looked is not None else None
    try:
        return predicate(event, call, NOW)
    finally:
        if token is not None:
            LOOKED_UP.reset(token)


@pytest.mark.parametrize(
    ("spec", "values", "expected"),
    [
        ({"owner": "1001"}, {"owner": "1001"}, True),
        ({"owner": "1001"}, {"owner": "1002"}, False),
        ({"owner": "1001"}, {}, False),  # no value
        ({"owner": {"not": "1001"}}, {}, True),
        ({"owner": ["1001", "1002"]}, {"owner": "1002"}, True),
        ({"owner": "1001"}, {"region": "1001"}, False),  # each source its own value
        ({"region": "77"}, {"owner": "1001", "region": "77"}, True),
        ({"owner": {"in": "vip"}}, {"owner": "79165550000"}, True),  # a list of the file
        ({"owner": {"in": "managers"}}, {"owner": "79031112233"}, True),
        ({"owner": {"prefix": "7916"}}, {"owner": AN}, True),
        ({"owner": {"regex": "^79"}}, {"owner": AN}, True),
        ({"owner": AN, "AN": AN}, {"owner": AN}, True),
    ],
)
def test_a_source_condition_reads_the_looked_up_value(
    spec: dict[str, Any], values: dict[str, str | None], expected: bool
) -> None:
    assert with_sources(spec, ev(ACCEPTED, an=AN), Looked(values)) is expected


def test_a_source_value_is_not_normalized() -> None:
    defs = replace(definitions("ru"), sources=frozenset({"owner"}))
    predicate = compile_conditions({"owner": AN}, defs)
    event = ev(ACCEPTED, an=AN)
    token = LOOKED_UP.set(Looked({"owner": "89161234567"}))
    try:
        assert predicate(event, CallState.begin(1, event, NOW), NOW) is False  # as the source answered
    finally:
        LOOKED_UP.reset(token)


@pytest.mark.parametrize(
    "spec",
    [
        {"owner": "1001", "AN": "79160000000"},
        {"region": "77", "owner": "1001", "DTMF": "1"},
        {"not": {"owner": "1001"}, "AN": "79160000000"},  # a source inside not, any or all counts too
        {"any": [{"DTMF": "1"}, {"owner": "1001"}], "AN": "79160000000"},
        {"all": [{"not": {"any": [{"region": "1"}]}}], "AN": "79160000000"},
    ],
)
def test_a_source_is_asked_only_when_the_rest_holds(spec: dict[str, Any]) -> None:
    # the rest fails: the answer is known without a look-up (none is set: asking would raise NeedsLookup)
    assert with_sources(spec, ev(ACCEPTED, an=AN), None) is False


def test_sources_are_asked_in_the_order_written_after_the_rest() -> None:
    looked = Looked({"owner": "1001", "region": "77"})
    assert with_sources({"region": "77", "AN": AN, "owner": "1001"}, ev(ACCEPTED, an=AN), looked) is True
    assert looked.asked == ["region", "owner"]


def test_a_source_not_looked_up_yet_is_asked_for() -> None:
    with pytest.raises(NeedsLookup) as raised:
        with_sources({"AN": AN, "owner": "1001"}, ev(ACCEPTED, an=AN), None)
    assert raised.value.name == "owner"


def test_unknown_condition_names_the_sources_among_the_known() -> None:
    defs = replace(definitions(), sources=frozenset({"region", "owner"}))
    with pytest.raises(ConditionError) as raised:
        compile_conditions({"ANI": "1"}, defs)
    assert raised.value.message == f"unknown condition 'ANI' (known: {', '.join(CONDITIONS)}, owner, region)"
