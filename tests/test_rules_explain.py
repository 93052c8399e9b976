"""Explaining rules (`load_rules(explain=True)`, `rules.explain`): the first failing condition, in words, and where."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ascrm.core.calls.state import CallState, DecisionRecord
from ascrm.core.engine import RuleSet, decide
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, Decision, EventType, ServiceType
from ascrm.core.rules import RulesError, load_rules
from ascrm.core.rules.compile import Overrides
from ascrm.core.rules.explain import explain, explain_rule

NOW = datetime(2027, 1, 11, 7, 15, tzinfo=UTC)  # Monday 10:15 in Moscow: the server clock
T0 = datetime.fromisoformat("2027-01-11T10:00:00+03:00")  # Monday, office hours
E = EventType

RULES = r"""timezone: Europe/Moscow
schedules:
  office: {mon-fri: "09:00-18:00", sat: "10:00-15:00", except: ["2027-01-01"], include: {"2027-02-20": "10:00-14:00"}}
  night: {daily: "22:00-06:00"}
lists:
  blocked: ["74990000000", "7800555*"]
maps:
  managers: {"79161234567": "1001"}
rules:
  - {id: blocked, on: CallAccepted, if: {AN: {in: blocked}}, do: Hangup}
  - {id: manager, on: CallAccepted, if: {AN: {in: managers}, time: office}, do: {TransferEXT: "{managers[AN]}"}}
  - {id: after-hours, on: CallAccepted, if: {time: {not: office}}, do: {PlayPrompt: after_hours}}
  - {id: menu, on: DTMF, if: {DTMF: "1"}, do: {TransferDN: "74951112233"}}
  - {id: menu-two, on: DTMF, if: {DTMF: ["2", "3"]}, do: {TransferDN: "74951112234"}}
  - {id: extension, on: DTMF, if: {digits: {regex: '^\d{4}$'}}, do: {TransferEXT: "{digits}"}}
  - {id: freephone, on: CallAccepted, if: {service: MTSPBX, DN1: {prefix: "8800"}}, do: {TransferDN: "{DN1}"}}
  - {id: not-blocked, on: CallAnswered, if: {AN: {not: {in: blocked}}}, do: {PlayPrompt: hello}}
  - {id: failover, on: PrepareToConnect, if: {last_transfer_result: [busy, no_answer]}, do: {TransferDN: "74959990000"}}
  - {id: long, on: poll, if: {talk_seconds: {gt: 600}}, do: {TransferPBX: PBX4951234}}
  - {id: long-call, on: HelloMessage, if: {call_seconds: {ge: 60, lt: 120}}, do: {PlayPrompt: long}}
  - {id: after-menu, on: PrepareToConnect, if: {seen: [DTMF, Transfer]}, do: {PlayPromptToOperator: menu}}
  - {id: either, on: RunIVR, if: {any: [{DTMF: "1"}, {time: night}]}, do: {PlayPrompt: either}}
  - {id: both, on: RunIVR, if: {all: [{AN: {prefix: "7916"}}, {time: night}]}, do: {PlayPrompt: both}}
  - {id: not-night, on: RunIVR, if: {not: {time: night, AN: {prefix: "7916"}}}, do: {PlayPrompt: not-night}}
  - {id: manager-any, on: GoToTransfer, do: {TransferEXT: "{managers[AN]}"}}
  - {id: short-from-dtmf, on: GoToShortTransfer, if: {seen: DTMF}, do: {TransferEXT: "{DTMF}"}}
  - {id: once, on: poll, do: {TransferPBX: PBX4950001}}
"""
RU_RULES = """normalize: ru
rules:
  - {id: ru-vip, on: T38, if: {AN: "89161234567"}, do: Hangup}
