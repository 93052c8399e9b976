"""Reloading rules on a running server: a bad edit changes nothing, a good one takes over at once."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, Server, platform_config, start_server, wait_for

ADMIN = ("ops", "reload-pw")
GOOD = "rules:\n  - id: hello\n    on: CallAccepted\n    do: {PlayPrompt: hello_v1}\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "rules.yaml").write_text(GOOD)
    config = platform_config(rules=str(tmp_path / "rules.yaml"))
    config["auth"]["admin"] = [{"user": ADMIN[0], "password": "${TEST_ADMIN_PASSWORD}"}]
    running = start_server(tmp_path, config, env={"TEST_PLATFORM_PASSWORD": PASSWORD, "TEST_ADMIN_PASSWORD": ADMIN[1]})
    yield running
    running.stop()


def prompt(http: httpx.Client, call_id: int) -> str:
    answer = http.post("/CallEvent", json={"CallID": call_id, "EventType": 1}).json()
    return str(answer["Param"])


def test_reload_swaps_good_rules_and_keeps_serving_through_a_bad_edit(server: Server, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    with server.client() as http, server.client(auth=ADMIN) as admin:
        first = admin.get("/admin/rules").json()
        assert first["rule_count"] == 1
        assert first["last_failed_reload"] is None
        assert prompt(http, 1) == "hello_v1"
        assert admin.post("/admin/reload").json() == {"status": "unchanged", "revision": first["revision"]}

        rules.write_text(GOOD.replace("PlayPrompt: hello_v1", "TransferEXT: '12'"))  # a bad edit
        rejected = admin.post("/admin/reload")
        assert rejected.status_code == 422
        assert rejected.json()["status"] == "rejected"
        assert f"{rules}:4:" in rejected.json()["problems"][0]
        assert prompt(http, 2) == "hello_v1"  # the last good set still answers
        failure = admin.get("/admin/rules").json()["last_failed_reload"]
        assert failure["trigger"] == "admin:ops"
        assert "4-digit short number" in failure["problems"][0]

        rules.write_text(GOOD.replace("hello_v1", "hello_v2"))  # the fix
        reloaded = admin.post("/admin/reload").json()
        assert reloaded["status"] == "reloaded"
        assert reloaded["revision"] != first["revision"]
        assert prompt(http, 3) == "hello_v2"
        assert admin.get("/admin/rules").json()["revision"] == reloaded["revision"]
    assert server.logged("rules_reloaded", trigger="admin:ops")
    assert server.logged("rules_reload_rejected", trigger="admin:ops")


def test_an_emptied_rule_file_is_suspicious_unless_forced(server: Server, tmp_path: Path) -> None:
    with server.client() as http, server.client(auth=ADMIN) as admin:
        (tmp_path / "rules.yaml").write_text("rules:\n")  # caught half-written, still valid YAML
        refused = admin.post("/admin/reload")
        assert refused.status_code == 422
        assert "has no rules" in refused.json()["problems"][0]
        assert prompt(http, 4) == "hello_v1"
        assert admin.post("/admin/reload?force=true").json()["status"] == "reloaded"
        assert prompt(http, 5) == ""


def test_a_deleted_rules_file_keeps_the_last_good_set(server: Server, tmp_path: Path) -> None:
    with server.client() as http, server.client(auth=ADMIN) as admin:
        (tmp_path / "rules.yaml").unlink()
        assert admin.post("/admin/reload").status_code == 422
        assert prompt(http, 6) == "hello_v1"


def test_sighup_reloads(server: Server, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(GOOD.replace("hello_v1", "hello_hup"))
    server.process.send_signal(signal.SIGHUP)
    with server.client() as http:
        assert wait_for(lambda: prompt(http, 7) == "hello_hup", deadline=10)
    assert server.logged("rules_reloaded", trigger="SIGHUP")


def test_reload_needs_admin_credentials(server: Server) -> None:
    with server.client() as http:
        assert http.post("/admin/reload").status_code == 401
        assert http.get("/admin/rules").status_code == 401
