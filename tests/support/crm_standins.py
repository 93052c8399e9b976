"""Local stand-ins of the Bitrix24, amoCRM and RetailCRM APIs a look-up asks, served by aiohttp on loopback.

Each answers the vendor's documented path and JSON shape from a small in-memory dataset, checks the
credential as the vendor does (a wrong one gets the vendor's own refusal), counts the requests it is
sent, and can be told to misbehave: `crm.misbehave("slow", delay=2.0)`, "500", "429", "limit" (the
vendor's own over-the-limit answer: Bitrix24's 503 QUERY_LIMIT_EXCEEDED, amoCRM's 429, RetailCRM's
503), "hang" (no answer until the stand-in stops), "garbage" (200 with a body that is not JSON) and
"huge" (200 with a JSON body of `size` bytes); `retry_after=` adds a Retry-After header to the "500", "429"
and "limit" answers. `crm.refuse("finish", 503, body)` answers the next request whose path holds "finish"
so (once, or `times=`). Every request is kept in `received` (method, path, query, headers, body) before it
is answered, and the writing endpoints keep what they made (Bitrix24's `calls` and `leads`, amoCRM's
`tasks`, `notes` and `unsorted`, RetailCRM's `events`). Use it inside a running event loop:

    async with BitrixStandIn() as crm:
        ... crm.webhook ...
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import parse_qs

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


@dataclass(frozen=True)
class Received:
    """A request as a stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The body as a form (application/x-www-form-urlencoded), each field's last value."""
        return {key: values[-1] for key, values in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass
class Refusal:
    """An answer given instead of the endpoint's to the next `times` requests whose path holds `path`."""

    path: str
    status: int
    body: Any
    times: int
    headers: dict[str, str]


class StandIn:
    """One vendor's API on 127.0.0.1 at a free port."""

    limit_status: ClassVar[int] = 429
    limit_body: ClassVar[Any] = {"error": "too many requests"}

    def __init__(self, *, rate: float = 0.0, burst: int = 1) -> None:
        self.requests = 0  # requests received, whatever was answered
        self.seen: list[web.Request] = []
        self.received: list[Received] = []
        self.refusals: list[Refusal] = []
        self._retry_after: str | None = None
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

    def misbehave(
        self, kind: str | None, *, delay: float = 1.0, size: int = 8 << 20, retry_after: str | None = None
    ) -> None:
        """Answer every request from now on the way kind says (None: behave)."""
        if kind is not None and kind not in MISBEHAVIOURS:
            raise ValueError(f"misbehaviour {kind!r} is none of {', '.join(MISBEHAVIOURS)}")
        self._misbehaviour, self._delay, self._size, self._retry_after = kind, delay, size, retry_after

    def refuse(
        self, path: str, status: int, body: Any, *, times: int = 1, retry_after: str | None = None, **headers: str
    ) -> None:
        """Answer the next `times` requests whose path holds path with status, the JSON body and headers."""
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        self.refusals.append(Refusal(path, status, body, times, headers))

    def received_at(self, part: str) -> list[Received]:
        """The requests received whose path holds part, in order."""
        return [r for r in self.received if part in r.path]

    def _extra(self) -> dict[str, str]:
        return {} if self._retry_after is None else {"Retry-After": self._retry_after}

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
        body = await request.read() if request.body_exists else b""
        self.received.append(Received(request.method, request.path, dict(request.query), dict(request.headers), body))
        for refusal in self.refusals:
            if refusal.times > 0 and refusal.path in request.path:
                refusal.times -= 1
                return web.json_response(refusal.body, status=refusal.status, headers=refusal.headers)
        match self._misbehaviour:
            case "slow":
                await asyncio.sleep(self._delay)
            case "500":
                return web.Response(
                    status=500, text="<html><body>500 Internal Server Error</body></html>", headers=self._extra()
                )
            case "429":
                return web.json_response({"error": "too many requests"}, status=429, headers=self._extra())
            case "limit":
                return web.json_response(self.limit_body, status=self.limit_status, headers=self._extra())
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
        self.users = (BitrixUser(user, None), MANAGER_A, MANAGER_B, NO_INNER)  # the webhook's own user first
        self.calls: dict[str, BitrixCall] = {}
        self.leads: list[int] = []  # the ids of the leads registrations made
        self._call_ids = itertools.count(1)
        self._lead_ids = itertools.count(900)

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
        handler = {
            "telephony.externalcall.searchcrmentities": self._search,
            "telephony.externalcall.register": self._register,
            "telephony.externalcall.finish": self._finish,
        }.get(method)
        if handler is None:
            body = {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
            return web.json_response(body, status=404)
        params: dict[str, Any] = dict(request.query)
        if request.body_exists:
            if request.content_type == "application/json":
                try:
                    params.update(await request.json())
                except ValueError:
                    return _bitrix_error("bad JSON")
            else:
                params.update(await request.post())
        return handler(params)

    def _search(self, params: dict[str, Any]) -> web.Response:
        number = str(params.get("PHONE_NUMBER") or "")
        if not number:
            return _bitrix_error("PHONE_NUMBER is empty")
        # in the dataset's order: Bitrix24 ranks by internal priorities it does not document
        found = [e for e in self.entities if any(_matches(p, number) for p in e.phones)]
        return _bitrix_result(
            [
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
            ]
        )

    def _user(self, params: dict[str, Any]) -> int | web.Response:
        """USER_ID, else the employee whose internal number USER_PHONE_INNER is (as Bitrix24 resolves them)."""
        given = int(params.get("USER_ID") or 0) if str(params.get("USER_ID") or "0").isdigit() else 0
        if given == 0:
            inner = str(params.get("USER_PHONE_INNER") or "")
            given = next((u.id for u in self.users if inner and u.inner == inner), 0)
            if given == 0:
                return _bitrix_error("USER_ID or USER_PHONE_INNER should be set")
        if given not in {u.id for u in self.users}:
            return _bitrix_error("User is not found or is not active")
        return given

    def _register(self, params: dict[str, Any]) -> web.Response:
        user = self._user(params)
        if isinstance(user, web.Response):
            return user
        if str(params.get("TYPE")) not in ("1", "2", "3", "4", "5"):
            return _bitrix_error("Unknown TYPE")
        phone = "".join(c for c in str(params.get("PHONE_NUMBER") or "") if c.isdigit() or c == "+")
        if not phone:
            return _bitrix_error("Unsupported phone number format")
        start = params.get("CALL_START_DATE")
        if start is not None and not _iso_with_offset(str(start)):
            return _bitrix_error("CALL_START_DATE should be in the ISO-8601 format")
        external = params.get("EXTERNAL_CALL_ID")
        now = time.monotonic()
        for known in self.calls.values():  # a registration repeated within 30 minutes, not finished yet
            same = (known.phone, known.type, known.user, known.external) == (phone, str(params["TYPE"]), user, external)
            if same and known.finished is None and now - known.at < 1800:
                return _bitrix_result(known.answer())
        entity = next((e for e in self.entities if any(_matches(p, phone) for p in e.phones)), None)
        created = None
        if entity is None and str(params.get("CRM_CREATE")) in ("1", "Y", "true", "True"):
            created = next(self._lead_ids)
            self.leads.append(created)
        call = BitrixCall(
            f"externalCall.{next(self._call_ids):032x}.{int(time.time())}",
            user,
            phone,
            str(params["TYPE"]),
            external,
            dict(params),
            ("CONTACT" if entity is None else entity.type, entity.id)
            if entity
            else ("LEAD", created)
            if created
            else None,
            created,
            now,
        )
        self.calls[call.call_id] = call
        return _bitrix_result(call.answer())

    def _finish(self, params: dict[str, Any]) -> web.Response:
        call_id = params.get("CALL_ID")
        if not isinstance(call_id, str):
            return _bitrix_error("CALL_ID must be a string", code="INVALID_ARGUMENT")
        user = self._user(params)
        if isinstance(user, web.Response):
            return user
        call = self.calls.get(call_id)
        if call is None or call.finished is not None:
            return _bitrix_error("Call is not found (call should be registered prior to finishing)")
        call.finished = dict(params)
        duration = int(params.get("DURATION") or 0)
        status = str(params.get("STATUS_CODE") or ("200" if duration > 0 else "304"))
        entity_type, entity_id = call.entity or (None, None)
        return _bitrix_result(
            {
                "CALL_ID": call.call_id,
                "EXTERNAL_CALL_ID": call.external,
                "PORTAL_USER_ID": user,
                "PHONE_NUMBER": call.phone,
                "INCOMING": call.type,
                "CALL_DURATION": duration,
                "CALL_STATUS": 1 if status == "200" else 0,
                "CALL_FAILED_CODE": status,
                "CRM_ACTIVITY_ID": 7000 + len(self.calls),
                "CRM_ENTITY_TYPE": entity_type,
                "CRM_ENTITY_ID": entity_id,
                "ID": len(self.calls),
            }
        )


@dataclass
class BitrixCall:
    """A call registered with telephony.externalCall.register."""

    call_id: str
    user: int
    phone: str
    type: str
    external: Any
    registered: dict[str, Any]  # the parameters it was registered with
    entity: tuple[str, int] | None  # the CRM entity it is bound to (found, or the lead made for it)
    created_lead: int | None
    at: float  # monotonic time of registration
    finished: dict[str, Any] | None = None  # the parameters it was finished with

    def answer(self) -> dict[str, Any]:
        """The register method's result."""
        created = [] if self.created_lead is None else [{"ENTITY_TYPE": "LEAD", "ENTITY_ID": self.created_lead}]
        return {
            "CALL_ID": self.call_id,
            "CRM_CREATED_LEAD": self.created_lead,
            "CRM_CREATED_ENTITIES": created,
            "CRM_ENTITY_TYPE": None if self.entity is None else self.entity[0],
            "CRM_ENTITY_ID": None if self.entity is None else self.entity[1],
        }


def _iso_with_offset(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


def _bitrix_result(result: Any) -> web.Response:
    now = time.time()
    timing = {"start": now, "finish": now, "duration": 0.0, "processing": 0, "operating": 0}
    return web.json_response({"result": result, "time": timing})


def _bitrix_error(description: str, *, code: str = "ERROR_CORE", status: int = 400) -> web.Response:
    return web.json_response({"error": code, "error_description": description}, status=status)


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
        self.tasks: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        self.unsorted: list[dict[str, Any]] = []
        self._ids = itertools.count(30001)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v4/contacts", self._contacts),
            web.post("/api/v4/tasks", self._tasks),
            web.post("/api/v4/contacts/notes", self._notes),
            web.post("/api/v4/leads/unsorted/sip", self._unsorted),
        ]

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == f"Bearer {self.token}":
            return None
        problem = {
            "title": "Unauthorized",
            "type": "https://httpstatus.es/401",
            "status": 401,
            "detail": "Unauthorized",
        }
        return web.json_response(problem, status=401, content_type="application/problem+json")

    async def _items(self, request: web.Request) -> list[dict[str, Any]] | web.Response:
        """A POST's body: a JSON array of objects (amoCRM's 400 validation problem otherwise)."""
        try:
            items = await request.json()
        except ValueError:
            items = None
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            return _amo_invalid("0", "", "The request body must be an array of objects")
        return items

    async def _tasks(self, request: web.Request) -> web.Response:
        refused = self._unauthorized(request)
        items = await self._items(request) if refused is None else refused
        if isinstance(items, web.Response):
            return items
        for n, task in enumerate(items):
            for key, kind in (("text", str), ("complete_till", int)):
                if not isinstance(task.get(key), kind):
                    return _amo_invalid(str(n), key, f"{key} is required")
            if task.get("entity_type") not in (None, "leads", "contacts", "companies", "customers"):
                return _amo_invalid(str(n), "entity_type", "NotSupportedChoice")
        made = [{**task, "id": next(self._ids)} for task in items]
        self.tasks.extend(made)
        embedded = [{"id": t["id"], "request_id": t.get("request_id", str(n))} for n, t in enumerate(made)]
        return _hal({"_links": {"self": {"href": f"{self.base}/api/v4/tasks"}}, "_embedded": {"tasks": embedded}})

    async def _notes(self, request: web.Request) -> web.Response:
        refused = self._unauthorized(request)
        items = await self._items(request) if refused is None else refused
        if isinstance(items, web.Response):
            return items
        known = {c.id for c in self.contacts}
        for n, note in enumerate(items):
            if note.get("entity_id") not in known:
                return _amo_invalid(str(n), "entity_id", "NotFound")
            if note.get("note_type") not in ("common", "call_in", "call_out", "service_message"):
                return _amo_invalid(str(n), "note_type", "NotSupportedChoice")
            if not isinstance(note.get("params"), dict):
                return _amo_invalid(str(n), "params", "params is required")
        made = [{**note, "id": next(self._ids)} for note in items]
        self.notes.extend(made)
        embedded = [{"id": m["id"], "entity_id": m["entity_id"], "request_id": m.get("request_id")} for m in made]
        return _hal(
            {"_links": {"self": {"href": f"{self.base}/api/v4/contacts/notes"}}, "_embedded": {"notes": embedded}}
        )

    async def _unsorted(self, request: web.Request) -> web.Response:
        refused = self._unauthorized(request)
        items = await self._items(request) if refused is None else refused
        if isinstance(items, web.Response):
            return items
        held = {u["source_uid"] for u in self.unsorted}
        for n, entry in enumerate(items):
            for key in ("source_uid", "source_name"):
                if not isinstance(entry.get(key), str) or not entry[key]:
                    return _amo_invalid(str(n), key, f"{key} is required")
            if entry["source_uid"] in held:  # no two identical entries in the unsorted
                return _amo_invalid(str(n), "source_uid", "Unsorted with this source_uid already exists")
            metadata = entry.get("metadata")
            for key in ("uniq", "duration", "service_code", "phone", "called_at", "from"):
                if not isinstance(metadata, dict) or key not in metadata:
                    return _amo_invalid(str(n), f"metadata.{key}", f"metadata.{key} is required")
        made = [{**entry, "uid": f"{next(self._ids):040x}"} for entry in items]
        self.unsorted.extend(made)
        embedded = [
            {
                "uid": m["uid"],
                "account_id": 28000000,
                "request_id": m.get("request_id"),
                "_embedded": {
                    "leads": [{"id": next(self._ids)}],
                    "contacts": [{"id": next(self._ids)}],
                    "companies": [],
                },
            }
            for m in made
        ]
        return _hal({"_total_items": len(made), "_embedded": {"unsorted": embedded}})

    async def _contacts(self, request: web.Request) -> web.Response:
        refused = self._unauthorized(request)
        if refused is not None:
            return refused
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


def _hal(body: Any) -> web.Response:
    return web.json_response(body, content_type="application/hal+json")


def _amo_invalid(request_id: str, path: str, detail: str) -> web.Response:
    """amoCRM's answer to a request that fails validation."""
    problem = {
        "validation-errors": [
            {"request_id": request_id, "errors": [{"code": "NotSupportedChoice", "path": path, "detail": detail}]}
        ],
        "title": "Bad Request",
        "type": "https://httpstatus.es/400",
        "status": 400,
        "detail": "Request validation failed",
    }
    return web.json_response(problem, status=400, content_type="application/problem+json")


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
        self.events: list[dict[str, Any]] = []

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v5/telephony/manager", self._manager),
            web.post("/api/v5/telephony/call/event", self._event),
        ]

    def _unauthorized(self, request: web.Request, form: Any = None) -> web.Response | None:
        key = request.headers.get("X-API-KEY") or request.query.get("apiKey") or (form or {}).get("apiKey")
        if not key:
            return web.json_response({"success": False, "errorMsg": '"apiKey" is missing.'}, status=403)
        if key != self.api_key:
            return web.json_response({"success": False, "errorMsg": 'Wrong "apiKey" value.'}, status=403)
        return None

    async def _event(self, request: web.Request) -> web.Response:
        form = await request.post()
        refused = self._unauthorized(request, form)
        if refused is not None:
            return refused
        try:
            event = json.loads(str(form.get("event", "")))
        except ValueError:
            event = None
        if not isinstance(event, dict):
            return _retail_invalid({"event": "Parameter 'event' is missing or is not a JSON object"})
        errors: dict[str, str] = {}
        if not isinstance(event.get("phone"), str) or not event["phone"]:
            errors["phone"] = "This value should not be blank."
        if event.get("type") not in ("in", "out", "hangup"):
            errors["type"] = "The value you selected is not a valid choice."
        if not event.get("codes") and not event.get("userIds"):
            errors["codes"] = "Codes or userIds should be set."
        if event.get("type") == "hangup" and event.get("hangupStatus") not in (
            "answered",
            "busy",
            "cancel",
            "failed",
            "no answered",
        ):
            errors["hangupStatus"] = "The value you selected is not a valid choice."
        if errors:
            return _retail_invalid(errors)
        self.events.append(event)
        return web.json_response({"success": True})

    async def _manager(self, request: web.Request) -> web.Response:
        refused = self._unauthorized(request)
        if refused is not None:
            return refused
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


def _retail_invalid(errors: dict[str, str]) -> web.Response:
    """RetailCRM's answer to parameters that fail validation."""
    body = {"success": False, "errorMsg": "Errors in the input parameters", "errors": errors}
    return web.json_response(body, status=400)
