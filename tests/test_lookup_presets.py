"""The CRM presets against local stand-ins of their APIs: the manager found, nobody, number forms, settings."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from ascrm.core.lookups.presets import PRESETS, Preset, canonical
from ascrm.core.lookups.request import LookupRequest
from tests.support.crm_standins import (
    AMO_TOKEN,
    BITRIX_SECRET,
    RETAIL_KEY,
    AmoStandIn,
    BitrixStandIn,
    RetailStandIn,
    StandIn,
)

WEBHOOK_SECRET, TOKEN, API_KEY = BITRIX_SECRET, AMO_TOKEN, RETAIL_KEY
SECRETS = (WEBHOOK_SECRET, TOKEN, API_KEY)


class RefusedError(Exception):
    """A CRM's answer other than 200 or 204."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status, self.body = status, body


async def send(request: LookupRequest, timeout: float = 5.0) -> tuple[int, bytes]:
    """Sends a look-up's request as it is: the status and body of the answer."""
    limit = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=limit) as session,
        session.request(request.method, request.url, headers=list(request.headers), data=request.body) as answer,
    ):
        return answer.status, await answer.read()


async def ask(preset: Preset, config: dict[str, str], number: str) -> str | None:
    """Who the CRM says is responsible for number (the preset's request sent, its answer read)."""
    status, body = await send(preset.request(config, number))
    if status == 204:
        return preset.extract(number)(None)
    if status != 200:
        raise RefusedError(status, body)
    return preset.extract(number)(json.loads(body))


def standin(kind: str) -> StandIn:
    return {"bitrix24": BitrixStandIn, "amocrm": AmoStandIn, "retailcrm": RetailStandIn}[kind]()


def config_for(crm: StandIn, *, wrong: bool = False) -> dict[str, str]:
    """The rule-file settings that reach crm (wrong: with a wrong secret)."""
    if isinstance(crm, BitrixStandIn):
        return {"webhook": f"{crm.base}/rest/{crm.user}/{'nope' if wrong else crm.secret}/"}
    if isinstance(crm, AmoStandIn):
        return {"url": crm.base, "token": "nope" if wrong else crm.token}
    assert isinstance(crm, RetailStandIn)
    return {"url": crm.base, "api_key": "nope" if wrong else crm.api_key}


def run(kind: str, body: Callable[[StandIn, Preset, dict[str, str]], Awaitable[Any]]) -> Any:
    """Runs body against a fresh stand-in of kind."""

    async def main() -> Any:
        async with standin(kind) as crm:
            return await body(crm, PRESETS[kind], config_for(crm))

    return asyncio.run(main())


FORMS = ("+79123456789", "89123456789", "79123456789", "9123456789", "+7 (912) 345-67-89", "8-912-345-67-89")

LOOKUPS = [
    # bitrix24: the responsible employee's USER_PHONE_INNER
    *[("bitrix24", form, "101") for form in FORMS],
    ("bitrix24", "+74951112233", "102"),
    ("bitrix24", "79161234567", "102"),  # a lead ranks first, its employee has no internal number
    ("bitrix24", "79170000001", None),  # its only employee has no internal number
    ("bitrix24", "79990000000", None),  # unknown
    # amocrm: the contact's responsible_user_id, once one of its phones is the number itself
    *[("amocrm", form, "5001") for form in FORMS],
    ("amocrm", "74951112233", "5002"),
    ("amocrm", "+7 903 000-00-02", "5002"),  # a contact's second phone
    ("amocrm", "79161234567", None),  # full-text hits only: in a note, a name, a longer number
    ("amocrm", "79990000000", None),  # unknown: 204 No Content
    # retailcrm: the manager's code (the extension)
    *[("retailcrm", form, "201") for form in FORMS],
    ("retailcrm", "84951112233", "202"),
    ("retailcrm", "79170000001", None),  # the manager has no extension
    ("retailcrm", "79170000002", None),  # nobody responsible
    ("retailcrm", "79990000000", None),  # unknown
]


