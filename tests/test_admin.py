"""The admin API on a running `ascrm serve`: listing and inspecting calls, pushing and cancelling commands."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from ascrm import Settings, create_app
from ascrm.core.calls import MemoryCallStore, StoreUnavailableError
from ascrm.core.protocol import EventType
from ascrm.service.auth.basic import Credential
from tests.support.metrics import scrape, value
from tests.support.server import PASSWORD, USER, Server, ServerFactory, platform_config

CONTENT_TYPE = "application/json; charset=UTF-8"
PREFIX = "/autosecretary"
ADMIN = ("ops", "admin-pässword")
RULES = """
rules:
  - id: welcome
    on: CallAccepted
    if: {UN: "74950000001"}
    do: {TransferEXT: "1234"}
  - id: poll-transfer
    on: poll
    if: {UN: "74950000001"}
    do: {TransferPBX: PBX7777}
"""
RULED_UN = "74950000001"
NO_ACTION = {"EventType": 0, "Param": ""}
_call_ids = itertools.count(910_001)
_numbers = itertools.count(79_990_000_001)


@pytest.fixture(scope="module")
def admin_server(serve_module: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Server:
    tmp = tmp_path_factory.mktemp("admin")
    (tmp / "admin-rules.yaml").write_text(RULES)
    auth = {
        "platform": [{"user": USER, "password": "${TEST_PLATFORM_PASSWORD}"}],
        "admin": [{"user": ADMIN[0], "password": "${TEST_ADMIN_PASSWORD}"}],
        "limits": {"per_client": 100_000},  # the tests send many wrong credentials from one address
    }
    config = platform_config(auth=auth, root_path=PREFIX, rules="admin-rules.yaml")
    return serve_module(config, folder=tmp, env={"TEST_ADMIN_PASSWORD": ADMIN[1]}, prefix=PREFIX)


@pytest.fixture(scope="module")
def platform(admin_server: Server) -> Iterator[httpx.Client]:
    with admin_server.client() as client:
        yield client


@pytest.fixture(scope="module")
def admin(admin_server: Server) -> Iterator[httpx.Client]:
    with admin_server.client(auth=ADMIN) as client:
        yield client


def number() -> str:
    """A phone number no other test uses."""
    return str(next(_numbers))


def post_event(platform: httpx.Client, call_id: int, event_type: int, **fields: Any) -> dict[str, Any]:
    """POST a CRMDData event as the platform does; the ReturnCRMData answer."""
    body = {"CallID": call_id, "EventTime": "2026-11-27T10:15:00+03:00", "EventType": event_type, "ServiceType": 1}
    body.update(fields)
    response = platform.post("/CallEvent", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def new_call(platform: httpx.Client, *, an: str = "79161234567", un: str = "74951234567", service: int = 1) -> int:
    """A call the platform has just reported accepted; its CallID."""
    call_id = next(_call_ids)
    post_event(platform, call_id, EventType.CallAccepted, AN=an, UN=un, ServiceType=service)
    return call_id


def poll(platform: httpx.Client, call_id: int) -> dict[str, Any]:
    """The platform's GET poll; the answer's EventType and Param."""
    response = platform.get(f"/CallEvent/{call_id}")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["CallID"] == call_id
    return {"EventType": answer["EventType"], "Param": answer["Param"]}


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a successful admin answer, with the exact content type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    return response.json()


def refused(response: httpx.Response, status: int, *fragments: str) -> str:
    """The message of a JSON error answer, which must contain every fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    body = response.json()
    assert set(body) == {"error", "message"}
    message: str = body["message"]
    for fragment in fragments:
        assert fragment in message
    return message


def push(admin: httpx.Client, call_id: int, action: Any, param: Any = None) -> httpx.Response:
    """POST a command for a call."""
    body = {"action": action} if param is None else {"action": action, "param": param}
    return admin.post(f"/admin/calls/{call_id}/commands", json=body)


def listing(admin: httpx.Client, **query: Any) -> dict[str, Any]:
    """GET /admin/calls with query parameters."""
    body: dict[str, Any] = ok(admin.get("/admin/calls", params=query))
    return body


# ----------------------------------------------------------------------------------------------------
# Listing


def test_list_filters_by_an_and_un(platform: httpx.Client, admin: httpx.Client) -> None:
    an, other_an, un = number(), number(), number()
    first, second = new_call(platform, an=an, un=un), new_call(platform, an=an, un=un)
    third = new_call(platform, an=other_an, un=un)
    by_un = listing(admin, un=un)
    assert [call["call_id"] for call in by_un["calls"]] == [third, second, first]  # most recently updated first
    assert by_un["total"] == 3
    by_an = listing(admin, an=an)
    assert [call["call_id"] for call in by_an["calls"]] == [second, first]
    assert listing(admin, an=other_an, un=un)["total"] == 1
    assert listing(admin, an=number())["calls"] == []


