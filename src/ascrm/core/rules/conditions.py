"""Compiling a rule's `if:` into one predicate over (event, call, now), with precise errors."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ascrm.core.calls.state import CallState
from ascrm.core.protocol import (
    CRMDDATA_STRING_FIELDS,
    RESULT_BUSY,
    RESULT_CONNECTED,
    RESULT_NO_ANSWER,
    CallEvent,
    EventType,
    ServiceType,
    parse_code,
)
from ascrm.core.rules.editable import EditableList
from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.lists import NumberList, number_list
from ascrm.core.rules.regex import PatternError, compile_pattern
from ascrm.core.rules.schedule import Schedule, ScheduleError, parse_schedule
from ascrm.core.rules.sources import source_getter

Predicate = Callable[[CallEvent | None, CallState, datetime], bool]
Getter = Callable[[CallEvent | None, CallState], str | None]

STRING_FIELDS = (*CRMDDATA_STRING_FIELDS, "digits")  # what a condition or an action's {FIELD} reads as text
NUMBER_FIELDS = frozenset({"AN", "UN", "DN1", "DN2", "Generic"})  # the ones `normalize` applies to
TRANSFER_RESULTS = {"busy": RESULT_BUSY, "no_answer": RESULT_NO_ANSWER, "connected": RESULT_CONNECTED}
_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "gte": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "lte": operator.le,
    "eq": operator.eq,
    "ne": operator.ne,
}
CONDITIONS = (
    *STRING_FIELDS,
    "time",
    "service",
    "talk_seconds",
    "call_seconds",
    "last_transfer_result",
    "seen",
    "any",
    "all",
    "not",
)


class ConditionError(Exception):
    """A condition is wrong; path is relative to the `if:` mapping."""

    def __init__(self, path: tuple[Any, ...], message: str, *, about_key: bool = False) -> None:
        super().__init__(message)
        self.path, self.message, self.about_key = path, message, about_key


@dataclass(frozen=True)
class Definitions:
    """Named schedules, lists and maps a condition may refer to, and the file's settings."""

    schedules: Mapping[str, Schedule]
    lists: Mapping[str, NumberList | EditableList]  # an editable one's contents change at run time
    maps: Mapping[str, Mapping[str, str]]
    timezone: str
    normalize: Callable[[str], str] | None = None
    index_hint: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    sources: frozenset[str] = frozenset()  # the names of `sources:`, read like fields


def getter(name: str) -> Getter:
    """How to read a string field from an event (None on a poll), AN and UN also from the call."""
    if name == "digits":
        return lambda event, call: call.digits or None
    attribute = operator.attrgetter(name.lower())
    if name in ("AN", "UN"):
        return lambda event, call: (attribute(event) if event is not None else None) or attribute(call)
    return lambda event, call: attribute(event) if event is not None else None


def compile_conditions(spec: Mapping[str, Any], defs: Definitions, *, top: bool = True) -> Predicate:
    """All conditions of an `if:` mapping, as one predicate (all must hold)."""
    parts: list[Predicate] = []
    looked_up: list[Predicate] = []  # conditions on sources last: a source is asked once the rest holds
    for key, value in spec.items():
        if key not in CONDITIONS and key not in defs.sources:
            known = ", ".join((*CONDITIONS, *sorted(defs.sources)))
            raise ConditionError((key,), f"unknown condition {excerpt(key)} (known: {known})", about_key=True)
        try:
            predicate = _condition(key, value, defs, top=top)
        except ConditionError as exc:
            raise ConditionError((key, *exc.path), exc.message, about_key=exc.about_key) from None
        (looked_up if uses_sources({key: value}, defs.sources) else parts).append(predicate)
    return every(parts + looked_up)


def uses_sources(spec: Any, sources: frozenset[str]) -> bool:
    """Whether a condition mapping (or any mapping within it) reads a source."""
    if not sources:
        return False
    if isinstance(spec, dict):
        return any(key in sources or uses_sources(value, sources) for key, value in spec.items())
    if isinstance(spec, list):
        return any(uses_sources(item, sources) for item in spec)
    return False


def every(parts: Sequence[Predicate]) -> Predicate:
    """A predicate that holds when all parts hold, tried in order until one fails.

    Loops, not `all()` over a generator: a rule's conditions are asked on every event, and making the
    generator costs more than asking two or three conditions.
    """
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        return lambda event, call, now: bool(first(event, call, now) and second(event, call, now))
    kept = tuple(parts)

    def holds(event: CallEvent | None, call: CallState, now: datetime) -> bool:
        for part in kept:  # noqa: SIM110 - a loop: all() would need a generator
            if not part(event, call, now):
                return False
        return True

    return holds


