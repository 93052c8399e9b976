"""What every call store offers (in memory, in Redis), and its errors."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Protocol

from ascrm.core.calls.state import CallState, Command, DecisionRecord
from ascrm.core.calls.sticky import Sticky, StickySettings
from ascrm.core.engine import Decider, RuleSet
from ascrm.core.protocol import Action, CallEvent, Decision, not_allowed, poll_action_error
from ascrm.errors import AscrmError


class StoreError(AscrmError):
    """Base of the call stores' errors."""


class StoreUnavailableError(StoreError):
    """The store did not answer within its budget (down, refusing, or hung)."""


class UnknownCallError(StoreError):
    """No live (or recently ended) call has this CallID."""


class CallEndedError(StoreError):
    """The call has ended: it takes no more commands."""


class UnreadableRecordError(StoreError):
    """A stored call record this version cannot read (see codec.py); names its key and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        where = f"the call record at {key}" if key else "the call record"
        super().__init__(f"{where} cannot be read: {reason}")


class CallStore(Protocol):
    """Call state keyed by CallID; each method is atomic for its call.

    A method raises StoreUnavailableError when the store does not answer, and UnreadableRecordError
    (logged and counted in `unreadable` by the store) when the call's stored record cannot be read.
    """

    evicted: int  # calls this process dropped because of the cap
    unreadable: int  # stored records this process found and could not read (UnreadableRecordError)

    async def update(self, event: CallEvent, now: datetime) -> CallState:
        """Apply a platform event to its call (a new call for an unknown CallID); the new state."""
        ...

    async def answer_poll(
        self, call_id: int, now: datetime, rules: RuleSet, decide: Decider
    ) -> tuple[CallState | None, Decision]:
        """A GET poll, answered in one atomic step (see settle_poll); (None, no action) for an unknown call."""
        ...

    def record(self, call_id: int, record: DecisionRecord) -> asyncio.Future[Any]:
        """Remember an answer that carried an action, without making the answer wait: queued in this
        process's order (before anything it asks the store later); the future settles when the record is
        stored, or fails with a StoreError."""
        ...

    async def get(self, call_id: int) -> CallState | None:
        """A call's state, or None."""
        ...

    async def calls(
        self,
        *,
        an: str | None = None,
        un: str | None = None,
        state: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[CallState], int]:
        """Calls matching the filters, most recently updated first, and how many match in all."""
        ...

    async def push(self, call_id: int, action: Action, param: str, now: datetime) -> tuple[Command, int]:
        """Queue a command for a live call; it and its 1-based queue position (UnknownCallError, CallEndedError)."""
        ...

    async def cancel(self, call_id: int, command_id: int) -> bool:
        """Drop a pending command; whether it was still pending (UnknownCallError)."""
        ...

    async def sweep(self, now: datetime) -> None:
        """Forget calls idle past the TTL or ended past the grace period, and evict beyond the cap."""
        ...

    async def counts(self) -> tuple[int, int]:
        """How many calls the store holds, and how many of those have ended (metrics)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers."""
        ...

    def sticky(self, settings: StickySettings) -> Sticky:
        """Where this store keeps the last operators (calls/sticky.py)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def settle_poll(call: CallState, now: datetime, rules: RuleSet, decide: Decider) -> Decision:
    """Answer a poll of call (already marked polled): its oldest pending command, taken, else the rules;
    an answer with an action is recorded in the call (a poll rule that fired is then not fired again).
    Stores run this inside one atomic change of the call, so two simultaneous polls fire a rule once."""
    command = call.take_command()
    # a command pushed through the admin API goes first, once; else the rules
    decision = (
        decide(rules, None, call, now)
        if command is None
        else Decision(command.action, command.param, command_id=command.id)
    )
    if command is not None:
        problem = poll_action_error(command.action, call.service_type)
        if problem is not None:  # pushed before the call was known to be outgoing: taken, not sent
            decision = not_allowed(decision, problem)
    if decision.action is not None:
        action, param, rule, pushed = decision.action, decision.param, decision.rule_id, decision.command_id
        call.decided(DecisionRecord(now, "poll", action, param, rule, pushed, rules.revision))
    return decision
