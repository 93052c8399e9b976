"""`ascrm test`: rule tests beside the rules, each call replayed through the server's own code."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ascrm.core.engine import RuleSet
from ascrm.core.rules import RulesError, load_rules, rules_source
from ascrm.core.rules.compile import Overrides
from ascrm.core.rules.load import RULE_FILE_SUFFIXES, Location, Problem
from ascrm.core.rules.rule import POLL, CompiledRule
from ascrm.errors import ConfigError
from ascrm.tools.rulecheck.case import Case
from ascrm.tools.rulecheck.replay import Outcome, replay_all
from ascrm.tools.rulecheck.report import Places, answer_text, lookup_lines, moment, place, rule_places, trial_lines
from ascrm.tools.rulecheck.testfile import RuleTestError, RuleTestFile, read_test_file

TEST_FOLDER = "tests"  # where test files sit beside the rules


@dataclass
class _Tally:
    passed: int = 0
    failed: int = 0
    broken: int = 0  # test files (or paths) with errors
    rule_sets: dict[Any, RuleSet | RulesError] = field(default_factory=dict)


def run_tests(paths: Sequence[Path], run: str | None = None, *, verbose: bool = False) -> int:
    """Find, read and run the test files (run: a regex the case names must match); print each case, the summary.

    The exit status: 0 every case passed, 1 a case failed, 2 a test file or its rules have errors, or nothing ran.
    """
    try:
        pattern = re.compile(run) if run else None
    except re.error as exc:
        raise ConfigError("--run", f"not a regular expression: {exc}", run) from None
    tally = _Tally()
    default = Path("rules") if Path("rules").is_dir() else rules_source(None)  # shown relative when it can be
    files = find_test_files(paths or [default], tally)
    for path in files:
        _run_file(path, pattern, verbose, tally)
    print(f"{tally.passed} passed, {tally.failed} failed" + (f", {tally.broken} with errors" if tally.broken else ""))
    if tally.broken:
        return 2
    if tally.passed + tally.failed == 0:
        print(
            "ascrm: error: no test case ran" + (f" (none matches --run {run!r})" if run else ""),
            file=sys.stderr,
        )
        return 2
    return 1 if tally.failed else 0


def find_test_files(paths: Iterable[Path], tally: _Tally) -> list[Path]:
    """The test files named by paths: files as given, a folder's tests/*.yaml (or its own, if named tests)."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
            continue
        if not path.is_dir():
            _error(tally, f"{path}: no such file or folder")
            continue
        folder = path if path.resolve().name == TEST_FOLDER else path / TEST_FOLDER
        inside = sorted(
            entry
            for entry in (folder.iterdir() if folder.is_dir() else ())
            if entry.suffix in RULE_FILE_SUFFIXES and not entry.name.startswith(".") and entry.is_file()
        )
        if not inside:
            _error(tally, f"{path}: no test files (looked for {folder}/*.yaml and *.yml)")
        found += inside
    return list(dict.fromkeys(found))


def _error(tally: _Tally, message: str) -> None:
    tally.broken += 1
    sys.stdout.flush()  # the cases reported so far first
    print(f"ascrm: error: {message}", file=sys.stderr)


def _problems(tally: _Tally, problems: Sequence[Problem | str]) -> None:
    tally.broken += 1
    sys.stdout.flush()
    for problem in problems:
        print(problem, file=sys.stderr)


def _rules(tests: RuleTestFile, overrides: Overrides | None, tally: _Tally) -> RuleSet | RulesError:
    key = (tests.rules.resolve(), tests.timezone, _key(overrides))
    if key not in tally.rule_sets:
        try:
            tally.rule_sets[key] = load_rules(tests.rules, tests.timezone, explain=True, overrides=overrides)
        except RulesError as exc:
            tally.rule_sets[key] = exc
    return tally.rule_sets[key]


def _key(overrides: Overrides | None) -> Any:
    if overrides is None:
        return None
    lists = tuple(sorted((name, tuple(entries)) for name, entries in overrides.lists.items()))
    return lists, tuple(sorted((name, tuple(sorted(table.items()))) for name, table in overrides.maps.items()))