def some(parts: Sequence[Predicate]) -> Predicate:
    """A predicate that holds when any of parts holds, tried in order until one does."""
    kept = tuple(parts)

    def holds(event: CallEvent | None, call: CallState, now: datetime) -> bool:
        for part in kept:  # noqa: SIM110 - a loop: any() would need a generator
            if part(event, call, now):
                return True
        return False

    return holds


def _condition(key: str, value: Any, defs: Definitions, *, top: bool) -> Predicate:
    if key in defs.sources:  # its value as looked up (no index: it is not in the event)
        looked_up = source_getter(key)
        matches, _ = string_matcher(value, defs, None)
        return lambda event, call, now: matches(looked_up(event, call))
    if key in STRING_FIELDS:
        read, normalize = getter(key), defs.normalize if key in NUMBER_FIELDS else None
        matches, exact = string_matcher(value, defs, normalize)
        if top and exact is not None:
            defs.index_hint.append((key, exact))
        if normalize is None:
            return lambda event, call, now: matches(read(event, call))
        return lambda event, call, now: matches(_normalized(read(event, call), normalize))
    if key == "time":
        return _time(value, defs)
    if key == "service":
        services = _codes(value, ServiceType, "service")
        return lambda event, call, now: _service(event, call) in services
    if key in ("talk_seconds", "call_seconds"):
        return _duration(key, value)
    if key == "last_transfer_result":
        results = frozenset(_transfer_result(item) for item in _as_list(value))
        return lambda event, call, now: bool(call.transfer_results) and call.transfer_results[-1] in results
    if key == "seen":
        wanted = _codes(value, EventType, "seen")
        return lambda event, call, now: wanted <= {record[0] for record in call.events}
    if key in ("any", "all"):
        if not isinstance(value, list) or not value or not all(isinstance(item, dict) for item in value):
            raise ConditionError((), f"'{key}' takes a list of condition mappings")
        parts = []
        for index, item in enumerate(value):
            try:
                parts.append(compile_conditions(item, defs, top=False))
            except ConditionError as exc:
                raise ConditionError((index, *exc.path), exc.message, about_key=exc.about_key) from None
        return some(parts) if key == "any" else every(parts)
    # not
    if not isinstance(value, dict) or not value:
        raise ConditionError((), "'not' takes a mapping of conditions")
    inner = compile_conditions(value, defs, top=False)
    return lambda event, call, now: not inner(event, call, now)


def _normalized(value: str | None, normalize: Callable[[str], str]) -> str | None:
    return None if value is None else normalize(value)


def string_matcher(
    spec: Any, defs: Definitions, normalize: Callable[[str], str] | None
) -> tuple[Callable[[str | None], bool], frozenset[str] | None]:
    """A matcher for one string field, and its exact values when it is a plain set (for the index)."""
    if (isinstance(spec, (str, int)) and not isinstance(spec, bool)) or isinstance(spec, list):
        entries = [_text(item) for item in (spec if isinstance(spec, list) else [spec])]
        try:
            numbers = number_list(entries, normalize)
        except ValueError as exc:
            raise ConditionError((), str(exc)) from None
        if not numbers.prefixes:  # a plain set: one hash look-up (None is never in it)
            exact = frozenset(numbers.exact)  # already one, for a list written in the rule
            return exact.__contains__, exact
        return (lambda value: value is not None and value in numbers), None
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConditionError((), "expected a value, a list, or one of {prefix: …}, {regex: …}, {in: …}, {not: …}")
    [(kind, argument)] = spec.items()
    if kind == "prefix":
        entries = [_text(item) for item in _as_list(argument)]
        for entry in entries:
            if "*" in entry or not entry.strip():
                raise ConditionError((kind,), f"prefix {excerpt(entry)}: write the digits a number starts with, no '*'")
        numbers = number_list([entry + "*" for entry in entries], normalize)
        return (lambda value: value is not None and value in numbers), None
    if kind == "regex":
        if not isinstance(argument, str):
            raise ConditionError((kind,), "a regex is a string")
        try:
            search = compile_pattern(argument).search
        except PatternError as exc:
            raise ConditionError((kind,), str(exc)) from None
        return (lambda value: value is not None and search(value)), None
    if kind == "in":
        name = argument
        if isinstance(name, str) and name in defs.lists:
            members = defs.lists[name]  # an editable list: read at each call, so edits count at once
            return (lambda value: value is not None and value in members), None
        if isinstance(name, str) and name in defs.maps:
            table = defs.maps[name]
            return (lambda value: value is not None and value in table), None
        raise ConditionError((kind,), f"no list or map named {excerpt(name)}")
    if kind == "not":
        inner, _ = string_matcher(argument, defs, normalize)
        return (lambda value: not inner(value)), None
    raise ConditionError((kind,), f"unknown matcher {excerpt(kind)} (use prefix, regex, in or not)", about_key=True)


