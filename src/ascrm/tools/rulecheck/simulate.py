"""`ascrm simulate`: one call replayed against the rules, its timeline printed with each answer (and why)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ascrm.core.defaults import DEFAULT_TIMEZONE
from ascrm.core.engine import RuleSet
from ascrm.core.protocol import CRMDDATA_STRING_FIELDS, EventType, ServiceType, code_name, parse_call_event, parse_code
from ascrm.core.rules import RulesError, load_rules, rules_source
from ascrm.errors import ConfigError
from ascrm.tools.rulecheck.case import CALL_ID, Case
from ascrm.tools.rulecheck.replay import Outcome, replay
from ascrm.tools.rulecheck.report import answer_text, lookup_lines, moment, outcome_json, rule_places, trial_lines
from ascrm.tools.rulecheck.testfile import RuleTestError, read_test_file
from ascrm.tools.timeline import CASE_FIELDS, POLL, Step, parse_duration, parse_event

# The field a bare value sets, per event: `DTMF:1`, `Transfer:1289`, `GoToTransfer:74951234567`.
MAIN_FIELD: dict[int, str] = {
    EventType.DTMF: "DTMF",
    EventType.GoToTransfer: "DN1",
    EventType.Transfer: "Result",
    EventType.GoToShortTransfer: "EXT1",
    EventType.ShortTransfer: "Result",
    EventType.OperatorTransfer: "EXT2",
    EventType.EndCall: "Result",
}


def run(args: argparse.Namespace) -> int:
    """Build the call, load the rules, replay, print; 2 when the rules or the call cannot be read."""
    case, source, timezone = _call(args)
    try:
        rules = load_rules(source, timezone, explain=args.explain, overrides=case.overrides())
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"ascrm: error: {len(exc.problems)} problem(s) in the rules at {source}", file=sys.stderr)
        return 2
    outcomes = replay(case, rules, ZoneInfo(timezone), explain=args.explain)
    if args.format == "json":
        print(json.dumps(_json(case, source, rules, outcomes, args.explain), indent=2, ensure_ascii=False))
    else:
        _print(case, source, rules, outcomes, args.explain)
    return 0


def _call(args: argparse.Namespace) -> tuple[Case, Path, str]:
    """The call to replay, the rules to replay it against and the time zone, from the flags (or --file)."""
    if args.file is None:
        if args.case is not None:
            raise ConfigError("--case", "picks a case of --file; give --file too", args.case)
        if not args.events:
            raise ConfigError("--events", "required (or --file): the call's events, e.g. CallAccepted,DTMF:1")
        timezone = _zone(args.timezone or DEFAULT_TIMEZONE)
        start = _start(args.at, timezone) or datetime.now(ZoneInfo(timezone)).replace(microsecond=0)
        case = Case("command line", start, parse_events(args.events))
        source = rules_source(args.rules)
    else:
        if args.events:
            raise ConfigError("--events", "give the call's events or --file, not both", args.events)
        try:
            tests = read_test_file(args.file)
        except RuleTestError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            raise ConfigError("--file", f"{len(exc.problems)} problem(s) in the test file", str(args.file)) from None
        timezone = _zone(args.timezone or tests.timezone)
        case = _pick(tests.cases, args.case)
        case = dataclasses.replace(case, at=_start(args.at, timezone) or case.at)
        source = args.rules or tests.rules
    fields = dict(case.fields)
    for key, given in (("AN", args.an), ("UN", args.un)):
        if given is not None:
            fields[key] = given
    if args.service is not None:
        code = parse_code(args.service, ServiceType)
        if code is None:
            names = ", ".join(member.name for member in ServiceType)
            raise ConfigError("--service", f"not a ServiceType (known: {names}, or a code)", args.service)
        fields["ServiceType"] = int(code)
    sources = dict(case.sources)
    for given in args.source or ():
        name, equals, value = given.partition("=")
        if not equals or not name:
            raise ConfigError("--source", "takes NAME=VALUE (NAME= for a failed look-up)", given)
        sources[name] = value or None
    return dataclasses.replace(case, fields=fields, sources=sources), source, timezone


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("--timezone", "unknown time zone (an IANA name: Europe/Moscow)", name) from None
    return name


def _start(text: str | None, timezone: str) -> datetime | None:
    if text is None:
        return None
    event, warnings = parse_call_event({"EventTime": text}, ZoneInfo(timezone))  # read as EventTime is
    if warnings or event.event_time is None:
        raise ConfigError("--at", "not an ISO 8601 date and time (2027-01-01T19:05:00+03:00)", text)
    return event.event_time


def _pick(cases: tuple[Case, ...], name: str | None) -> Case:
    names = ", ".join(repr(case.name) for case in cases)
    if name is None:
        if len(cases) == 1:
            return cases[0]
        raise ConfigError("--case", f"the file has {len(cases)} cases; name one: {names}")
    for case in cases:
        if case.name == name:
            return case
    raise ConfigError("--case", f"no such case in the file (it has: {names})", name)


def parse_events(text: str) -> tuple[Step, ...]:
    """Steps from `CallAccepted,+5s,DTMF:1,Transfer:Result=1289,poll`; ConfigError names the bad token."""
    steps: list[Step] = []
    pause = timedelta(0)
    for token in (part.strip() for part in text.split(",")):
        try:
            if token.startswith("+"):
                pause += parse_duration(token[1:])
                continue
            name, *values = token.split(":")
            event = parse_event(name)
            fields = dict(_field(event, value) for value in values)
        except ValueError as exc:
            raise ConfigError("--events", f"{token!r}: {exc}") from None
        steps.append(Step(event, pause, fields))
        pause = timedelta(0)
    if pause:
        raise ConfigError("--events", "a pause at the end moves the clock on before nothing", text)
    return tuple(steps)


def _field(event: EventType | int | str, value: str) -> tuple[str, str]:
    key, sep, given = value.partition("=")
    if not sep:
        main = MAIN_FIELD.get(event) if isinstance(event, int) else None
        if main is None:
            name = code_name(event) if isinstance(event, int) else event
            raise ValueError(f"{name} has no main field: write FIELD=VALUE")
        return main, value
    if event == POLL:
        raise ValueError("a poll carries no fields (it is a GET)")
    canonical = next((name for name in CRMDDATA_STRING_FIELDS if name.lower() == key.lower()), None)
    if canonical is None:
        raise ValueError(f"unknown field {key!r} (an event takes {', '.join(CRMDDATA_STRING_FIELDS)})")
    return canonical, given


def _call_fields(case: Case) -> str:
    shown = []
    for key in sorted(case.fields, key=CASE_FIELDS.index):
        value = case.fields[key]
        text = code_name(parse_code(value, ServiceType)) if key == "ServiceType" and isinstance(value, int) else value
        shown.append(f"{key}={'null' if text is None else text}")
    return " ".join(shown)


def _print(case: Case, source: Path, rules: RuleSet, outcomes: list[Outcome], explained: bool) -> None:
    places = rule_places(rules)
    print(f"rules: {source} ({len(rules.rules)} rules, revision {rules.revision})")
    print(f"call {CALL_ID}: {_call_fields(case)}, from {moment(case.at)}")
    titles = [outcome.step.title() for outcome in outcomes]
    width = max((len(title) for title in titles), default=0)
    for outcome, title in zip(outcomes, titles, strict=True):
        print(f"{moment(outcome.at)}  {title:<{width}}  -> {answer_text(outcome.decision, places)}")
        for line in lookup_lines(outcome, "    "):
            print(line)
        if explained:
            lines = trial_lines(outcome.trials, "    ")
            print("\n".join(lines) if lines else f"    no rule is for {title.split()[0]}")


def _json(case: Case, source: Path, rules: RuleSet, outcomes: list[Outcome], explained: bool) -> dict[str, Any]:
    places = rule_places(rules)
    return {
        "rules": {"source": str(source), "revision": rules.revision, "files": [str(path) for path in rules.files]},
        "call": {"name": case.name, "call_id": CALL_ID, "at": case.at.isoformat(), "fields": dict(case.fields)},
        "steps": [outcome_json(outcome, places, explained=explained) for outcome in outcomes],
    }
