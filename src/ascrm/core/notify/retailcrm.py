"""The `retailcrm` target: a call's end told to RetailCRM as a telephony call event, so the managers it
names see the call (a missed one as a missed call to return).

With the look-up preset's settings (`url`, the account's address, and `api_key`, sent in the X-API-KEY
header as the look-up sends it): POST /api/v5/telephony/call/event, form-encoded, `event` = JSON
{phone: the caller, type "hangup" (the call is over: "in" and "out" are sent while a call rings),
codes: the managers' internal numbers, hangupStatus "answered" or "no answered", externalPhone: the number
called, callExternalId: the notification's key}. codes: the extension that answered an answered call; for
a missed call the code of the client's responsible manager (GET /api/v5/telephony/manager, the look-up
preset's own request), else the target's `codes`. A missed call with nobody to tell is rejected.

RetailCRM keeps no idempotency key for events (a retried event shows again). Over the limit (telephony
methods: 40 requests a second) it answers 503 (retried); a wrong key 403 {"success": false}, as any other
refusal (rejected). Its telephony methods work for an account with a telephony integration registered.

https://docs.retailcrm.ru/Developers/API/APIVersions/APIv5#post--api-v5-telephony-call-event
https://docs.retailcrm.ru/Developers/API/APIVersions/APIv5#get--api-v5-telephony-manager
https://docs.retailcrm.ru/Developers/API/APIFeatures/APIRules (the key, the limits)
(the event's fields and hangup statuses as in https://github.com/retailcrm/api-client-php,
src/Model/Entity/Telephony/CallEvent.php and src/Enum/Telephony/CallEventHangupStatus.php)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson

from ascrm.core.lookups.presets import PRESETS, canonical
from ascrm.core.notify.crm_common import (
    Call,
    check_keys,
    credentials,
    fetch,
    guarded,
    read_call,
    refused,
    unexpected,
)
from ascrm.core.notify.message import Notification
from ascrm.core.notify.target import Sent, TargetError
from ascrm.core.rules.excerpt import excerpt

KEYS: Final = ("url", "api_key", "codes")
MAX_CODES: Final = 50
HANGUP: Final = "hangup"
ANSWERED, NOT_ANSWERED = "answered", "no answered"  # hangupStatus values


@dataclass(frozen=True, slots=True)
class RetailCrmTarget:
    """A RetailCRM account a call's end is told to as a telephony event."""

    name: str
    url: str
    api_key: str = field(repr=False)
    codes: tuple[str, ...] = ()  # whom a missed call of a client without a responsible manager is shown to
    kind: str = field(default="retailcrm", init=False)

    async def send(self, session: aiohttp.ClientSession, notification: Notification, timeout: float) -> Sent:
        """Tells RetailCRM of the call's end within timeout seconds; never raises."""
        return await guarded(self.kind, self.name, timeout, lambda: self._deliver(session, notification))

    async def _deliver(self, session: aiohttp.ClientSession, notification: Notification) -> Sent:
        call = read_call(notification.body)
        if isinstance(call, Sent):
            return call
        codes: tuple[str, ...] = (call.answerer,) if call.answerer else ()
        if not codes:
            manager = await self._manager(session, call)
            if isinstance(manager, Sent):
                return manager
            codes = (manager,) if manager else self.codes
        if not codes:
            return Sent("rejected", error="nobody to tell: the client has no manager with a code, and no `codes`")
        headers = {"Accept": "application/json", "X-API-KEY": self.api_key}
        form = {"event": orjson.dumps(_event(call, codes)).decode()}
        answer = await fetch(session, "POST", self.url.rstrip("/") + "/api/v5/telephony/call/event", headers, form=form)
        if not answer.ok:
            return refused(answer, "event")
        document = answer.json()
        if not isinstance(document, dict):
            return unexpected(answer, "event")
        if document.get("success") is not True:  # 2xx with {"success": false}: refused all the same
            return Sent("rejected", answer.status, None, f"HTTP {answer.status}, success false (event)")
        return Sent("delivered", answer.status)

    async def _manager(self, session: aiohttp.ClientSession, call: Call) -> str | Sent | None:
        """The code of the caller's responsible manager (None: none has one), or the outcome of a failure."""
        preset = PRESETS["retailcrm"]
        lookup = preset.request({"url": self.url, "api_key": self.api_key}, call.caller)
        answer = await fetch(session, lookup.method, lookup.url, dict(lookup.headers))
        if not answer.ok:
            return refused(answer, "manager")
        try:
            return preset.extract(call.caller)(answer.json())
        except ValueError:  # not the documented answer (or none): asked again later
            return unexpected(answer, "manager")


def _event(call: Call, codes: tuple[str, ...]) -> dict[str, Any]:
    event: dict[str, Any] = {
        "phone": canonical(call.caller),
        "type": HANGUP,
        "codes": list(codes),
        "hangupStatus": NOT_ANSWERED if call.missed else ANSWERED,
        "callExternalId": call.key,
    }
    if call.called and canonical(call.called):
        event["externalPhone"] = canonical(call.called)
    return event


def compile_retailcrm(name: str, spec: Mapping[str, Any], env: Mapping[str, str]) -> RetailCrmTarget:
    """A `retailcrm` target's settings, checked; TargetError names the key at fault (never the key's value)."""
    spec = check_keys("retailcrm", spec, KEYS)
    config = credentials("retailcrm", spec, env)
    given = spec.get("codes", [])
    if not isinstance(given, list) or len(given) > MAX_CODES:
        raise TargetError(("codes",), f"retailcrm: `codes` must be a list of at most {MAX_CODES} internal numbers")
    codes: list[str] = []
    for index, code in enumerate(given):
        text = str(code) if isinstance(code, int | str) and not isinstance(code, bool) else ""
        if not text or len(text) > 32 or not text.isprintable() or text.strip() != text:
            raise TargetError(("codes", index), f"retailcrm: `codes` holds {excerpt(code)}, not an internal number")
        codes.append(text)
    return RetailCrmTarget(name, config["url"], config["api_key"], tuple(codes))
