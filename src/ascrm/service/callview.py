"""The admin API's JSON view of a call: what `GET /admin/calls/{id}` and the listing show.

Built from CallState for people and tools reading the admin API; it may change with the API (see
openapi.json). The record a store keeps is another thing, versioned on its own (core/calls/codec.py).
"""

from __future__ import annotations

from typing import Any, Final

from ascrm.core.calls.state import CallState, command_json, decision_json, news_dict
from ascrm.core.protocol import code_name

_FACTS: Final = ("call_id", "an", "un", "service_type", "state")  # a listing's fields of the view
_TIMES: Final = ("started_at", "updated_at", "connected_at", "ended_at")


def call_view(call: CallState) -> dict[str, Any]:
    """The whole call: its facts, events, decisions and pending commands, as JSON-ready values."""
    return {
        "call_id": call.call_id,
        "an": call.an,
        "un": call.un,
        "service_type": None if call.service_type is None else int(call.service_type),
        "state": call.status,
        "started_at": call.started_at.isoformat(),
        "updated_at": call.updated_at.isoformat(),
        "connected_at": None if call.connected_at is None else call.connected_at.isoformat(),
        "ended_at": None if call.ended_at is None else call.ended_at.isoformat(),
        "ended_by": call.ended_by,
        "digits": call.digits,
        "transfer_results": list(call.transfer_results),
        "events": [
            {"event": code_name(code), "code": int(code), "at": at.isoformat(), "fields": news_dict(news)}
            for code, at, news in call.events
        ],
        "fired_polls": sorted(call.fired_polls),
        "decisions": [decision_json(record) for record in call.decisions],
        "commands": [command_json(command) for command in call.commands],
        "next_command_id": call.next_command_id,
        "trimmed": call.trimmed,
    }


def call_summary(call: CallState) -> dict[str, Any]:
    """A call in a listing: its facts and times, how many commands wait, and the last decision."""
    full = call_view(call)
    summary = {key: full[key] for key in (*_FACTS, *_TIMES)}
    summary["pending_commands"] = len(full["commands"])
    summary["last_decision"] = full["decisions"][-1] if full["decisions"] else None
    return summary
