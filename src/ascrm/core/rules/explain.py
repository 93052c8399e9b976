"""Why a rule answered or passed: each condition described in the admin's terms, with where it is written.

A separate path from deciding: a rule set compiled with `load_rules(..., explain=True)` carries, per
rule, its `if:` conditions one by one (each compiled by the same code as the rule's predicate), and
`explain()` asks them only when a tool wants to know why. `ascrm serve` never compiles them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ascrm.core.calls.state import CallState
from ascrm.core.engine import RuleSet
from ascrm.core.lookups.looked_up import source_getter
from ascrm.core.protocol import (
    RESULT_BUSY,
    RESULT_CONNECTED,
    RESULT_NO_ANSWER,
    CallEvent,
    Decision,
    EventType,
    ServiceType,
    code_name,
    parse_code,
)
from ascrm.core.rules.conditions import (
    NUMBER_FIELDS,
    STRING_FIELDS,
    Definitions,
    Predicate,
    compile_conditions,
    getter,
)
from ascrm.core.rules.load import Location
from ascrm.core.rules.rule import CompiledRule, event_key
from ascrm.core.rules.schedule import CLOSED, Day, Schedule, parse_schedule

Describe = Callable[[CallEvent | None, CallState, datetime], str]

_SYMBOLS = {"gt": ">", "ge": ">=", "gte": ">=", "lt": "<", "le": "<=", "lte": "<=", "eq": "=", "ne": "!="}
_RESULT_NAMES = {RESULT_CONNECTED: "connected", RESULT_NO_ANSWER: "no answer", RESULT_BUSY: "busy"}
_SHOWN_ENTRIES = 5


@dataclass(frozen=True, slots=True)
class Check:
    """One condition of a rule's `if:`: where it is written, whether it holds, and what it saw."""

    location: Location
    holds: Predicate
    describe: Describe


@dataclass(frozen=True, slots=True)
class Trial:
    """One rule tried for an event or poll: the decision it gave, or why it passed and where that is written."""

    rule_id: str
    location: Location
    decision: Decision | None
    reason: str | None = None
    where: Location | None = None


def build_checks(spec: Mapping[str, Any], defs: Definitions, where: Callable[[str], Location]) -> tuple[Check, ...]:
    """The conditions of an `if:` mapping (already compiled once without error), one Check each."""
    return tuple(Check(where(key), holds, says) for key, (holds, says) in _parts(spec, defs).items())


def _parts(spec: Mapping[str, Any], defs: Definitions) -> dict[str, tuple[Predicate, Describe]]:
    """Each condition of a mapping: its predicate (the rules' own compiler) and how it describes itself."""
    return {
        key: (compile_conditions({key: value}, defs, top=False), describer(key, value, defs))
        for key, value in spec.items()
    }


