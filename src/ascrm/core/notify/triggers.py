"""Which notifications an event makes: the outcomes it brings about, the `notify:` entries for them.

An event brings about its own name (EndCall, DTMF, …) and:
- `connected`: a transfer's result 1280 (Transfer, ShortTransfer): the caller talks to an operator;
- `ended`: EndCall;
- `missed`: EndCall of a call that never had a transfer result 1280 (nobody answered, including a
  caller who hung up before an answer, `Result` 1 or 3).
Each (call, kind, entry) makes one notification at most: its key is stored once by the outbox.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from ascrm.core.calls.state import CallState
from ascrm.core.notify.message import Notification
from ascrm.core.notify.summary import idempotency_key, summarize
from ascrm.core.protocol import CRMDDATA_STRING_FIELDS, RESULT_CONNECTED, CallEvent, EventType

if TYPE_CHECKING:  # the rules' package loads the rule-file tools: the answering step needs none of them
    from ascrm.core.rules.notify import NotifyRule

_RESULTS = frozenset({EventType.Transfer, EventType.ShortTransfer})
_ATTRIBUTES = {name: name.lower() for name in CRMDDATA_STRING_FIELDS}
MAX_BODY_BYTES = 64 * 1024  # a rendered body past this is not stored (logged: notification_too_large)
log = structlog.get_logger("ascrm.notify")


def kinds_of(event: CallEvent, call: CallState) -> frozenset[str]:
    """The outcomes and the event name this event brings about for call (as updated by it)."""
    code = event.event_type
    if code is None:
        return frozenset()
    try:
        name = EventType(code).name
    except ValueError:
        return frozenset()
    if code == EventType.EndCall:
        return frozenset((name, "ended", "missed")) if call.connected_at is None else frozenset((name, "ended"))
    if code in _RESULTS and event.result == RESULT_CONNECTED:
        return frozenset((name, "connected"))
    return frozenset((name,))


def notifications(
    entries: Sequence[NotifyRule],
    event: CallEvent,
    call: CallState,
    now: datetime,
    revision: str,
    *,
    clock: float | None = None,
) -> list[Notification]:
    """The notifications entries make of event (call as updated by it), in the entries' order; one whose
    rendered body passes MAX_BODY_BYTES is left out and logged."""
    kinds = kinds_of(event, call)
    if not kinds:
        return []
    made: list[Notification] = []
    created = time.time() if clock is None else clock
    for entry in entries:
        for kind in entry.kinds:
            if kind not in kinds or not entry.holds(event, call, now):
                continue
            summary = summarize(call, kind, entry.id)
            summary["revision"] = revision
            document = summary if entry.body is None else entry.body(event_values(event, call, summary))
            body = orjson.dumps(document)
            if len(body) > MAX_BODY_BYTES:
                log.warning("notification_too_large", call_id=call.call_id, notify=entry.id, size=len(body))
                continue
            key = idempotency_key(call.call_id, kind, entry.id)
            made.append(Notification(key, entry.target, kind, call.call_id, created, body))
    return made


def event_values(event: CallEvent, call: CallState, summary: Mapping[str, Any]) -> dict[str, Any]:
    """What a body's placeholders read: the summary's keys, then the event's CRMDData fields (AN and UN
    from the call when the event lacks them)."""
    values = dict(summary)
    for name, attribute in _ATTRIBUTES.items():
        value = getattr(event, attribute, None)
        if value is None and name in ("AN", "UN"):
            value = getattr(call, attribute)
        values[name] = value
    return values
