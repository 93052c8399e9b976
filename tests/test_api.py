"""The platform's endpoints, spoken to over HTTP on a running `ascrm serve`, as the platform would."""

from __future__ import annotations

import base64
import socket
from typing import Any

import httpx
import pytest

from ascrm.core.protocol import EventType, ServiceType
from tests.support.server import PASSWORD, USER, Server

CONTENT_TYPE = "application/json; charset=UTF-8"
EMPTY_CRMDDATA = {
    "CallID": "",
    "EventTime": "",
    "AN": "",
    "UN": "74951234567",
    "DN1": "",
    "DN2": "",
    "EXT1": "",
    "EXT2": "",
    "DTMF": "",
    "Generic": "",
    "Result": "",
    "EventType": "",
    "ServiceType": "",
}


def event(call_id: int, event_type: int, **fields: Any) -> dict[str, Any]:
    """A CRMDData body as the platform sends it."""
    body = {
        "CallID": call_id,
        "EventTime": "2026-11-27T10:15:00+03:00",
        "AN": "79161234567",
        "UN": "74951234567",
        "EventType": event_type,
        "ServiceType": 1,
    }
    body.update(fields)
    return body


def assert_answer(response: httpx.Response, call_id: int) -> None:
    """A 200 "no action" ReturnCRMData for call_id, with the exact content type."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.json() == {"CallID": call_id, "EventType": 0, "Param": ""}


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """A JSON error body with the exact content type and no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    body = response.json()
    assert body["error"] == error
    assert "Traceback" not in response.text
    return body


def test_connection_test_get(client: httpx.Client) -> None:
    assert_answer(client.get("/CallEvent"), 0)


def test_connection_test_post_with_empty_values(client: httpx.Client) -> None:
    assert_answer(client.post("/CallEvent/0", json=EMPTY_CRMDDATA), 0)


def test_connection_test_post_with_empty_body(client: httpx.Client) -> None:
    assert_answer(client.post("/CallEvent/0", content=b""), 0)


@pytest.mark.parametrize("code", [member.value for member in EventType])
def test_every_event_code_is_answered(client: httpx.Client, code: int) -> None:
    call_id = 1000 + code
    assert_answer(client.post("/CallEvent", json=event(call_id, code)), call_id)


@pytest.mark.parametrize("service", [member.value for member in ServiceType])
def test_every_service_type_is_answered(client: httpx.Client, service: int) -> None:
    assert_answer(client.post("/CallEvent", json=event(2000 + service, 1, ServiceType=service)), 2000 + service)


def test_unknown_event_code_is_answered_and_logged_raw(server: Server, client: httpx.Client) -> None:
    assert_answer(client.post("/CallEvent", json=event(3001, 99, ServiceType=7)), 3001)
    logged = server.logged("event_answered", call_id=3001)
    assert logged
    assert logged[-1]["event_type"] == "99"


def test_codes_as_strings_and_names(server: Server, client: httpx.Client) -> None:
    assert_answer(client.post("/CallEvent", json=event(3002, "4", ServiceType="1", DTMF=5)), 3002)
    assert_answer(client.post("/CallEvent", json=event(3003, "DTMF")), 3003)
    assert server.logged("event_answered", call_id=3002)[0]["event_type"] == "DTMF"
    assert server.logged("event_answered", call_id=3003)[0]["event_type"] == "DTMF"


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"EventTime": "yesterday"}, "EventTime"),
        ({"EventTime": 12345}, "EventTime"),
        ({"EventType": "Teleport"}, "EventType"),
        ({"EventType": True}, "EventType"),
        ({"ServiceType": [1]}, "ServiceType"),
        ({"AN": {"number": 1}}, "AN"),
        ({"DTMF": 1.5}, "DTMF"),
    ],
)
def test_malformed_field_is_dropped_warned_and_answered(
    server: Server, client: httpx.Client, fields: dict[str, Any], bad_field: str
) -> None:
    call_id = 4000 + sum(map(ord, bad_field + repr(fields)))
    assert_answer(client.post("/CallEvent", json=event(call_id, 1, **fields)), call_id)
    warnings = server.logged("field_unreadable", call_id=call_id)
    assert [w["field"] for w in warnings] == [bad_field]
    assert warnings[0]["level"] == "warning"


def test_malformed_call_id_answers_zero(server: Server, client: httpx.Client) -> None:
    assert_answer(client.post("/CallEvent", json=event("abc", 1)), 0)  # type: ignore[arg-type]
    warnings = server.logged("field_unreadable", field="CallID")
    assert warnings[-1]["value"] == "abc"


def test_call_id_from_path_when_body_has_none(client: httpx.Client) -> None:
    body = event(0, 1)
    del body["CallID"]
    assert_answer(client.post("/CallEvent/5001", json=body), 5001)


def test_all_fields_null(client: httpx.Client) -> None:
    assert_answer(client.post("/CallEvent", json=dict.fromkeys(EMPTY_CRMDDATA)), 0)


def test_large_int64_call_id_round_trips(client: httpx.Client) -> None:
    big = 2**63 - 1
    assert_answer(client.post("/CallEvent", json=event(big, 1)), big)
    assert_answer(client.get(f"/CallEvent/{big}"), big)


def test_poll_of_unknown_call_is_no_action_not_404(client: httpx.Client) -> None:
    assert_answer(client.get("/CallEvent/987654321"), 987654321)


