"""Reloading rules on a running server: a bad edit changes nothing, a good one takes over at once."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import Server, ServerFactory, platform_config
from tests.support.waiting import poll_until, wait_until

ADMIN = ("ops", "reload-pw")
GOOD = "rules:\n  - id: hello\n    on: CallAccepted\n    do: {PlayPrompt: hello_v1}\n"


def serving(serve: ServerFactory, tmp_path: Path, *, watch: bool) -> Server:
    (tmp_path / "rules.yaml").write_text(GOOD)
    config = platform_config(rules=str(tmp_path / "rules.yaml"), reload={"watch": watch})
    config["auth"]["admin"] = [{"user": ADMIN[0], "password": "${TEST_ADMIN_PASSWORD}"}]
    return serve(config, folder=tmp_path, env={"TEST_ADMIN_PASSWORD": ADMIN[1]})


@pytest.fixture
def server(serve: ServerFactory, tmp_path: Path) -> Server:
    """A server reloading only when told (SIGHUP, the admin endpoint): no watcher racing the test."""
    return serving(serve, tmp_path, watch=False)


@pytest.fixture
def watching(serve: ServerFactory, tmp_path: Path) -> Server:
    """A server watching its rules folder."""
    return serving(serve, tmp_path, watch=True)


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
        wait_until(lambda: prompt(http, 7) == "hello_hup", "the rules to answer hello_hup", timeout=10)
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
        wait_until(lambda: prompt(http, 8) == "hello_saved", "the rules to answer hello_saved", timeout=10)
        staged = tmp_path / ".rules.yaml.tmp"
        staged.write_text(GOOD.replace("hello_v1", "hello_renamed"))
        staged.replace(rules)  # written to a temporary file, then renamed over
        wait_until(lambda: prompt(http, 9) == "hello_renamed", "the rules to answer hello_renamed", timeout=10)
        rejected = len(server.logged("rules_reload_rejected", timeout=0))
        (tmp_path / ".rules.yaml.swp").write_text("not yaml: [")  # an editor's swap file: ignored
        (tmp_path / "rules.yaml~").write_text("not yaml: [")
        rules.unlink()  # deleted: the last good set keeps serving
        wait_until(
            lambda: len(server.logged("rules_reload_rejected", timeout=0)) > rejected, "a rejected reload", timeout=10
        )
        assert prompt(http, 10) == "hello_renamed"
        rules.write_text(GOOD.replace("hello_v1", "hello_back"))  # re-created
        wait_until(lambda: prompt(http, 11) == "hello_back", "the rules to answer hello_back", timeout=10)


def test_a_configmap_symlink_swap_is_picked_up(tmp_path: Path, serve: ServerFactory) -> None:
    """Kubernetes mounts a ConfigMap as files that link through `..data` to a dated folder, and swaps
    `..data` atomically on an update: no event names the rule file itself."""
    mount = tmp_path / "rules"
    first = mount / "..2027_01_11_10_00_00.1"
    first.mkdir(parents=True)
    (first / "10-rules.yaml").write_text(GOOD.replace("hello_v1", "hello_cm1"))
    (mount / "..data").symlink_to(first.name)
    (mount / "10-rules.yaml").symlink_to("..data/10-rules.yaml")
    config = platform_config(rules=str(mount))
    server = serve(config, folder=tmp_path / "ascrm")
    try:
        with server.client() as http:
            assert prompt(http, 12) == "hello_cm1"
            second = mount / "..2027_01_11_10_05_00.2"
            second.mkdir()
            (second / "10-rules.yaml").write_text(GOOD.replace("hello_v1", "hello_cm2"))
            (mount / "..data_tmp").symlink_to(second.name)
            (mount / "..data_tmp").replace(mount / "..data")  # the atomic swap
            wait_until(lambda: prompt(http, 13) == "hello_cm2", "the rules to answer hello_cm2", timeout=10)
    finally:
        server.stop()


def rule_set(version: str, fillers: int = 300) -> str:
    """A rule set answering CallAccepted with prompt_<version> from rule `answer_<version>`, behind
    fillers rules that never match (so a reload takes a while and lands in the middle of the burst)."""
    lines = ["rules:"]
    for n in range(fillers):
        lines += [f"  - id: filler_{n}", "    on: CallAccepted", f"    if: {{AN: '7000{n:07d}'}}", "    do: Hangup"]
    lines += [f"  - id: answer_{version}", "    on: CallAccepted", f"    do: {{PlayPrompt: prompt_{version}}}"]
    return "\n".join(lines) + "\n"


def test_a_swap_during_a_burst_never_mixes_rule_sets(server: Server, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rule_set("v0"))
    stop = threading.Event()
    answers: list[tuple[int, str]] = []

    def platform(worker: int) -> None:
        with server.client() as http:
            call_id = worker * 1_000_000
            while not stop.is_set():
                call_id += 1
                response = http.post("/CallEvent", json={"CallID": call_id, "EventType": "CallAccepted"})
                answers.append((response.status_code, response.json().get("Param", "")))

    with server.client(auth=ADMIN) as admin:
        assert admin.post("/admin/reload").json()["status"] == "reloaded"
        revisions = {admin.get("/admin/rules").json()["revision"]: "v0"}
        workers = [threading.Thread(target=platform, args=(n,)) for n in range(1, 4)]
        for worker in workers:
            worker.start()
        try:
            for version in ("v1", "broken", "v2", "v3", "broken", "v4"):
                seen = len(answers)
                wait_until(
                    lambda seen=seen: len(answers) > seen + 20, "20 more answers"
                )  # requests in flight meanwhile
                if version == "broken":
                    rules.write_text(rule_set("v9").replace("PlayPrompt: prompt_v9", "TransferEXT: '12'"))
                    assert admin.post("/admin/reload").status_code == 422
                    continue
                rules.write_text(rule_set(version))
                outcome = admin.post("/admin/reload").json()
                assert outcome["status"] == "reloaded"
                revisions[outcome["revision"]] = version
            seen = len(answers)
            wait_until(lambda: len(answers) > seen + 20, "20 more answers")
        finally:
            stop.set()
            for worker in workers:
                worker.join(10)
    assert {status for status, _ in answers} == {200}
    assert {param for _, param in answers} <= {f"prompt_v{n}" for n in range(5)}

    def logged_all() -> list[dict[str, Any]]:
        lines = server.logged("event_answered", timeout=0)
        return lines if len(lines) == len(answers) else []

    decided = poll_until(logged_all)  # every answer is logged (lines are flushed within 0.2 s)
    assert decided, f"{len(answers)} answers, {len(server.logged('event_answered', timeout=0))} logged"
    by_revision: dict[str, set[tuple[str, str]]] = {}
    for line in decided:
        by_revision.setdefault(line["revision"], set()).add((line["rule"], line["param"]))
    for revision, outcomes in by_revision.items():
        if revision not in revisions:  # the set the fixture started with, before this test's reload
            continue
        version = revisions[revision]
        assert outcomes == {(f"answer_{version}", f"prompt_{version}")}, (version, outcomes)
    assert sum(revision in by_revision for revision in revisions) >= 4  # the swaps happened under load


def test_a_list_file_outside_the_rules_folder_is_watched_too(tmp_path: Path, serve: ServerFactory) -> None:
    folder, lists = tmp_path / "rules", tmp_path / "shared-lists"
    folder.mkdir()
    lists.mkdir()
    (lists / "vip.txt").write_text("79160000001\n")
    (folder / "rules.yaml").write_text(
        "lists:\n  vip: {file: ../shared-lists/vip.txt}\n"
        "rules:\n  - id: vip\n    on: CallAccepted\n    if: {AN: {in: vip}}\n    do: {PlayPrompt: vip}\n"
    )
    config = platform_config(rules=str(folder), reload={"debounce_ms": 50})
    server = serve(config, folder=tmp_path / "ascrm")
    try:
        with server.client() as http:

            def answer(call_id: int) -> str:
                event = {"CallID": call_id, "EventType": "CallAccepted", "AN": "79160000002"}
                return str(http.post("/CallEvent", json=event).json()["Param"])

            assert answer(1) == ""
            assert server.logged("rules_watch_started")[0]["folders"] == [str(folder), str(lists)]
            (lists / "vip.txt").write_text("79160000001\n79160000002\n")
            wait_until(lambda: answer(2) == "vip", "the rules to answer vip", timeout=10)
    finally:
        server.stop()


def test_requests_are_answered_while_a_big_rule_set_loads(server: Server, tmp_path: Path) -> None:
    """The load and compile run off the event loop: the platform is answered meanwhile, from the old set.
    Judged by time, not by count: had the loop been blocked, a request sent at the start would have waited
    for about the whole reload; each one is answered in a small part of it."""
    (tmp_path / "rules.yaml").write_text(rule_set("big", fillers=5000))
    outcome: list[httpx.Response] = []
    with server.client() as http, server.client(auth=ADMIN, timeout=60) as admin:
        reloading = threading.Thread(target=lambda: outcome.append(admin.post("/admin/reload")))
        began = time.monotonic()
        reloading.start()
        during: list[tuple[str, float]] = []
        while reloading.is_alive():
            sent = time.monotonic()
            during.append((prompt(http, 100 + len(during)), time.monotonic() - sent))
        reloading.join()
        took = time.monotonic() - began
        assert outcome[0].json()["status"] == "reloaded"
        assert prompt(http, 99) == "prompt_big"
    assert len(during) >= 2, during
    assert during[0][0] == "hello_v1"  # the old set answered while the new one was built
    slowest = max(seconds for _, seconds in during)
    assert slowest < took / 2, f"a request waited {slowest:.2f} s of a {took:.2f} s reload"


def test_a_save_caught_half_written_is_never_served(tmp_path: Path, serve: ServerFactory) -> None:
    rules = tmp_path / "rules.yaml"
    full = rule_set("v1", fillers=8)
    rules.write_text(full)
    config = platform_config(rules=str(rules), reload={"debounce_ms": 50, "settle_ms": 5000})
    server = serve(config, folder=tmp_path)
    try:
        with server.client() as http:
            assert prompt(http, 1) == "prompt_v1"
            complete = rule_set("v2", fillers=8)
            rules.write_text(complete[: complete.index("  - id: filler_3")])  # three fillers, no answer rule
            assert server.logged("rules_settling")  # seen, and held back
            answers = {prompt(http, 2)}
            rules.write_text(complete)  # the rest of the write
            wait_until(lambda: prompt(http, 3) == "prompt_v2", "the rules to answer prompt_v2", timeout=10)
            answers.add(prompt(http, 4))
        assert answers <= {"prompt_v1", "prompt_v2"}  # never the answer of the truncated set ("")
        reloaded = server.logged("rules_reloaded")
        assert [line["rule_count"] for line in reloaded] == [9]
    finally:
        server.stop()


def test_a_watched_save_that_drops_most_rules_is_taken_once_it_settles(tmp_path: Path, serve: ServerFactory) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rule_set("v1", fillers=8))
    config = platform_config(rules=str(rules), reload={"debounce_ms": 50, "settle_ms": 300})
    server = serve(config, folder=tmp_path)
    try:
        with server.client() as http:
            rules.write_text(rule_set("small", fillers=0))  # nine rules down to one, on purpose
            wait_until(lambda: prompt(http, 5) == "prompt_small", "the rules to answer prompt_small", timeout=10)
        assert server.logged("rules_settling")
        assert server.logged("rules_reloaded")[-1]["rule_count"] == 1
    finally:
        server.stop()


def test_a_slow_two_part_save_is_served_only_once_whole(tmp_path: Path, serve: ServerFactory) -> None:
    """5 of 7 rules parse and would be served at once; they wait for the settle time, and so are never served."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rule_set("v1", fillers=6))  # 7 rules
    whole = rule_set("v2", fillers=5) + "  - id: filler_last\n    on: CallAccepted\n    if: {AN: '1'}\n    do: Hangup\n"
    half = whole[: whole.index("  - id: answer_v2")]  # the first 5 rules: a good set answering nothing
    config = platform_config(rules=str(rules), reload={"debounce_ms": 50, "settle_ms": 1000})
    server = serve(config, folder=tmp_path)
    try:
        with server.client() as http:
            assert prompt(http, 1) == "prompt_v1"
            answers: list[str] = []
            with rules.open("w") as out:
                out.write(half)
            stop_at = time.monotonic() + 0.6  # less than the settle time
            while time.monotonic() < stop_at:
                answers.append(prompt(http, 100 + len(answers)))
            with rules.open("a") as out:
                out.write(whole[len(half) :])

            def whole_served() -> bool:
                answers.append(prompt(http, 100 + len(answers)))
                return answers[-1] == "prompt_v2"

            wait_until(whole_served, "the whole rule set served", timeout=10)
        assert set(answers) == {"prompt_v1", "prompt_v2"}, sorted(set(answers))  # never "" (the 5 rules)
        assert [line["rule_count"] for line in server.logged("rules_reloaded")] == [7]
    finally:
        server.stop()


def test_an_admin_reload_does_not_wait_for_a_watched_save_to_settle(tmp_path: Path, serve: ServerFactory) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD)
    config = platform_config(rules=str(rules), reload={"debounce_ms": 50, "settle_ms": 20000})
    config["auth"]["admin"] = [{"user": ADMIN[0], "password": "${TEST_ADMIN_PASSWORD}"}]
    server = serve(config, folder=tmp_path, env={"TEST_ADMIN_PASSWORD": ADMIN[1]})
    try:
        with server.client() as http, server.client(auth=ADMIN) as admin:
            rules.write_text(GOOD.replace("hello_v1", "hello_v2"))
            assert server.logged("rules_settling")  # the watcher waits for 20 s of quiet…
            started = time.monotonic()
            assert admin.post("/admin/reload").json()["status"] == "reloaded"  # … the admin does not
            assert prompt(http, 1) == "hello_v2"
            assert time.monotonic() - started < 10
    finally:
        server.stop()