def _text(item: Any) -> str:
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise ConditionError((), f"expected a number or text, not {excerpt(item)}")
    return str(item)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _time(value: Any, defs: Definitions) -> Predicate:
    negate = False
    if isinstance(value, dict) and set(value) == {"not"}:
        negate, value = True, value["not"]
    if isinstance(value, str):
        if value not in defs.schedules:
            raise ConditionError((), f"no schedule named {excerpt(value)}")
        schedule = defs.schedules[value]
    elif isinstance(value, dict):
        try:
            schedule = parse_schedule(value, defs.timezone)
        except ScheduleError as exc:
            raise ConditionError(schedule_path(value, exc.key), f"inline schedule: {exc}") from None
    else:
        raise ConditionError((), "'time' takes a schedule name, an inline schedule, or {not: …}")

    def open_now(event: CallEvent | None, call: CallState, now: datetime) -> bool:
        moment = event.event_time if event is not None and event.event_time is not None else now
        return schedule.contains(moment) is not negate

    return open_now


def schedule_path(spec: Mapping[str, Any], key: str) -> tuple[Any, ...]:
    """Where a ScheduleError's key ('mon-fri', 'except[1]', 'include[2027-02-20]') is in the spec."""
    name, _, inner = key.partition("[")
    if name not in spec:
        return ()
    inner = inner.rstrip("]")
    value = spec[name]
    if inner.isdigit() and isinstance(value, list):
        return (name, int(inner))
    if inner and isinstance(value, dict) and inner in value:
        return (name, inner)
    return (name,)


def _service(event: CallEvent | None, call: CallState) -> int | None:
    if event is not None and event.service_type is not None:
        return event.service_type
    return call.service_type


def _codes(value: Any, table: type[EventType] | type[ServiceType], key: str) -> frozenset[int]:
    codes = set()
    for item in _as_list(value):
        code = parse_code(item, table) if isinstance(item, (str, int)) else None
        if code is None:
            names = ", ".join(member.name for member in table)
            raise ConditionError((), f"{key}: unknown {table.__name__} {excerpt(item)} (known: {names}, or a number)")
        codes.add(int(code))
    return frozenset(codes)


def _transfer_result(item: Any) -> str:
    if isinstance(item, str) and item in TRANSFER_RESULTS:
        return TRANSFER_RESULTS[item]
    if (isinstance(item, int) and not isinstance(item, bool)) or (isinstance(item, str) and item.isdigit()):
        return str(item)
    names = ", ".join(TRANSFER_RESULTS)
    raise ConditionError((), f"last_transfer_result: {excerpt(item)} is not one of {names} or a result code")


def _duration(key: str, value: Any) -> Predicate:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"eq": value}
    if not isinstance(value, dict) or not value:
        raise ConditionError((), f"{key} takes a number or comparisons such as {{gt: 600}}")
    checks = []
    for name, limit in value.items():
        if name not in _COMPARISONS:
            message = f"unknown comparison {excerpt(name)} (gt, ge, lt, le, eq, ne)"
            raise ConditionError((name,), message, about_key=True)
        if isinstance(limit, bool) or not isinstance(limit, (int, float)):
            raise ConditionError((name,), f"{key}.{name} takes a number of seconds, not {excerpt(limit)}")
        checks.append((_COMPARISONS[name], float(limit)))
    since = "connected_at" if key == "talk_seconds" else "started_at"

    def holds(event: CallEvent | None, call: CallState, now: datetime) -> bool:
        start = getattr(call, since)
        if start is None:
            return False
        moment = event.event_time if event is not None and event.event_time is not None else now
        seconds = (moment - start).total_seconds()
        return all(compare(seconds, limit) for compare, limit in checks)

    return holds