@pytest.mark.parametrize(("kind", "number", "expected"), LOOKUPS)
def test_the_responsible_user_is_found(kind: str, number: str, expected: str | None) -> None:
    async def body(crm: StandIn, preset: Preset, config: dict[str, str]) -> None:
        assert await ask(preset, config, number) == expected
        assert crm.requests == 1  # one request per look-up

    run(kind, body)


def test_amocrm_full_text_hits_are_answered_and_refused() -> None:
    """The stand-in answers three contacts for 9161234567, none of which has that phone."""

    async def body(crm: StandIn, preset: Preset, config: dict[str, str]) -> None:
        status, answer = await send(preset.request(config, "+79161234567"))
        contacts = json.loads(answer)["_embedded"]["contacts"]
        assert status == 200
        assert sorted(c["id"] for c in contacts) == [1003, 1004, 1005]
        assert preset.extract("+79161234567")(json.loads(answer)) is None

    run("amocrm", body)


@pytest.mark.parametrize(
    ("kind", "status", "refusal"),
    [
        ("bitrix24", 401, {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}),
        (
            "amocrm",
            401,
            {"title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401, "detail": "Unauthorized"},
        ),
        ("retailcrm", 403, {"success": False, "errorMsg": 'Wrong "apiKey" value.'}),
    ],
)
def test_a_wrong_secret_gets_the_vendors_refusal(kind: str, status: int, refusal: dict[str, Any]) -> None:
    async def body(crm: StandIn, preset: Preset, config: dict[str, str]) -> None:
        with pytest.raises(RefusedError) as refused:
            await ask(preset, config_for(crm, wrong=True), "+79123456789")
        assert (refused.value.status, json.loads(refused.value.body)) == (status, refusal)

    run(kind, body)


@pytest.mark.parametrize(
    ("kind", "method", "path", "sent"),
    [
        (
            "bitrix24",
            "POST",
            "/rest/1/SECRET/telephony.externalCall.searchCrmEntities.json",
            {"PHONE_NUMBER": "+79123456789"},
        ),
        ("amocrm", "GET", "/api/v4/contacts?query=9123456789", None),
        ("retailcrm", "GET", "/api/v5/telephony/manager?phone=79123456789&details=0&ignoreStatus=1", None),
    ],
)
def test_the_request_is_the_documented_one(kind: str, method: str, path: str, sent: Any) -> None:
    config = {"bitrix24": {"webhook": "https://p.bitrix24.ru/rest/1/SECRET/"}}.get(
        kind, {"url": f"https://example.{kind}.ru", "token": "SECRET", "api_key": "SECRET"}
    )
    request = PRESETS[kind].request(config, "8 (912) 345-67-89")
    assert request.method == method
    assert request.url.split(".ru", 1)[1] == path
    assert (json.loads(request.body) if request.body else None) == sent
    secret_header = {"amocrm": ("Authorization", "Bearer SECRET"), "retailcrm": ("X-API-KEY", "SECRET")}.get(kind)
    assert secret_header is None or secret_header in request.headers


@pytest.mark.parametrize(
    ("kind", "config", "named"),
    [
        ("bitrix24", {}, "`webhook` is required"),
        ("bitrix24", {"webhook": 42}, "`webhook` must be a string, not int"),
        ("bitrix24", {"webhook": ""}, "`webhook`"),
        ("bitrix24", {"webhook": f"http://p.bitrix24.ru/rest/1/{WEBHOOK_SECRET}/"}, "`webhook` must be an https://"),
        (
            "bitrix24",
            {"webhook": f"https://p.bitrix24.ru/rest/{WEBHOOK_SECRET}/"},
            "`webhook` must be an inbound webhook",
        ),
        (
            "bitrix24",
            {"webhook": f"https://p.bitrix24.ru/rest/1/{WEBHOOK_SECRET}/?x=1"},
            "`webhook` must have no query",
        ),
        (
            "bitrix24",
            {"webhook": f"https://u:{WEBHOOK_SECRET}@p.bitrix24.ru/rest/1/a/"},
            "`webhook` must not hold a user",
        ),
        ("amocrm", {"token": TOKEN}, "`url` is required"),
        ("amocrm", {"url": "https://x.amocrm.ru"}, "`token` is required"),
        ("amocrm", {"url": ["https://x.amocrm.ru"], "token": TOKEN}, "`url` must be a string, not list"),
        (
            "amocrm",
            {"url": "http://x.amocrm.ru", "token": TOKEN},
            "`url` must be an https:// URL (got 'http://x.amocrm.ru')",
        ),
        ("amocrm", {"url": "https://x.amocrm.ru/api/v4", "token": TOKEN}, "`url` must be the account's address alone"),
        ("amocrm", {"url": "https://x.amocrm.ru", "token": 12345}, "`token` must be a string, not int"),
        ("amocrm", {"url": "https://x.amocrm.ru", "token": ""}, "`token` is empty"),
        ("amocrm", {"url": "https://x.amocrm.ru", "token": TOKEN + "\r\nX-Evil: 1"}, "`token` must be printable ASCII"),
        ("retailcrm", {"url": "https://x.retailcrm.ru"}, "`api_key` is required"),
        ("retailcrm", {"url": "https://x.retailcrm.ru", "api_key": None}, "`api_key` must be a string, not NoneType"),
        (
            "retailcrm",
            {"url": "https://x.retailcrm.ru", "api_key": API_KEY + " x"},
            "`api_key` must be printable ASCII",
        ),
        ("retailcrm", {"url": "ftp://x.retailcrm.ru", "api_key": API_KEY}, "`url` must be an https:// URL"),
        ("retailcrm", {"url": "https://x.retailcrm.ru:port", "api_key": API_KEY}, "`url` is not a URL"),
        ("retailcrm", "url=https://x.retailcrm.ru", "the settings must be a mapping, not str"),
    ],
)
def test_check_refuses_bad_settings_naming_the_key(kind: str, config: Any, named: str) -> None:
    problem = PRESETS[kind].check(config)
    assert problem is not None
    assert problem.startswith(f"{kind}: ")
    assert named in problem
    assert not any(secret in problem for secret in SECRETS)
    with pytest.raises(ValueError, match="^" + kind) as refused:
        PRESETS[kind].request(config, "+79123456789")
    assert not any(secret in str(refused.value) for secret in SECRETS)


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("bitrix24", {"webhook": f"https://p.bitrix24.ru/rest/1/{WEBHOOK_SECRET}/"}),
        ("bitrix24", {"webhook": f"https://p.bitrix24.ru/rest/1/{WEBHOOK_SECRET}"}),
        ("bitrix24", {"webhook": f"http://127.0.0.1:8080/rest/7/{WEBHOOK_SECRET}/"}),  # loopback alone may be http
        ("amocrm", {"url": "https://x.amocrm.ru", "token": TOKEN}),
        ("amocrm", {"url": "https://x.kommo.com/", "token": TOKEN}),
        ("retailcrm", {"url": "https://x.retailcrm.ru", "api_key": API_KEY}),
    ],
)
def test_check_takes_good_settings_and_nothing_shows_a_secret(kind: str, config: dict[str, str]) -> None:
    preset = PRESETS[kind]
    assert preset.check(config) is None
    request = preset.request(config, "+79123456789")
    shown = (repr(preset), str(preset), repr(request), str(request), repr(preset.extract("+79123456789")))
    assert not any(secret in text for text in shown for secret in SECRETS)