"""
LINES = {line.split(",")[0].split("id: ")[1]: n for n, line in enumerate(RULES.splitlines(), 1) if "{id: " in line}
NIGHT = "22:00-24:00, on to 06:00 the next day"


def ev(kind: EventType, at: str | float | None = 0, **fields: Any) -> CallEvent:
    """An event of call 1 `at` seconds after T0 (or at an ISO time; None: no EventTime), from 79161234567."""
    when = None if at is None else datetime.fromisoformat(at) if isinstance(at, str) else T0 + timedelta(seconds=at)
    fields.setdefault("an", "79161234567")
    fields.setdefault("service_type", ServiceType.MTSSecretary)
    return CallEvent(call_id=1, event_time=when, event_type=kind, **fields)


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    folder = tmp_path_factory.mktemp("rules")
    (folder / "10.yaml").write_text(RULES)
    (folder / "20.yaml").write_text(RU_RULES)
    return load_rules(folder, "Europe/Moscow", explain=True)


def call_after(history: tuple[CallEvent, ...], event: CallEvent | None, now: datetime) -> CallState:
    """The call's state as the server has it when deciding event (None: a poll at now)."""
    events = [*history, *([event] if event is not None else [])]
    call = CallState.begin(1, events[0], now)
    for each in events:
        call.apply(each, each.event_time or now)
    if event is None:
        call.polled(now)
    return call


CASES = [
    ("blocked", (), ev(E.CallAccepted), 'AN in list blocked: "79161234567" not in list'),
    (
        "manager",
        (),
        ev(E.CallAccepted, "2027-01-01T19:05:00+03:00"),
        "time office: closed at Fri 2027-01-01 19:05 Europe/Moscow (holiday 2027-01-01)",
    ),
    ("manager", (), ev(E.CallAccepted, an="79031112233"), 'AN in map managers: "79031112233" not a key of the map'),
    (
        "manager",
        (),
        ev(E.CallAccepted, "2027-01-09T16:00:00+03:00"),
        "time office: closed at Sat 2027-01-09 16:00 Europe/Moscow (Sat hours: 10:00-15:00)",
    ),
    (
        "manager",
        (),
        ev(E.CallAccepted, "2027-02-20T14:30:00+03:00"),
        "time office: closed at Sat 2027-02-20 14:30 Europe/Moscow (special hours on 2027-02-20: 10:00-14:00)",
    ),
    (
        "after-hours",
        (),
        ev(E.CallAccepted, "2027-01-11T07:00:00Z"),
        "time not office: open at Mon 2027-01-11 10:00 Europe/Moscow (Mon hours: 09:00-18:00)",
    ),
    (
        "after-hours",
        (),
        ev(E.CallAccepted, None),
        "time not office: open at Mon 2027-01-11 10:15 Europe/Moscow (no EventTime: server clock)"
        " (Mon hours: 09:00-18:00)",
    ),
    ("menu", (), ev(E.DTMF, dtmf="2"), 'DTMF "1": got "2"'),
    ("menu", (), ev(E.DTMF), 'DTMF "1": the event carries no DTMF'),
    ("menu-two", (), ev(E.DTMF, dtmf="5"), 'DTMF one of "2", "3": got "5"'),
    ("extension", (ev(E.DTMF, dtmf="1"),), ev(E.DTMF, dtmf="2"), "digits matches regex '^\\d{4}$': got \"12\""),
    ("extension", (), ev(E.DTMF), "digits matches regex '^\\d{4}$': no DTMF dialled in this call yet"),
    ("freephone", (), ev(E.CallAccepted, dn1="88001234567"), "service MTSPBX: got MTSSecretary"),
    (
        "freephone",
        (),
        ev(E.CallAccepted, dn1="74951234567", service_type=ServiceType.MTSPBX),
        'DN1 starts with "8800": got "74951234567"',
    ),
    ("not-blocked", (), ev(E.CallAnswered, an="74990000000"), 'AN not in list blocked: "74990000000" in list'),
    (
        "failover",
        (ev(E.Transfer, result="1280"),),
        ev(E.PrepareToConnect, 5),
        "last_transfer_result busy, no_answer: the last was 1280 (connected)",
    ),
    (
        "failover",
        (),
        ev(E.PrepareToConnect),
        "last_transfer_result busy, no_answer: no transfer result in this call yet",
    ),
    ("long", (ev(E.CallAccepted),), None, "talk_seconds > 600: 0 s talked"),
    ("long", (ev(E.CallAccepted), ev(E.Transfer, 10, result="1280")), None, "talk_seconds > 600: 125 s talked"),
    (
        "long-call",
        (ev(E.CallAccepted),),
        ev(E.HelloMessage, 30),
        "call_seconds >= 60 and < 120: 30 s since the call began",
    ),
    ("after-menu", (ev(E.DTMF, dtmf="1"),), ev(E.PrepareToConnect), "seen DTMF, Transfer: not yet Transfer"),
    (
        "either",
        (),
        ev(E.RunIVR),
        f'any of 2: none holds: (1) DTMF "1": the event carries no DTMF; (2) time night: closed at Mon 2027-01-11'
        f" 10:00 Europe/Moscow (Mon hours: {NIGHT})",
    ),
    (
        "both",
        (),
        ev(E.RunIVR),
        f"all of 2: (2) time night: closed at Mon 2027-01-11 10:00 Europe/Moscow (Mon hours: {NIGHT})",
    ),
    (
        "not-night",
        (),
        ev(E.RunIVR, "2027-01-11T23:00:00+03:00"),
        f"not: all it negates holds: time night: open at Mon 2027-01-11 23:00 Europe/Moscow (Mon hours: {NIGHT});"
        ' AN starts with "7916": got "79161234567"',
    ),
    (
        "manager-any",
        (),
        ev(E.GoToTransfer, an="79031112233"),
        "TransferEXT's param cannot be filled: {managers[AN]}: AN '79031112233' is not a key of map managers",
    ),
    (
        "ru-vip",
        (),
        ev(E.T38, an="+7 903 111-22-33"),
        'AN "89161234567": got "79031112233" (written "+7 903 111-22-33")',
    ),
]


