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


def serving(tmp_path: Path, *, watch: bool) -> Server:
    (tmp_path / "rules.yaml").write_text(GOOD)
    config = platform_config(rules=str(tmp_path / "rules.yaml"), reload={"watch": watch})
    config["auth"]["admin"] = [{"user": ADMIN[0], "password": "${TEST_ADMIN_PASSWORD}"}]
    return start_server(tmp_path, config, env={"TEST_PLATFORM_PASSWORD": PASSWORD, "TEST_ADMIN_PASSWORD": ADMIN[1]})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server reloading only when told (SIGHUP, the admin endpoint): no watcher racing the test."""
    running = serving(tmp_path, watch=False)
    yield running
    running.stop()


@pytest.fixture
def watching(tmp_path: Path) -> Iterator[Server]:
    """A server watching its rules folder."""
    running = serving(tmp_path, watch=True)
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


def test_saving_a_rule_file_is_picked_up_without_a_trigger(watching: Server, tmp_path: Path) -> None:
    server = watching
    rules = tmp_path / "rules.yaml"
    with server.client() as http:
        rules.write_text(GOOD.replace("hello_v1", "hello_saved"))  # written in place
        assert wait_for(lambda: prompt(http, 8) == "hello_saved", deadline=10)
        staged = tmp_path / ".rules.yaml.tmp"
        staged.write_text(GOOD.replace("hello_v1", "hello_renamed"))
        staged.replace(rules)  # written to a temporary file, then renamed over
        assert wait_for(lambda: prompt(http, 9) == "hello_renamed", deadline=10)
        rejected = len(server.logged("rules_reload_rejected", deadline=0))
        (tmp_path / ".rules.yaml.swp").write_text("not yaml: [")  # an editor's swap file: ignored
        (tmp_path / "rules.yaml~").write_text("not yaml: [")
        rules.unlink()  # deleted: the last good set keeps serving
        assert wait_for(lambda: len(server.logged("rules_reload_rejected", deadline=0)) > rejected, deadline=10)
        assert prompt(http, 10) == "hello_renamed"
        rules.write_text(GOOD.replace("hello_v1", "hello_back"))  # re-created
        assert wait_for(lambda: prompt(http, 11) == "hello_back", deadline=10)


def test_a_configmap_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as files that link through `..data` to a dated folder, and swaps
    `..data` atomically on an update: no event names the rule file itself."""
    mount = tmp_path / "rules"
    first = mount / "..2027_01_11_10_00_00.1"
    first.mkdir(parents=True)
    (first / "10-rules.yaml").write_text(GOOD.replace("hello_v1", "hello_cm1"))
    (mount / "..data").symlink_to(first.name)
    (mount / "10-rules.yaml").symlink_to("..data/10-rules.yaml")
    config = platform_config(rules=str(mount))
    server = start_server(tmp_path / "ascrm", config, env={"TEST_PLATFORM_PASSWORD": PASSWORD})
    try:
        with server.client() as http:
            assert prompt(http, 12) == "hello_cm1"
            second = mount / "..2027_01_11_10_05_00.2"
            second.mkdir()
            (second / "10-rules.yaml").write_text(GOOD.replace("hello_v1", "hello_cm2"))
            (mount / "..data_tmp").symlink_to(second.name)
            (mount / "..data_tmp").replace(mount / "..data")  # the atomic swap
            assert wait_for(lambda: prompt(http, 13) == "hello_cm2", deadline=10)
    finally:
        server.stop()