def explain(ruleset: RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> tuple[Trial, ...]:
    """Each rule for this event (None: a poll) in order, up to and including the one that decides."""
    key = event_key(event)
    trials = []
    for rule in ruleset.rules:
        if isinstance(rule, CompiledRule) and key in rule.events:
            trial = explain_rule(rule, event, call, now)
            trials.append(trial)
            if trial.decision is not None:
                break
    return tuple(trials)


def explain_rule(rule: CompiledRule, event: CallEvent | None, call: CallState, now: datetime) -> Trial:
    """The rule's own decision (the very code that answers), or the first reason it gives none."""
    decision = rule.evaluate(event, call, now)
    if decision is not None:
        return Trial(rule.id, rule.location, decision, decision.problem, rule.location if decision.problem else None)
    if event is None and not rule.repeat and rule.id in call.fired_polls:
        reason = "already answered a poll of this call (repeat: true answers every poll)"
        return Trial(rule.id, rule.location, None, reason, rule.location)
    for check in rule.checks:
        if not check.holds(event, call, now):
            return Trial(rule.id, rule.location, None, check.describe(event, call, now), check.location)
    if rule.condition is not None and not rule.checks:
        return Trial(rule.id, rule.location, None, "its conditions do not hold", rule.location)
    missing = rule.template.missing(event, call) or "no value"
    return Trial(rule.id, rule.location, None, f"{rule.action.name}'s param cannot be filled: {missing}", rule.location)


def describer(key: str, value: Any, defs: Definitions) -> Describe:
    """How one condition (`key: value`, valid) describes what it sees for an event."""
    if key in defs.sources:
        return _source(key, value, defs)
    if key in STRING_FIELDS:
        return _string(key, value, defs)
    if key == "time":
        return _time(value, defs)
    if key == "service":
        return _service(value)
    if key in ("talk_seconds", "call_seconds"):
        return _duration(key, value)
    if key == "last_transfer_result":
        return _transfer_result(value)
    if key == "seen":
        return _seen(value)
    if key in ("any", "all"):
        return _any_all(key, value, defs)
    return _not(value, defs)


def _q(text: Any) -> str:
    return json.dumps(str(text), ensure_ascii=False)


def _entries(items: list[Any]) -> str:
    shown = ", ".join(_q(item) for item in items[:_SHOWN_ENTRIES])
    return shown if len(items) <= _SHOWN_ENTRIES else f"{shown}, … ({len(items)} in all)"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _phrase(spec: Any, defs: Definitions, normalize: Callable[[str], str] | None) -> tuple[str, Callable[[str], str]]:
    """A string matcher in words, and what it says of a (normalised) value."""
    if isinstance(spec, list):
        return f"one of {_entries(spec)}", lambda value: f"got {_q(value)}"
    if not isinstance(spec, dict):
        return _q(spec), lambda value: f"got {_q(value)}"
    [(kind, argument)] = spec.items()
    if kind == "prefix":
        return f"starts with {' or '.join(_q(item) for item in _as_list(argument))}", lambda value: f"got {_q(value)}"
    if kind == "regex":
        return f"matches regex '{argument}'", lambda value: f"got {_q(value)}"
    if kind == "in" and argument in defs.lists:
        numbers = defs.lists[argument]
        return f"in list {argument}", lambda value: f"{_q(value)} {'in' if value in numbers else 'not in'} list"
    if kind == "in":
        table = defs.maps[argument]

        def in_map(value: str) -> str:
            found = table.get(value)
            return f"{_q(value)} not a key of the map" if found is None else f"{_q(value)} maps to {_q(found)}"

        return f"in map {argument}", in_map
    label, says = _phrase(argument, defs, normalize)
    return f"not {label}", says


def _string(key: str, spec: Any, defs: Definitions) -> Describe:
    read, normalize = getter(key), defs.normalize if key in NUMBER_FIELDS else None
    label, says = _phrase(spec, defs, normalize)

    def describe(event: CallEvent | None, call: CallState, now: datetime) -> str:
        raw = read(event, call)
        if raw is None:
            if key == "digits":
                return f"digits {label}: no DTMF dialled in this call yet"
            return f"{key} {label}: {'a poll carries' if event is None else 'the event carries'} no {key}"
        value = normalize(raw) if normalize is not None else raw
        said = says(value)
        if value != raw:
            said += f" (written {_q(raw)})"
        return f"{key} {label}: {said}"

    return describe


def _source(key: str, spec: Any, defs: Definitions) -> Describe:
    read = source_getter(key)
    label, says = _phrase(spec, defs, None)

    def describe(event: CallEvent | None, call: CallState, now: datetime) -> str:
        value = read(event, call)
        if value is None:
            return f"source {key} {label}: its look-up found nothing, failed or took too long"
        return f"source {key} {label}: {says(value)}"

    return describe


def _time(spec: Any, defs: Definitions) -> Describe:
    negate = isinstance(spec, dict) and set(spec) == {"not"}
    if negate:
        spec = spec["not"]
    schedule = defs.schedules[spec] if isinstance(spec, str) else parse_schedule(spec, defs.timezone)
    label = f"time {'not ' if negate else ''}{spec if isinstance(spec, str) else 'inline schedule'}"

    def describe(event: CallEvent | None, call: CallState, now: datetime) -> str:
        moment = event.event_time if event is not None and event.event_time is not None else now
        clock = ""
        if event is None or event.event_time is None:
            clock = " (a poll: server clock)" if event is None else " (no EventTime: server clock)"
        local = moment.astimezone(schedule.zone)
        state = "open" if schedule.contains(moment) else "closed"
        return f"{label}: {state} at {local:%a %Y-%m-%d %H:%M} {schedule.timezone}{clock} ({_day(schedule, local)})"

    return describe


def _day(schedule: Schedule, local: datetime) -> str:
    """The hours that apply on local's date: a holiday, special hours, or the weekday's."""
    today = local.date()
    special = schedule.dates.get(today)
    note = schedule.notes.get(today)
    if special is not None and note is not None:  # a date the production calendar changes
        return f"{note}; hours: {_hours(special)}"
    if special is not None:
        return f"holiday {today}" if special == CLOSED else f"special hours on {today}: {_hours(special)}"
    plain = f"{local:%a} hours: {_hours(schedule.week[today.weekday()])}"
    calendar = schedule.calendar
    if calendar is not None and today.year not in calendar.years:
        return f"{plain}; calendar {calendar.name} does not cover {today.year}: the plain week"
    return plain


def _hours(day: Day) -> str:
    if day == CLOSED:
        return "closed"
    text = ", ".join(f"{_clock(start)}-{_clock(end)}" for start, end in day.own)
    if day.spill:
        text += f", on to {_clock(day.spill[-1][1])} the next day"
    return text


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _service(spec: Any) -> Describe:
    names = [code_name(parse_code(item, ServiceType)) for item in _as_list(spec)]
    label = f"service {', '.join(str(name) for name in names)}"

    def describe(event: CallEvent | None, call: CallState, now: datetime) -> str:
        code = event.service_type if event is not None and event.service_type is not None else call.service_type
        return f"{label}: no ServiceType in this call" if code is None else f"{label}: got {code_name(code)}"

    return describe


def _duration(key: str, spec: Any) -> Describe:
    checks = spec if isinstance(spec, dict) else {"eq": spec}
    label = f"{key} " + " and ".join(f"{_SYMBOLS[name]} {limit}" for name, limit in checks.items())
    talk = key == "talk_seconds"

    def describe(event: CallEvent | None, call: CallState, now: datetime) -> str:
        start = call.connected_at if talk else call.started_at
        if start is None:
            return f"{label}: not connected to an operator yet"
        moment = event.event_time if event is not None and event.event_time is not None else now
        seconds = round((moment - start).total_seconds(), 3)
        shown = int(seconds) if seconds.is_integer() else seconds
        return f"{label}: {shown} s {'talked' if talk else 'since the call began'}"

    return describe


def _transfer_result(spec: Any) -> Describe:
    label = f"last_transfer_result {', '.join(str(item) for item in _as_list(spec))}"

    def describe(event: CallEvent | None, call: CallState, now: datetime) -> str:
        if not call.transfer_results:
            return f"{label}: no transfer result in this call yet"
        last = call.transfer_results[-1]
        name = _RESULT_NAMES.get(last)
        return f"{label}: the last was {last}" + (f" ({name})" if name else "")

    return describe


def _seen(spec: Any) -> Describe:
    wanted = [parse_code(item, EventType) for item in _as_list(spec)]
    label = f"seen {', '.join(str(code_name(code)) for code in wanted)}"

    def describe(event: CallEvent | None, call: CallState, now: datetime) -> str:
        happened = {record[0] for record in call.events}
        missing = [str(code_name(code)) for code in wanted if code not in happened]
        return f"{label}: not yet {', '.join(missing)}" if missing else f"{label}: all seen"

    return describe


def _mapping(spec: Mapping[str, Any], defs: Definitions) -> Describe:
    """A mapping of conditions (all must hold): the first that fails, in words ("" when all hold)."""
    parts = list(_parts(spec, defs).values())

    def describe(event: CallEvent | None, call: CallState, now: datetime) -> str:
        for holds, says in parts:
            if not holds(event, call, now):
                return says(event, call, now)
        return ""

    return describe


def _any_all(key: str, items: list[Mapping[str, Any]], defs: Definitions) -> Describe:
    parts = [(compile_conditions(item, defs, top=False), _mapping(item, defs)) for item in items]
    label = f"{key} of {len(items)}"

    def describe(event: CallEvent | None, call: CallState, now: datetime) -> str:
        failures = []
        for number, (holds, says) in enumerate(parts, 1):
            if holds(event, call, now):
                if key == "any":
                    return f"{label}: ({number}) holds"
                continue
            if key == "all":
                return f"{label}: ({number}) {says(event, call, now)}"
            failures.append(f"({number}) {says(event, call, now)}")
        return f"{label}: none holds: {'; '.join(failures)}" if key == "any" else f"{label}: all hold"

    return describe


def _not(spec: Mapping[str, Any], defs: Definitions) -> Describe:
    parts = list(_parts(spec, defs).values())

    def describe(event: CallEvent | None, call: CallState, now: datetime) -> str:
        for holds, says in parts:
            if not holds(event, call, now):
                return f"not: holds, since {says(event, call, now)}"
        return f"not: all it negates holds: {'; '.join(says(event, call, now) for _, says in parts)}"

    return describe