def test_list_filters_by_state(platform: httpx.Client, admin: httpx.Client) -> None:
    un = number()
    live, connected, transferred, ended = (new_call(platform, un=un) for _ in range(4))
    poll(platform, connected)
    post_event(platform, transferred, EventType.Transfer, Result="1280")
    post_event(platform, ended, EventType.EndCall, Result="1")
    states = {
        state: [c["call_id"] for c in listing(admin, un=un, state=state)["calls"]]
        for state in ("live", "connected", "ended")
    }
    assert states == {"live": [live], "connected": [transferred, connected], "ended": [ended]}
    everywhere = listing(admin, state="ended", limit=500)["calls"]
    assert ended in [call["call_id"] for call in everywhere]
    assert {call["state"] for call in everywhere} == {"ended"}


def test_list_pagination(platform: httpx.Client, admin: httpx.Client) -> None:
    un = number()
    calls = [new_call(platform, un=un) for _ in range(5)][::-1]  # newest first
    pages = [listing(admin, un=un, offset=offset, limit=2) for offset in (0, 2, 4, 6)]
    assert [[call["call_id"] for call in page["calls"]] for page in pages] == [calls[:2], calls[2:4], calls[4:], []]
    assert [(page["total"], page["offset"], page["limit"]) for page in pages] == [(5, o, 2) for o in (0, 2, 4, 6)]
    assert listing(admin, un=un, limit=0) == {"calls": [], "total": 5, "offset": 0, "limit": 0}
    defaults = listing(admin, un=un)
    assert (defaults["offset"], defaults["limit"]) == (0, 50)
    assert listing(admin, un=un, limit=10_000)["limit"] == 500
    assert listing(admin, un=un, an="", state="", offset="")["total"] == 5  # empty values: no filter


def test_list_summary(platform: httpx.Client, admin: httpx.Client) -> None:
    an = number()
    call_id = new_call(platform, an=an, un=RULED_UN)
    ok(push(admin, call_id, "TransferPBX", "PBX4951234"), 201)
    [summary] = listing(admin, an=an)["calls"]
    assert set(summary) == {
        "call_id",
        "an",
        "un",
        "service_type",
        "state",
        "started_at",
        "updated_at",
        "connected_at",
        "ended_at",
        "pending_commands",
        "last_decision",
    }
    assert (summary["call_id"], summary["an"], summary["un"], summary["service_type"]) == (call_id, an, RULED_UN, 1)
    assert (summary["state"], summary["connected_at"], summary["ended_at"]) == ("live", None, None)
    assert summary["started_at"] == "2026-11-27T10:15:00+03:00"
    assert summary["pending_commands"] == 1
    assert summary["last_decision"]["rule"] == "welcome"
    assert summary["last_decision"]["action"] == "TransferEXT"


@pytest.mark.parametrize(
    ("query", "fragments"),
    [
        ("offset=-1", ("offset", "'-1'")),
        ("offset=abc", ("offset", "'abc'")),
        ("offset=1_000", ("offset", "'1_000'")),
        ("limit=1.5", ("limit", "'1.5'")),
        ("limit=-5", ("limit", "'-5'")),
        ("limit=99999999999999999999999", ("limit", "'99999999999999999999999'")),
        ("state=gone", ("state", "'gone'", "live, connected, ended")),
        ("state=ENDED", ("state", "'ENDED'")),
        ("sate=ended", ("sate", "unknown query parameter")),
        ("an=1&an=2", ("an", "more than once")),
    ],
)
def test_list_bad_query_is_400(admin: httpx.Client, query: str, fragments: tuple[str, ...]) -> None:
    refused(admin.get(f"/admin/calls?{query}"), 400, *fragments)


# ----------------------------------------------------------------------------------------------------
# One call


