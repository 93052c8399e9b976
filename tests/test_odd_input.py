"""Odd but authenticated requests on a running `ascrm serve`: deep nesting, lone surrogates, HEAD, and
paths with trailing or doubled slashes. Each gets a JSON answer that is right, never a 500 or a redirect,
and leaves nothing behind that breaks the admin API or the logs."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ascrm.service.logs import JSONLine
from tests.support.redis import RedisServer
from tests.support.server import Server, ServerFactory, platform_config

CONTENT_TYPE = "application/json; charset=UTF-8"
PREFIX = "/base"
ADMIN = ("ops", "admin-pässword")
_call_ids = itertools.count(770_001)


@pytest.fixture(scope="module")
def odd_server(serve_module: ServerFactory) -> Server:
    return serve_module(platform_config(root_path=PREFIX), admin=ADMIN)


@pytest.fixture(scope="module")
def platform(odd_server: Server) -> Iterator[httpx.Client]:
    with odd_server.client(base_url=odd_server.base_url + PREFIX) as client:
        yield client


@pytest.fixture(scope="module")
def admin(odd_server: Server) -> Iterator[httpx.Client]:
    with odd_server.client(auth=ADMIN, base_url=odd_server.base_url + PREFIX) as client:
        yield client


def crmd(call_id: int, event_type: int = 1, **fields: Any) -> dict[str, Any]:
    """A CRMDData body as the platform sends it."""
    body: dict[str, Any] = {
        "CallID": call_id,
        "EventTime": "2026-11-27T10:15:00+03:00",
        "AN": "79161234567",
        "UN": "74951234567",
        "EventType": event_type,
        "ServiceType": 1,
    }
    body.update(fields)
    return body


def raw_body(fields: dict[str, Any], **raw: str) -> bytes:
    """A JSON object of fields plus members whose values are written as given (JSON escapes kept)."""
    members = [f'"{key}": {json.dumps(value)}' for key, value in fields.items() if key not in raw]
    members += [f'"{key}": {text}' for key, text in raw.items()]
    return ("{" + ", ".join(members) + "}").encode()


def json_answer(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of an answer with the exact content type and no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    assert "Traceback" not in response.text
    return response.json()


def no_action(response: httpx.Response, call_id: int) -> None:
    assert json_answer(response) == {"CallID": call_id, "EventType": 0, "Param": ""}


def post(platform: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return platform.post(path, content=body, headers={"content-type": "application/json"})


# ----------------------------------------------------------------------------------------------------
# Deep nesting: refused before any recursive parser runs


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/CallEvent", b"[" * 2000 + b"]" * 2000),
        ("/CallEvent", b'{"CallID": 1, "AN": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
        ("/CallEvent", b'{"AN": ' + b"[" * 100 + b"]" * 100 + b"}"),  # orjson reads it; the log could not
        ("/CallEvent", b'{"Generic": ' + b'{"a": ' * 1500 + b"1" + b"}" * 1500 + b"}"),
        ("/CallEvent", b"[" * 2000),  # unbalanced too
        ("/CallEvent/0", b"[" * 2000 + b"]" * 2000),
        ("/CallEvent/12", b'{"DN1": 123456789012345678901234567890, "AN": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
    ],
)
def test_deeply_nested_json_is_400(odd_server: Server, platform: httpx.Client, path: str, body: bytes) -> None:
    body_json = json_answer(post(platform, path, body), 400)
    assert body_json["error"] == "bad_request"
    assert "nested" in body_json["message"]
    assert not odd_server.logged("request_failed", timeout=0)


def test_brackets_inside_strings_do_not_count_as_nesting(platform: httpx.Client) -> None:
    call_id = next(_call_ids)
    no_action(platform.post("/CallEvent", json=crmd(call_id, Generic="[" * 2000 + "{" * 100)), call_id)


def test_a_deep_admin_command_body_is_400(admin: httpx.Client) -> None:
    response = admin.post("/admin/calls/1/commands", content=b"[" * 2000 + b"]" * 2000)
    assert json_answer(response, 400)["error"] == "bad_request"


# ----------------------------------------------------------------------------------------------------
# Lone surrogates: the field is unreadable, the request answered, nothing stored that breaks later


SURROGATES = [r'"\ud800"', r'"79161234567\udfff"', r'"\udc00\ud800"', r'"2026-11-27T10:15:00+03:00\ud800"']


@pytest.mark.parametrize("field", ["EventTime", "AN", "UN", "DN1", "DN2", "EXT1", "EXT2", "DTMF", "Generic", "Result"])
@pytest.mark.parametrize("text", SURROGATES)
def test_a_lone_surrogate_makes_the_field_unreadable(
    odd_server: Server, platform: httpx.Client, admin: httpx.Client, field: str, text: str
) -> None:
    call_id = next(_call_ids)
    no_action(post(platform, "/CallEvent", raw_body(crmd(call_id, 9), **{field: text})), call_id)
    [warning] = odd_server.logged("field_unreadable", call_id=call_id)
    assert warning["field"] == field
    assert "surrogate" in warning["reason"]
    assert odd_server.logged("event_answered", call_id=call_id)
    detail = json_answer(admin.get(f"/admin/calls/{call_id}"))
    assert detail["call_id"] == call_id
    assert json_answer(admin.get("/admin/calls", params={"limit": 500}))["total"] >= 1
    assert json_answer(platform.get(f"/CallEvent/{call_id}"))["CallID"] == call_id


@pytest.mark.parametrize("path", ["/CallEvent/0", "/CallEvent"])
def test_a_lone_surrogate_in_the_connection_test(odd_server: Server, platform: httpx.Client, path: str) -> None:
    body = raw_body({"CallID": 0, "EventType": ""}, UN=r'"7495\ud800"')
    no_action(post(platform, path, body), 0)
    assert not odd_server.logged("request_failed", timeout=0)


def test_a_lone_surrogate_in_a_key_or_an_unknown_field_is_ignored(platform: httpx.Client, admin: httpx.Client) -> None:
    call_id = next(_call_ids)
    body = raw_body(crmd(call_id), **{"X\\ud800": "1", "Extra": r'"\ud800"'})
    no_action(post(platform, "/CallEvent", body), call_id)
    json_answer(admin.get("/admin/calls"))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (rb'{"action": "TransferPBX", "param": "PBX\ud800"}', 422),
        (rb'{"action": "\ud800"}', 422),
        (rb'{"\ud800": 1}', 422),
    ],
)
def test_a_lone_surrogate_in_an_admin_command(
    platform: httpx.Client, admin: httpx.Client, body: bytes, status: int
) -> None:
    call_id = next(_call_ids)
    no_action(platform.post("/CallEvent", json=crmd(call_id)), call_id)
    answer = json_answer(admin.post(f"/admin/calls/{call_id}/commands", content=body), status)
    assert set(answer) == {"error", "message"}
    json_answer(admin.get(f"/admin/calls/{call_id}"))


# ----------------------------------------------------------------------------------------------------
# HEAD changes nothing


@pytest.mark.parametrize("path", ["/CallEvent/{call_id}", "/CallEvent"])
def test_head_is_405_and_takes_no_pending_command(platform: httpx.Client, admin: httpx.Client, path: str) -> None:
    call_id = next(_call_ids)
    no_action(platform.post("/CallEvent", json=crmd(call_id)), call_id)
    command = {"action": "TransferPBX", "param": "PBX1"}
    pushed = json_answer(admin.post(f"/admin/calls/{call_id}/commands", json=command), 201)
    response = platform.head(path.format(call_id=call_id))
    assert response.status_code == 405
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.headers["allow"] == "GET, POST"
    detail = json_answer(admin.get(f"/admin/calls/{call_id}"))
    assert [command["id"] for command in detail["commands"]] == [pushed["command"]["id"]]
    assert detail["decisions"] == []
    assert detail["connected_at"] is None
    answer = json_answer(platform.get(f"/CallEvent/{call_id}"))
    assert (answer["EventType"], answer["Param"]) == (5, "PBX1")


def test_get_connection_test_is_unchanged(platform: httpx.Client) -> None:
    no_action(platform.get("/CallEvent"), 0)


# ----------------------------------------------------------------------------------------------------
# Trailing and doubled slashes: the plain path, never a redirect


def call_path(template: str, call_id: int) -> str:
    return template.format(call_id=call_id)


def url(server: Server, path: str) -> str:
    """An absolute URL: httpx would read a relative `//x` as a host name."""
    return server.base_url + path


@pytest.mark.parametrize(
    "template",
    [
        "/base/CallEvent/",
        "/base//CallEvent",
        "//base/CallEvent",
        "/base//CallEvent//",
        "/base/CallEvent/{call_id}/",
        "/base/CallEvent//{call_id}",
        "/CallEvent/",
        "//CallEvent",
    ],
)
def test_slashes_in_event_paths(odd_server: Server, template: str) -> None:
    call_id = next(_call_ids)
    with odd_server.client(follow_redirects=False) as http:
        path = url(odd_server, call_path(template, call_id))
        no_action(post(http, path, raw_body(crmd(call_id))), call_id)
        no_action(http.get(path), call_id if "{" in template else 0)


@pytest.mark.parametrize("path", ["/base/CallEvent/", "/base//CallEvent", "/base/CallEvent/0/", "/base//CallEvent/0"])
def test_slashes_in_the_connection_test(odd_server: Server, path: str) -> None:
    with odd_server.client(follow_redirects=False) as http:
        no_action(http.post(url(odd_server, path), json={"CallID": 0, "UN": "74951234567"}), 0)
    with odd_server.client(follow_redirects=False, auth=None) as anonymous:
        response = anonymous.post(url(odd_server, path), json={})
        assert json_answer(response, 401)["error"] == "unauthorized"


@pytest.mark.parametrize("path", ["/base/admin/calls/", "/base//admin/calls", "//admin//calls/"])
def test_slashes_in_admin_paths(odd_server: Server, path: str) -> None:
    with odd_server.client(follow_redirects=False, auth=ADMIN) as http:
        assert "calls" in json_answer(http.get(url(odd_server, path)))


@pytest.mark.parametrize(
    "path", ["/base/nowhere/", "/base/CallEvent/1/2", "/base/admin/", "/nowhere//", "/base/CallEvent/x/"]
)
def test_unknown_paths_are_json_errors_not_redirects(odd_server: Server, path: str) -> None:
    with odd_server.client(follow_redirects=False) as http:
        response = http.post(url(odd_server, path), json={})
        assert response.status_code in (400, 404, 405), response.text
        assert "location" not in response.headers
        assert response.headers["content-type"] == CONTENT_TYPE


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"CallID": "123456789012345678901234567890"}, "CallID"),
        ({"EventType": "-123456789012345678901234567890"}, "EventType"),
        ({"CallID": "NaN"}, "CallID"),
        ({"DTMF": "Infinity"}, "DTMF"),
        ({"EventTime": "-Infinity"}, "EventTime"),
        ({"ServiceType": "1e400"}, "ServiceType"),
    ],
)
def test_numbers_no_field_can_hold_are_unreadable_and_logged(
    odd_server: Server, platform: httpx.Client, fields: dict[str, str], field: str
) -> None:
    call_id = next(_call_ids)
    body = raw_body({"EventType": 1, **crmd(call_id, 1)}, **fields)
    answer = json_answer(post(platform, "/CallEvent", body))
    assert answer["EventType"] == 0
    assert odd_server.logged("field_unreadable", field=field)
    assert not odd_server.logged("request_failed", timeout=0)


# ----------------------------------------------------------------------------------------------------
# The same with the Redis store: nothing unreadable reaches its records


def test_lone_surrogates_in_every_field_with_the_redis_store(serve: ServerFactory, redis_server: RedisServer) -> None:
    state = {"backend": "redis", "redis_url": redis_server.url, "key_prefix": "odd:"}
    running = serve(platform_config(state=state), admin=ADMIN)
    try:
        with running.client() as http, running.client(auth=ADMIN) as admin_http:
            call_id = next(_call_ids)
            raw = dict.fromkeys(("EventTime", "AN", "UN", "DN1", "DN2", "EXT1", "EXT2"), r'"\ud800x"')
            raw |= dict.fromkeys(("DTMF", "Generic", "Result"), r'"x\udfff"')
            no_action(post(http, "/CallEvent", raw_body(crmd(call_id, 9), **raw)), call_id)
            no_action(post(http, "/CallEvent", raw_body(crmd(call_id, 4, DTMF="5"))), call_id)
            assert len(running.logged("field_unreadable", call_id=call_id)) == len(raw)
            detail = json_answer(admin_http.get(f"/admin/calls/{call_id}"))
            assert [event["code"] for event in detail["events"]] == [9, 4]
            assert detail["an"] == "79161234567"
            assert json_answer(admin_http.get("/admin/calls"))["total"] == 1
            assert not running.logged("call_record_unreadable", timeout=0)
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/admin/calls?an=%ED%A0%80", 200),
        ("/admin/calls?un=%ED%A0%80&state=live", 200),
        ("/admin/calls?%ED%A0%80=1", 400),
        ("/admin/calls/%ED%A0%80", 400),
        ("/admin/calls?an=" + "%5B" * 2000, 200),
    ],
)
def test_odd_bytes_in_admin_paths_and_queries(admin: httpx.Client, path: str, status: int) -> None:
    json_answer(admin.get(path), status)


@pytest.mark.parametrize(
    "fields",
    [
        {"value": "\ud800"},
        {"value": 2**70, "other": -(2**70)},
        {"value": "x" * 10, "deep": [[[[[[[[[[[[[[[[[[[[[["\udfff"]]]]]]]]]]]]]]]]]]]]]]},
        {"value": {"\ud800": 1, 3: {"k": b"bytes"}}},
    ],
)
def test_a_log_line_with_values_orjson_refuses_is_still_written(fields: dict[str, Any]) -> None:
    line = JSONLine()(None, "warning", {"event": "field_unreadable", **fields})
    written = json.loads(line)
    assert written["event"] == "field_unreadable"
    assert written["level"] == "warning"
    assert set(fields) <= set(written)
