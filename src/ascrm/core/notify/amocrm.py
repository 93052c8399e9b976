"""The `amocrm` target: a missed call becomes a task for the client's responsible user, an answered one a
call note on the client's contact, and a call from an unknown number an "unsorted" call entry.

With the look-up preset's settings (`url`, the account's address, and `token`, an integration's
long-lived token, sent as `Authorization: Bearer`):

1. GET /api/v4/contacts?query=<the number's ten national digits>, the look-up preset's own request; a
   contact counts when one of its PHONE field's values is the number (the search is full-text).
2. A known contact and a missed call: POST /api/v4/tasks, one task of type `task_type_id` (1, "Follow-up",
   by default) on the contact (entity_type contacts, entity_id) for its responsible_user_id, text "Missed
   call from +7…", complete_till = now + `task_hours` (1 by default).
   A known contact and an answered call: POST /api/v4/contacts/notes, a `call_in` note (params: uniq = the
   notification's key, duration = talk_seconds, source "ascrm", phone).
3. An unknown number: POST /api/v4/leads/unsorted/sip, one entry with source_uid = the notification's key,
   source_name "ascrm", `pipeline_id` when set, metadata {is_call_event_needed, uniq = the key, duration =
   talk_seconds, service_code = `service_code` ("ascrm"), from = the caller (the call's initiator), phone =
   the number called (its recipient; the caller when unknown), called_at = the call's start}, and the lead
   and the contact (with the caller's phone) to create when a manager accepts it.

Idempotency: amoCRM has none for tasks and notes (an attempt whose answer was lost and is retried adds a
second one); it refuses an unsorted entry it holds already, which is then rejected (the entry exists).
Over the limit (7 requests a second) amoCRM answers 429 (retried); a wrong or expired token 401, an
unpaid account 402 (rejected).

https://www.amocrm.ru/developers/content/crm_platform/contacts-api
https://www.amocrm.ru/developers/content/crm_platform/tasks-api
https://www.amocrm.ru/developers/content/crm_platform/events-and-notes
https://www.amocrm.ru/developers/content/crm_platform/unsorted-api
(in English: https://developers.kommo.com/reference/tasks-list, https://kommo.com/developers/content/api_v4/incoming-leads,
a call note's params: https://developers.kommo.com/reference/notes-types; the call metadata's
fields: https://developers.kommo.com/reference/metadata; uniq as amoCRM's PHP library sends it,
https://github.com/amocrm/amocrm-api-php, src/AmoCRM/Models/Unsorted/SipMetadata.php)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from ascrm.core.lookups.presets import PRESETS, _amocrm_phones, canonical
from ascrm.core.notify.crm_common import (
    Call,
    check_keys,
    credentials,
    fetch,
    guarded,
    international,
    label,
    positive_int,
    read_call,
    refused,
    unexpected,
)
from ascrm.core.notify.message import Notification
from ascrm.core.notify.target import Sent, TargetError
from ascrm.core.rules.excerpt import excerpt

KEYS: Final = ("url", "token", "task_hours", "task_type_id", "pipeline_id", "service_code")
SOURCE: Final = "ascrm"  # source_name of unsorted entries, source of call notes
FOLLOW_UP: Final = 1  # amoCRM's standard task type "Follow-up" ("Связаться")
MAX_TASK_HOURS: Final = 30 * 24


@dataclass(frozen=True, slots=True)
class AmoCrmTarget:
    """An amoCRM account a call's outcome is told to as a task, a call note or an unsorted call."""

    name: str
    url: str
    token: str = field(repr=False)
    task_hours: float = 1.0
    task_type_id: int = FOLLOW_UP
    service_code: str = SOURCE
    pipeline_id: int | None = None
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)
    kind: str = field(default="amocrm", init=False)

    async def send(self, session: aiohttp.ClientSession, notification: Notification, timeout: float) -> Sent:
        """Finds the caller's contact, then adds a task, a note or an unsorted entry within timeout; never raises."""
        return await guarded(self.kind, self.name, timeout, lambda: self._deliver(session, notification))

    async def _deliver(self, session: aiohttp.ClientSession, notification: Notification) -> Sent:
        call = read_call(notification.body)
        if isinstance(call, Sent):
            return call
        lookup = PRESETS["amocrm"].request({"url": self.url, "token": self.token}, call.caller)
        answer = await fetch(session, lookup.method, lookup.url, dict(lookup.headers))
        if answer.status == 204:
            contact = None  # nothing matched
        elif answer.status == 200:
            document = answer.json()
            if not isinstance(document, dict):
                return unexpected(answer, "contacts")
            contact = _contact(document, call.caller)
        else:
            return refused(answer, "contacts")
        if contact is None:
            path, step, body = "/api/v4/leads/unsorted/sip", "unsorted", [self._unsorted(call)]
        elif call.missed:
            path, step, body = "/api/v4/tasks", "tasks", [self._task(call, *contact)]
        else:
            path, step, body = "/api/v4/contacts/notes", "notes", [_note(call, contact[0])]
        answer = await fetch(session, "POST", self.url.rstrip("/") + path, self._headers(), json=body)
        return Sent("delivered", answer.status) if answer.ok else refused(answer, step)

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Authorization": f"Bearer {self.token}"}

    def _task(self, call: Call, contact_id: int, responsible: int | None) -> dict[str, Any]:
        task: dict[str, Any] = {
            "task_type_id": self.task_type_id,
            "text": f"Missed call from {international(call.caller)}",
            "complete_till": math.ceil(self.clock() + self.task_hours * 3600),
            "entity_type": "contacts",
            "entity_id": contact_id,
            "request_id": call.key,
        }
        if responsible is not None:  # else amoCRM makes the token's user responsible
            task["responsible_user_id"] = responsible
        return task

    def _unsorted(self, call: Call) -> dict[str, Any]:
        phone = international(call.caller)
        called_at = int(call.started_at.timestamp())
        entry: dict[str, Any] = {
            "source_uid": call.key,
            "source_name": SOURCE,
            "created_at": called_at,
            "metadata": {
                "is_call_event_needed": True,
                "uniq": call.key,
                "duration": call.talk_seconds,
                "service_code": self.service_code,
                "phone": international(call.called) if call.called else phone,
                "called_at": called_at,
                "from": phone,
            },
            "_embedded": {
                "leads": [{"name": f"{'Missed call' if call.missed else 'Call'} from {phone}"}],
                "contacts": [{"name": phone, "custom_fields_values": [_phone_field(phone)]}],
            },
            "request_id": call.key,
        }
        if self.pipeline_id is not None:
            entry["pipeline_id"] = self.pipeline_id
        return entry