def test_call_detail_has_events_and_decisions(platform: httpx.Client, admin: httpx.Client) -> None:
    call_id = new_call(platform, an="79161110000", un=RULED_UN)
    post_event(platform, call_id, EventType.DTMF, DTMF="5")
    command = ok(push(admin, call_id, "TransferPBX", "PBX4951234"), 201)["command"]
    assert poll(platform, call_id) == {"EventType": 5, "Param": "PBX4951234"}
    assert poll(platform, call_id) == {"EventType": 5, "Param": "PBX7777"}
    detail = ok(admin.get(f"/admin/calls/{call_id}"))
    assert (detail["call_id"], detail["an"], detail["un"], detail["state"]) == (
        call_id,
        "79161110000",
        RULED_UN,
        "connected",
    )
    assert [(e["event"], e["code"]) for e in detail["events"]] == [("CallAccepted", 1), ("DTMF", 4)]
    assert detail["events"][1]["fields"] == {"DTMF": "5"}
    assert detail["digits"] == "5"
    decisions = [(d["trigger"], d["action"], d["param"], d["rule"], d["command"]) for d in detail["decisions"]]
    assert decisions == [
        ("CallAccepted", "TransferEXT", "1234", "welcome", None),
        ("poll", "TransferPBX", "PBX4951234", None, command["id"]),
        ("poll", "TransferPBX", "PBX7777", "poll-transfer", None),
    ]
    assert detail["commands"] == []
    assert detail["fired_polls"] == ["poll-transfer"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/calls/{id}"),
        ("POST", "/admin/calls/{id}/commands"),
        ("DELETE", "/admin/calls/{id}/commands/1"),
    ],
)
def test_unknown_call_is_404(admin: httpx.Client, method: str, path: str) -> None:
    body = {"action": "BackFromConsultCall"} if method == "POST" else None
    response = admin.request(method, path.format(id=999_999_999), json=body)
    refused(response, 404, "no call 999999999")


@pytest.mark.parametrize(
    ("path", "fragments"),
    [
        ("/admin/calls/abc", ("call_id", "'abc'")),
        ("/admin/calls/99999999999999999999", ("call_id", "int64")),
        ("/admin/calls/1_0", ("call_id", "'1_0'")),
    ],
)
def test_bad_call_id_is_400(admin: httpx.Client, path: str, fragments: tuple[str, ...]) -> None:
    refused(admin.get(path), 400, *fragments)


# ----------------------------------------------------------------------------------------------------
# Commands


def test_pushed_command_is_answered_once_at_the_next_poll(platform: httpx.Client, admin: httpx.Client) -> None:
    call_id = new_call(platform)
    assert poll(platform, call_id) == NO_ACTION
    pushed = ok(push(admin, call_id, "TransferPBX", "PBX4951234"), 201)
    assert pushed["position"] == 1
    assert pushed["command"]["action"] == "TransferPBX"
    assert pushed["command"]["param"] == "PBX4951234"
    assert set(pushed["command"]) == {"id", "action", "param", "pushed_at"}
    assert "warning" not in pushed
    assert poll(platform, call_id) == {"EventType": 5, "Param": "PBX4951234"}
    assert poll(platform, call_id) == NO_ACTION
    assert poll(platform, call_id) == NO_ACTION


def test_after_the_command_the_poll_rules_answer(platform: httpx.Client, admin: httpx.Client) -> None:
    call_id = new_call(platform, un=RULED_UN)
    ok(push(admin, call_id, "BackFromConsultCall"), 201)
    assert poll(platform, call_id) == {"EventType": 12, "Param": ""}
    assert poll(platform, call_id) == {"EventType": 5, "Param": "PBX7777"}
    assert poll(platform, call_id) == NO_ACTION


def test_two_pushes_are_delivered_in_order(platform: httpx.Client, admin: httpx.Client) -> None:
    call_id = new_call(platform)
    first = ok(push(admin, call_id, "TransferPBX", "PBX111"), 201)
    second = ok(push(admin, call_id, 12, ""), 201)  # by code, empty param
    assert (first["position"], second["position"]) == (1, 2)
    assert second["command"]["id"] > first["command"]["id"]
    assert second["command"]["action"] == "BackFromConsultCall"
    pending = ok(admin.get(f"/admin/calls/{call_id}"))["commands"]
    assert [command["id"] for command in pending] == [first["command"]["id"], second["command"]["id"]]
    assert poll(platform, call_id) == {"EventType": 5, "Param": "PBX111"}
    assert poll(platform, call_id) == {"EventType": 12, "Param": ""}
    assert poll(platform, call_id) == NO_ACTION


def test_action_names_are_read_as_rule_actions_are(platform: httpx.Client, admin: httpx.Client) -> None:
    call_id = new_call(platform)
    assert ok(push(admin, call_id, "transferpbx", "PBX1"), 201)["command"]["action"] == "TransferPBX"
    assert ok(push(admin, call_id, "5", "PBX2"), 201)["command"]["action"] == "TransferPBX"
    assert ok(push(admin, call_id, "Hangup", ""), 201)["command"]["param"] == ""


