"""A call's timeline, shared by the rule tools and the platform emulator: its steps and how YAML spells them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from ascrm.core.protocol import CRMDDATA_STRING_FIELDS, Action, Decision, EventType, code_name, field_name, parse_code
from ascrm.core.rules.load import Location

POLL: Final = "poll"  # a step's event when it is a GET /CallEvent/{CallID}
CASE_FIELDS: Final = (*CRMDDATA_STRING_FIELDS, "ServiceType")  # a rule test's fields, carried by every event
STEP_FIELDS: Final = (*CASE_FIELDS, "EventTime")  # the fields a rule test's step may carry
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PAUSE: Final = "seconds (30), or 30s, 5m, 1h30m, 250ms"

Value = str | int | None
# A problem: the step's key it is about (None: the step), the message, and whether it is about the key itself.
Report = Callable[[str | None, str, bool], None]


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a step should answer: an action and its param (action None: no action), the deciding rule, or both."""

    answer: tuple[Action | None, str] | None = None  # None: not checked
    rule: str | None = None  # None: not checked
    location: Location | None = None

    def met_by(self, decision: Decision) -> bool:
        """Whether decision answers as expected."""
        if self.answer is not None and (decision.action, decision.param if decision.action else "") != self.answer:
            return False
        return self.rule is None or decision.rule_id == self.rule

    def __str__(self) -> str:
        parts = []
        if self.answer is not None:
            action, param = self.answer
            parts.append("no action" if action is None else f"{action.name} {param}".rstrip())
        if self.rule is not None:
            parts.append(f"by rule {self.rule}" if parts else f"rule {self.rule}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Step:
    """One event (or a poll) `after` the previous step, with the fields it carries beyond the call's.

    upto, when set, makes the pause random, from after to upto (a scenario's `after: [min, max]`).
    """

    event: EventType | int | str  # POLL for a poll
    after: timedelta = timedelta(0)
    fields: Mapping[str, Value] = field(default_factory=dict)
    expect: Expectation | None = None
    location: Location | None = None
    upto: timedelta | None = None

    @property
    def poll(self) -> bool:
        """Whether this step is a GET poll."""
        return self.event == POLL

    @property
    def pause(self) -> tuple[float, float]:
        """The pause before the step, in seconds: (min, max), equal unless it is random."""
        low = self.after.total_seconds()
        return low, low if self.upto is None else self.upto.total_seconds()

    def title(self) -> str:
        """The step in a few words: `DTMF DTMF=1`, `poll`."""
        name = POLL if self.poll else code_name(self.event) if isinstance(self.event, int) else str(self.event)
        shown = " ".join(f"{key}={'null' if value is None else value}" for key, value in self.fields.items())
        return f"{name} {shown}".rstrip()


class UnknownEventError(ValueError):
    """An event name or code the protocol does not have."""

    def __init__(self, value: Any, polls: bool) -> None:
        self.value = value
        names = ", ".join(member.name for member in EventType)
        self.known = f"(known: {names}{', poll' if polls else ''}, or a code)"
        super().__init__(f"unknown event {value!r} {self.known}")


def parse_duration(value: Any) -> timedelta:
    """A pause: seconds as a number, or text such as `30s`, `5m`, `1h30m`, `250ms`; ValueError says why not."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.replace(" ", "")
        if text.replace(".", "", 1).isdigit():
            return timedelta(seconds=float(text))
        if text and "".join(match.group(0) for match in _DURATION.finditer(text)) == text:
            return timedelta(seconds=sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text)))
    raise ValueError(f"{value!r} is not a pause: {_PAUSE}")


def parse_pause(value: Any, *, ranges: bool) -> tuple[timedelta, timedelta | None]:
    """A pause as (after, upto): one duration, or (with ranges) [min, max] for a random one; ValueError says why."""
    if not ranges:
        return parse_duration(value), None
    wrong = ValueError(f"{value!r} is not a pause: {_PAUSE}, or [min, max] for a random one")
    pair = value if isinstance(value, list) else [value, value]
    if len(pair) != 2:
        raise wrong
    try:
        low, high = parse_duration(pair[0]), parse_duration(pair[1])
    except ValueError:
        raise wrong from None
    if not isinstance(value, list):
        return low, None
    if low > high:
        raise ValueError(f"[min, max] with min > max (got {value!r})")
    return low, high


def parse_event(value: Any, *, polls: bool = True) -> EventType | int | str:
    """An event name or code as the server reads EventType, or (with polls) `poll`; UnknownEventError if neither."""
    if polls and isinstance(value, str) and value.strip().lower() == POLL:
        return POLL
    code = parse_code(value, EventType) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if code is None or int(code) < 0:
        raise UnknownEventError(value, polls)
    return code


@dataclass(frozen=True, slots=True)
class StepFormat:
    """What a step may say in one kind of file: polls, `expect`, random pauses, and which fields."""

    fields: tuple[str, ...]
    polls: bool = False
    expect: bool = False
    ranges: bool = False
    name_events: bool = False  # an unknown event's message lists the known ones


# `ascrm test` and `ascrm simulate --file`
RULE_TEST: Final = StepFormat(STEP_FIELDS, polls=True, expect=True, name_events=True)
SCENARIO: Final = StepFormat(CRMDDATA_STRING_FIELDS, ranges=True)  # `ascrm probe --call`, `ascrm emulate`


def canonical(key: Any, allowed: tuple[str, ...]) -> Any:
    """A CRMDData field's key in the protocol's spelling when it is one of allowed (they match in any case)."""
    name = field_name(key) if isinstance(key, str) else None
    return name if name in allowed else key


def read_step(raw: Any, form: StepFormat, report: Report) -> Step | None:
    """The step a YAML value spells (an event name, or a mapping with `event`), or None after reporting why.

    Field names match in any case; their values are kept as given, for the caller to check (a rule test
    reads them as the server reads them), and so is `expect` (the step's expect is left None).
    """
    if isinstance(raw, (str, int)) and not isinstance(raw, bool):
        raw = {"event": raw}
    if not isinstance(raw, Mapping) or "event" not in raw:
        report(None, "a step is an event name, or a mapping with 'event' (and 'after', fields)", False)
        return None
    known = ("event", "after", *(("expect",) if form.expect else ()))
    failed = False
    for key in raw:
        if key not in known and canonical(key, form.fields) not in form.fields:
            report(key, f"unknown key {key!r} (step keys: {', '.join((*known, *form.fields))})", True)
            failed = True
    try:
        event = parse_event(raw["event"], polls=form.polls)
    except UnknownEventError as exc:
        report("event", str(exc) if form.name_events else f"unknown event {exc.value!r}", False)
        return None
    after, upto = timedelta(0), None
    try:
        after, upto = parse_pause(raw.get("after", 0), ranges=form.ranges)
    except ValueError as exc:
        report("after", str(exc), False)
        failed = True
    given = [key for key in raw if key not in known]
    fields = {canonical(key, form.fields): raw[key] for key in given}
    if fields and event == POLL:
        report(given[0], f"a poll carries no fields (it is a GET): {', '.join(fields)}", False)
        failed = True
    return None if failed else Step(event, after, fields, upto=upto)
