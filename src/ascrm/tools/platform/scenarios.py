"""Scripted calls: the scenario file format, the built-in mix, and one call's CRMDData bodies."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ascrm.core.protocol import CRMDDATA_STRING_FIELDS, EventType, ServiceType, code_name, parse_code
from ascrm.core.rules.load import Location, Problem, RulesError, key_location, locate, read_yaml
from ascrm.errors import AscrmError
from ascrm.tools.timeline import SCENARIO, Step, canonical, read_step

DEFAULT_SCENARIOS: Final = Path(__file__).with_name("default_scenarios.yaml")
_SCENARIO_KEYS: Final = frozenset({"name", "weight", "service", "steps"})
Fields = tuple[tuple[str, str], ...]


class ScenarioError(AscrmError):
    """A scenario file cannot be used; each problem says file:line:column."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


@dataclass(frozen=True, slots=True)
class Scenario:
    """A scripted call: the fields sent with every event, and the events in order."""

    name: str
    weight: float
    service: ServiceType | int
    fields: Fields
    steps: tuple[Step, ...]
    location: str

    def render(self, rng: random.Random) -> RenderedCall:
        """This scenario with every '#' replaced by a random digit (the same template, the same number)."""
        drawn: dict[str, str] = {}

        def fill(template: str) -> str:
            if "#" not in template:
                return template
            if template not in drawn:
                drawn[template] = "".join(str(rng.randrange(10)) if c == "#" else c for c in template)
            return drawn[template]

        common = {name: fill(value) for name, value in self.fields}
        steps = tuple(
            RenderedStep(
                _event(step), {**common, **{name: fill(str(value)) for name, value in step.fields.items()}}, step.pause
            )
            for step in self.steps
        )
        return RenderedCall(self, steps)


@dataclass(frozen=True, slots=True)
class RenderedStep:
    """A step with its numbers drawn: the event's string fields as they will be sent."""

    event: EventType | int
    fields: dict[str, str]
    pause: tuple[float, float]


@dataclass(frozen=True, slots=True)
class RenderedCall:
    """One call of a scenario, numbers drawn."""

    scenario: Scenario
    steps: tuple[RenderedStep, ...]


def load_scenarios(path: Path | None = None) -> tuple[Scenario, ...]:
    """The scenarios of a file (the built-in mix when path is None); ScenarioError says where it is wrong."""
    file = path or DEFAULT_SCENARIOS
    try:
        document = read_yaml(file)
    except RulesError as exc:
        raise ScenarioError(exc.problems) from None
    reader = _Reader(file, document)
    scenarios = reader.read()
    if reader.problems:
        raise ScenarioError(reader.problems)
    return scenarios


def pick(scenarios: tuple[Scenario, ...], name: str) -> Scenario:
    """The scenario called name; AscrmError naming the ones there are."""
    for scenario in scenarios:
        if scenario.name == name:
            return scenario
    names = ", ".join(s.name for s in scenarios)
    raise AscrmError(f"no scenario named {name!r} (there are: {names})")


class _Reader:
    """Reads a marked YAML document into scenarios, gathering every problem with its place."""

    def __init__(self, file: Path, document: Any) -> None:
        self.file = file
        self.document = document
        self.problems: list[Problem] = []

    def problem(self, path: tuple[Any, ...], message: str, *, at_key: bool = False) -> None:
        find = key_location if at_key else locate
        where = find(self.document, path, Location(self.file))
        self.problems.append(Problem(where, f"{_dotted(path)}: {message}" if path else message))

    def read(self) -> tuple[Scenario, ...]:
        document = self.document
        if not isinstance(document, dict) or not isinstance(document.get("scenarios"), list):
            self.problem((), "expected a mapping with a list under 'scenarios'")
            return ()
        for key in document:
            if key != "scenarios":
                self.problem((key,), f"unknown key {key!r}", at_key=True)
        scenarios = []
        names: set[str] = set()
        for index, raw in enumerate(document["scenarios"]):
            scenario = self.scenario(("scenarios", index), raw)
            if scenario is None:
                continue
            if scenario.name in names:
                self.problem(("scenarios", index, "name"), f"a second scenario named {scenario.name!r}")
            names.add(scenario.name)
            scenarios.append(scenario)
        if not scenarios and not self.problems:
            self.problem(("scenarios",), "no scenarios")
        return tuple(scenarios)

    def scenario(self, path: tuple[Any, ...], raw: Any) -> Scenario | None:
        if not isinstance(raw, dict):
            self.problem(path, "a scenario is a mapping with name and steps")
            return None
        before = len(self.problems)
        for key in raw:
            if key not in _SCENARIO_KEYS and canonical(key, CRMDDATA_STRING_FIELDS) not in CRMDDATA_STRING_FIELDS:
                message = f"unknown key {key!r} (scenario keys: name, weight, service, steps, {_F})"
                self.problem((*path, key), message, at_key=True)
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            self.problem((*path, "name") if "name" in raw else path, "needs a name (text)")
        weight = raw.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            self.problem((*path, "weight"), f"weight must be a positive number (got {weight!r})")
        service = parse_code(raw.get("service", "MTSSecretary"), ServiceType)
        if service is None:
            self.problem((*path, "service"), f"unknown service {raw.get('service')!r}")
        fields = self.fields(path, raw)
        steps = raw.get("steps")
        if not isinstance(steps, list) or not steps:
            self.problem((*path, "steps") if "steps" in raw else path, "needs a list of steps (events)")
            steps = []
        read = [self.step((*path, "steps", i), step) for i, step in enumerate(steps)]
        if len(self.problems) > before or service is None:
            return None
        where = str(locate(self.document, path, Location(self.file)))
        return Scenario(str(name), float(weight), service, fields, tuple(s for s in read if s is not None), where)

    def step(self, path: tuple[Any, ...], raw: Any) -> Step | None:
        def report(key: str | None, message: str, about_key: bool) -> None:
            self.problem(path if key is None else (*path, key), message, at_key=about_key)

        before = len(self.problems)
        step = read_step(raw, SCENARIO, report)
        if step is None:
            return None
        fields = self.fields(path, step.fields)
        return None if len(self.problems) > before else dataclasses.replace(step, fields=dict(fields))

    def fields(self, path: tuple[Any, ...], raw: Mapping[Any, Any]) -> Fields:
        given = {canonical(key, CRMDDATA_STRING_FIELDS): value for key, value in raw.items()}
        values = []
        for name in CRMDDATA_STRING_FIELDS:
            if name not in given:
                continue
            value = given[name]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                self.problem((*path, name), f"{name} must be text (got {value!r})")
                continue
            values.append((name, str(value)))
        return tuple(values)


_F: Final = ", ".join(CRMDDATA_STRING_FIELDS)


def _dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else str(step)
    return text


def _event(step: Step) -> EventType | int:
    """A scenario step's event (never a poll: the emulator polls connected calls by itself)."""
    assert not isinstance(step.event, str)
    return step.event


def describe(scenario: Scenario) -> str:
    """One line: the scenario's name and its events."""
    events = " ".join(code_name(_event(step)) or "?" for step in scenario.steps)
    return f"{scenario.name}: {events}"
