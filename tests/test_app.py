"""create_app in process: the lifespan, and a failure while deciding still answering 200."""

from __future__ import annotations

from datetime import datetime

import pytest
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from ascrm import Settings, create_app
from ascrm.core import engine
from ascrm.core.calls.state import CallState
from ascrm.core.protocol import CallEvent, Decision
from ascrm.service import platform as api
from ascrm.service.auth.basic import Credential
from ascrm.service.edge import FastRoutes
from ascrm.service.stats import call_event_label, endpoint_of

SETTINGS = Settings(platform_credentials=(Credential("pbx", password="pw"),), root_path="/crm")


def test_create_app_does_no_work_until_the_lifespan() -> None:
    app = create_app(SETTINGS)
    assert not hasattr(app.state, "runtime")
    with TestClient(app) as http:
        assert http.get("/crm/CallEvent", auth=("pbx", "pw")).status_code == 200


def test_failure_while_deciding_answers_200_no_action_and_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ruleset: engine.RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
        raise RuntimeError("rule blew up")

    monkeypatch.setattr(engine, "decide", broken)
    with TestClient(create_app(SETTINGS), raise_server_exceptions=False) as http, capture_logs() as logs:
        posted = http.post("/crm/CallEvent", json={"CallID": 5, "EventType": 1}, auth=("pbx", "pw"))
        http.post("/crm/CallEvent", json={"CallID": 6, "EventType": 1}, auth=("pbx", "pw"))
        polled = http.get("/crm/CallEvent/5", auth=("pbx", "pw"))
    for response, call_id in ((posted, 5), (polled, 5)):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json; charset=UTF-8"
        assert response.json() == {"CallID": call_id, "EventType": 0, "Param": ""}
    failures = [entry for entry in logs if entry["event"] == "decision_failed"]
    assert [entry["call_id"] for entry in failures] == [5, 6, 5]
    assert all(entry["log_level"] == "error" and entry["exc_info"] for entry in failures)


def test_clock_is_injected() -> None:
    seen = []

    def fake_decide(ruleset: engine.RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
        seen.append(now)
        return Decision()

    fixed = datetime(2027, 1, 1, 19, 5).astimezone()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "decide", fake_decide)
        with TestClient(create_app(SETTINGS, clock=lambda: fixed)) as http:
            http.post("/crm/CallEvent", json={"CallID": 5, "EventType": 1}, auth=("pbx", "pw"))
    assert seen == [fixed]


def test_a_failure_outside_deciding_is_a_json_500_and_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: object, tz: object) -> object:
        raise RuntimeError("reader blew up")

    monkeypatch.setattr(api, "parse_call_event", broken)
    with TestClient(create_app(SETTINGS), raise_server_exceptions=False) as http, capture_logs() as logs:
        response = http.post("/crm/CallEvent", json={"CallID": 5, "EventType": 1}, auth=("pbx", "pw"))
        assert http.get("/crm/CallEvent", auth=("pbx", "pw")).status_code == 200  # still serving
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    assert response.json() == {"error": "internal_error", "message": "internal error"}
    [failure] = [entry for entry in logs if entry["event"] == "request_failed"]
    assert failure["path"] == "/crm/CallEvent"
    assert "reader blew up" not in response.text  # no detail for the client


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/crm/CallEvent", "event"),
        ("GET", "/crm/CallEvent", "connection_test"),
        ("POST", "/CallEvent/0", "connection_test"),
        ("POST", "/crm/CallEvent/77", "event"),
        ("GET", "/crm/CallEvent/77", "poll"),
    ],
)
def test_platform_requests_skip_the_router(method: str, path: str, expected: str) -> None:
    found = _fast_routes().match({"method": method, "path": path})
    assert found is not None
    assert found[1] == expected  # the label the fast dispatch counts with
    assert endpoint_of(path, method, "/crm") == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/crm/CallEvent"), ("GET", "/crm/CallEvent/1/x"), ("GET", "/crm/CallEvent/"), ("GET", "/other")],
)
def test_anything_else_goes_through_the_router(method: str, path: str) -> None:
    assert _fast_routes().match({"method": method, "path": path}) is None


def _fast_routes() -> FastRoutes:
    """The fast dispatch over the platform's route table, with the prefix and without it."""
    platform = api.PlatformAPI(SETTINGS)
    return FastRoutes([*platform.routes("/crm"), *platform.routes("")], call_event_label)