@pytest.mark.parametrize(
    ("kind", "answer"),
    [
        ("bitrix24", []),
        ("bitrix24", {"error": "QUERY_LIMIT_EXCEEDED"}),
        ("bitrix24", {"result": {"not": "a list"}}),
        ("amocrm", [1, 2]),
        ("amocrm", {"_embedded": {"leads": []}}),
        ("retailcrm", "text"),
        ("retailcrm", {"success": False, "errorMsg": "Not found"}),
        ("retailcrm", {"success": True, "manager": ["27"]}),
    ],
)
def test_an_answer_not_in_the_documented_shape_is_an_error(kind: str, answer: Any) -> None:
    with pytest.raises(ValueError, match="^" + kind):
        PRESETS[kind].extract("+79123456789")(answer)


@pytest.mark.parametrize(
    ("kind", "answer", "expected"),
    [
        ("bitrix24", {"result": []}, None),
        ("bitrix24", {"result": [{"ASSIGNED_BY": {"USER_PHONE_INNER": " 105 "}}]}, "105"),
        (
            "bitrix24",
            {"result": [{"ASSIGNED_BY": {"USER_PHONE_INNER": ""}}, {"ASSIGNED_BY": {"USER_PHONE_INNER": 7}}]},
            "7",
        ),
        ("amocrm", None, None),
        ("amocrm", b"", None),
        ("amocrm", {"_embedded": {"contacts": []}}, None),
        ("retailcrm", {"success": True}, None),
        ("retailcrm", {"success": True, "manager": None}, None),
        ("retailcrm", {"success": True, "manager": {"id": 27, "code": ""}}, None),
    ],
)
def test_extract_reads_edge_answers(kind: str, answer: Any, expected: str | None) -> None:
    assert PRESETS[kind].extract("+79123456789")(answer) == expected