def rule_named(rules: RuleSet, rule_id: str) -> Any:
    return next(rule for rule in rules.rules if rule.id == rule_id)


@pytest.mark.parametrize(("rule_id", "history", "event", "reason"), CASES)
def test_the_first_failing_condition_in_words(
    rules: RuleSet, rule_id: str, history: tuple[CallEvent, ...], event: CallEvent | None, reason: str
) -> None:
    now = NOW if event is None or event.event_time is None else event.event_time
    if event is None:
        now = T0 + timedelta(seconds=135)
    trial = explain_rule(rule_named(rules, rule_id), event, call_after(history, event, now), now)
    assert trial.decision is None
    assert trial.reason == reason
    assert trial.where is not None
    expected_line = 3 if rule_id == "ru-vip" else LINES[rule_id]
    assert trial.where.line == expected_line, trial.where
    assert trial.where.file.name == ("20.yaml" if rule_id == "ru-vip" else "10.yaml")


def test_a_condition_is_located_at_its_key(rules: RuleSet) -> None:
    trial = explain_rule(
        rule_named(rules, "manager"), ev(E.CallAccepted, an="7"), call_after((), ev(E.CallAccepted), T0), T0
    )
    assert trial.where is not None
    line = LINES["manager"]
    assert (trial.where.line, trial.where.column) == (line, RULES.splitlines()[line - 1].index("AN:") + 1)
    assert str(trial.location).endswith(f"10.yaml:{line}:{RULES.splitlines()[line - 1].index('manager') + 1}")


def test_a_poll_rule_that_answered_once(rules: RuleSet) -> None:
    now = T0 + timedelta(seconds=30)
    call = call_after((ev(E.CallAccepted),), None, now)
    assert explain_rule(rule_named(rules, "once"), None, call, now).decision == Decision(
        Action.TransferPBX, "PBX4950001", "once"
    )
    call.decided(DecisionRecord(now, "poll", Action.TransferPBX, "PBX4950001", "once"))
    trial = explain_rule(rule_named(rules, "once"), None, call, now)
    assert (trial.decision, trial.reason) == (
        None,
        "already answered a poll of this call (repeat: true answers every poll)",
    )