def test_an_inbound_call_takes_any_action_at_its_polls(platform: httpx.Client, admin: httpx.Client) -> None:
    call_id = new_call(platform)
    pushed = ok(push(admin, call_id, "TransferDN", "74951234567"), 201)
    assert "warning" not in pushed  # the original limits only outgoing calls' polls
    assert poll(platform, call_id) == {"EventType": 1, "Param": "74951234567"}


def test_delete_a_pending_command(platform: httpx.Client, admin: httpx.Client) -> None:
    call_id = new_call(platform)
    first = ok(push(admin, call_id, "TransferPBX", "PBX111"), 201)["command"]["id"]
    second = ok(push(admin, call_id, "TransferPBX", "PBX222"), 201)["command"]["id"]
    assert ok(admin.delete(f"/admin/calls/{call_id}/commands/{first}")) == {"cancelled": True}
    refused(admin.delete(f"/admin/calls/{call_id}/commands/{first}"), 404, f"command {first}", "not pending")
    assert poll(platform, call_id) == {"EventType": 5, "Param": "PBX222"}
    refused(admin.delete(f"/admin/calls/{call_id}/commands/{second}"), 404, f"command {second}", "delivered at")
    refused(admin.delete(f"/admin/calls/{call_id}/commands/77"), 404, f"call {call_id} has no command 77")
    refused(admin.delete(f"/admin/calls/{call_id}/commands/x"), 400, "command_id", "'x'")
    assert poll(platform, call_id) == NO_ACTION


