"""How the rule tools show a replayed call: its answers, the rules tried and why they passed; as text or JSON."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ascrm.core.engine import RuleSet
from ascrm.core.protocol import Decision, code_name
from ascrm.core.rules.explain import Trial
from ascrm.core.rules.load import Location
from ascrm.core.rules.rule import CompiledRule
from ascrm.tools.rulecheck.replay import Outcome

Places = Mapping[str, Location]  # where each rule is written, by id


def rule_places(rules: RuleSet) -> dict[str, Location]:
    """Where each compiled rule of a set is written, by id."""
    return {rule.id: rule.location for rule in rules.rules if isinstance(rule, CompiledRule)}


def place(location: Location | None) -> str:
    """`file:line` (or the file alone) of a location."""
    if location is None:
        return "?"
    return str(location.file) if location.line is None else f"{location.file}:{location.line}"


def moment(at: datetime) -> str:
    """A replayed instant as shown: `2027-01-11 10:00:05+03:00`."""
    return at.isoformat(sep=" ")


def answer_text(decision: Decision, places: Places) -> str:
    """An answer in words: `TransferDN 74951112233 (menu-sales, rules/10-inbound.yaml:36)`, or `no action`."""
    rule = decision.rule_id
    if decision.action is None:
        if rule is None:
            return "no action"
        return f"no action: rule {rule} ({place(places.get(rule))}) matched, but {decision.problem}"
    answer = f"{decision.action.name} {decision.param}".rstrip()
    if decision.command_id is not None:
        return f"{answer} (command {decision.command_id})"
    return f"{answer} ({rule}, {place(places.get(rule or ''))})"


def trial_lines(trials: tuple[Trial, ...], indent: str) -> list[str]:
    """One aligned line per rule tried: where it is, then `answers` or the first reason it passed."""
    width = max((len(trial.rule_id) for trial in trials), default=0)
    spots = [place(trial.location) for trial in trials]
    spot_width = max((len(spot) for spot in spots), default=0)
    lines = []
    for trial, spot in zip(trials, spots, strict=True):
        if trial.decision is not None and trial.reason is None:
            why = "answers"
        elif trial.decision is not None:
            why = f"matches, but its answer is not sent: {trial.reason}"
        elif trial.where is None or trial.where == trial.location:
            why = str(trial.reason)
        else:
            same_file = trial.where.file == trial.location.file
            why = f"{f'line {trial.where.line}' if same_file else place(trial.where)}: {trial.reason}"
        lines.append(f"{indent}{trial.rule_id:<{width}}  {spot:<{spot_width}}  {why}")
    return lines


def location_json(location: Location | None) -> dict[str, Any] | None:
    """A location as JSON: file, line, column."""
    if location is None:
        return None
    return {"file": str(location.file), "line": location.line, "column": location.column}


def outcome_json(outcome: Outcome, places: Places, *, explained: bool) -> dict[str, Any]:
    """One replayed step as JSON: the request sent, the answer as sent, the deciding rule, and why (explained)."""
    decision = outcome.decision
    step = outcome.step
    data: dict[str, Any] = {
        "at": outcome.at.isoformat(),
        "event": "poll" if step.poll else code_name(step.event) if isinstance(step.event, int) else str(step.event),
        "request": outcome.request,
        "answer": outcome.answer,
        "action": code_name(decision.action),
        "param": decision.param,
        "rule": decision.rule_id,
        "rule_location": location_json(places.get(decision.rule_id or "")),
        "problem": decision.problem,
    }
    if outcome.lookups:
        data["lookups"] = [
            {"source": used.source, "outcome": used.outcome, "value": value}
            for used, (_, value) in zip(outcome.lookups, outcome.values, strict=True)
        ]
    if explained:
        data["explain"] = [
            {
                "rule": trial.rule_id,
                "location": location_json(trial.location),
                "answers": trial.decision is not None and trial.decision.action is not None,
                "reason": trial.reason,
                "reason_location": location_json(trial.where),
            }
            for trial in outcome.trials
        ]
    return data


def lookup_lines(outcome: Outcome, indent: str) -> list[str]:
    """The look-ups an answer used: each source, its value and how it was found (given, not given)."""
    lines = []
    for used, (_, value) in zip(outcome.lookups, outcome.values, strict=True):
        if used.source.startswith("pool."):  # a pick: its outcome says which member, or why none
            lines.append(f"{indent}pool {used.source[5:]}: {used.outcome}")
            continue
        shown = "missing" if value is None or used.outcome == "not given" else repr(value)
        lines.append(f"{indent}source {used.source}: {shown} ({used.outcome})")
    return lines
