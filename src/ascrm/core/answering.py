"""Answering one platform request as the server does: the call's state updated, the rules asked, the answer recorded.

The server's endpoints and the rule tools (`ascrm test`, `ascrm simulate`) run calls through these
two functions, so both see the same call history, poll bookkeeping and param checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime

import structlog

from ascrm.core import engine
from ascrm.core.calls.state import CallState, DecisionRecord
from ascrm.core.calls.store import CallStore, StoreUnavailableError
from ascrm.core.protocol import CallEvent, Decision, code_name

log = structlog.get_logger("ascrm.api")

Decide = Callable[[engine.RuleSet, CallEvent | None, CallState, datetime], Decision]


async def answer_event(
    store: CallStore,
    rules: engine.RuleSet,
    event: CallEvent,
    now: datetime,
    decide: Decide | None = None,
    *,
    errors: MutableMapping[str, int] | None = None,
) -> tuple[CallState, Decision]:
    """Apply a call event to its call, decide, and remember an answer that carries an action.

    decide is engine.decide unless told (looked up per call, so it can be replaced). When the store
    does not answer, the call is decided from this event alone (call-state conditions then fail), a
    `store_unavailable` warning is logged and the failed operation is counted in errors.
    """
    try:
        call = await store.update(event, now)
        stored = True
    except StoreUnavailableError as exc:
        if errors is not None:
            errors["update"] += 1
        log.warning("store_unavailable", call_id=event.call_id, error=str(exc))
        call, stored = CallState.begin(event.call_id or 0, event, now), False
        call.apply(event, now)
    decision = (decide or engine.decide)(rules, event, call, now)
    if stored and decision.action is not None and event.call_id:
        trigger = code_name(event.event_type) or "unknown"
        record = DecisionRecord(now, trigger, decision.action, decision.param, decision.rule_id, None, rules.revision)
        try:
            await store.record(event.call_id, record)
        except StoreUnavailableError as exc:  # a store outage loses the record, never the answer
            if errors is not None:
                errors["record"] += 1
            log.warning("store_unavailable", call_id=event.call_id, error=str(exc), lost="decision record")
    return call, decision


def answer_poll(
    store: CallStore, rules: engine.RuleSet, call_id: int, now: datetime, decide: Decide | None = None
) -> Awaitable[tuple[CallState | None, Decision]]:
    """A GET poll: a pushed command first, else the poll rules; recorded in the same atomic change.

    decide is engine.decide unless told. An unknown call gets no action. Awaiting the result may raise
    StoreUnavailableError. (A plain function returning the store's coroutine: no coroutine frame of its
    own on the poll path.)
    """

    def decide_poll(call: CallState) -> Decision:
        return (decide or engine.decide)(rules, None, call, now)

    return store.answer_poll(call_id, now, decide_poll, rules.revision)