def test_poll_of_known_call(client: httpx.Client) -> None:
    client.post("/CallEvent", json=event(6001, 1))
    assert_answer(client.get("/CallEvent/6001"), 6001)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"42", b"null"],
)
def test_body_that_is_not_a_json_object_is_400(client: httpx.Client, body: bytes) -> None:
    response = client.post("/CallEvent", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_request")


def test_empty_body_outside_the_connection_test_is_400(client: httpx.Client) -> None:
    assert_error(client.post("/CallEvent", content=b""), 400, "bad_request")


def test_oversize_body_with_content_length_is_413(client: httpx.Client) -> None:
    body = b'{"AN": "' + b"7" * 70_000 + b'"}'
    assert_error(client.post("/CallEvent", content=body), 413, "content_too_large")


def test_oversize_chunked_body_is_413(client: httpx.Client) -> None:
    def chunks() -> Any:
        yield b'{"AN": "'
        for _ in range(100):
            yield b"7" * 1000
        yield b'"}'

    response = client.post("/CallEvent", content=chunks())
    assert "content-length" not in response.request.headers
    body = assert_error(response, 413, "content_too_large")
    assert body["message"] == "request body is larger than 65536 bytes"


def test_body_at_the_limit_is_accepted(client: httpx.Client) -> None:
    body = b'{"CallID": 7001, "Generic": "' + b"1" * (64 * 1024 - 60) + b'"}'
    assert len(body) <= 64 * 1024
    assert_answer(client.post("/CallEvent", content=body), 7001)


def test_oversize_body_never_read_whole(server: Server) -> None:
    """A declared 1 GiB body is refused at once, before any of it is sent."""
    host, port = server.base_url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        sock.sendall(
            b"POST /autosecretary/CallEvent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Basic " + token.encode() + b"\r\nContent-Length: 1073741824\r\n\r\n"
        )
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413")
    assert "content-type: application/json; charset=UTF-8" in reply


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode(),
        "Basic " + base64.b64encode(f"nobody:{PASSWORD}".encode()).decode(),
        "Basic " + base64.b64encode(USER.encode()).decode(),  # no colon
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
        "Bearer abc",
        "Basic",
        "",
    ],
)
@pytest.mark.parametrize(("method", "path"), [("GET", "/CallEvent"), ("POST", "/CallEvent"), ("GET", "/CallEvent/1")])
def test_bad_credentials_are_401_with_challenge(
    server: Server, authorization: str | None, method: str, path: str
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    with server.client(auth=None) as http:
        response = http.request(method, path, headers=headers, json=event(1, 1) if method == "POST" else None)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith('Basic realm="ascrm"')


def test_unicode_password_is_compared_as_utf8(server: Server) -> None:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with server.client(auth=None) as http:
        assert_answer(http.get("/CallEvent", headers={"authorization": f"Basic {token}"}), 0)


def test_secrets_never_logged(server: Server, client: httpx.Client) -> None:
    client.post("/CallEvent", json=event(8001, 1))
    assert server.logged("event_answered", call_id=8001)
    text = server.log_path.read_text()
    assert PASSWORD not in text
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in text
    assert "authorization" not in text.lower()


def test_unknown_path_is_json_404(client: httpx.Client) -> None:
    assert_error(client.get("/Nowhere"), 404, "not_found")


def test_wrong_method_is_json_405(client: httpx.Client) -> None:
    response = client.delete("/CallEvent")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


def test_non_integer_call_id_in_path_is_400(client: httpx.Client) -> None:
    assert_error(client.get("/CallEvent/abc"), 400, "bad_request")


def test_routes_answer_with_prefix_and_when_a_proxy_strips_it(server: Server) -> None:
    root = server.base_url.removesuffix("/autosecretary")
    with server.client(base_url=root) as http:
        assert_answer(http.get("/autosecretary/CallEvent"), 0)
        assert_answer(http.get("/CallEvent"), 0)
        assert_error(http.get("/other/CallEvent"), 404, "not_found")


def test_request_log_has_call_event_decision_latency(server: Server, client: httpx.Client) -> None:
    client.post("/CallEvent", json=event(9001, 4, DTMF="1"))
    [entry] = server.logged("event_answered", call_id=9001)
    assert entry["event_type"] == "DTMF"
    assert entry["action"] is None
    assert isinstance(entry["latency_ms"], float)
    assert entry["level"] == "info"


def test_end_of_call_record_is_logged_once(server: Server, client: httpx.Client) -> None:
    client.post("/CallEvent", json=event(9101, 1, EventTime="2026-11-27T10:00:00+03:00"))
    transfer = event(9101, 9, EventTime="2026-11-27T10:00:20+03:00", DN1="74951112233", Result="1280")
    client.post("/CallEvent", json=transfer)
    client.post("/CallEvent", json=event(9101, 15, EventTime="2026-11-27T10:02:00+03:00", Result="1"))
    [record] = server.logged("call_ended", call_id=9101)
    assert record["duration_seconds"] == 120.0
    assert record["talk_seconds"] == 100.0
    assert record["ended_by"] == "1"
    assert record["transfers"][0]["Result"] == "1280"
    assert record["an"] == "79161234567"


@pytest.mark.parametrize("path", ["/health", "/ready", "/autosecretary/health", "/autosecretary/ready"])
def test_health_and_ready_need_no_credentials(server: Server, path: str) -> None:
    root = server.base_url.removesuffix("/autosecretary")
    with httpx.Client(base_url=root, timeout=10) as http:
        response = http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    body = response.json()
    assert body["status"] in ("ok", "ready")
    if path.endswith("ready"):
        assert body["store"] == "ok"
        assert body["rules"] == 0