def test_presets_are_the_three_with_their_documented_rates() -> None:
    assert {k: (p.settings, p.rate, p.burst) for k, p in PRESETS.items()} == {
        "bitrix24": (("webhook",), 2.0, 50),
        "amocrm": (("url", "token"), 7.0, 1),
        "retailcrm": (("url", "api_key"), 40.0, 1),
    }
    assert all(p.kind == k and p.doc.startswith("https://") for k, p in PRESETS.items())


@pytest.mark.parametrize(
    ("stored", "number"),
    [("+7 (912) 345-67-89", "89123456789"), ("9123456789", "+79123456789"), ("+7 912 345 67 89²", "79123456789")],
)
def test_number_forms_are_one_number(stored: str, number: str) -> None:
    assert canonical(stored) == canonical(number) == "79123456789"


# --- the stand-ins' misbehaviours, for the fetching's tests -------------------------------------------------

LIMIT_ANSWERS = {
    "bitrix24": (503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}),
    "amocrm": (
        429,
        {
            "title": "Too Many Requests",
            "type": "https://httpstatus.es/429",
            "status": 429,
            "detail": "Too Many Requests",
        },
    ),
    "retailcrm": (503, {"success": False, "errorMsg": "Service Temporarily Unavailable"}),
}


@pytest.mark.parametrize("kind", sorted(PRESETS))
def test_standins_misbehave_when_told(kind: str) -> None:
    async def body(crm: StandIn, preset: Preset, config: dict[str, str]) -> None:
        request = preset.request(config, "+79123456789")
        crm.misbehave("500")
        assert (await send(request))[0] == 500
        crm.misbehave("429")
        assert (await send(request))[0] == 429
        crm.misbehave("limit")
        status, answer = await send(request)
        assert (status, json.loads(answer)) == LIMIT_ANSWERS[kind]
        crm.misbehave("garbage")
        status, answer = await send(request)
        assert status == 200
        with pytest.raises(ValueError, match=r"Expecting value|can.t decode"):
            json.loads(answer)
        crm.misbehave("huge", size=1 << 20)
        status, answer = await send(request)
        assert status == 200
        assert len(answer) >= 1 << 20
        crm.misbehave("slow", delay=0.3)
        started = time.monotonic()
        assert (await send(request))[0] == 200
        assert time.monotonic() - started >= 0.3
        crm.misbehave("hang")
        with pytest.raises(TimeoutError):
            await send(request, timeout=0.3)
        crm.misbehave(None)
        assert await ask(preset, config, "+79123456789") is not None
        assert crm.requests == 8

    run(kind, body)


def test_bitrix_standin_keeps_the_portal_limit() -> None:
    """Over its bucket (here 3 at once, refilled slowly), Bitrix24 answers 503 QUERY_LIMIT_EXCEEDED."""

    async def main() -> None:
        async with BitrixStandIn(rate=0.01, burst=3) as crm:
            request = PRESETS["bitrix24"].request(config_for(crm), "+79123456789")
            statuses = [(await send(request))[0] for _ in range(5)]
            assert statuses == [200, 200, 200, 503, 503]
            assert crm.requests == 5

    asyncio.run(main())


def test_standin_refuses_an_unknown_misbehaviour() -> None:
    with pytest.raises(ValueError, match="none of"):
        BitrixStandIn().misbehave("explode")
