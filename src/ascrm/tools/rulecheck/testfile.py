"""Rule test files: YAML beside the rules (`rules/tests/*.yaml`), read into calls; every mistake at file:line."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ascrm.core.defaults import DEFAULT_TIMEZONE
from ascrm.core.protocol import Action, field_name, param_error, parse_call_event, parse_code
from ascrm.core.rules.lists import ListError, inline_map, number_list
from ascrm.core.rules.load import Location, MarkedList, MarkedMap, Problem, RulesError, key_location, locate, read_yaml
from ascrm.core.rules.schema import schema_errors
from ascrm.errors import AscrmError
from ascrm.tools.rulecheck.case import Case
from ascrm.tools.timeline import CASE_FIELDS, RULE_TEST, STEP_FIELDS, Expectation, Step, read_step

_NONE = ("none", "no action")
_ABSENT = object()
_STEP_TYPES = ["dict", "string", "integer"]  # a step is a mapping, or an event's name or code alone
_FIELD: dict[str, Any] = {"type": ["string", "integer"], "nullable": True}
STEP: dict[str, Any] = {
    "event": {"required": True, "type": ["string", "integer"]},
    "after": {"type": ["string", "integer", "float"]},
    "expect": {"nullable": True},
    **dict.fromkeys(STEP_FIELDS, _FIELD),
}
CASE: dict[str, Any] = {
    "name": {"required": True, "type": "string", "empty": False},
    "at": {"type": "string"},
    "lists": {"type": "dict", "valuesrules": {"type": "list", "schema": {"type": ["string", "integer"]}}},
    "maps": {"type": "dict", "valuesrules": {"type": "dict"}},
    "sources": {"type": "dict", "valuesrules": {"type": ["string", "integer"], "nullable": True}},
    "resting": {
        "type": "dict",
        "maxlength": 100,
        "valuesrules": {"type": "list", "maxlength": 100, "schema": {"type": ["string", "integer"]}},
    },
    "steps": {"required": True, "type": "list", "minlength": 1, "schema": {"type": _STEP_TYPES, "schema": STEP}},
    **dict.fromkeys(CASE_FIELDS, _FIELD),
}
FILE: dict[str, Any] = {
    "rules": {"type": "string", "empty": False},
    "timezone": {"type": "string", "empty": False},
    "at": {"type": "string"},
    "cases": {"required": True, "type": "list", "minlength": 1, "schema": {"type": "dict", "schema": CASE}},
}
_ITEMS = {("cases",): "case", ("cases", "*", "steps"): "step"}
_EXPECT = 'expect takes none, an action (Hangup, {TransferDN: "74951234567"}), {rule: ID} or {rule: ID, do: ACTION}'


class RuleTestError(AscrmError):
    """A rule test file cannot be used; carries every problem found, each with its file:line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


@dataclass(frozen=True, slots=True)
class RuleTestFile:
    """A test file read: the rules it tests (and where it says so), its time zone and its cases."""

    path: Path
    rules: Path
    rules_location: Location
    timezone: str
    cases: tuple[Case, ...]


def read_test_file(path: Path) -> RuleTestFile:
    """Read and check a rule test file; RuleTestError lists every problem with its place."""
    try:
        document = read_yaml(path)
    except RulesError as exc:
        raise RuleTestError(exc.problems) from None
    if not isinstance(document, MarkedMap):
        raise RuleTestError(
            [Problem(Location(path, 1, 1), "a rule test file is a mapping with `cases:` (and `rules:`)")]
        )
    problems = _canonical_fields(document)
    problems += [
        Problem(key_location(document, at, document.location) if key else locate(document, at, document.location), text)
        for at, text, key in schema_errors(document, FILE, _ITEMS)
    ]
    if problems:
        raise RuleTestError(problems)
    return _Reader(path, document).read()


def _canonical_fields(document: MarkedMap) -> list[Problem]:
    """Rename CRMDData field keys of cases and steps to the protocol's spelling (they match case-insensitively)."""
    problems: list[Problem] = []
    cases = document.get("cases")
    if not isinstance(cases, MarkedList):
        return problems
    for number, case in enumerate(cases):
        if isinstance(case, MarkedMap):
            cases[number] = _renamed(case, CASE_FIELDS, problems)
            steps = cases[number].get("steps")
            if isinstance(steps, MarkedList):
                for index, step in enumerate(steps):
                    if isinstance(step, MarkedMap):
                        steps[index] = _renamed(step, STEP_FIELDS, problems)
    return problems