def test_a_rejected_param_is_the_rules_decision_with_its_problem(rules: RuleSet) -> None:
    history = (ev(E.DTMF, dtmf="12"),)
    event = ev(E.GoToShortTransfer, dtmf="12")
    trial = explain_rule(rule_named(rules, "short-from-dtmf"), event, call_after(history, event, T0), T0)
    assert trial.decision is not None
    assert trial.decision.action is None
    assert trial.reason == "TransferEXT param '12' must be a 4-digit short number (1234)"


def test_explain_tries_the_events_rules_in_order_up_to_the_one_that_decides(rules: RuleSet) -> None:
    event = ev(E.CallAccepted, "2027-01-01T19:05:00+03:00")
    trials = explain(rules, event, call_after((), event, NOW), NOW)
    assert [trial.rule_id for trial in trials] == ["blocked", "manager", "after-hours"]
    assert [trial.decision for trial in trials] == [
        None,
        None,
        Decision(Action.PlayPrompt, "after_hours", "after-hours"),
    ]
    assert explain(rules, ev(E.EndCall), call_after((), ev(E.EndCall), NOW), NOW) == ()


@pytest.mark.parametrize(("rule_id", "history", "event", "reason"), CASES)
def test_explain_agrees_with_decide(
    rules: RuleSet, rule_id: str, history: tuple[CallEvent, ...], event: CallEvent | None, reason: str
) -> None:
    now = T0 + timedelta(seconds=135) if event is None else event.event_time or NOW
    decided = decide(rules, event, call_after(history, event, now), now)
    trials = explain(rules, event, call_after(history, event, now), now)
    if decided is NO_ACTION:
        assert all(trial.decision is None for trial in trials)
    else:
        assert trials[-1].decision == decided
        assert all(trial.decision is None for trial in trials[:-1])


def test_the_servers_rules_carry_no_checks(tmp_path: Path) -> None:
    (tmp_path / "10.yaml").write_text(RULES)
    plain = load_rules(tmp_path, "Europe/Moscow")
    assert all(rule.checks == () for rule in plain.rules)  # type: ignore[attr-defined]
    trial = explain_rule(rule_named(plain, "menu"), ev(E.DTMF, dtmf="2"), call_after((), ev(E.DTMF), T0), T0)
    assert trial.reason == "its conditions do not hold"


def test_overrides_replace_lists_and_maps(tmp_path: Path) -> None:
    (tmp_path / "10.yaml").write_text(RULES)
    event = ev(E.CallAccepted, an="79031112233")
    overrides = Overrides(lists={"blocked": ["7903*"]}, maps={"managers": {"79031112233": "1005"}})
    replaced = load_rules(tmp_path, "Europe/Moscow", overrides=overrides)
    assert decide(replaced, event, call_after((), event, T0), T0) == Decision(Action.Hangup, "", "blocked")
    maps_only = load_rules(tmp_path, "Europe/Moscow", overrides=Overrides(maps={"managers": {"79031112233": "1005"}}))
    assert decide(maps_only, event, call_after((), event, T0), T0) == Decision(Action.TransferEXT, "1005", "manager")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (Overrides(lists={"blokced": []}), "no list named 'blokced' to replace (the rules define: blocked)"),
        (Overrides(maps={"managers": {"7916": ""}}), "map 'managers': empty value for key '7916'"),
        (Overrides(maps={"vip": {}}), "no map named 'vip' to replace (the rules define: managers)"),
    ],
)
def test_bad_overrides_are_rules_errors(tmp_path: Path, overrides: Overrides, message: str) -> None:
    (tmp_path / "10.yaml").write_text(RULES)
    with pytest.raises(RulesError) as raised:
        load_rules(tmp_path, "Europe/Moscow", overrides=overrides)
    assert [problem.message for problem in raised.value.problems] == [message]
