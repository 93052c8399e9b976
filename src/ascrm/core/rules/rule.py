"""A compiled rule: its events, one predicate over the call, and the answer it gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ascrm.core.calls.state import CallState
from ascrm.core.protocol import (
    OUTGOING_POLL_ACTIONS,
    Action,
    CallEvent,
    Decision,
    ServiceType,
    not_allowed,
    param_error,
    poll_action_error,
)
from ascrm.core.rules.actions import Template
from ascrm.core.rules.conditions import Predicate
from ascrm.core.rules.load import Location

if TYPE_CHECKING:
    from ascrm.core.rules.explain import Check

POLL = "poll"  # the event key of GET /CallEvent/{CallID}


def event_key(event: CallEvent | None) -> int | str:
    """The key a rule's `events` are indexed by: the event's type code, POLL for a GET poll, -1 for none."""
    if event is None:
        return POLL
    return event.event_type if event.event_type is not None else -1


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """One rule, ready to decide: its events, one predicate, the action and its param template."""

    id: str
    order: int
    location: Location
    events: frozenset[int | str]
    condition: Predicate | None
    action: Action
    template: Template
    repeat: bool
    checks: tuple[Check, ...] = ()  # the `if:` conditions one by one, when compiled for explaining
    fixed: Decision | None = field(init=False)  # the decision of a literal param, built once

    def __post_init__(self) -> None:
        literal = self.template.literal
        fixed = None
        if literal is not None and param_error(self.action, literal) is None:
            fixed = Decision(self.action, literal, self.id)
        object.__setattr__(self, "fixed", fixed)

    def evaluate(self, event: CallEvent | None, call: CallState, now: datetime) -> Decision | None:
        """This rule's decision if it matches, else None (a missing template value: no match)."""
        if event is None and not self.repeat and self.id in call.fired_polls:
            return None
        if self.condition is not None and not self.condition(event, call, now):
            return None
        if event is None and self.action not in OUTGOING_POLL_ACTIONS:  # an outgoing call's poll may refuse it
            problem = poll_action_error(self.action, call.service_type)
            if problem is not None:
                return not_allowed(Decision(self.action, "", self.id), problem)
        if self.fixed is not None and (event is not None or call.service_type != ServiceType.MTSPBX):
            return self.fixed
        param = self.template.render(event, call)
        if param is None:
            return None
        outgoing_poll = event is None and call.service_type == ServiceType.MTSPBX
        if self.fixed is None or outgoing_poll:
            problem = param_error(self.action, param, outgoing_poll=outgoing_poll)
            if problem is not None:
                return Decision(None, "", self.id, problem=f"{self.action.name} param {param!r} {problem}")
        return Decision(self.action, param, self.id)
