"""Answering one platform request: the call's state updated, the rules asked, the answer recorded.

The one place an answer is orchestrated (update state → decide → record). The server's endpoints and
the rule tools (`ascrm test`, `ascrm simulate`) run calls through these two functions, so both see the
same call history, poll bookkeeping, param checks and failure policy: a store that does not answer, a
call record the store cannot read, or a rule that raises, still gets the platform an answer (no action),
never an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

import structlog

from ascrm.core import engine
from ascrm.core.calls.state import CallState, DecisionRecord
from ascrm.core.calls.sticky import Sticky, caller_key, connected_to
from ascrm.core.calls.store import CallStore, StoreUnavailableError, UnreadableRecordError
from ascrm.core.lookups.deciding import Looking, Resolver, Used, rounds
from ascrm.core.lookups.looked_up import NeedsLookup
from ascrm.core.notify.message import Notification
from ascrm.core.notify.triggers import kinds_of, notifications
from ascrm.core.pools.keeper import PoolKeeper
from ascrm.core.pools.picking import Picker, note_transfer
from ascrm.core.protocol import NO_ACTION, CallEvent, Decision, code_name

log = structlog.get_logger("ascrm.api")

Notify = Callable[[Sequence[Notification]], Awaitable[None]]  # stores what an event's outcome makes
Errors = MutableMapping[str, int]  # store operations that failed, counted by name (update, record, poll)


class Answered(NamedTuple):
    """What answering one request produced: the decision, the call's state after it (None: an unknown
    call, or a failure), the revision of the rules that decided, and whether deciding failed.

    A named tuple rather than a frozen dataclass: made once per request, and a frozen dataclass's
    __init__ costs a call of object.__setattr__ per field."""

    decision: Decision
    call: CallState | None
    revision: str
    failed: bool = False  # deciding raised: answered with no action, logged `decision_failed`
    lookups: tuple[Used, ...] = ()  # the sources looked up on the way, and how each was found


async def answer_event(
    store: CallStore,
    rules: engine.RuleSet,
    event: CallEvent,
    now: datetime,
    *,
    decide: engine.Decider | None = None,
    errors: Errors | None = None,
    resolver: Resolver | None = None,
    budget: float = 0.5,
    sticky: Sticky | None = None,
    pools: PoolKeeper | None = None,
    notify: Notify | None = None,
) -> Answered:
    """Apply a call event to its call, decide, and remember an answer that carries an action (the record
    is queued in the store and written just after the answer leaves, in this process's order).

    Sources the rules read are looked up through resolver within budget seconds in all (past it, or
    without a resolver, their values are missing: lookups/deciding.py). sticky keeps the last operator
    of each caller (calls/sticky.py): told of a connected transfer, and read by the rules' last_ext and
    last_dn. pools keeps the pools' state (pools/keeper.py): a `{pool.NAME}` picks through it, and a
    transfer's result rests its member or counts it answered (without it, pools have no member).
    notify stores the notifications the rules' `notify:` make of this event (notify/triggers.py) before
    the answer is returned; a failure there is logged and changes nothing of the answer.

    decide is engine.decide unless told (looked up per call, so it can be replaced). When the store does
    not answer, the call is decided from this event alone (call-state conditions then fail), a
    `store_unavailable` warning is logged and the failed operation is counted in errors. A call whose
    stored record cannot be read is decided the same way (the store logged and counted it, and left it).
    """
    try:
        try:
            call, stored = await store.update(event, now), True
        except StoreUnavailableError as exc:
            _unavailable(errors, "update", event.call_id, exc)
            call, stored = _this_event_alone(event, now), False
        except UnreadableRecordError:  # the store logged and counted it, and left it
            call, stored = _this_event_alone(event, now), False
        if sticky is not None and stored:
            _remember_operator(sticky, event, call)
        if pools is not None and stored and rules.pools:
            note_transfer(rules.pools, pools, event, call)
        decider = decide or engine.decide
        used: tuple[Used, ...] = ()
        if rules.sources or rules.sticky or rules.pools:
            picker = Picker(rules.pools, pools, now) if rules.pools else None
            looking = Looking(rules.sources, resolver, budget, None if sticky is None else sticky.get, picker)
            decide_once = partial(decider, rules, event, call, now)
            answer = looking.ask(decide_once, event, call)  # a cached value is read on the spot: no await
            if isinstance(answer, NeedsLookup):
                answer = await looking.finish(answer, decide_once, event, call)
            decision, used = answer, tuple(looking.used)
        else:
            decision = decider(rules, event, call, now)
        if stored and decision.action is not None and event.call_id:
            trigger = code_name(event.event_type) or "unknown"
            record = DecisionRecord(
                now, trigger, decision.action, decision.param, decision.rule_id, None, rules.revision
            )
            written = store.record(event.call_id, record)  # not waited for: the answer goes out now
            written.add_done_callback(partial(_recorded, errors, event.call_id))
        if notify is not None and rules.notify and event.call_id:
            await _notify(notify, rules, event, call, now=now, stored=stored)
        return Answered(decision, call, rules.revision, lookups=used)
    except Exception:
        log.exception("decision_failed", call_id=event.call_id)
        return Answered(NO_ACTION, None, rules.revision, failed=True)


async def answer_poll(
    store: CallStore,
    rules: engine.RuleSet,
    call_id: int,
    now: datetime,
    *,
    decide: engine.Decider | None = None,
    errors: Errors | None = None,
    resolver: Resolver | None = None,
    budget: float = 0.5,
    sticky: Sticky | None = None,
    pools: PoolKeeper | None = None,
) -> Answered:
    """A GET poll: a pushed command first, else the poll rules; decided and recorded in one atomic change
    of the call (so two simultaneous polls deliver a command, or fire a once-only rule, once).

    A poll rule that reads a source: the store's poll answers no action, the source is looked up, and
    the store is polled again with its value (a command pushed meanwhile is then delivered first).

    An unknown call, a store that does not answer, or a call whose record the store cannot read (logged
    and counted by the store) gets no action.
    """
    try:
        decider = decide or engine.decide
        if not rules.sources and not rules.sticky and not rules.pools:
            call, decision = await store.answer_poll(call_id, now, rules, decider)
            return Answered(decision, call, rules.revision)
        picker = Picker(rules.pools, pools, now) if rules.pools else None
        looking = Looking(rules.sources, resolver, budget, None if sticky is None else sticky.get, picker)
        for _ in range(rounds(rules.sources, picker)):
            asking = _PollAsking(looking, decider)
            call, decision = await store.answer_poll(call_id, now, rules, asking.decide)
            if asking.needed is None:
                break
            await looking.find(asking.needed[0], None, asking.needed[1])
        return Answered(decision, call, rules.revision, lookups=tuple(looking.used))
    except StoreUnavailableError as exc:
        _unavailable(errors, "poll", call_id, exc)
        return Answered(NO_ACTION, None, rules.revision)
    except UnreadableRecordError:
        return Answered(NO_ACTION, None, rules.revision)
    except Exception:
        log.exception("decision_failed", call_id=call_id)
        return Answered(NO_ACTION, None, rules.revision, failed=True)


class _PollAsking:
    """The rules as the store's poll asks them: a source they need is noted (and no action answered),
    to be looked up before the store is polled again."""

    def __init__(self, looking: Looking, decide: engine.Decider) -> None:
        self._looking, self._decide = looking, decide
        self.needed: tuple[str, CallState] | None = None

    def decide(self, rules: engine.RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
        answer = self._looking.ask(partial(self._decide, rules, event, call, now), event, call)
        if isinstance(answer, Decision):
            return answer
        self.needed = (answer.name, call)
        return NO_ACTION


async def _notify(
    notify: Notify, rules: engine.RuleSet, event: CallEvent, call: CallState, *, now: datetime, stored: bool
) -> None:
    """Store the notifications this event makes; a call whose stored state is out of reach makes none
    (it would be told from this event alone: every call would look missed)."""
    try:
        if not stored:
            if kinds_of(event, call):
                log.warning("notify_skipped", call_id=event.call_id, reason="call state unavailable")
            return
        made = notifications(rules.notify, event, call, now, rules.revision)
        if made:
            await notify(made)
    except Exception:
        log.exception("notify_failed", call_id=event.call_id)


def _remember_operator(sticky: Sticky, event: CallEvent, call: CallState) -> None:
    """A transfer that connected the caller: its destination is the caller's last operator."""
    connected = connected_to(event, call)
    caller = caller_key(call.an)
    if connected is not None and caller is not None:
        sticky.put(connected[0], caller, connected[1])


def _this_event_alone(event: CallEvent, now: datetime) -> CallState:
    """The call as this event alone tells it: what is decided on when its stored state is out of reach."""
    call = CallState.begin(event.call_id or 0, event, now)
    call.apply(event, now)
    return call


def _recorded(errors: Errors | None, call_id: int, written: asyncio.Future[Any]) -> None:
    """A decision record has been written, or not: a store outage loses the record, never the answer."""
    if written.cancelled():
        return
    exc = written.exception()  # UnreadableRecordError: overwritten meanwhile; the store logged it
    if isinstance(exc, StoreUnavailableError):
        _unavailable(errors, "record", call_id, exc, lost="decision record")


def _unavailable(errors: Errors | None, operation: str, call_id: int | None, exc: Exception, **extra: str) -> None:
    if errors is not None:
        errors[operation] += 1
    log.warning("store_unavailable", call_id=call_id, error=str(exc), **extra)
