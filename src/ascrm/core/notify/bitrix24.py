"""The `bitrix24` target: a call registered and finished in the portal's telephony, so it lands in the
call history and the CRM's activities.

Two requests to the inbound webhook (the look-up preset's `webhook` setting, its `crm` and `telephony`
scopes): `telephony.externalCall.register` (USER_PHONE_INNER = the extension that answered, else USER_ID =
`user_id`, by default the webhook's own user; PHONE_NUMBER = the caller; TYPE 2, incoming; CALL_START_DATE;
CRM_CREATE 1 so that an unknown number makes a lead, `crm_create: false` not to; SHOW 0: no call card is
shown, the call is over; EXTERNAL_CALL_ID = the notification's key), then `telephony.externalCall.finish`
with the CALL_ID it returned (the same user, DURATION = talk_seconds, STATUS_CODE 200 for an answered call
and 304 for a missed one). An extension that is no user's internal number is refused by Bitrix24
("USER_ID or USER_PHONE_INNER should be set"); the call is then registered for `user_id`.

Idempotency: Bitrix24 has no idempotency key, but a registration repeated within 30 minutes with the same
number, type, user and EXTERNAL_CALL_ID returns the CALL_ID of the first while it is not finished. So a
retry after a failed finish (the usual failure: a limit, a timeout) finishes the call registered before
instead of registering a second one. After a finish that succeeded but whose answer was lost, Bitrix24's
pages differ on whether the re-registration returns the finished call: if it does, its finish is
answered "Call is not found", which counts as delivered; if not, the retry registers the call a second
time. A retry more than 30 minutes after a register whose finish never succeeded registers it again.

Bitrix24 documents these methods as working "in the context of an application": its REST server accepts
an application's OAuth token and an inbound webhook (APAuth) alike, and refuses other authorisation with
WRONG_AUTH_TYPE (rejected here). Over the limit it answers 503 QUERY_LIMIT_EXCEEDED or 429
OPERATION_TIME_LIMIT (retried); a wrong webhook, 401 INVALID_CREDENTIALS; a missing scope, 401
insufficient_scope (rejected).

https://apidocs.bitrix24.ru/api-reference/telephony/telephony-external-call-register.html
https://apidocs.bitrix24.ru/api-reference/telephony/telephony-external-call-finish.html
https://apidocs.bitrix24.ru/limits.html
system errors: https://github.com/bitrix24/b24restdocs, _includes/system-errors.md
the auth check: Bitrix24's voximplant module, classes/general/vi_rest.php, registerExternalCall
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from ascrm.core.notify.crm_common import (
    Answer,
    Call,
    check_keys,
    credentials,
    fetch,
    flag,
    guarded,
    international,
    positive_int,
    read_call,
    refused,
    unexpected,
)
from ascrm.core.notify.message import Notification
from ascrm.core.notify.target import Sent

KEYS: Final = ("webhook", "user_id", "crm_create")
INCOMING: Final = 2  # telephony.externalCall.register's TYPE
ANSWERED, MISSED = "200", "304"  # telephony.externalCall.finish's STATUS_CODE
_REGISTER, _FINISH = "telephony.externalCall.register", "telephony.externalCall.finish"
_NO_USER: Final = re.compile(r"USER_ID or USER_PHONE_INNER|User is not found", re.IGNORECASE)
_NOT_FOUND: Final = re.compile(r"Call is not found", re.IGNORECASE)
_HEADERS: Final = {"Accept": "application/json"}


@dataclass(frozen=True, slots=True)
class Bitrix24Target:
    """A Bitrix24 portal's inbound webhook a call's outcome is registered and finished through."""

    name: str
    webhook: str = field(repr=False)  # its path holds the secret
    user_id: int  # the employee a call nobody's extension answered is registered for
    crm_create: bool = True
    kind: str = field(default="bitrix24", init=False)

    async def send(self, session: aiohttp.ClientSession, notification: Notification, timeout: float) -> Sent:
        """Registers then finishes the call within timeout seconds; never raises."""
        return await guarded(self.kind, self.name, timeout, lambda: self._deliver(session, notification))

    async def _deliver(self, session: aiohttp.ClientSession, notification: Notification) -> Sent:
        call = read_call(notification.body)
        if isinstance(call, Sent):
            return call
        inner = call.answerer
        who: dict[str, Any] = {"USER_PHONE_INNER": inner} if inner else {"USER_ID": self.user_id}
        answer = await self._method(session, _REGISTER, self._register(call, who))
        if inner and answer.status == 400 and _NO_USER.search(_description(answer)):
            who = {"USER_ID": self.user_id}  # the extension is no employee's internal number
            answer = await self._method(session, _REGISTER, self._register(call, who))
        if not answer.ok or _error(answer) is not None:
            return refused(answer, "register", _error(answer))
        result = _result(answer)
        call_id = result.get("CALL_ID") if isinstance(result, dict) else None
        if not isinstance(call_id, str) or not call_id:
            return unexpected(answer, "register")
        finish = {
            "CALL_ID": call_id,
            **who,
            "DURATION": call.talk_seconds,
            "STATUS_CODE": MISSED if call.missed else ANSWERED,
        }
        answer = await self._method(session, _FINISH, finish)
        if answer.ok and _error(answer) is None:
            return Sent("delivered", answer.status)
        if answer.status == 400 and _NOT_FOUND.search(_description(answer)):
            return Sent("delivered", answer.status)  # finished by an earlier attempt whose answer was lost
        return refused(answer, "finish", _error(answer))

    def _register(self, call: Call, who: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **who,
            "PHONE_NUMBER": international(call.caller),
            "TYPE": INCOMING,
            "CALL_START_DATE": call.started_at.isoformat(),
            "CRM_CREATE": int(self.crm_create),
            "SHOW": 0,
            "EXTERNAL_CALL_ID": call.key,
        }

    async def _method(self, session: aiohttp.ClientSession, method: str, params: Mapping[str, Any]) -> Answer:
        return await fetch(session, "POST", self.webhook.rstrip("/") + f"/{method}.json", _HEADERS, json=params)


def _result(answer: Answer) -> Any:
    document = answer.json()
    return document.get("result") if isinstance(document, dict) else None


def _error(answer: Answer) -> str | None:
    """Bitrix24's error code ("QUERY_LIMIT_EXCEEDED", "ERROR_CORE"), None when the answer has none."""
    document = answer.json()
    code = document.get("error") if isinstance(document, dict) else None
    return code if isinstance(code, str) else None


def _description(answer: Answer) -> str:
    document = answer.json()
    text = document.get("error_description") if isinstance(document, dict) else None
    return text[:200] if isinstance(text, str) else ""


def compile_bitrix24(name: str, spec: Mapping[str, Any], env: Mapping[str, str]) -> Bitrix24Target:
    """A `bitrix24` target's settings, checked; TargetError names the key at fault (never the webhook)."""
    spec = check_keys("bitrix24", spec, KEYS)
    config = credentials("bitrix24", spec, env)
    own_user = int(urlsplit(config["webhook"]).path.split("/")[2])  # /rest/<user>/<secret>/, checked
    user_id = positive_int("bitrix24", spec, "user_id", own_user)
    assert user_id is not None
    return Bitrix24Target(name, config["webhook"], user_id, flag("bitrix24", spec, "crm_create", True))
