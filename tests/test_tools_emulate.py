"""`ascrm emulate` run as a user runs it: short bounded loads on `ascrm serve` and on broken endpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ascrm.tools.platform.scenarios import ScenarioError, load_scenarios
from tests.support.broken_crm import serving
from tests.support.net import free_port
from tests.support.server import PASSWORD, Server, ServerFactory, platform_config
from tests.support.tools import EXAMPLE_RULES as RULES
from tests.support.tools import run_tool
from tests.support.waiting import poll_until

QUICK = ("--calls", "20", "--duration", "2", "--poll-interval", "0.1", "--pause-scale", "0.02", "--seed", "7")


@pytest.fixture(scope="module")
def ascrm(serve_module: ServerFactory) -> Server:
    config = platform_config(rules=str(RULES))
    return serve_module(config)


@pytest.fixture(scope="module")
def broken() -> Iterator[str]:
    with serving() as base:
        yield base


def emulate_json(url: str, *args: str) -> tuple[int, dict[str, Any], str]:
    done = run_tool("emulate", url, *QUICK, "--json", *args)
    return done.returncode, json.loads(done.stdout) if done.stdout.startswith("{") else {}, done.stderr


def answered(server: Server, event: str) -> int:
    return sum(1 for entry in server.logs() if entry.get("event") == event)


def test_a_short_load_on_ascrm_is_clean_and_counted(ascrm: Server) -> None:
    before = {name: answered(ascrm, name) for name in ("event_answered", "poll_answered", "connection_test")}
    status, summary, stderr = emulate_json(ascrm.base_url, "--quiet")
    assert status == 0, stderr
    assert stderr == ""
    events, polls = summary["event_latency_ms"]["count"], summary["poll_latency_ms"]["count"]
    assert (events > 40, polls > 40) == (True, True)  # 20 calls at once for 2 s: events, and polls while connected
    assert summary["requests"] == events + polls == summary["statuses"]["200"]
    assert (summary["errors"], summary["violations"], summary["warnings"]) == (0, {}, {})
    assert summary["concurrent_calls"] == 20
    calls = summary["calls"]
    assert calls["started"] >= 20
    assert calls["dropped"] == 0
    assert calls["started"] == calls["completed"] + calls["cut"]
    assert 1 <= calls["cut"] <= 20
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert summary["requests_per_second"] == pytest.approx(summary["requests"] / summary["elapsed_s"], rel=0.01)
    # Every request counted reached the server, and nothing else did but the connection test up front.
    expected = {"event_answered": events, "poll_answered": polls, "connection_test": 1}
    seen = poll_until(lambda: {n: answered(ascrm, n) - before[n] for n in expected} == expected or None)
    assert seen, {n: answered(ascrm, n) - before[n] for n in expected}


def test_the_text_summary_and_plain_progress_lines(ascrm: Server) -> None:
    done = run_tool("emulate", ascrm.base_url, *QUICK)
    assert done.returncode == 0, done.stderr
    assert "concurrent calls" in done.stdout
    assert "latency ms" in done.stdout
    assert "protocol violations: none" in done.stdout
    progress = [line for line in done.stderr.splitlines() if line.startswith("emulate: ")]
    assert progress, done.stderr  # not a tty: plain lines
    assert " calls " in progress[0]
    assert " requests " in progress[0]


def test_live_progress_on_request(ascrm: Server) -> None:
    done = run_tool("emulate", ascrm.base_url, *QUICK, "--progress", "--duration", "1.2")
    assert done.returncode == 0, done.stderr
    assert "\x1b[K" in done.stderr  # a line rewritten in place
    assert "emulate: " not in done.stderr


def test_violations_and_errors_are_counted(broken: str) -> None:
    status, summary, _ = emulate_json(f"{broken}/bad-param", "--quiet", "--duration", "1")
    assert status == 1
    assert summary["violations"]["param_format"] > 0
    assert "TransferEXT: must be a 4-digit short number" in summary["examples"]["param_format"]
    status, summary, _ = emulate_json(f"{broken}/error-500", "--quiet", "--duration", "1")
    assert status == 1
    assert summary["errors"] == summary["statuses"]["500"] == summary["requests"]
    assert summary["calls"]["dropped"] > 0  # a POST answered 500: the platform stops sending that call's events
    assert summary["calls"]["completed"] == 0


def test_bounded_by_max_calls(ascrm: Server) -> None:
    status, summary, stderr = emulate_json(ascrm.base_url, "--quiet", "--max-calls", "5", "--pause-scale", "0")
    assert status == 0, stderr
    assert (summary["calls"]["started"], summary["calls"]["completed"]) == (5, 5)


@pytest.mark.parametrize(
    ("url", "password", "status", "text"),
    [
        ("unreachable", PASSWORD, 3, "connection refused"),
        ("ascrm", "wrong", 4, "refused the credentials of user 'autosecretary'"),
    ],
)
def test_failing_before_the_load(ascrm: Server, url: str, password: str, status: int, text: str) -> None:
    base = f"http://127.0.0.1:{free_port()}" if url == "unreachable" else ascrm.base_url
    done = run_tool("emulate", base, *QUICK, password=password)
    assert done.returncode == status
    assert text in done.stderr
    assert done.stdout == ""


BAD_SCENARIOS = [
    ("scenarios:\n  - name: a\n    steps: [CallAcepted]\n", "3:13: error: scenarios[0].steps[0].event: unknown event"),
    ("scenarios:\n  - name: a\n    steps:\n      - {event: DTMF, after: [3, 1]}\n", "4:30: error: scenarios[0]"),
    (
        "scenarios:\n  - name: a\n    colour: red\n    steps: [EndCall]\n",
        "3:5: error: scenarios[0].colour: unknown key",
    ),
    ("scenarios:\n  - name: a\n    weight: -1\n    steps: [EndCall]\n", "3:13: error: scenarios[0].weight: weight"),
    ("scenarios:\n  - name: a\n    steps: [{event: DTMF, DTMF: [1]}]\n", "3:33: error: scenarios[0].steps[0].DTMF"),
    (
        "scenarios:\n  - {name: a, steps: [EndCall]}\n  - {name: a, steps: [EndCall]}\n",
        "3:12: error: scenarios[1].name: a second scenario named",
    ),
    ("scenarios: [\n", "2:1: error: not valid YAML"),
    ("calls: []\n", "1:1: error: expected a mapping with a list under 'scenarios'"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SCENARIOS)
def test_a_bad_scenario_names_file_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "calls.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as failure:
        load_scenarios(path)
    assert str(failure.value).startswith(f"{path}:{message}")


def test_the_command_refuses_a_bad_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.yaml"
    path.write_text(BAD_SCENARIOS[0][0])
    done = run_tool("emulate", f"http://127.0.0.1:{free_port()}", "--scenarios", str(path))
    assert done.returncode == 2
    assert (
        done.stderr == f"ascrm: error: {path}:3:13: error: scenarios[0].steps[0].event: unknown event 'CallAcepted'\n"
    )


def test_the_example_scenario_file_runs(ascrm: Server) -> None:
    example = Path(__file__).resolve().parent.parent / "bench" / "scenarios.yaml"
    status, summary, stderr = emulate_json(ascrm.base_url, "--quiet", "--scenarios", str(example), "--duration", "1")
    assert status == 0, stderr
    assert summary["requests"] > 0
    assert summary["errors"] == 0
