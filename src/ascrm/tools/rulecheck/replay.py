"""Replaying a call through the server's own code: the in-memory call store, the answering sequence, a set clock."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

import orjson

from ascrm.core import engine
from ascrm.core.answering import answer_event, answer_poll
from ascrm.core.calls.memory import MemoryCallStore
from ascrm.core.calls.state import CallState
from ascrm.core.lookups.deciding import Used
from ascrm.core.lookups.request import Extract, LookupRequest
from ascrm.core.lookups.source import Outcome as LookedUp
from ascrm.core.lookups.source import SourceSettings
from ascrm.core.pools.keeper import MemoryPools
from ascrm.core.protocol import CallEvent, Decision, NoopAnswer, parse_call_event, render_answer
from ascrm.core.rules.explain import Trial, explain
from ascrm.tools.rulecheck.case import CALL_ID, Case
from ascrm.tools.timeline import Step


@dataclass(frozen=True, slots=True)
class Outcome:
    """One step replayed: when, what was sent (None: a poll), the decision and the answer as sent."""

    step: Step
    at: datetime
    request: dict[str, Any] | None
    decision: Decision
    answer: dict[str, Any]
    trials: tuple[Trial, ...] = ()
    lookups: tuple[Used, ...] = ()  # the sources the rules read, and their outcomes ("given", "not given")
    values: tuple[tuple[str, str | None], ...] = ()  # their values


class Given:
    """Look-ups answered with a case's `sources:` values (outcome "given"); a source the case does not
    set is missing, as a failed look-up is (outcome "not given")."""

    def __init__(self, values: Mapping[str, str | None]) -> None:
        self._values = values

    async def look_up(
        self, source: SourceSettings, request: LookupRequest, extract: Extract, *, deadline: float
    ) -> LookedUp:
        """The value the case gives (None: a failed look-up), or missing when it gives none."""
        if source.name not in self._values:
            return LookedUp(None, "not given", 0.0)
        return LookedUp(self._values[source.name], "given", 0.0)

    def cached(self, source: SourceSettings, request: LookupRequest) -> LookedUp | None:
        """None: a case's values are answered by look_up, with their own outcomes (given, not given)."""
        return None


def replay(case: Case, rules: engine.RuleSet, zone: tzinfo, *, explain: bool = False) -> list[Outcome]:
    """Each step of case, answered as `ascrm serve` answers it at the case's clock (explained on request)."""
    return asyncio.run(_replay(case, rules, zone, explain))


def replay_all(
    cases: Sequence[tuple[Case, engine.RuleSet]], zone: tzinfo, *, explain: bool = False
) -> list[list[Outcome]]:
    """replay() for several cases, in one event loop."""

    async def run_all() -> list[list[Outcome]]:
        return [await _replay(case, rules, zone, explain) for case, rules in cases]

    return asyncio.run(run_all())


async def _replay(case: Case, rules: engine.RuleSet, zone: tzinfo, explaining: bool) -> list[Outcome]:
    store = MemoryCallStore()  # each call alone, as the server holds it
    clock = case.at
    given = Given(case.sources)
    pools = MemoryPools(clock=lambda: clock.timestamp(), draw=lambda: 0.0)  # noqa: PLW0108 - the clock moves
    for name, members in case.resting.items():
        for member in members:
            pools.counters(rules.pools[name]).resting[member] = math.inf
    outcomes = []
    for step in case.steps:
        clock += step.after
        trials: list[Trial] = []
        decide = _explaining(trials) if explaining else engine.decide
        request = None
        if step.poll:
            answered = await answer_poll(store, rules, CALL_ID, clock, decide=decide, resolver=given, pools=pools)
        else:
            request = case.request(step, clock)
            event, _ = parse_call_event(request, zone)  # the server's reader; fields were checked when read
            answered = await answer_event(store, rules, event, clock, decide=decide, resolver=given, pools=pools)
        decision = answered.decision
        answer = orjson.loads(render_answer(CALL_ID, decision, NoopAnswer()))
        values = tuple((used.source, _value(case, used)) for used in answered.lookups)
        outcomes.append(Outcome(step, clock, request, decision, answer, tuple(trials), answered.lookups, values))
    return outcomes


def _value(case: Case, used: Used) -> str | None:
    """A look-up's value in a case: a source's as the case gives it, a pool's the member picked."""
    if used.source.startswith("pool.") and used.outcome.startswith("picked "):
        return used.outcome[len("picked ") :]
    return case.sources.get(used.source)


def _explaining(trials: list[Trial]) -> engine.Decider:
    """engine.decide that also keeps, in trials, why each rule tried answered or passed."""

    def decide(rules: engine.RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
        decision = engine.decide(rules, event, call, now)
        trials.extend(explain(rules, event, call, now))
        return decision

    return decide
