"""The admin API's view of the notification outbox: pending and failed notifications, and a retry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ascrm.core.notify.message import STATES, Listed

MAX_KEY_CHARS: Final = 300  # an idempotency key: a CallID, a kind and a notify id


def notification_view(listed: Listed) -> dict[str, Any]:
    """One notification as the admin API shows it (its body as sent; never the target's URL or secrets)."""
    note = listed.notification
    try:
        body: Any = orjson.loads(note.body)
    except orjson.JSONDecodeError:
        body = None
    return {
        "key": note.key,
        "target": note.target,
        "kind": note.kind,
        "call_id": note.call_id,
        "state": listed.state,
        "created_at": _iso(note.created_at),
        "attempts": listed.attempts,
        "due_at": None if listed.due_at is None else _iso(listed.due_at),
        "last_error": listed.last_error,
        "body": body,
    }


def state_of(text: str | None) -> str | None:
    """The `state` query parameter, pending by default; None when it names no state."""
    if text is None:
        return "pending"
    return text if text in STATES else None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()
