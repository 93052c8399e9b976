"""A call to replay: when it starts, the fields its events carry, and its steps with what each should answer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ascrm.core.protocol import CRMDDATA_STRING_FIELDS, Action, Decision, EventType, code_name, parse_code
from ascrm.core.rules.compile import Overrides
from ascrm.core.rules.load import Location

CALL_ID = 1  # every replayed call is alone in its own store
POLL = "poll"  # a step's event when it is a GET /CallEvent/{CallID}
CASE_FIELDS = (*CRMDDATA_STRING_FIELDS, "ServiceType")  # carried by every event of a call
STEP_FIELDS = (*CASE_FIELDS, "EventTime")  # carried by one event
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

Value = str | int | None


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
    """One event (or a poll) `after` the previous step, with the fields it carries beyond the call's."""

    event: EventType | int | str  # POLL for a poll
    after: timedelta = timedelta(0)
    fields: Mapping[str, Value] = field(default_factory=dict)
    expect: Expectation | None = None
    location: Location | None = None

    @property
    def poll(self) -> bool:
        """Whether this step is a GET poll."""
        return self.event == POLL

    def title(self) -> str:
        """The step in a few words: `DTMF DTMF=1`, `poll`."""
        name = POLL if self.poll else code_name(self.event) if isinstance(self.event, int) else str(self.event)
        shown = " ".join(f"{key}={'null' if value is None else value}" for key, value in self.fields.items())
        return f"{name} {shown}".rstrip()


@dataclass(frozen=True, slots=True)
class Case:
    """One call: its name, start, the fields every event carries, list and map replacements, and its steps."""

    name: str
    at: datetime
    steps: tuple[Step, ...]
    fields: Mapping[str, Value] = field(default_factory=lambda: {"ServiceType": 1})
    lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    location: Location | None = None

    def overrides(self) -> Overrides | None:
        """The lists and maps this call replaces in the rules, or None."""
        return Overrides(self.lists, self.maps) if self.lists or self.maps else None

    def request(self, step: Step, at: datetime) -> dict[str, Any]:
        """The CRMDData the platform would POST for step at the instant at."""
        code = int(step.event) if isinstance(step.event, int) else step.event
        data: dict[str, Any] = {"CallID": CALL_ID, "EventTime": at.isoformat(), "EventType": code}
        data.update(self.fields)
        data.update(step.fields)
        return data


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
    raise ValueError(f"{value!r} is not a pause: seconds (30), or 30s, 5m, 1h30m, 250ms")


def parse_event(value: Any) -> EventType | int | str:
    """An event name or code as the server reads EventType, or `poll`; ValueError lists the names."""
    if isinstance(value, str) and value.strip().lower() == POLL:
        return POLL
    code = parse_code(value, EventType) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if code is None or int(code) < 0:
        names = ", ".join(member.name for member in EventType)
        raise ValueError(f"unknown event {value!r} (known: {names}, poll, or a code)")
    return code
