"""Deciding an answer: the first rule of the active rule set that matches decides.

`decide` is the one meaning of the word here: a function of the rule set, the event (None for a GET poll),
the call's state and the clock, doing no I/O. A rule only *evaluates*; a store only *records*.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ascrm.core.calls.state import CallState
from ascrm.core.protocol import NO_ACTION, CallEvent, Decision


class Rule(Protocol):
    """A compiled rule: decides for an event (None for a GET poll), or returns None to pass."""

    @property
    def id(self) -> str:
        """The rule's id, as written in its file."""
        ...

    def evaluate(self, event: CallEvent | None, call: CallState, now: datetime) -> Decision | None:
        """This rule's decision if it matches, else None."""
        ...


class RuleIndex(Protocol):
    """Narrows a rule set to the rules that may match an event, in rule order."""

    def candidates(self, event: CallEvent | None, call: CallState) -> Iterable[Rule]:
        """The rules to try."""
        ...


@dataclass(frozen=True, slots=True)
class RuleSet:
    """An immutable, ordered set of compiled rules; swapped whole on reload."""

    rules: Sequence[Rule] = ()
    revision: str = "empty"
    index: RuleIndex | None = None
    files: tuple[Path, ...] = ()  # the rule files
    data_files: tuple[Path, ...] = ()  # the list and map files they name
    warnings: tuple[Any, ...] = ()
    sources: Mapping[str, Any] = field(default_factory=dict)  # name -> rules.sources.CompiledSource
    sticky: bool = False  # its rules read the last operator (last_ext, last_dn)
    lists: tuple[str, ...] = ()  # the names of the lists the rule files define
    editable_lists: tuple[Any, ...] = ()  # the EditableLists of them the admin API may change
    calendars: Mapping[str, Any] = field(default_factory=dict)  # production calendar name -> its last day (a date)
    pools: Mapping[str, Any] = field(default_factory=dict)  # name -> rules.pools.Pool
    targets: Mapping[str, Any] = field(default_factory=dict)  # name -> notify.target.Target
    notify: tuple[Any, ...] = ()  # rules.notify.NotifyRule, in the files' order


def decide(ruleset: RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
    """The first matching rule's decision for event (None: a GET poll), or NO_ACTION."""
    candidates = ruleset.rules if ruleset.index is None else ruleset.index.candidates(event, call)
    for rule in candidates:
        decision = rule.evaluate(event, call, now)
        if decision is not None:
            return decision
    return NO_ACTION


Decider = Callable[[RuleSet, CallEvent | None, CallState, datetime], Decision]
"""The type of decide: what the answering step calls (the tools pass one that also explains)."""
