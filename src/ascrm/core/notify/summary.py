"""A call's summary: what a notification tells of the call, as of the event that made it.

The document's keys (every one always present, null when not known):

| key | value |
|---|---|
| `kind` | missed, ended, connected, or the event's name |
| `notify` | the id of the `notify:` entry |
| `key` | the idempotency key, `<CallID>:<kind>:<notify id>` |
| `call_id` | CallID (an integer) |
| `caller` | AN, the caller's number |
| `called` | UN, the number called |
| `service` | the service's name (MTSSecretary, …), or its code when unknown |
| `started_at`, `connected_at`, `ended_at` | ISO 8601 times with offset |
| `wait_seconds` | from start to the operator's answer (or to the end, for a call nobody answered) |
| `talk_seconds` | from the operator's answer to the end (0 when nobody answered) |
| `answered_by` | the extension or number that answered (the connecting transfer's destination) |
| `ended_by` | caller, called, caller_ringing, no_destination, default, or EndCall's Result as sent |
| `missed` | whether nobody answered: ended with no transfer result 1280 |
| `dtmf` | the digits the caller dialled, in order |
| `rules` | the ids of the rules whose answers carried an action, in order, each once |
| `revision` | the rules revision that decided the last answer |
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from ascrm.core.calls.state import CallState
from ascrm.core.protocol import RESULT_CONNECTED, Action, EventType, ServiceType

KEYS: Final = (
    "kind", "notify", "key", "call_id", "caller", "called", "service", "started_at", "connected_at",
    "ended_at", "wait_seconds", "talk_seconds", "answered_by", "ended_by", "missed", "dtmf", "rules",
    "revision",
)  # fmt: skip
ENDED_BY: Final = {"0": "default", "1": "caller", "2": "called", "3": "caller_ringing", "4": "no_destination"}
_TRANSFERS: Final = frozenset(
    {Action.TransferEXT, Action.TransferDN, Action.TransferDNRec, Action.TransferPBX, Action.TransferPBXRec}
)
_RESULTS: Final = frozenset({EventType.Transfer, EventType.ShortTransfer})


def idempotency_key(call_id: int, kind: str, notify_id: str) -> str:
    """The key a receiver drops repeats by: one notification per call, kind and `notify:` entry."""
    return f"{call_id}:{kind}:{notify_id}"


def summarize(call: CallState, kind: str, notify_id: str) -> dict[str, Any]:
    """The summary document of call for a notification of kind by the `notify:` entry notify_id."""
    end = call.ended_at
    answered = call.connected_at
    until_answer = answered or end
    return {
        "kind": kind,
        "notify": notify_id,
        "key": idempotency_key(call.call_id, kind, notify_id),
        "call_id": call.call_id,
        "caller": call.an,
        "called": call.un,
        "service": _service(call.service_type),
        "started_at": call.started_at.isoformat(),
        "connected_at": None if answered is None else answered.isoformat(),
        "ended_at": None if end is None else end.isoformat(),
        "wait_seconds": None if until_answer is None else _seconds(call.started_at, until_answer),
        "talk_seconds": _seconds(answered, end) if answered is not None and end is not None else 0,
        "answered_by": answered_by(call) if answered is not None else None,
        "ended_by": None if call.ended_by is None else ENDED_BY.get(call.ended_by, call.ended_by),
        "missed": end is not None and answered is None,
        "dtmf": call.digits,
        "rules": list(dict.fromkeys(record.rule_id for record in call.decisions if record.rule_id)),
        "revision": call.decisions[-1].revision if call.decisions else None,
    }


def answered_by(call: CallState) -> str | None:
    """The destination of the transfer that connected the caller: the result event's own field when it
    carried one, else the last transfer ascrm answered before the connection."""
    for code, _, news in call.events:
        if code in _RESULTS and news is not None:
            fields = dict(zip(news[::2], news[1::2], strict=True))
            if fields.get("Result") == RESULT_CONNECTED:
                own = fields.get("EXT1") or fields.get("EXT2") or fields.get("DN1")
                if own:
                    return own
                break
    connected = call.connected_at
    for record in reversed(call.decisions):
        if record.action in _TRANSFERS and (connected is None or record.at <= connected):
            return record.param
    return None


def _service(code: ServiceType | int | None) -> str | int | None:
    if code is None:
        return None
    try:
        return ServiceType(code).name
    except ValueError:
        return int(code)


def _seconds(start: datetime, end: datetime) -> int:
    """Whole seconds from start to end (0 when end is earlier: clocks of two sources)."""
    return max(0, int((end - start).total_seconds()))
