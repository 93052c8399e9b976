"""Local stand-ins of the Bitrix24, amoCRM and RetailCRM APIs a look-up asks, served by aiohttp on loopback.

Each answers the vendor's documented path and JSON shape from a small in-memory dataset, checks the
credential as the vendor does (a wrong one gets the vendor's own refusal), counts the requests it is
sent, and can be told to misbehave: `crm.misbehave("slow", delay=2.0)`, "500", "429", "limit" (the
vendor's own over-the-limit answer: Bitrix24's 503 QUERY_LIMIT_EXCEEDED, amoCRM's 429, RetailCRM's
503), "hang" (no answer until the stand-in stops), "garbage" (200 with a body that is not JSON) and
"huge" (200 with a JSON body of `size` bytes). Use it inside a running event loop:

    async with BitrixStandIn() as crm:
        ... crm.webhook ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

from aiohttp import web

from ascrm.core.lookups.presets import canonical

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MISBEHAVIOURS = ("slow", "500", "429", "limit", "hang", "garbage", "huge")
BITRIX_SECRET = "k3y0fTh3w3bh00k"  # the stand-ins' credentials unless told others
AMO_TOKEN = "eyJ0eXAiOiJKV1Qi.long.lived"
RETAIL_KEY = "X2EDxEta9U3lcsSV0dwdF38UvtSCxIuGh"


@dataclass
class Bucket:
    """A leaky bucket: `burst` requests at once, refilled at `rate` a second (rate 0: no limit)."""

    rate: float
    burst: int
    level: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        """Whether one more request fits now."""
        if not self.rate:
            return True
        now = time.monotonic()
        self.level = max(0.0, self.level - (now - self.at) * self.rate)
        self.at = now
        if self.level + 1 > self.burst:
            return False
        self.level += 1
        return True


class StandIn:
    """One vendor's API on 127.0.0.1 at a free port."""

    limit_status: ClassVar[int] = 429
    limit_body: ClassVar[Any] = {"error": "too many requests"}

    def __init__(self, *, rate: float = 0.0, burst: int = 1) -> None:
        self.requests = 0  # requests received, whatever was answered
        self.seen: list[web.Request] = []
        self.bucket = Bucket(rate, burst)
        self._misbehaviour: str | None = None
        self._delay = 0.0
        self._size = 0
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base(self) -> str:
        """The stand-in's address, http://127.0.0.1:<port>."""
        return f"http://127.0.0.1:{self.port}"

    def misbehave(self, kind: str | None, *, delay: float = 1.0, size: int = 8 << 20) -> None:
        """Answer every request from now on the way kind says (None: behave)."""
        if kind is not None and kind not in MISBEHAVIOURS:
            raise ValueError(f"misbehaviour {kind!r} is none of {', '.join(MISBEHAVIOURS)}")
        self._misbehaviour, self._delay, self._size = kind, delay, size

    def routes(self) -> list[web.RouteDef]:
        """The vendor's paths."""
        raise NotImplementedError

    async def __aenter__(self) -> StandIn:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests += 1
        self.seen.append(request)
        match self._misbehaviour:
            case "slow":
                await asyncio.sleep(self._delay)
            case "500":
                return web.Response(status=500, text="<html><body>500 Internal Server Error</body></html>")
            case "429":
                return web.json_response({"error": "too many requests"}, status=429)
            case "limit":
                return web.json_response(self.limit_body, status=self.limit_status)
            case "hang":
                await self._stopping.wait()
                return web.Response(status=503)
            case "garbage":
                return web.Response(status=200, body=b"<html>not json\x00\xff", content_type="application/json")
            case "huge":
                head, tail = b'{"result": [], "filler": "', b'"}'
                filler = head + b"x" * max(0, self._size - len(head) - len(tail)) + tail
                return web.Response(status=200, body=filler, content_type="application/json")
        if not self.bucket.take():
            return web.json_response(self.limit_body, status=self.limit_status)
        return await handler(request)


