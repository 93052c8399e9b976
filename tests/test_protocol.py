"""The code tables, the tolerant CRMDData reader, the ReturnCRMData writer and param formats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ascrm.core import protocol
from ascrm.core.jsonbody import UNREADABLE_REASON, UnreadableText, load_json
from ascrm.core.protocol import (
    NO_ACTION,
    OUTGOING_POLL_LIMIT,
    Action,
    CallEvent,
    Decision,
    EventType,
    FieldWarning,
    NoopAnswer,
    ServiceType,
    code_name,
    field_name,
    not_allowed,
    param_error,
    parse_call_event,
    parse_code,
    parse_int64,
    poll_action_error,
    render_answer,
)

MSK = ZoneInfo("Europe/Moscow")


def test_code_tables_match_the_protocol() -> None:
    assert len(EventType) == 18
    assert EventType.CallAccepted == 1
    assert EventType.PrepareToConnect == 16
    assert EventType.SubscriberFreeReceived == 18
    assert [s.name for s in ServiceType] == ["MTSSecretary", "MTSPBX", "MTSQuality", "MTSSubCLID"]
    assert len(Action) == 12
    assert Action.TransferPBX == 5
    assert Action.BackFromConsultCall == 12


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (4, EventType.DTMF),
        ("4", EventType.DTMF),
        (" 4 ", EventType.DTMF),
        ("DTMF", EventType.DTMF),
        ("dtmf", EventType.DTMF),
        (4.0, EventType.DTMF),
        (99, 99),
        ("99", 99),
        (0, 0),
        ("Teleport", None),
        (True, None),
        (4.5, None),
        ([4], None),
        (2**64, None),
    ],
)
def test_parse_code(raw: Any, expected: Any) -> None:
    result = parse_code(raw, EventType)
    assert result == expected
    if expected is not None:
        assert type(result) is type(expected)


def test_connection_test_body_parses_to_nothing_but_un() -> None:
    body = dict.fromkeys(["CallID", "EventTime", "AN", "DN1", "DN2", "EXT1", "EXT2", "DTMF", "Generic"], "")
    body.update(UN="74951234567", Result="", EventType="", ServiceType="")
    event, warnings = parse_call_event(body, MSK)
    assert event == CallEvent(un="74951234567")
    assert warnings == []


def test_full_event() -> None:
    event, warnings = parse_call_event(
        {
            "CallID": 42,
            "EventTime": "2026-11-27T10:15:00+03:00",
            "AN": "79161234567",
            "UN": "74951234567",
            "DN1": "74950000000",
            "DN2": "74950000001",
            "EXT1": "1001",
            "EXT2": "1002",
            "DTMF": "5",
            "Generic": "79990000000",
            "Result": 1280,
            "EventType": 9,
            "ServiceType": 1,
            "Unknown": "ignored",
        },
        MSK,
    )
    assert warnings == []
    assert event.call_id == 42
    assert event.event_time == datetime(2026, 11, 27, 7, 15, tzinfo=UTC)
    assert event.event_type is EventType.Transfer
    assert event.service_type is ServiceType.MTSSecretary
    assert (event.an, event.un, event.dn1, event.dn2) == (
        "79161234567",
        "74951234567",
        "74950000000",
        "74950000001",
    )
    assert (event.ext1, event.ext2, event.dtmf, event.generic, event.result) == (
        "1001",
        "1002",
        "5",
        "79990000000",
        "1280",
    )


def test_field_names_are_matched_case_insensitively() -> None:
    event, _ = parse_call_event({"callId": 7, "eventType": 1, "an": "79161234567"}, MSK)
    assert (event.call_id, event.event_type, event.an) == (7, EventType.CallAccepted, "79161234567")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T10:15:00+03:00", datetime(2026, 11, 27, 10, 15, tzinfo=timezone(timedelta(hours=3)))),
        ("2026-11-27T07:15:00Z", datetime(2026, 11, 27, 7, 15, tzinfo=UTC)),
        ("2026-11-27T10:15:00.1234567+03:00", datetime(2026, 11, 27, 7, 15, 0, 123456, tzinfo=UTC)),
        ("2026-11-27T10:15:00.5Z", datetime(2026, 11, 27, 10, 15, 0, 500000, tzinfo=UTC)),
        ("2026-11-27T10:15:00", datetime(2026, 11, 27, 10, 15, tzinfo=MSK)),  # configured zone
        ("2026-11-27T10:15:00-05:00", datetime(2026, 11, 27, 15, 15, tzinfo=UTC)),
    ],
)
def test_event_time_forms(text: str, expected: datetime) -> None:
    event, warnings = parse_call_event({"EventTime": text}, MSK)
    assert warnings == []
    assert event.event_time == expected
    assert event.event_time is not None
    assert event.event_time.utcoffset() is not None


@pytest.mark.parametrize("text", ["2026-11-27", "yesterday", "27.11.2026 10:15", "2026-13-01T00:00:00", 1764227700])
def test_bad_event_time_becomes_missing_with_a_warning(text: Any) -> None:
    event, warnings = parse_call_event({"EventTime": text, "CallID": 1}, MSK)
    assert event.event_time is None
    assert event.call_id == 1
    assert [(w.field, w.value) for w in warnings] == [("EventTime", text)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(123, 123), ("123", 123), (2**63 - 1, 2**63 - 1), (-5, -5), (12.0, 12)],
)
def test_call_id_forms(raw: Any, expected: int) -> None:
    event, warnings = parse_call_event({"CallID": raw}, MSK)
    assert (event.call_id, warnings) == (expected, [])


@pytest.mark.parametrize("raw", ["abc", 2**63, True, 1.5, {"id": 1}, "12abc"])
def test_bad_call_id_becomes_missing(raw: Any) -> None:
    event, warnings = parse_call_event({"CallID": raw}, MSK)
    assert event.call_id is None
    assert warnings[0].field == "CallID"


@pytest.mark.parametrize(("raw", "expected"), [(79161234567, "79161234567"), (" 1 ", "1"), (5.0, "5"), ("   ", None)])
def test_string_fields_accept_numbers(raw: Any, expected: str | None) -> None:
    event, warnings = parse_call_event({"AN": raw}, MSK)
    assert (event.an, warnings) == (expected, [])


@given(
    st.dictionaries(
        st.text(max_size=12),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda c: st.lists(c) | st.dictionaries(st.text(), c),
            max_leaves=5,
        ),
    )
)
def test_any_json_object_parses_without_raising(data: dict[str, Any]) -> None:
    event, warnings = parse_call_event(data, MSK)
    assert isinstance(event, CallEvent)
    assert all(w.field for w in warnings)


def test_render_no_action_default() -> None:
    assert json.loads(render_answer(77, NO_ACTION, NoopAnswer())) == {
        "CallID": 77,
        "EventType": 0,
        "Param": "",
    }


def test_render_no_action_configured() -> None:
    body = json.loads(render_answer(None, NO_ACTION, NoopAnswer(event_type=None, param=None)))
    assert body == {"CallID": 0, "EventType": None, "Param": None}


def test_render_action() -> None:
    body = render_answer(2**63 - 1, Decision(Action.TransferEXT, "1234", "rule-1"), NoopAnswer())
    assert json.loads(body) == {"CallID": 2**63 - 1, "EventType": 2, "Param": "1234"}
    assert b" " not in body


def test_render_keeps_unicode_readable() -> None:
    body = render_answer(1, Decision(Action.PlayPrompt, "приветствие"), NoopAnswer())
    assert "приветствие".encode() in body


@pytest.mark.parametrize(
    ("action", "param", "ok"),
    [
        (Action.TransferDN, "74951234567", True),
        (Action.TransferDN, "78001234567", True),
        (Action.TransferDN, "88001234567", False),  # national forms: 8 instead of the country code
        (Action.TransferDN, "84951234567", False),
        (Action.TransferDN, "441234567890", True),
        (Action.TransferDN, "+74951234567", False),
        (Action.TransferDN, "4951234567", False),  # no country code
        (Action.TransferDNRec, "4951234567", False),
        (Action.TransferDN, "123", False),
        (Action.TransferDN, "7495123456789012", False),
        (Action.TransferDN, "", False),
        (Action.TransferDNRec, "74951234567", True),
        (Action.TransferDNRec, "7495-123", False),
        (Action.TransferEXT, "1234", True),
        (Action.TransferEXT, "123", False),
        (Action.TransferEXT, "12345", False),
        (Action.TransferEXT, "12a4", False),
        (Action.TransferPBX, "PBX4951234", True),
        (Action.TransferPBX, "PBX123", True),
        (Action.TransferPBX, "PBXoffice_1-a.b", True),
        (Action.TransferPBX, "PBX", False),
        (Action.TransferPBX, "pbx123", False),
        (Action.TransferPBX, "PBX 123", False),
        (Action.TransferPBX, "4951234", False),
        (Action.TransferPBXRec, "PBX4951234", True),
        (Action.TransferPBXRec, "PBX49!", False),
        (Action.PlayPrompt, "after_hours", True),
        (Action.PlayPrompt, "приветствие-1", True),
        (Action.PlayPrompt, "greeting.wav", False),
        (Action.PlayPrompt, "../etc/passwd", False),
        (Action.PlayPrompt, "", False),
        (Action.PlayPromptAndBack, "hold music", True),
        (Action.PlayPromptToOperator, "vip_client", True),
        (Action.PlayPromptToOperator, "x" * 256, False),
        (Action.PlayMenuBlock, "rating", True),
        (Action.PlayMenuBlock, "a/b", False),
        (Action.Hangup, "", True),
        (Action.Hangup, "now", False),
        (Action.IgnorePromptToOperator, "", True),
        (Action.BackFromConsultCall, "", True),
        (Action.BackFromConsultCall, "x", False),
    ],
)
def test_param_formats(action: Action, param: str, ok: bool) -> None:
    assert (param_error(action, param) is None) is ok


@pytest.mark.parametrize(
    ("param", "ok"),
    [
        ("80004951234567101", True),
        ("8000495123456712ab", True),
        ("4951234567Uab12", True),
        ("8000495123456", False),
        ("4951234567U123", False),
        ("PBX4951234", False),
    ],
)
def test_outgoing_poll_pbx_forms(param: str, ok: bool) -> None:
    assert (param_error(Action.TransferPBX, param, outgoing_poll=True) is None) is ok


_FIELD_VALUES = st.one_of(
    st.none(),
    st.just(""),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.text(max_size=8),
    st.sampled_from(["2026-11-27T10:15:00+03:00", "2026-11-27T10:15:00", "DTMF", " 4 ", "x", 0, False, " "]),
    st.floats(allow_nan=False),
    st.booleans(),
)


@given(
    st.dictionaries(
        st.sampled_from(["CallID", "EventTime", "EventType", "ServiceType", "AN", "Result", "callid"]),
        _FIELD_VALUES,
    )
)
def test_fast_and_tolerant_readers_agree(data: dict[str, Any]) -> None:
    from ascrm.core.protocol import _read_tolerantly, _read_well_formed

    fast = _read_well_formed(data, MSK)
    if fast is not None:
        assert (fast, []) == _read_tolerantly(data, MSK)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # the tolerant reader (a lower-case key takes it), at the edges of what it accepts
        ({"callid": -(2**63)}, {"call_id": -(2**63)}),
        ({"callid": 2**63 - 1}, {"call_id": 2**63 - 1}),
        ({"callid": 7, "EventTime": "2026-11-27T10:15"}, {"event_time": datetime(2026, 11, 27, 10, 15, tzinfo=MSK)}),
        ({"callid": 7, "EventTime": "2026-11-27t10:15:00"}, {"event_time": datetime(2026, 11, 27, 10, 15, tzinfo=MSK)}),
        ({"callid": 7, "EventTime": "2026-11-27 10:15:00"}, {"event_time": datetime(2026, 11, 27, 10, 15, tzinfo=MSK)}),
        ({"an": 12.0}, {"an": "12"}),
    ],
)
def test_tolerant_reader_edges(data: dict[str, Any], expected: dict[str, Any]) -> None:
    event, warnings = parse_call_event(data, MSK)
    assert warnings == []
    assert {name: getattr(event, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("field", "raw", "reason"),
    [
        ("CallID", 2**63, "expected an int64"),
        ("CallID", -(2**63) - 1, "expected an int64"),
        ("AN", 1.5, "expected a string"),
        ("AN", [1], "expected a string"),
        ("EventTime", "2026-11-27T10:1", "expected an ISO 8601 date and time"),  # 15 characters
        ("EventTime", "2026-11-27X10:15", "expected an ISO 8601 date and time"),
        ("EventTime", 1764227700, "expected an ISO 8601 date and time"),
        ("EventType", "Nope", "expected a EventType code or name"),
    ],
)
def test_an_unreadable_field_is_reported_with_its_reason(field: str, raw: Any, reason: str) -> None:
    data = {field: raw} if field == "CallID" else {"CallID": 1, field: raw}
    _, warnings = parse_call_event(data, MSK)
    assert [(w.field, w.value, w.reason) for w in warnings] == [(field, raw, reason)]


def test_render_no_action_without_a_call_id() -> None:
    assert json.loads(render_answer(None, NO_ACTION, NoopAnswer())) == {"CallID": 0, "EventType": 0, "Param": ""}
    decided = Decision(Action.PlayPrompt, "hello", "r")
    assert json.loads(render_answer(None, decided, NoopAnswer())) == {"CallID": 0, "EventType": 3, "Param": "hello"}


@pytest.mark.parametrize(
    ("action", "param", "outgoing_poll", "problem"),
    [
        (Action.Hangup, "x", False, "takes no param"),
        (Action.TransferEXT, "", False, "needs a param"),
        (Action.PlayPrompt, "", False, "needs a param"),
        (Action.TransferDN, "84951234567", False, "is a national-form number: the full format starts with the country"),
        (Action.TransferDN, "+74951234567", False, "must be a full-format number: 11 to 15 digits with the country"),
        (Action.TransferEXT, "12345", False, "must be a 4-digit short number (1234)"),
        (Action.TransferPBX, "PBX4951234", True, "outgoing-service poll answers take 8000 + 10-digit area code"),
        (Action.TransferPBX, "4951234", False, "must be a softswitch number: 'PBX' then Latin letters"),
        (Action.PlayMenuBlock, "menu/1", False, "must be a file or menu name: letters, digits"),
        (Action.PlayPrompt, "hello.wav", False, "must be the prompt's name without the file extension"),
    ],
)
def test_param_problems_say_what_is_wrong(action: Action, param: str, outgoing_poll: bool, problem: str) -> None:
    found = param_error(action, param, outgoing_poll=outgoing_poll)
    assert found is not None
    assert found.startswith(problem), found


def test_an_outgoing_poll_login_form_is_named_with_a_capital_u() -> None:
    assert param_error(Action.TransferPBX, "PBX", outgoing_poll=True) == (
        "outgoing-service poll answers take 8000 + 10-digit area code + internal number,"
        " or 10-digit area code + 'U' + 4 characters for a login"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("9223372036854775808", None),  # past int64
        ("-9223372036854775809", None),
        ("1_000", None),
        (" 12", None),
        ("١٢", None),  # Arabic-Indic digits: int() would take them
        ("", None),
    ],
)
def test_parse_int64(text: str, expected: int | None) -> None:
    assert parse_int64(text) == expected


@pytest.mark.parametrize(
    ("key", "expected"), [("dtmf", "DTMF"), ("CallID", "CallID"), ("callid", "CallID"), ("X", None)]
)
def test_field_name(key: str, expected: str | None) -> None:
    assert field_name(key) == expected


@pytest.mark.parametrize(
    ("action", "service_type", "expected"),
    [
        (Action.PlayPrompt, ServiceType.MTSPBX, f"PlayPrompt is not sent: {OUTGOING_POLL_LIMIT}"),
        (Action.TransferPBX, ServiceType.MTSPBX, None),
        (Action.BackFromConsultCall, ServiceType.MTSPBX, None),
        (Action.PlayPrompt, ServiceType.MTSSecretary, None),
        (Action.PlayPrompt, None, None),
    ],
)
def test_poll_action_error(action: Action, service_type: ServiceType | None, expected: str | None) -> None:
    assert poll_action_error(action, service_type) == expected


def test_not_allowed_withholds_the_answer_and_says_why() -> None:
    decided = Decision(Action.PlayPrompt, "hello", "greet", command_id=7)
    assert not_allowed(decided, "too late") == Decision(None, "", "greet", "too late", 7, Action.PlayPrompt)


@pytest.mark.parametrize(
    ("code", "expected"),
    [(None, None), (Action.PlayPrompt, "PlayPrompt"), (EventType.DTMF, "DTMF"), (99, "99")],
)
def test_code_name(code: Any, expected: str | None) -> None:
    assert code_name(code) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(-(2**63), -(2**63)), (2**63 - 1, 2**63 - 1), (2**63, None), (-(2**63) - 1, None), ("DTMF", EventType.DTMF)],
)
def test_parse_code_at_the_int64_bounds(raw: Any, expected: Any) -> None:
    assert parse_code(raw, EventType) == expected


def _offset(minutes: int) -> str:
    return f"2026-11-27T10:15:00+{minutes // 60:02d}:{minutes % 60:02d}"


def test_times_with_one_offset_share_one_zone_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "_ZONES", {})  # as in a fresh process
    first, _ = parse_call_event({"EventTime": _offset(180)}, MSK)
    second, _ = parse_call_event({"callid": 1, "EventTime": _offset(180)}, MSK)  # the tolerant reader too
    assert first.event_time == second.event_time == datetime(2026, 11, 27, 7, 15, tzinfo=UTC)
    assert first.event_time is not None
    assert second.event_time is not None
    assert first.event_time.tzinfo == timezone(timedelta(hours=3))
    assert second.event_time.tzinfo is first.event_time.tzinfo


def test_zones_stop_being_shared_past_256_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "_ZONES", {})
    times = [parse_call_event({"EventTime": _offset(minutes)}, MSK)[0].event_time for minutes in range(1, 301)]
    assert len(protocol._ZONES) == 256  # the table is bounded: odd offsets in bulk do not grow it
    assert [moment.utcoffset() if moment else None for moment in times] == [
        timedelta(minutes=minutes) for minutes in range(1, 301)
    ]
    again, _ = parse_call_event({"EventTime": _offset(300)}, MSK)
    assert again.event_time is not None
    assert times[-1] is not None
    assert again.event_time.tzinfo is not times[-1].tzinfo  # not kept: read as it came


PLATFORM_BODY: dict[str, Any] = {  # a CallAccepted as the platform sends it: every key, strings as strings
    "CallID": 42,
    "EventTime": "2026-11-27T10:15:00+03:00",
    "EventType": 1,
    "ServiceType": 2,
    "AN": "79161234567",
    "UN": "74951234567",
    "DN1": "74950000000",
    "DN2": " 74950000001 ",
    "EXT1": "1001",
    "EXT2": "",
    "DTMF": "",
    "Generic": "79990000000",
    "Result": "",
}
PLATFORM_EVENT = CallEvent(
    42,
    datetime(2026, 11, 27, 7, 15, tzinfo=UTC),
    EventType.CallAccepted,
    ServiceType.MTSPBX,
    "79161234567",
    "74951234567",
    "74950000000",
    "74950000001",
    "1001",
    None,
    None,
    "79990000000",
    None,
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(PLATFORM_BODY, PLATFORM_EVENT, id="every-key"),
        pytest.param(
            PLATFORM_BODY | {"EventTime": "", "EventType": 4, "DTMF": "5", "EXT2": None},
            PLATFORM_EVENT._replace(event_time=None, event_type=EventType.DTMF, dtmf="5"),
            id="empty-time-and-null",
        ),
        pytest.param({"CallID": 1, "EventType": 15}, CallEvent(1, event_type=EventType.EndCall), id="few-keys"),
        pytest.param(
            {"EventType": 16, "AN": "1"}, CallEvent(event_type=EventType.PrepareToConnect, an="1"), id="no-id"
        ),
        pytest.param(
            {"CallID": 7, "ServiceType": 1}, CallEvent(7, service_type=ServiceType.MTSSecretary), id="service"
        ),
        pytest.param({"CallID": 2**63 - 1}, CallEvent(2**63 - 1), id="largest-id"),
        pytest.param({"CallID": -(2**63)}, CallEvent(-(2**63)), id="smallest-id"),
        pytest.param({"CallID": 3, "AN": None, "UN": ""}, CallEvent(3), id="null-and-empty"),
        pytest.param({}, CallEvent(), id="empty"),
    ],
)
def test_well_formed_bodies_are_read_without_the_tolerant_reader(
    monkeypatch: pytest.MonkeyPatch, body: dict[str, Any], expected: CallEvent
) -> None:
    # the platform's usual bodies take the fast reader; the tolerant one (kept out here) is for the rest
    def tolerant(data: Any, tz: Any) -> Any:
        raise AssertionError(f"read tolerantly: {data!r}")

    monkeypatch.setattr(protocol, "_read_tolerantly", tolerant)
    event, warnings = parse_call_event(body, MSK)
    assert (event, warnings) == (expected, [])
    assert type(event.event_type) is type(expected.event_type)
    assert type(event.service_type) is type(expected.service_type)


@pytest.mark.parametrize(
    ("body", "expected", "warned"),
    [
        # codes the fast reader does not take as they are: read as the tolerant reader reads them
        ({"CallID": 1, "EventType": True}, CallEvent(1), ["EventType"]),
        ({"CallID": 1, "EventType": 99}, CallEvent(1, event_type=99), []),
        ({"CallID": 1, "EventType": 4.0}, CallEvent(1, event_type=EventType.DTMF), []),
        ({"CallID": 1, "EventType": "DTMF"}, CallEvent(1, event_type=EventType.DTMF), []),
        ({"CallID": 1, "ServiceType": True}, CallEvent(1), ["ServiceType"]),
        ({"CallID": 1, "ServiceType": 9}, CallEvent(1, service_type=9), []),
        ({"CallID": 1, "ServiceType": "MTSPBX"}, CallEvent(1, service_type=ServiceType.MTSPBX), []),
        ({"CallID": True}, CallEvent(), ["CallID"]),
        ({"CallID": 2**63}, CallEvent(), ["CallID"]),
        ({"CallID": 1, "AN": 79161234567}, CallEvent(1, an="79161234567"), []),
        ({"CallID": 1, "EventTime": "now"}, CallEvent(1), ["EventTime"]),
    ],
)
def test_bodies_the_fast_reader_declines(body: dict[str, Any], expected: CallEvent, warned: list[str]) -> None:
    event, warnings = parse_call_event(body, MSK)
    assert event == expected
    assert type(event.event_type) is type(expected.event_type)
    assert [w.field for w in warnings] == warned


@pytest.mark.parametrize(
    ("body", "expected", "warned"),
    [
        pytest.param({"CallID": 7, "an": "79161234567"}, CallEvent(7, an="79161234567"), [], id="exact-and-other-case"),
        pytest.param(
            {"CallID": 7, "EventType": 1, "an": "79161234567"},
            CallEvent(7, event_type=EventType.CallAccepted, an="79161234567"),
            [],
            id="two-exact-one-other",
        ),
        pytest.param(
            {"AN": "79161234567", "an": "1", "callid": 3},
            CallEvent(3, an="79161234567"),
            [],
            id="the-exact-spelling-wins",
        ),
        pytest.param({"an": None, "dtmf": "", "callid": 3}, CallEvent(3), [], id="null-and-empty-other-case"),
        pytest.param({"eventTime": ""}, CallEvent(), [], id="empty-time-other-case"),
        pytest.param(
            {"eventTime": "2026-11-27T10:15:00"},
            CallEvent(event_time=datetime(2026, 11, 27, 10, 15, tzinfo=MSK)),
            [],
            id="configured-zone-other-case",
        ),
        pytest.param({"CallID": "abc", "an": "1"}, CallEvent(an="1"), ["CallID"], id="unreadable-warned-once"),
        pytest.param({"CallID": 1, "Unknown": "x", "an": "2"}, CallEvent(1, an="2"), [], id="unknown-key"),
        pytest.param({1: "x", "CallID": 1, "an": "2"}, CallEvent(1, an="2"), [], id="a-key-not-a-string"),  # YAML's
    ],
)
def test_the_tolerant_reader_with_keys_in_other_cases(
    body: dict[Any, Any], expected: CallEvent, warned: list[str]
) -> None:
    event, warnings = parse_call_event(body, MSK)
    assert event == expected
    assert [w.field for w in warnings] == warned
    assert event.event_time is None or event.event_time.tzinfo is not None


@pytest.mark.parametrize("body", [b'{"CallID": 1, "AN": "\\ud800x"}', b'{"callid": 1, "an": "\\ud800x"}'])
def test_a_lone_surrogate_is_unreadable_and_said_so(body: bytes) -> None:
    data = load_json(body)
    event, warnings = parse_call_event(data, MSK)
    assert event == CallEvent(1)
    raw = next(value for key, value in data.items() if key.lower() == "an")
    assert isinstance(raw, UnreadableText)
    assert warnings == [FieldWarning("AN", raw, UNREADABLE_REASON)]
