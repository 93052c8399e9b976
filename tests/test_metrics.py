"""`GET /metrics` on a running server: the numbers move as the platform's requests come in."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.support.metrics import ADMIN, RULES, scrape, serving, value
from tests.support.net import free_port
from tests.support.redis import RedisServer, needs_redis
from tests.support.server import Server, ServerFactory, platform_config
from tests.support.silent import silent_source_rules


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory) -> Server:
    return serving(serve_module, tmp_path_factory.mktemp("metrics"))


def test_requests_events_decisions_and_latency_are_counted(server: Server) -> None:
    with server.client() as http, server.client(auth=ADMIN) as admin:
        before = scrape(admin)
        http.post("/CallEvent", json={"CallID": 501, "EventType": "CallAccepted", "AN": "79161234567"})
        answer = http.post("/CallEvent", json={"CallID": 501, "EventType": "DTMF", "DTMF": "1"}).json()
        assert answer["Param"] == "74951110000"
        http.post("/CallEvent", json={"CallID": 501, "EventType": "DTMF", "DTMF": "2"})
        http.get("/CallEvent/501")  # the poll rule answers once
        http.get("/CallEvent")
        http.post("/CallEvent", json={"CallID": 501}, auth=("autosecretary", "wrong"))
        http.post("/CallEvent", content=b"[1]")
        after = scrape(admin)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ascrm_requests_total", endpoint="event", status="200") == 3
    assert grew("ascrm_requests_total", endpoint="poll", status="200") == 1
    assert grew("ascrm_requests_total", endpoint="connection_test", status="200") == 1
    assert grew("ascrm_requests_total", endpoint="event", status="401") == 1
    assert grew("ascrm_requests_total", endpoint="event", status="400") == 1
    assert grew("ascrm_requests_total", endpoint="metrics", status="200") == 1  # the first scrape
    assert grew("ascrm_events_total", event_type="CallAccepted") == 1
    assert grew("ascrm_events_total", event_type="DTMF") == 2
    assert grew("ascrm_decisions_total", rule="menu_sales", action="TransferDN") == 1
    assert grew("ascrm_decisions_total", rule="long_talk", action="TransferPBX") == 1
    assert grew("ascrm_decision_seconds_count", kind="event") == 3
    assert grew("ascrm_decision_seconds_count", kind="poll") == 1
    assert value(after, "ascrm_decision_seconds_bucket", kind="event", le="+Inf") == value(
        after, "ascrm_decision_seconds_count", kind="event"
    )
    assert grew("ascrm_decision_seconds_sum", kind="event") > 0


def test_a_decision_is_counted_in_the_bucket_of_its_time(serve: ServerFactory, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connections are accepted (by the kernel), never answered
        rules = tmp_path / "rules.yaml"
        rules.write_text(silent_source_rules(silent.getsockname()[1], "150ms"))
        server = serve(platform_config(rules=str(rules), reload={"watch": False}), folder=tmp_path, admin=ADMIN)
        with server.client() as http, server.client(auth=ADMIN) as admin:
            before = scrape(admin)
            call = {"CallID": 1, "EventType": "CallAccepted", "AN": "79161234567"}
            answer = http.post("/CallEvent", json=call).json()
            after = scrape(admin)
    assert answer["Param"] == "1000"  # the look-up timed out after 150 ms: the next rule decided

    def grew(le: str) -> float:
        name = "ascrm_decision_seconds_bucket"
        return value(after, name, kind="event", le=le) - value(before, name, kind="event", le=le)

    assert grew("0.1") == 0  # it took 150 ms at least
    assert grew("1.0") == grew("+Inf") == 1  # and less than a second (a busy machine may add a few tenths)


def test_live_calls_follow_the_calls(server: Server) -> None:
    with server.client() as http, server.client(auth=ADMIN) as admin:
        live = value(scrape(admin), "ascrm_live_calls")
        http.post("/CallEvent", json={"CallID": 601, "EventType": "CallAccepted"})
        http.post("/CallEvent", json={"CallID": 602, "EventType": "CallAccepted"})
        assert value(scrape(admin), "ascrm_live_calls") == live + 2
        http.post("/CallEvent", json={"CallID": 601, "EventType": "EndCall", "Result": "1"})
        samples = scrape(admin)
        assert value(samples, "ascrm_live_calls") == live + 1
        assert value(samples, "ascrm_calls_tracked") >= live + 2  # an ended call is kept for late polls
        assert value(samples, "ascrm_store_up") == 1


def test_unreadable_fields_are_counted_by_field(server: Server) -> None:
    with server.client() as http, server.client(auth=ADMIN) as admin:
        before = value(scrape(admin), "ascrm_parse_warnings_total", field="EventTime")
        http.post("/CallEvent", json={"CallID": 701, "EventType": 1, "EventTime": "yesterday"})
        assert value(scrape(admin), "ascrm_parse_warnings_total", field="EventTime") == before + 1


def test_reloads_by_outcome_and_the_active_revision(serve: ServerFactory, tmp_path: Path) -> None:
    server = serving(serve, tmp_path)
    rules = tmp_path / "rules.yaml"
    try:
        with server.client(auth=ADMIN) as admin:
            start = scrape(admin)
            revision = admin.get("/admin/rules").json()["revision"]
            assert value(start, "ascrm_rules_info", revision=revision) == 1
            assert value(start, "ascrm_rules_active") == 2
            assert value(start, "ascrm_rules_last_reload_success") == 1

            rules.write_text(RULES.replace('"74951110000"', '"12"'))  # a bad edit
            assert admin.post("/admin/reload").status_code == 422
            rejected = scrape(admin)
            assert value(rejected, "ascrm_rule_reloads_total", outcome="rejected") == 1
            assert value(rejected, "ascrm_rules_last_reload_success") == 0
            assert value(rejected, "ascrm_rules_info", revision=revision) == 1  # the last good set serves
            assert value(rejected, "ascrm_rules_last_reload_timestamp_seconds") >= value(
                start, "ascrm_rules_last_reload_timestamp_seconds"
            )

            rules.write_text(RULES.replace("74951110000", "74952220000"))  # the fix
            fresh = admin.post("/admin/reload").json()["revision"]
            fixed = scrape(admin)
            assert value(fixed, "ascrm_rule_reloads_total", outcome="reloaded") == 1
            assert value(fixed, "ascrm_rules_last_reload_success") == 1
            assert value(fixed, "ascrm_rules_info", revision=fresh) == 1
            assert ("ascrm_rules_info", (("revision", revision),)) not in fixed
            assert admin.post("/admin/reload").json()["status"] == "unchanged"
            assert value(scrape(admin), "ascrm_rule_reloads_total", outcome="unchanged") == 1
    finally:
        server.stop()


def test_metrics_need_admin_credentials_unless_public(server: Server, serve: ServerFactory, tmp_path: Path) -> None:
    with server.client() as http:
        refused = http.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert http.get("/metrics", auth=ADMIN).status_code == 200
    public = serving(serve, tmp_path, metrics={"public": True})
    try:
        with httpx.Client(base_url=public.base_url) as anonymous:
            assert anonymous.get("/metrics").status_code == 200
    finally:
        public.stop()


def test_store_errors_are_counted_and_the_answer_still_given(serve: ServerFactory, tmp_path: Path) -> None:
    state = {"backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0", "timeout_ms": 200}
    server = serving(serve, tmp_path, state=state)  # nothing listens there: every store call fails fast
    try:
        with server.client() as http, server.client(auth=ADMIN) as admin:
            answer = http.post("/CallEvent", json={"CallID": 801, "EventType": "DTMF", "DTMF": "1"})
            assert answer.status_code == 200
            assert answer.json()["Param"] == "74951110000"  # decided from the event alone
            assert http.get("/CallEvent/801").json()["EventType"] == 0
            samples = scrape(admin)
            assert value(samples, "ascrm_store_errors_total", operation="update") == 1
            assert value(samples, "ascrm_store_errors_total", operation="poll") == 1
            assert value(samples, "ascrm_store_up") == 0
            assert ("ascrm_live_calls", ()) not in samples  # unknown, not zero
    finally:
        server.stop()


@needs_redis
def test_redis_store_operations_are_timed(serve: ServerFactory, tmp_path: Path, redis_server: RedisServer) -> None:
    state = {"backend": "redis", "redis_url": redis_server.url, "key_prefix": "timed:", "timeout_ms": 500}
    server = serving(serve, tmp_path, state=state)
    try:
        with server.client() as http, server.client(auth=ADMIN) as admin:
            for call_id in (811, 812, 813):
                assert http.post("/CallEvent", json={"CallID": call_id, "EventType": "DTMF", "DTMF": "1"}).is_success
            assert http.get("/CallEvent/811").is_success
            assert admin.get("/admin/calls/812").is_success
            samples = scrape(admin)
    finally:
        server.stop()
    assert value(samples, "ascrm_store_seconds_count", operation="update") == 3
    assert value(samples, "ascrm_store_seconds_count", operation="poll") == 1
    assert value(samples, "ascrm_store_seconds_count", operation="claim") == 1  # the poll rule that fired
    assert value(samples, "ascrm_store_seconds_count", operation="get") == 1
    # each DTMF answer carried an action: recorded, one script call each
    assert value(samples, "ascrm_store_seconds_count", operation="record") == 3
    assert 0 < value(samples, "ascrm_store_seconds_sum", operation="update") < 3 * 0.5
    buckets = {labels: n for (name, labels), n in samples.items() if name == "ascrm_store_seconds_bucket"}
    assert buckets[(("le", "+Inf"), ("operation", "update"))] == 3
    # three new calls rebuilt from their whole hash; the poll from the state its event left
    assert value(samples, "ascrm_store_folds_total", kind="whole") == 3
    assert value(samples, "ascrm_store_folds_total", kind="since") == 1
    assert value(samples, "ascrm_store_folds_held_bytes") > 0