def _phone_field(phone: str) -> dict[str, Any]:
    return {"field_code": "PHONE", "values": [{"value": phone, "enum_code": "WORK"}]}


def _note(call: Call, contact_id: int) -> dict[str, Any]:
    params = {"uniq": call.key, "duration": call.talk_seconds, "source": SOURCE, "phone": international(call.caller)}
    return {"entity_id": contact_id, "note_type": "call_in", "params": params, "request_id": call.key}


def _contact(document: Mapping[str, Any], number: str) -> tuple[int, int | None] | None:
    """The id and responsible user of the first contact one of whose phones is number."""
    embedded = document.get("_embedded")
    contacts = embedded.get("contacts") if isinstance(embedded, dict) else None
    wanted = canonical(number)
    for contact in contacts if isinstance(contacts, list) else ():
        if isinstance(contact, dict) and wanted in _amocrm_phones(contact):
            cid, responsible = contact.get("id"), contact.get("responsible_user_id")
            if isinstance(cid, int) and not isinstance(cid, bool):
                return cid, responsible if isinstance(responsible, int) and not isinstance(responsible, bool) else None
    return None


def compile_amocrm(name: str, spec: Mapping[str, Any], env: Mapping[str, str]) -> AmoCrmTarget:
    """An `amocrm` target's settings, checked; TargetError names the key at fault (never the token)."""
    spec = check_keys("amocrm", spec, KEYS)
    config = credentials("amocrm", spec, env)
    hours = spec.get("task_hours", 1)
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= MAX_TASK_HOURS:
        problem = f"amocrm: `task_hours` must be a number of hours, 0-{MAX_TASK_HOURS}, not {excerpt(hours)}"
        raise TargetError(("task_hours",), problem)
    task_type = positive_int("amocrm", spec, "task_type_id", FOLLOW_UP)
    assert task_type is not None
    return AmoCrmTarget(
        name,
        config["url"],
        config["token"],
        float(hours),
        task_type,
        label("amocrm", spec, "service_code", SOURCE, env),
        positive_int("amocrm", spec, "pipeline_id", None),
    )