def _renamed(mapping: MarkedMap, allowed: tuple[str, ...], problems: list[Problem]) -> MarkedMap:
    result = MarkedMap()
    result.location, result.key_locations, result.value_locations = mapping.location, {}, {}
    written: dict[Any, Any] = {}
    for key, value in mapping.items():
        name = field_name(key) if isinstance(key, str) else None
        new = name if name in allowed else key
        if new in result:
            message = f"{new} is given twice, as {written[new]!r} and {key!r} (field names match in any case)"
            problems.append(Problem(mapping.key_locations[key], message))
            continue
        written[new] = key
        result[new] = value
        result.key_locations[new], result.value_locations[new] = (
            mapping.key_locations[key],
            mapping.value_locations[key],
        )
    return result


class _Reader:
    """Turns a well-shaped test document into cases, collecting problems with their places."""

    def __init__(self, path: Path, document: MarkedMap) -> None:
        self.path, self.document = path, document
        self.problems: list[Problem] = []

    def where(self, at: tuple[Any, ...]) -> Location:
        return locate(self.document, at, Location(self.path, 1, 1))

    def problem(self, at: tuple[Any, ...], message: str) -> None:
        self.problems.append(Problem(self.where(at), message))

    def read(self) -> RuleTestFile:
        document = self.document
        timezone = document.get("timezone", DEFAULT_TIMEZONE)
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(("timezone",), f"unknown time zone {timezone!r} (an IANA name: Europe/Moscow)")
            zone = ZoneInfo(DEFAULT_TIMEZONE)
        rules = Path(os.path.normpath(self.path.parent / document.get("rules", "..")))
        start = self.time(("at",), document["at"], zone, "at") if "at" in document else None
        cases: list[Case] = []
        first_line: dict[str, int | None] = {}
        for number, raw in enumerate(document["cases"]):
            name = raw["name"]
            if name in first_line:
                message = f"case name {name!r} is used twice (first on line {first_line[name]})"
                self.problem(("cases", number, "name"), message)
            first_line.setdefault(name, self.where(("cases", number)).line)
            case = self.case(number, raw, zone, start)
            if case is not None:
                cases.append(case)
        if self.problems:
            raise RuleTestError(self.problems)
        return RuleTestFile(self.path, rules, self.where(("rules",)), timezone, tuple(cases))

    def case(self, number: int, raw: MarkedMap, zone: ZoneInfo, start: datetime | None) -> Case | None:
        at = ("cases", number)
        label = f"case {raw['name']!r}"
        moment = start
        if "at" in raw:
            moment = self.time((*at, "at"), raw["at"], zone, label)
        elif "at" not in self.document:
            message = (
                f"{label}: missing key 'at' (when the call starts: 2027-01-11T10:00:00+03:00), or `at:` for the file"
            )
            self.problem(at, message)
        fields = {"ServiceType": 1} | {key: raw[key] for key in CASE_FIELDS if key in raw}
        self.fields(at, fields, zone, label)
        lists: dict[str, tuple[str, ...]] = {}
        for name, entries in (raw.get("lists") or {}).items():
            try:
                number_list(entries)
                lists[name] = tuple(str(entry) for entry in entries)
            except ListError as exc:
                self.problem((*at, "lists", name), f"{label}: list {name!r}: {exc.message}")
        maps: dict[str, dict[str, str]] = {}
        for name, mapping in (raw.get("maps") or {}).items():
            try:
                maps[name] = inline_map(mapping)
            except ListError as exc:
                self.problem((*at, "maps", name), f"{label}: map {name!r}: {exc.message}")
        steps = [
            self.step((*at, "steps", index), step, zone, f"{label}: step {index + 1}")
            for index, step in enumerate(raw["steps"])
        ]
        if moment is None or None in steps:
            return None
        sources = {
            str(name): None if value is None else str(value) for name, value in (raw.get("sources") or {}).items()
        }
        kept = tuple(step for step in steps if step)
        resting = {
            str(pool): tuple(str(member) for member in members) for pool, members in (raw.get("resting") or {}).items()
        }
        return Case(raw["name"], moment, kept, fields, lists, maps, self.where(at), sources, resting)

    def time(self, at: tuple[Any, ...], text: str, zone: ZoneInfo, label: str) -> datetime | None:
        event, warnings = parse_call_event({"EventTime": text}, zone)  # read as the server reads EventTime
        if warnings or event.event_time is None:
            self.problem(at, f"{label}: {text!r} is not an ISO 8601 date and time (2027-01-11T10:00:00+03:00)")
            return None
        return event.event_time

    def fields(self, at: tuple[Any, ...], fields: dict[str, Any], zone: ZoneInfo, label: str) -> None:
        """Check fields as the server reads them; string fields become text, ServiceType its code."""
        for key, value in fields.items():
            if value is None or value == "":
                continue
            event, warnings = parse_call_event({key: value}, zone)
            if warnings:
                self.problem((*at, key), f"{label}: {key} {value!r}: {warnings[0].reason}")
            elif key == "ServiceType":
                fields[key] = int(event.service_type) if event.service_type is not None else None
            elif key != "EventTime":
                fields[key] = str(value)

    def step(self, at: tuple[Any, ...], raw: MarkedMap | str | int, zone: ZoneInfo, label: str) -> Step | None:
        """The step (None when it cannot be read); problems are collected, and refuse the file."""

        def report(key: str | None, message: str, about_key: bool) -> None:
            where = at if key is None else (*at, key)
            text = f"{label}: after: {message}" if key == "after" else f"{label}: {message}"
            if about_key:
                self.problems.append(Problem(key_location(self.document, where, self.where(at)), text))
            else:
                self.problem(where, text)

        step = read_step(raw, RULE_TEST, report)
        if step is None:
            return None
        fields = dict(step.fields)
        self.fields(at, fields, zone, label)
        given = raw.get("expect", _ABSENT) if isinstance(raw, MarkedMap) else _ABSENT  # a bare event: no expect
        expect = None if given is _ABSENT else self.expect((*at, "expect"), given, label)
        return dataclasses.replace(step, fields=fields, expect=expect, location=self.where(at))

    def expect(self, at: tuple[Any, ...], value: Any, label: str) -> Expectation | None:
        where = self.where(at)
        if isinstance(value, dict) and "rule" in value:
            extra = [key for key in value if key not in ("rule", "do")]
            if extra:
                self.problems.append(
                    Problem(key_location(self.document, (*at, extra[0]), where), f"{label}: {_EXPECT}")
                )
                return None
            rule = value["rule"]
            if not isinstance(rule, str) or not rule:
                self.problem((*at, "rule"), f"{label}: expect: rule takes a rule's id, not {rule!r}")
                return None
            if "do" not in value:
                return Expectation(None, rule, where)
            answer = self.answer((*at, "do"), value["do"], label)
            return None if answer is None else Expectation(answer, rule, where)
        answer = self.answer(at, value, label)
        return None if answer is None else Expectation(answer, None, where)

    def answer(self, at: tuple[Any, ...], value: Any, label: str) -> tuple[Action | None, str] | None:
        if isinstance(value, str) and value.strip().lower() in _NONE:
            return None, ""
        if isinstance(value, dict) and len(value) == 1:
            [(name, param)] = value.items()
        elif isinstance(value, (str, int)) and not isinstance(value, bool):
            name, param = value, ""
        else:
            self.problem(at, f"{label}: {_EXPECT}, not {value!r}")
            return None
        action = parse_code(name, Action) if isinstance(name, (str, int)) and not isinstance(name, bool) else None
        if not isinstance(action, Action):
            known = ", ".join(member.name for member in Action)
            self.problem(at, f"{label}: expect: unknown action {name!r} (known: {known}, or none)")
            return None
        param = "" if param is None else param
        if isinstance(param, bool) or not isinstance(param, (str, int)):
            self.problem(at, f"{label}: expect: {action.name}'s param is text, not {param!r}")
            return None
        param = str(param)
        problem = param_error(action, param)
        if problem is not None and param_error(action, param, outgoing_poll=True) is not None:
            if param == "" and problem == "needs a param":
                self.problem(at, f"{label}: expect: {action.name} needs a param: {{{action.name}: …}}")
            else:
                self.problem(at, f"{label}: expect: {action.name} param {param!r} {problem}")
            return None
        return action, param
