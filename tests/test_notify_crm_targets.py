"""The CRM preset targets against local stand-ins of the CRMs: the requests each sends for a missed and an
answered call from a known and an unknown number, field by field; outcomes of refusals, limits, failures
and hangs; the time bound; the settings' errors, which never show a secret."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from ascrm.core.notify.amocrm import AmoCrmTarget
from ascrm.core.notify.bitrix24 import Bitrix24Target
from ascrm.core.notify.crm_common import MAX_ANSWER, fetch, retry_after
from ascrm.core.notify.crm_targets import CRM_KINDS, TargetError, compile_crm_target
from ascrm.core.notify.message import Notification
from ascrm.core.notify.retailcrm import RetailCrmTarget
from ascrm.core.notify.summary import KEYS
from ascrm.core.notify.target import Sent, Target
from tests.support.crm_standins import (
    AMO_TOKEN,
    BITRIX_SECRET,
    RETAIL_KEY,
    AmoStandIn,
    BitrixStandIn,
    RetailStandIn,
    StandIn,
)
from tests.support.net import free_port

pytestmark = pytest.mark.anyio
SECRETS = (BITRIX_SECRET, AMO_TOKEN, RETAIL_KEY)
KNOWN, UNKNOWN = "+7 (912) 345-67-89", "+7 999 000-00-00"  # in every stand-in's dataset / in none
STARTED = "2026-12-04T21:15:30+03:00"
MARGIN = 0.3  # seconds a send may take past its timeout (the event loop's own delays on a shared CPU)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


def notification(
    *,
    caller: str | None = KNOWN,
    missed: bool = True,
    answered_by: str | None = None,
    talk: int = 0,
    ended: bool = True,
    kind: str = "missed",
) -> Notification:
    """A notification carrying a call summary as core/notify/summary.py makes it."""
    key = f"4242:{kind}:crm"
    summary: dict[str, Any] = dict.fromkeys(KEYS)
    summary.update(
        kind=kind,
        notify="crm",
        key=key,
        call_id=4242,
        caller=caller,
        called="74951234567",
        service="MTSSecretary",
        started_at=STARTED,
        connected_at=None if missed else "2026-12-04T21:15:40+03:00",
        ended_at="2026-12-04T21:17:00+03:00" if ended else None,
        wait_seconds=10,
        talk_seconds=talk,
        answered_by=answered_by,
        ended_by="caller",
        missed=missed,
        dtmf="",
        rules=["r1"],
        revision="abc",
    )
    return Notification(key, "crm", kind, 4242, 1_700_000_000.0, orjson.dumps(summary))


def answered(by: str, talk: int = 75) -> Notification:
    return notification(missed=False, answered_by=by, talk=talk, kind="ended")


def spec_for(crm: StandIn, *, wrong: bool = False, **extra: Any) -> dict[str, Any]:
    """The `targets:` entry that reaches crm (wrong: with a wrong secret)."""
    if isinstance(crm, BitrixStandIn):
        spec: dict[str, Any] = {"webhook": f"{crm.base}/rest/{crm.user}/{'nope' if wrong else crm.secret}/"}
    elif isinstance(crm, AmoStandIn):
        spec = {"url": crm.base, "token": "nope" if wrong else crm.token}
    else:
        spec = {"url": crm.base, "api_key": "nope" if wrong else RETAIL_KEY}
    return {**spec, **extra}


def target_for(crm: StandIn, *, wrong: bool = False, **extra: Any) -> Target:
    kind = {BitrixStandIn: "bitrix24", AmoStandIn: "amocrm", RetailStandIn: "retailcrm"}[type(crm)]
    return compile_crm_target("crm", kind, spec_for(crm, wrong=wrong, **extra), {})


def standin(kind: str) -> StandIn:
    return {"bitrix24": BitrixStandIn, "amocrm": AmoStandIn, "retailcrm": RetailStandIn}[kind]()


# --- Bitrix24 -------------------------------------------------------------------------------------------


async def test_bitrix24_a_missed_call_is_registered_for_the_webhooks_user_and_finished_as_missed(
    session: aiohttp.ClientSession,
) -> None:
    async with BitrixStandIn() as crm:
        sent = await target_for(crm).send(session, notification(), 5.0)
        assert sent == Sent("delivered", 200)
        register, finish = crm.received_at("register"), crm.received_at("finish")
        assert [r.path for r in crm.received] == [register[0].path, finish[0].path]
        assert register[0].path == f"/rest/1/{BITRIX_SECRET}/telephony.externalCall.register.json"
        assert register[0].json() == {
            "USER_ID": 1,
            "PHONE_NUMBER": "+79123456789",
            "TYPE": 2,
            "CALL_START_DATE": STARTED,
            "CRM_CREATE": 1,
            "SHOW": 0,
            "EXTERNAL_CALL_ID": "4242:missed:crm",
        }
        (call,) = crm.calls.values()
        assert finish[0].json() == {"CALL_ID": call.call_id, "USER_ID": 1, "DURATION": 0, "STATUS_CODE": "304"}
        assert call.entity == ("CONTACT", 651)  # the known client's contact
        assert crm.leads == []


async def test_bitrix24_an_answered_call_is_registered_for_the_extension_that_answered(
    session: aiohttp.ClientSession,
) -> None:
    async with BitrixStandIn() as crm:
        assert (await target_for(crm).send(session, answered("101"), 5.0)).outcome == "delivered"
        (register,), (finish,) = crm.received_at("register"), crm.received_at("finish")
        assert register.json()["USER_PHONE_INNER"] == "101"
        assert "USER_ID" not in register.json()
        (call,) = crm.calls.values()
        assert finish.json() == {
            "CALL_ID": call.call_id,
            "USER_PHONE_INNER": "101",
            "DURATION": 75,
            "STATUS_CODE": "200",
        }
        assert call.user == 17  # the employee whose internal number 101 is
        assert call.finished is not None


async def test_bitrix24_an_extension_of_nobody_falls_back_to_the_configured_user(
    session: aiohttp.ClientSession,
) -> None:
    async with BitrixStandIn() as crm:
        assert (await target_for(crm, user_id=18).send(session, answered("555"), 5.0)).outcome == "delivered"
        first, second = crm.received_at("register")
        assert first.json()["USER_PHONE_INNER"] == "555"
        assert second.json()["USER_ID"] == 18
        assert "USER_PHONE_INNER" not in second.json()
        (finish,) = crm.received_at("finish")
        assert finish.json()["USER_ID"] == 18


@pytest.mark.parametrize(("crm_create", "leads"), [(True, [900]), (False, [])])
async def test_bitrix24_an_unknown_number_makes_a_lead_unless_told_not_to(
    session: aiohttp.ClientSession, crm_create: bool, leads: list[int]
) -> None:
    async with BitrixStandIn() as crm:
        target = target_for(crm, crm_create=crm_create)
        assert (await target.send(session, notification(caller=UNKNOWN), 5.0)).outcome == "delivered"
        (register,) = crm.received_at("register")
        assert register.json()["CRM_CREATE"] == int(crm_create)
        assert register.json()["PHONE_NUMBER"] == "+79990000000"
        assert crm.leads == leads


async def test_bitrix24_a_retry_after_a_failed_finish_finishes_the_call_registered_before(
    session: aiohttp.ClientSession,
) -> None:
    async with BitrixStandIn() as crm:
        limit = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        crm.refuse("finish", 503, limit, retry_after="12")
        target = target_for(crm)
        first = await target.send(session, notification(), 5.0)
        assert first == Sent("retry", 503, 12.0, "HTTP 503 QUERY_LIMIT_EXCEEDED (finish)")
        assert (await target.send(session, notification(), 5.0)).outcome == "delivered"
        assert len(crm.received_at("register")) == 2
        assert len(crm.calls) == 1  # the second registration found the first (EXTERNAL_CALL_ID)
        (call,) = crm.calls.values()
        assert call.finished is not None


async def test_bitrix24_a_call_finished_before_counts_as_delivered(session: aiohttp.ClientSession) -> None:
    async with BitrixStandIn() as crm:
        gone = {
            "error": "ERROR_CORE",
            "error_description": "Call is not found (call should be registered prior to finishing)",
        }
        crm.refuse("finish", 400, gone)
        assert (await target_for(crm).send(session, notification(), 5.0)).outcome == "delivered"


async def test_bitrix24_refusals_name_the_method_and_bitrix24s_code(session: aiohttp.ClientSession) -> None:
    async with BitrixStandIn() as crm:
        sent = await target_for(crm, wrong=True).send(session, notification(), 5.0)
        assert sent == Sent("rejected", 401, None, "HTTP 401 INVALID_CREDENTIALS (register)")
        crm.refuse("register", 401, {"error": "insufficient_scope", "error_description": "higher privileges"})
        sent = await target_for(crm).send(session, notification(), 5.0)
        assert sent == Sent("rejected", 401, None, "HTTP 401 insufficient_scope (register)")
        crm.refuse("register", 429, {"error": "OPERATION_TIME_LIMIT", "error_description": "blocked"})
        assert (await target_for(crm).send(session, notification(), 5.0)).outcome == "retry"


# --- amoCRM ---------------------------------------------------------------------------------------------


def fixed(target: Target, now: float = 1_800_000_000.0) -> Target:
    assert isinstance(target, AmoCrmTarget)
    return dataclasses.replace(target, clock=lambda: now)


async def test_amocrm_a_missed_call_from_a_client_is_a_task_for_its_responsible_user(
    session: aiohttp.ClientSession,
) -> None:
    async with AmoStandIn() as crm:
        sent = await fixed(target_for(crm)).send(session, notification(), 5.0)
        assert sent == Sent("delivered", 200)
        (lookup,), (post,) = crm.received_at("/contacts"), crm.received_at("/tasks")
        assert lookup.method == "GET"
        assert lookup.query == {"query": "9123456789"}
        assert lookup.headers["Authorization"] == f"Bearer {AMO_TOKEN}"
        assert post.headers["Authorization"] == f"Bearer {AMO_TOKEN}"
        assert post.headers["Content-Type"] == "application/json"
        assert post.json() == [
            {
                "task_type_id": 1,
                "text": "Missed call from +79123456789",
                "complete_till": 1_800_000_000 + 3600,
                "entity_type": "contacts",
                "entity_id": 1001,
                "responsible_user_id": 5001,
                "request_id": "4242:missed:crm",
            }
        ]
        assert len(crm.tasks) == 1
        assert crm.notes == crm.unsorted == []


async def test_amocrm_task_hours_and_type_are_the_targets(session: aiohttp.ClientSession) -> None:
    async with AmoStandIn() as crm:
        target = fixed(target_for(crm, task_hours=2.5, task_type_id=2))
        assert (await target.send(session, notification(), 5.0)).outcome == "delivered"
        (task,) = crm.tasks
        assert (task["complete_till"], task["task_type_id"]) == (1_800_000_000 + 9000, 2)


async def test_amocrm_the_real_clock_sets_the_deadline_from_now(session: aiohttp.ClientSession) -> None:
    async with AmoStandIn() as crm:
        before = time.time()
        assert (await target_for(crm).send(session, notification(), 5.0)).outcome == "delivered"
        (task,) = crm.tasks
        assert before + 3600 <= task["complete_till"] <= time.time() + 3601


async def test_amocrm_an_answered_call_from_a_client_is_a_call_note_on_its_contact(
    session: aiohttp.ClientSession,
) -> None:
    async with AmoStandIn() as crm:
        assert (await target_for(crm).send(session, answered("101"), 5.0)).outcome == "delivered"
        (post,) = crm.received_at("/contacts/notes")
        assert post.json() == [
            {
                "entity_id": 1001,
                "note_type": "call_in",
                "params": {"uniq": "4242:ended:crm", "duration": 75, "source": "ascrm", "phone": "+79123456789"},
                "request_id": "4242:ended:crm",
            }
        ]
        assert crm.tasks == crm.unsorted == []


@pytest.mark.parametrize(
    "caller",
    [UNKNOWN, "+7 916 123-45-67"],  # nobody's; only in other contacts' text (the search is full-text)
    ids=["unknown", "full-text-only"],
)
async def test_amocrm_a_call_from_an_unknown_number_is_an_unsorted_call(
    session: aiohttp.ClientSession, caller: str
) -> None:
    async with AmoStandIn() as crm:
        target = target_for(crm, pipeline_id=77, service_code="pbx")
        assert (await target.send(session, notification(caller=caller), 5.0)).outcome == "delivered"
        (post,) = crm.received_at("/unsorted/sip")
        phone = "+7" + "".join(c for c in caller if c.isdigit())[1:]
        called_at = int(datetime.fromisoformat(STARTED).timestamp())
        assert post.json() == [
            {
                "source_uid": "4242:missed:crm",
                "source_name": "ascrm",
                "created_at": called_at,
                "pipeline_id": 77,
                "metadata": {
                    "is_call_event_needed": True,
                    "uniq": "4242:missed:crm",
                    "duration": 0,
                    "service_code": "pbx",
                    "phone": "+74951234567",  # the recipient: the number called
                    "called_at": called_at,
                    "from": phone,
                },
                "_embedded": {
                    "leads": [{"name": f"Missed call from {phone}"}],
                    "contacts": [
                        {
                            "name": phone,
                            "custom_fields_values": [
                                {"field_code": "PHONE", "values": [{"value": phone, "enum_code": "WORK"}]}
                            ],
                        }
                    ],
                },
                "request_id": "4242:missed:crm",
            }
        ]
        assert crm.tasks == []


async def test_amocrm_an_unsorted_entry_held_already_is_refused_and_rejected(session: aiohttp.ClientSession) -> None:
    async with AmoStandIn() as crm:
        target = target_for(crm)
        assert (await target.send(session, notification(caller=UNKNOWN), 5.0)).outcome == "delivered"
        assert await target.send(session, notification(caller=UNKNOWN), 5.0) == Sent(
            "rejected", 400, None, "HTTP 400 (unsorted)"
        )
        assert len(crm.unsorted) == 1


async def test_amocrm_a_wrong_token_is_rejected_before_anything_is_added(session: aiohttp.ClientSession) -> None:
    async with AmoStandIn() as crm:
        sent = await target_for(crm, wrong=True).send(session, notification(), 5.0)
        assert sent == Sent("rejected", 401, None, "HTTP 401 (contacts)")
        assert [r.path for r in crm.received] == ["/api/v4/contacts"]


# --- RetailCRM ------------------------------------------------------------------------------------------


async def test_retailcrm_a_missed_call_is_a_hangup_event_for_the_clients_manager(
    session: aiohttp.ClientSession,
) -> None:
    async with RetailStandIn() as crm:
        sent = await target_for(crm, codes=["300"]).send(session, notification(), 5.0)
        assert sent == Sent("delivered", 200)
        (lookup,), (post,) = crm.received_at("/manager"), crm.received_at("/call/event")
        assert lookup.query["phone"] == "79123456789"
        assert post.headers["X-API-KEY"] == post.headers["X-API-KEY"] == RETAIL_KEY
        assert post.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
        assert list(post.form()) == ["event"]
        assert orjson.loads(post.form()["event"]) == {
            "phone": "79123456789",
            "type": "hangup",
            "codes": ["201"],  # the responsible manager's, not the target's codes
            "hangupStatus": "no answered",
            "callExternalId": "4242:missed:crm",
            "externalPhone": "74951234567",
        }
        assert crm.events == [orjson.loads(post.form()["event"])]


async def test_retailcrm_an_answered_call_is_told_to_the_extension_that_answered(
    session: aiohttp.ClientSession,
) -> None:
    async with RetailStandIn() as crm:
        assert (await target_for(crm).send(session, answered("105"), 5.0)).outcome == "delivered"
        assert crm.received_at("/manager") == []
        (event,) = crm.events
        assert (event["codes"], event["hangupStatus"], event["callExternalId"]) == (
            ["105"],
            "answered",
            "4242:ended:crm",
        )


@pytest.mark.parametrize("caller", [UNKNOWN, "+79170000002"], ids=["unknown", "no-manager"])
async def test_retailcrm_a_missed_call_without_a_manager_goes_to_the_targets_codes(
    session: aiohttp.ClientSession, caller: str
) -> None:
    async with RetailStandIn() as crm:
        assert (
            await target_for(crm, codes=["300", 301]).send(session, notification(caller=caller), 5.0)
        ).outcome == "delivered"
        (event,) = crm.events
        assert event["codes"] == ["300", "301"]
        sent = await target_for(crm).send(session, notification(caller=caller), 5.0)
        assert sent.outcome == "rejected"
        assert "`codes`" in (sent.error or "")
        assert len(crm.received_at("/call/event")) == 1  # nothing sent when nobody is to be told


async def test_retailcrm_a_refused_event_is_rejected(session: aiohttp.ClientSession) -> None:
    async with RetailStandIn() as crm:
        assert await target_for(crm, wrong=True).send(session, answered("105"), 5.0) == Sent(
            "rejected", 403, None, "HTTP 403 (event)"
        )
        crm.refuse("/call/event", 200, {"success": False, "errorMsg": "Telephony is not set up"})
        sent = await target_for(crm).send(session, answered("105"), 5.0)
        assert (sent.outcome, sent.status) == ("rejected", 200)


# --- every preset ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CRM_KINDS)
async def test_wrong_credentials_are_rejected_not_retried(session: aiohttp.ClientSession, kind: str) -> None:
    async with standin(kind) as crm:
        with capture_logs() as logs:
            sent = await target_for(crm, wrong=True).send(session, notification(), 5.0)
        assert sent.outcome == "rejected"
        assert sent.status in (401, 403)
        shown = f"{sent} {logs}"
        assert not any(secret in shown for secret in (*SECRETS, "nope"))


@pytest.mark.parametrize("kind", CRM_KINDS)
@pytest.mark.parametrize(("given", "waited"), [("30", 30.0), (None, None)])
async def test_the_vendors_limit_answer_is_retried_with_its_retry_after(
    session: aiohttp.ClientSession, kind: str, given: str | None, waited: float | None
) -> None:
    async with standin(kind) as crm:
        crm.misbehave("limit", retry_after=given)
        sent = await target_for(crm).send(session, notification(), 5.0)
        assert (sent.outcome, sent.status, sent.retry_after) == ("retry", crm.limit_status, waited)
        assert crm.requests == 1  # nothing after the first refusal


@pytest.mark.parametrize("kind", CRM_KINDS)
@pytest.mark.parametrize("misbehaviour", ["500", "429", "garbage"])
async def test_server_errors_and_unreadable_answers_are_retried(
    session: aiohttp.ClientSession, kind: str, misbehaviour: str
) -> None:
    async with standin(kind) as crm:
        crm.misbehave(misbehaviour)
        sent = await target_for(crm).send(session, notification(), 5.0)
        assert sent.outcome == "retry"
        assert sent.status == {"500": 500, "429": 429, "garbage": 200}[misbehaviour]


@pytest.mark.parametrize("kind", CRM_KINDS)
async def test_a_hanging_crm_costs_no_more_than_the_timeout(session: aiohttp.ClientSession, kind: str) -> None:
    async with standin(kind) as crm:
        crm.misbehave("hang")
        started = time.monotonic()
        sent = await target_for(crm).send(session, notification(), 0.5)
        assert time.monotonic() - started < 0.5 + MARGIN
        assert sent == Sent("retry", error="TimeoutError")


@pytest.mark.parametrize("kind", CRM_KINDS)
async def test_the_timeout_bounds_all_the_requests_together(session: aiohttp.ClientSession, kind: str) -> None:
    async with standin(kind) as crm:
        crm.misbehave("slow", delay=0.3)  # each answer alone is within the timeout, two are not
        started = time.monotonic()
        sent = await target_for(crm).send(session, notification(), 0.45)
        assert time.monotonic() - started < 0.45 + MARGIN
        assert sent == Sent("retry", error="TimeoutError")


@pytest.mark.parametrize("kind", CRM_KINDS)
async def test_a_huge_answer_is_read_to_its_bound_and_retried(session: aiohttp.ClientSession, kind: str) -> None:
    async with standin(kind) as crm:
        crm.misbehave("huge", size=4 * MAX_ANSWER)
        sent = await target_for(crm).send(session, notification(), 5.0)
        assert (sent.outcome, sent.status) == ("retry", 200)


async def test_an_answer_is_read_to_64_kib_at_most(session: aiohttp.ClientSession) -> None:
    async with AmoStandIn() as crm:
        crm.misbehave("huge", size=16 * MAX_ANSWER)
        answer = await fetch(session, "GET", f"{crm.base}/api/v4/contacts", {})
        assert (answer.status, len(answer.body), answer.json()) == (200, MAX_ANSWER, None)


@pytest.mark.parametrize("kind", CRM_KINDS)
async def test_a_redirect_is_not_followed_with_the_credentials(session: aiohttp.ClientSession, kind: str) -> None:
    async with standin(kind) as crm, standin(kind) as elsewhere:
        crm.refuse("/", 302, {}, Location=f"{elsewhere.base}/stolen")
        sent = await target_for(crm).send(session, notification(), 5.0)
        assert (sent.outcome, sent.status) == ("rejected", 302)
        assert elsewhere.requests == 0


@pytest.mark.parametrize("kind", CRM_KINDS)
async def test_a_crm_that_is_not_there_is_retried(session: aiohttp.ClientSession, kind: str) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    spec = {
        "bitrix24": {"webhook": f"{base}/rest/1/{BITRIX_SECRET}/"},
        "amocrm": {"url": base, "token": AMO_TOKEN},
        "retailcrm": {"url": base, "api_key": RETAIL_KEY},
    }[kind]
    sent = await compile_crm_target("crm", kind, spec, {}).send(session, notification(), 5.0)
    assert sent == Sent("retry", error="ClientConnectorError")


@pytest.mark.parametrize("kind", CRM_KINDS)
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "the summary is not JSON"),
        (b"[1, 2]", "the summary is not an object"),
        (notification(caller=None).body, "the call has no caller's number"),
        (notification(caller="anonymous").body, "the call has no caller's number"),
        (notification(ended=False, kind="connected").body, "the call has not ended"),
    ],
    ids=["not-json", "not-object", "no-caller", "hidden-caller", "not-ended"],
)
async def test_a_summary_no_crm_can_take_is_rejected_unsent(
    session: aiohttp.ClientSession, kind: str, body: bytes, error: str
) -> None:
    async with standin(kind) as crm:
        sent = await target_for(crm).send(session, dataclasses.replace(notification(), body=body), 5.0)
        assert sent.outcome == "rejected"
        assert (sent.error or "").startswith(error)
        assert crm.requests == 0


def test_retry_after_reads_seconds_and_dates_and_caps_them() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("999999999") == 24 * 3600.0
    assert retry_after(None) is None
    assert retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 100))
    assert 95 <= (retry_after(later) or 0) <= 100


# --- settings ---------------------------------------------------------------------------------------------

BITRIX = {"webhook": f"https://portal.bitrix24.ru/rest/7/{BITRIX_SECRET}/"}
AMO = {"url": "https://example.amocrm.ru", "token": AMO_TOKEN}
RETAIL = {"url": "https://example.retailcrm.ru", "api_key": RETAIL_KEY}


def test_the_settings_compile_into_targets_with_the_look_ups_names() -> None:
    bitrix = compile_crm_target("b", "bitrix24", BITRIX, {})
    assert bitrix == Bitrix24Target("b", BITRIX["webhook"], 7)  # the webhook's own user by default
    assert (bitrix.name, bitrix.kind) == ("b", "bitrix24")
    amo = compile_crm_target("a", "amocrm", {**AMO, "kind": "amocrm", "task_hours": 3}, {})
    assert amo == AmoCrmTarget("a", AMO["url"], AMO_TOKEN, 3.0)
    retail = compile_crm_target("r", "retailcrm", {**RETAIL, "codes": ["201", 202]}, {})
    assert retail == RetailCrmTarget("r", RETAIL["url"], RETAIL_KEY, ("201", "202"))
    assert not any(secret in repr((bitrix, amo, retail)) for secret in SECRETS)


def test_settings_take_the_environment() -> None:
    env = {"AMO_TOKEN": AMO_TOKEN, "AMO_HOST": "example.amocrm.ru"}
    target = compile_crm_target("a", "amocrm", {"url": "https://${AMO_HOST}", "token": "${AMO_TOKEN}"}, env)
    assert isinstance(target, AmoCrmTarget)
    assert (target.url, target.token) == ("https://example.amocrm.ru", AMO_TOKEN)
    target = compile_crm_target("r", "retailcrm", {**RETAIL, "api_key": "${RETAIL:-" + RETAIL_KEY + "}"}, {})
    assert isinstance(target, RetailCrmTarget)
    assert target.api_key == RETAIL_KEY


@pytest.mark.parametrize(
    ("kind", "spec", "path"),
    [
        ("bitrix24", {}, ("webhook",)),
        ("bitrix24", {"webhook": f"http://portal.bitrix24.ru/rest/7/{BITRIX_SECRET}/"}, ("webhook",)),
        ("bitrix24", {"webhook": f"https://portal.bitrix24.ru/{BITRIX_SECRET}/"}, ("webhook",)),
        ("bitrix24", {"webhook": f"https://portal.bitrix24.ru/rest/7/{BITRIX_SECRET}/?x=1"}, ("webhook",)),
        ("bitrix24", {**BITRIX, "user_id": 0}, ("user_id",)),
        ("bitrix24", {**BITRIX, "user_id": "7"}, ("user_id",)),
        ("bitrix24", {**BITRIX, "crm_create": "yes"}, ("crm_create",)),
        ("bitrix24", {**BITRIX, "token": AMO_TOKEN}, ("token",)),
        ("bitrix24", {"webhook": "${HOOK}"}, ("webhook",)),
        ("amocrm", {"url": AMO["url"]}, ("token",)),
        ("amocrm", {**AMO, "url": "https://example.amocrm.ru/api/v4"}, ("url",)),
        ("amocrm", {**AMO, "token": "two words"}, ("token",)),
        ("amocrm", {**AMO, "token": f"{AMO_TOKEN}\n"}, ("token",)),
        ("amocrm", {**AMO, "task_hours": 0}, ("task_hours",)),
        ("amocrm", {**AMO, "task_hours": "1h"}, ("task_hours",)),
        ("amocrm", {**AMO, "task_hours": True}, ("task_hours",)),
        ("amocrm", {**AMO, "task_hours": float("nan")}, ("task_hours",)),
        ("amocrm", {**AMO, "task_hours": 10_000}, ("task_hours",)),
        ("amocrm", {**AMO, "task_type_id": -1}, ("task_type_id",)),
        ("amocrm", {**AMO, "pipeline_id": "main"}, ("pipeline_id",)),
        ("amocrm", {**AMO, "service_code": ""}, ("service_code",)),
        ("amocrm", {**AMO, "service_code": "x" * 65}, ("service_code",)),
        ("amocrm", {**AMO, "api_key": RETAIL_KEY}, ("api_key",)),
        ("retailcrm", {"api_key": RETAIL_KEY}, ("url",)),
        ("retailcrm", {**RETAIL, "url": "ftp://example.retailcrm.ru"}, ("url",)),
        ("retailcrm", {**RETAIL, "api_key": ""}, ("api_key",)),
        ("retailcrm", {**RETAIL, "codes": "201"}, ("codes",)),
        ("retailcrm", {**RETAIL, "codes": ["201", ""]}, ("codes", 1)),
        ("retailcrm", {**RETAIL, "codes": [True]}, ("codes", 0)),
        ("retailcrm", {**RETAIL, "codes": [str(n) for n in range(51)]}, ("codes",)),
        ("retailcrm", {**RETAIL, "webhook": BITRIX["webhook"]}, ("webhook",)),
        ("retailcrm", ["not", "a", "mapping"], ()),
        ("zoho", RETAIL, ("kind",)),
    ],
)
def test_a_wrong_setting_is_named_and_no_secret_shown(kind: str, spec: Any, path: tuple[Any, ...]) -> None:
    with pytest.raises(TargetError) as raised:
        compile_crm_target("crm", kind, spec, {})
    assert raised.value.path == path
    assert isinstance(raised.value, ValueError)
    assert raised.value.message == str(raised.value)
    if path:
        assert f"{path[0]}" in raised.value.message
    assert not any(secret in raised.value.message for secret in SECRETS)


def test_an_unset_variable_is_named_never_a_value() -> None:
    with pytest.raises(TargetError) as raised:
        compile_crm_target("a", "amocrm", {"url": AMO["url"], "token": "${AMO_SECRET}"}, {"OTHER": AMO_TOKEN})
    assert raised.value.path == ("token",)
    assert "AMO_SECRET" in raised.value.message
    assert AMO_TOKEN not in raised.value.message


async def test_sends_in_parallel_do_not_share_state(session: aiohttp.ClientSession) -> None:
    async with AmoStandIn() as crm:
        target = target_for(crm)
        outcomes = await asyncio.gather(*(target.send(session, notification(), 5.0) for _ in range(3)))
        assert [sent.outcome for sent in outcomes] == ["delivered"] * 3  # 6 requests: within amoCRM's 7 a second
        assert len(crm.tasks) == 3
        more = await asyncio.gather(*(target.send(session, notification(), 5.0) for _ in range(3)))
        assert "retry" in [sent.outcome for sent in more]  # past it: amoCRM's 429, retried
