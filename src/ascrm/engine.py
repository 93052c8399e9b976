"""Deciding an answer: the first rule of the active rule set that matches decides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ascrm.calls.state import CallState
from ascrm.protocol import NO_ACTION, CallEvent, Decision


class Rule(Protocol):
    """A compiled rule: decides for an event (None for a GET poll), or returns None to pass."""

    @property
    def id(self) -> str:
        """The rule's id, as written in its file."""
        ...

    def decide(self, event: CallEvent | None, call: CallState, now: datetime) -> Decision | None:
        """The decision if this rule matches, else None."""
        ...


@dataclass(frozen=True, slots=True)
class RuleSet:
    """An immutable, ordered set of compiled rules; swapped whole on reload."""

    rules: Sequence[Rule] = ()
    revision: str = "empty"


def decide(ruleset: RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
    """The first matching rule's decision for event (None: a GET poll), or NO_ACTION."""
    for rule in ruleset.rules:
        decision = rule.decide(event, call, now)
        if decision is not None:
            return decision
    return NO_ACTION