def test_push_to_an_ended_call_is_409(platform: httpx.Client, admin: httpx.Client) -> None:
    call_id = new_call(platform)
    post_event(platform, call_id, EventType.EndCall, Result="1")
    refused(push(admin, call_id, "TransferPBX", "PBX4951234"), 409, f"call {call_id} has ended")
    assert ok(admin.get(f"/admin/calls/{call_id}"))["state"] == "ended"  # still readable


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"action": "Teleport", "param": "x"}, ("action", "'Teleport'", "known: TransferDN")),
        ({"action": 99}, ("action", "99")),
        ({"action": True}, ("action", "True")),
        ({"action": ["Hangup"]}, ("action", "['Hangup']")),
        ({"param": "PBX1"}, ("action", "required")),
        ({"action": None}, ("action", "required")),
        ({"action": "TransferPBX", "param": "XYZ"}, ("param 'XYZ' for TransferPBX", "softswitch number")),
        ({"action": "TransferEXT", "param": "12345"}, ("param '12345' for TransferEXT", "4-digit")),
        ({"action": "TransferDN", "param": "+74951234567"}, ("param '+74951234567' for TransferDN",)),
        ({"action": "TransferDN"}, ("param '' for TransferDN", "needs a param")),
        ({"action": "PlayPrompt", "param": "hello.wav"}, ("param 'hello.wav' for PlayPrompt", "extension")),
        ({"action": "Hangup", "param": "now"}, ("param 'now' for Hangup", "takes no param")),
        ({"action": "BackFromConsultCall", "param": "1"}, ("param '1' for BackFromConsultCall", "takes no param")),
        ({"action": "TransferEXT", "param": 1234}, ("param", "must be a string", "1234")),
        ({"action": "TransferPBX", "param": ["PBX1"]}, ("param", "must be a string")),
        ({"action": "Hangup", "when": "now"}, ("when", "unknown key", "action, param")),
    ],
)
def test_push_validation_is_422(
    platform: httpx.Client, admin: httpx.Client, body: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    call_id = new_call(platform)
    refused(admin.post(f"/admin/calls/{call_id}/commands", json=body), 422, *fragments)
    assert ok(admin.get(f"/admin/calls/{call_id}"))["commands"] == []


@pytest.mark.parametrize(
    ("content", "fragments"),
    [(b"", ("not valid JSON",)), (b"{action", ("not valid JSON",)), (b'["Hangup"]', ("JSON object", "list"))],
)
def test_push_body_that_is_not_a_json_object_is_400(
    platform: httpx.Client, admin: httpx.Client, content: bytes, fragments: tuple[str, ...]
) -> None:
    call_id = new_call(platform)
    response = admin.post(f"/admin/calls/{call_id}/commands", content=content)
    refused(response, 400, *fragments)


def test_outgoing_calls_take_the_outgoing_poll_format(platform: httpx.Client, admin: httpx.Client) -> None:
    call_id = new_call(platform, service=2)
    refused(push(admin, call_id, "TransferPBX", "PBX4951234"), 422, "'PBX4951234'", "outgoing-service")
    ok(push(admin, call_id, "TransferPBX", "800049512345671234"), 201)
    assert poll(platform, call_id) == {"EventType": 5, "Param": "800049512345671234"}


# ----------------------------------------------------------------------------------------------------
# Auth, routes, content type


@pytest.mark.parametrize(
    "auth",
    [None, (USER, PASSWORD), (ADMIN[0], "wrong"), ("nobody", ADMIN[1])],
    ids=["none", "platform", "wrong-password", "unknown-user"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/calls"),
        ("GET", "/admin/calls/1"),
        ("POST", "/admin/calls/1/commands"),
        ("DELETE", "/admin/calls/1/commands/1"),
    ],
)
def test_admin_api_needs_admin_credentials(
    admin_server: Server, auth: tuple[str, str] | None, method: str, path: str
) -> None:
    with httpx.Client(base_url=admin_server.base_url, auth=auth) as client:
        response = client.request(method, path, json={"action": "Hangup"})
    refused(response, 401, "admin")
    assert response.headers["www-authenticate"].startswith('Basic realm="ascrm-admin"')


@pytest.mark.parametrize(("method", "path"), [("GET", "/CallEvent"), ("POST", "/CallEvent"), ("GET", "/CallEvent/1")])
def test_admin_credentials_do_not_open_the_platform_endpoints(admin: httpx.Client, method: str, path: str) -> None:
    response = admin.request(method, path, json={"CallID": 1, "EventType": 1})
    refused(response, 401)
    assert response.headers["www-authenticate"].startswith('Basic realm="ascrm"')


def test_admin_api_answers_without_the_prefix_too(admin_server: Server, platform: httpx.Client) -> None:
    an = number()
    call_id = new_call(platform, an=an)
    root = admin_server.base_url.removesuffix(PREFIX)
    with httpx.Client(base_url=root, auth=ADMIN) as client:
        assert [call["call_id"] for call in ok(client.get("/admin/calls", params={"an": an}))["calls"]] == [call_id]


def test_wrong_method_is_a_json_405(admin: httpx.Client) -> None:
    refused(admin.put("/admin/calls/1"), 405)
    refused(admin.get("/admin/calls/1/commands"), 405)


def test_without_admin_credentials_the_admin_api_is_closed(serve: ServerFactory) -> None:
    running = serve(platform_config())
    for auth in (None, (USER, PASSWORD), ("admin", "admin"), ADMIN):
        with running.client(auth=auth) as client:
            response = client.get("/admin/calls")
        refused(response, 401, "no admin credentials are configured")
        assert response.headers["www-authenticate"].startswith('Basic realm="ascrm-admin"')


# ----------------------------------------------------------------------------------------------------
# A store that does not answer (in process: the server's store cannot be made to fail from outside)


class UnavailableStore(MemoryCallStore):
    """A store whose admin-facing operations time out."""

    async def calls(self, **filters: Any) -> Any:
        raise StoreUnavailableError("timed out after 1000 ms")

    async def get(self, call_id: int) -> Any:
        raise StoreUnavailableError("timed out after 1000 ms")

    async def cancel(self, call_id: int, command_id: int) -> bool:
        raise StoreUnavailableError("timed out after 1000 ms")


def test_store_unavailable_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ascrm.service.app.open_store", lambda settings, observe=None: UnavailableStore())
    settings = Settings(admin_credentials=(Credential("ops", password="pw"),))
    with TestClient(create_app(settings)) as client:
        responses = [
            client.get("/admin/calls", auth=("ops", "pw")),
            client.get("/admin/calls/1", auth=("ops", "pw")),
            client.post("/admin/calls/1/commands", json={"action": "Hangup"}, auth=("ops", "pw")),
            client.delete("/admin/calls/1/commands/1", auth=("ops", "pw")),
        ]
    for response in responses:
        refused(response, 503, "unavailable", "timed out")


def test_metrics_count_calls_evicted_by_the_cap(serve: ServerFactory) -> None:
    server = serve(platform_config(state={"max_calls": 3}), admin=("ops", "metrics-pw"))
    with server.client() as http, server.client(auth=("ops", "metrics-pw")) as admin:

        def evicted() -> float:
            samples = scrape(admin)
            assert ("ascrm_calls_evicted_total", ()) in samples
            return value(samples, "ascrm_calls_evicted_total")

        assert evicted() == 0
        for call_id in range(7001, 7006):  # five calls, room for three
            http.post("/CallEvent", json={"CallID": call_id, "EventType": 1, "AN": "79161234567"})
        assert evicted() == 2
        assert len(server.logged("call_evicted")) == 2
        assert http.get("/metrics").status_code == 401  # platform credentials do not open it