def _run_file(path: Path, pattern: re.Pattern[str] | None, verbose: bool, tally: _Tally) -> None:
    try:
        tests = read_test_file(path)
    except RuleTestError as exc:
        _problems(tally, exc.problems)
        return
    rules = _rules(tests, None, tally)
    if isinstance(rules, RulesError):
        count = len(rules.problems)
        pointer = f"{tests.rules_location}: error: rules: {count} problem(s) in the rules at {tests.rules}"
        _problems(tally, [*rules.problems, pointer])
        return
    places = rule_places(rules)
    problems = [
        Problem(
            step.expect.location or tests.rules_location,
            f"case {case.name!r}: no rule {step.expect.rule!r} in the rules at {tests.rules}",
        )
        for case in tests.cases
        for step in case.steps
        if step.expect is not None and step.expect.rule is not None and step.expect.rule not in places
    ]
    chosen: list[tuple[Case, RuleSet]] = []
    for case in tests.cases:
        if pattern is not None and not pattern.search(case.name):
            continue
        own = rules if case.overrides() is None else _rules(tests, case.overrides(), tally)
        if not isinstance(own, RulesError):
            problems += _unknown_resting(case, own, tests.rules_location)
        if isinstance(own, RulesError):
            problems += [
                Problem(case.location or tests.rules_location, f"case {case.name!r}: {p.message}") for p in own.problems
            ]
            continue
        chosen.append((case, own))
    if problems:
        _problems(tally, problems)
        return
    zone = ZoneInfo(tests.timezone)
    read: set[str] = set()  # the sources the rules read in these cases
    for (case, own), outcomes in zip(chosen, replay_all(chosen, zone, explain=True), strict=True):
        _report(case, own, outcomes, verbose, tally)
        read.update(used.source for outcome in outcomes for used in outcome.lookups if used.source in own.sources)
    given = {name for case, _ in chosen for name in case.sources}
    for name in sorted(read - given):
        print(f"{path}: warning: the rules read source {name}, which no case sets (sources: {{{name}: …}})")


def _unknown_resting(case: Case, rules: RuleSet, fallback: Location) -> list[Problem]:
    """A case's `resting:` naming a pool the rules do not define, or a member not in it."""
    problems = []
    for name, members in case.resting.items():
        pool = rules.pools.get(name)
        if pool is None:
            known = ", ".join(sorted(rules.pools)) or "none"
            message = f"case {case.name!r}: resting: no pool named {name!r} (defined: {known})"
            problems.append(Problem(case.location or fallback, message))
            continue
        for member in members:
            if not pool.has(member):
                message = f"case {case.name!r}: resting: {member!r} is not a member of pool {name!r}"
                problems.append(Problem(case.location or fallback, message))
    return problems


def _report(case: Case, rules: RuleSet, outcomes: list[Outcome], verbose: bool, tally: _Tally) -> None:
    places = rule_places(rules)
    failing = [o for o in outcomes if o.step.expect is not None and not o.step.expect.met_by(o.decision)]
    if failing:
        tally.failed += 1
    else:
        tally.passed += 1
    print(f"{'FAIL' if failing else 'PASS'} {place(case.location)} {case.name}")
    for number, outcome in enumerate(outcomes, 1):
        if outcome in failing:
            for line in _diff(number, outcome, rules, places):
                print(line)
        elif verbose:
            print(f"  step {number}: {_title(outcome)} -> {answer_text(outcome.decision, places)}")


def _title(outcome: Outcome) -> str:
    return f"{outcome.step.title()} at {moment(outcome.at)}"


def _diff(number: int, outcome: Outcome, rules: RuleSet, places: Places) -> list[str]:
    expect = outcome.step.expect
    lines = [
        f"  step {number}, {place(outcome.step.location)}: {_title(outcome)}",
        f"    expected: {expect}",
        f"    got:      {answer_text(outcome.decision, places)}",
    ]
    lines += lookup_lines(outcome, "    ")
    tried = [trial.rule_id for trial in outcome.trials]
    if outcome.trials:
        lines += ["    rules tried:", *trial_lines(outcome.trials, "      ")]
    else:
        lines.append(f"    no rule is for {outcome.step.title().split()[0]}")
    wanted = expect.rule if expect is not None else None
    if wanted is not None and wanted not in tried:
        rule = next((r for r in rules.rules if isinstance(r, CompiledRule) and r.id == wanted), None)
        key = POLL if outcome.step.poll else outcome.step.event
        if rule is not None and key not in rule.events:
            lines.append(f"    rule {wanted} ({place(rule.location)}) is not for {outcome.step.title().split()[0]}")
        elif rule is not None:
            lines.append(f"    rule {wanted} ({place(rule.location)}) was not tried: an earlier rule answered")
    return lines