def _matches(stored: str, number: str) -> bool:
    return canonical(stored) == canonical(number) != ""


# --- Bitrix24 -------------------------------------------------------------------------------------------
# https://apidocs.bitrix24.ru/api-reference/telephony/telephony-external-call-search-crm-entities.html
# (its source: https://github.com/bitrix24/b24restdocs, api-reference/telephony/, the same name .md);
# system errors (401 INVALID_CREDENTIALS, 503 QUERY_LIMIT_EXCEEDED): _includes/system-errors.md there;
# limits: https://apidocs.bitrix24.ru/limits.html (a bucket of 50 requests refilled at 2 a second)


@dataclass(frozen=True)
class BitrixUser:
    """An employee: the ASSIGNED_BY object of the answer."""

    id: int
    inner: str | None  # USER_PHONE_INNER
    mobile: str | None = None


@dataclass(frozen=True)
class BitrixEntity:
    """A lead, contact or company with its phones and responsible employee."""

    type: str  # LEAD | CONTACT | COMPANY
    id: int
    name: str
    phones: tuple[str, ...]
    assigned: BitrixUser


MANAGER_A = BitrixUser(17, "101", "+79001112233")
MANAGER_B = BitrixUser(18, "102")
NO_INNER = BitrixUser(19, None, "+79004445566")  # no internal number
BITRIX_ENTITIES = (
    BitrixEntity("CONTACT", 651, "Ivan Petrov", ("+7 (912) 345-67-89",), MANAGER_A),
    BitrixEntity("COMPANY", 643, "Daisy LLC", ("8 495 111-22-33",), MANAGER_B),
    # the lead ranks first, its employee has no internal number: the contact's is the one to call
    BitrixEntity("LEAD", 700, "New lead", ("79161234567",), NO_INNER),
    BitrixEntity("CONTACT", 701, "Old client", ("+7 916 123 45 67",), MANAGER_B),
    BitrixEntity("CONTACT", 702, "Nobody's", ("+7 917 000 00 01",), NO_INNER),
)


class BitrixStandIn(StandIn):
    """Bitrix24's REST API behind an inbound webhook /rest/<user>/<secret>/."""

    limit_status = 503
    limit_body: ClassVar[Any] = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}

    def __init__(
        self,
        *,
        user: int = 1,
        secret: str = BITRIX_SECRET,
        entities: tuple[BitrixEntity, ...] = BITRIX_ENTITIES,
        rate: float = 2.0,
        burst: int = 50,
    ) -> None:
        super().__init__(rate=rate, burst=burst)
        self.user, self.secret, self.entities = user, secret, entities

    @property
    def webhook(self) -> str:
        """The inbound webhook's URL, as Bitrix24 shows it."""
        return f"{self.base}/rest/{self.user}/{self.secret}/"

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/rest/{user}/{secret}/{method}", self._method)]

    async def _method(self, request: web.Request) -> web.Response:
        info = request.match_info
        if info["user"] != str(self.user) or info["secret"] != self.secret:
            body = {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}
            return web.json_response(body, status=401)
        method = info["method"].removesuffix(".json").lower()
        if method != "telephony.externalcall.searchcrmentities":
            body = {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
            return web.json_response(body, status=404)
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    params.update(await request.json())
                except ValueError:
                    return web.json_response({"error": "ERROR_CORE", "error_description": "bad JSON"}, status=400)
            else:
                params.update(await request.post())
        number = str(params.get("PHONE_NUMBER") or "")
        if not number:
            return web.json_response({"error": "ERROR_CORE", "error_description": "PHONE_NUMBER is empty"}, status=400)
        # in the dataset's order: Bitrix24 ranks by internal priorities it does not document
        found = [e for e in self.entities if any(_matches(p, number) for p in e.phones)]
        now = time.time()
        return web.json_response(
            {
                "result": [
                    {
                        "CRM_ENTITY_TYPE": e.type,
                        "CRM_ENTITY_ID": e.id,
                        "ASSIGNED_BY_ID": e.assigned.id,
                        "NAME": e.name,
                        "ASSIGNED_BY": {
                            "ID": str(e.assigned.id),
                            "TIMEMAN_STATUS": "OPENED",
                            "USER_PHONE_INNER": e.assigned.inner,
                            "WORK_PHONE": None,
                            "PERSONAL_PHONE": None,
                            "PERSONAL_MOBILE": e.assigned.mobile,
                        },
                    }
                    for e in found
                ],
                "time": {"start": now, "finish": now, "duration": 0.0, "processing": 0, "operating": 0},
            }
        )


# --- amoCRM ---------------------------------------------------------------------------------------------
# https://www.amocrm.ru/developers/content/crm_platform/contacts-api (GET /api/v4/contacts, `query`, 204 when
# nothing is found; English: https://developers.kommo.com/reference/contacts-list);
# 7 requests a second, 429 over it: https://es-developers.kommo.com/docs/limitaciones; errors are
# application/problem+json (title, type, status, detail)


@dataclass(frozen=True)
class AmoContact:
    """A contact: its phones, its other fields' text and its responsible user."""

    id: int
    name: str
    responsible_user_id: int
    phones: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # a text custom field's values (full-text search reads them too)


AMO_CONTACTS = (
    AmoContact(1001, "Ivan Petrov", 5001, ("+7 (912) 345-67-89",)),
    AmoContact(1002, "Olga", 5002, ("8 495 111-22-33", "+7 903 000-00-02")),
    # full-text false positives of 9161234567: its digits in a note, in a name, in a longer number
    AmoContact(1003, "Reminder", 5003, ("+7 903 000-00-03",), ("call back 9161234567 on Monday",)),
    AmoContact(1004, "Client 79161234567", 5004, ("+7 903 000-00-04",)),
    AmoContact(1005, "Ext", 5005, ("+7 916 123-45-67 ext 12",)),
)


class AmoStandIn(StandIn):
    """amoCRM's API v4 for one account, with a long-lived token."""

    limit_status = 429
    limit_body: ClassVar[Any] = {
        "title": "Too Many Requests",
        "type": "https://httpstatus.es/429",
        "status": 429,
        "detail": "Too Many Requests",
    }

    def __init__(self, *, token: str = AMO_TOKEN, contacts: tuple[AmoContact, ...] = AMO_CONTACTS) -> None:
        super().__init__(rate=7.0, burst=7)
        self.token, self.contacts = token, contacts

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v4/contacts", self._contacts)]

    async def _contacts(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            problem = {
                "title": "Unauthorized",
                "type": "https://httpstatus.es/401",
                "status": 401,
                "detail": "Unauthorized",
            }
            return web.json_response(problem, status=401, content_type="application/problem+json")
        query = request.query.get("query", "")
        wanted = "".join(c for c in query if c.isdigit())
        found = [c for c in self.contacts if not query or self._full_text(c, query, wanted)]
        if not found:
            return web.Response(status=204)
        body = {
            "_page": 1,
            "_links": {"self": {"href": f"{self.base}/api/v4/contacts?page=1&limit=50"}},
            "_embedded": {"contacts": [self._contact(c) for c in found[:50]]},
        }
        return web.json_response(body, content_type="application/hal+json")

    @staticmethod
    def _full_text(contact: AmoContact, query: str, digits: str) -> bool:
        """amoCRM's search: the query's digits anywhere in the contact's text (phones compared by digits)."""
        texts = (contact.name, *contact.phones, *contact.notes)
        if digits:
            return any(digits in "".join(c for c in text if c.isdigit()) for text in texts)
        return any(query.lower() in text.lower() for text in texts)

    def _contact(self, contact: AmoContact) -> dict[str, Any]:
        fields: list[dict[str, Any]] = []
        if contact.phones:
            values = [{"value": p, "enum_id": 100 + i, "enum_code": "WORK"} for i, p in enumerate(contact.phones)]
            fields.append(
                {
                    "field_id": 11,
                    "field_name": "Телефон",
                    "field_code": "PHONE",
                    "field_type": "multitext",
                    "values": values,
                }
            )
        if contact.notes:
            values = [{"value": n} for n in contact.notes]
            fields.append(
                {
                    "field_id": 12,
                    "field_name": "Заметка",
                    "field_code": None,
                    "field_type": "textarea",
                    "values": values,
                }
            )
        return {
            "id": contact.id,
            "name": contact.name,
            "responsible_user_id": contact.responsible_user_id,
            "group_id": 0,
            "created_by": contact.responsible_user_id,
            "updated_by": contact.responsible_user_id,
            "created_at": 1700000000,
            "updated_at": 1700000000,
            "is_deleted": False,
            "custom_fields_values": fields or None,
            "account_id": 28000000,
            "_links": {"self": {"href": f"{self.base}/api/v4/contacts/{contact.id}"}},
            "_embedded": {"tags": [], "companies": []},
        }


# --- RetailCRM ------------------------------------------------------------------------------------------
# https://docs.retailcrm.ru/Developers/API/APIVersions/APIv5#get--api-v5-telephony-manager (the answer as in
# https://github.com/retailcrm/api-client-php, tests/src/ResourceGroup/TelephonyTest.php);
# key and limits (telephony: 40 requests a second, 503 over it): https://docs.retailcrm.ru/Developers/API/APIFeatures/APIRules


@dataclass(frozen=True)
class RetailManager:
    """A user of the system; code is the extension telephony routes to."""

    id: int
    first_name: str
    code: str | None


@dataclass(frozen=True)
class RetailCustomer:
    """A customer with phones and a manager."""

    id: int
    phones: tuple[str, ...]
    manager: RetailManager | None


RETAIL_CUSTOMERS = (
    RetailCustomer(1, ("+7 (912) 345-67-89",), RetailManager(27, "Anna", "201")),
    RetailCustomer(2, ("84951112233",), RetailManager(28, "Boris", "202")),
    RetailCustomer(3, ("+79170000001",), RetailManager(29, "Vera", None)),  # no extension
    RetailCustomer(4, ("+79170000002",), None),  # nobody responsible
)


class RetailStandIn(StandIn):
    """RetailCRM's API v5 for one account, with an API key."""

    limit_status = 503
    limit_body: ClassVar[Any] = {"success": False, "errorMsg": "Service Temporarily Unavailable"}

    def __init__(
        self,
        *,
        api_key: str = RETAIL_KEY,
        customers: tuple[RetailCustomer, ...] = RETAIL_CUSTOMERS,
    ) -> None:
        super().__init__(rate=40.0, burst=40)
        self.api_key, self.customers = api_key, customers

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v5/telephony/manager", self._manager)]

    async def _manager(self, request: web.Request) -> web.Response:
        key = request.headers.get("X-API-KEY") or request.query.get("apiKey")
        if not key:
            return web.json_response({"success": False, "errorMsg": '"apiKey" is missing.'}, status=403)
        if key != self.api_key:
            return web.json_response({"success": False, "errorMsg": 'Wrong "apiKey" value.'}, status=403)
        phone = request.query.get("phone", "")
        if not phone:
            return web.json_response({"success": False, "errorMsg": "Parameter 'phone' is missing"}, status=400)
        customer = next((c for c in self.customers if any(_matches(p, phone) for p in c.phones)), None)
        body: dict[str, Any] = {"success": True}
        if customer is not None and customer.manager is not None:
            m = customer.manager
            body["manager"] = {"id": m.id, "firstName": m.first_name, "lastName": "", "email": f"{m.id}@example.com"}
            if m.code is not None:
                body["manager"]["code"] = m.code
        if customer is not None and request.query.get("details") in ("1", "true"):
            body["customer"] = {"id": customer.id, "phones": [{"number": p} for p in customer.phones]}
            body["links"] = {"newOrderLink": f"{self.base}/orders/add?phone={phone}"}
        return web.json_response(body)
