"""Rule regexes run on RE2: a careless pattern never stalls calls, and what RE2 cannot run is refused at load."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ascrm.core.rules.regex import compile_pattern
from tests.support.server import Server, ServerFactory, platform_config

ASCRM = [sys.executable, "-m", "ascrm"]
NESTED = r"^(\d+)+$"  # backtracks exponentially in `re` on digits followed by a non-digit

RULES = textwrap.dedent(
    r"""
    rules:
      - id: nested
        on: CallAccepted
        if: {UN: "74950000001", AN: {regex: '^(\d+)+$'}}
        do: {PlayPrompt: nested}
      - id: other
        on: CallAccepted
        if: {UN: "74950000002"}
        do: {PlayPrompt: other}
    """
).lstrip()


# Seconds a request may take: generous for a busy machine, far below what a backtracking engine spends on
# these inputs (Python's `re` here: 0.5 s for 22 digits and a letter, doubling with each digit more).
PROMPTLY = 5.0


@pytest.fixture(scope="module")
def regex_server(tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory) -> Server:
    tmp = tmp_path_factory.mktemp("regex")
    (tmp / "rules.yaml").write_text(RULES)
    return serve_module(platform_config(rules="rules.yaml"), folder=tmp)


def accepted(client: httpx.Client, call_id: int, un: str, an: str) -> tuple[dict[str, Any], float]:
    """POST a CallAccepted; the answer and how long it took."""
    body = {"CallID": call_id, "EventType": 1, "ServiceType": 1, "UN": un, "AN": an}
    started = time.perf_counter()
    response = client.post("/CallEvent", json=body, timeout=30)
    took = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return response.json(), took


def test_nested_quantifier_on_a_long_number_is_answered_at_once(regex_server: Server) -> None:
    with regex_server.client() as client:
        answer, took = accepted(client, 9001, "74950000001", "7" * 27 + "x")
        assert answer == {"CallID": 9001, "EventType": 0, "Param": ""}
        assert took < PROMPTLY, f"the request took {took:.2f} s"
        answer, took = accepted(client, 9002, "74950000001", "7" * 27)
        assert answer == {"CallID": 9002, "EventType": 3, "Param": "nested"}
        assert took < PROMPTLY


def test_other_calls_are_not_stalled_meanwhile(regex_server: Server) -> None:
    answers: list[tuple[dict[str, Any], float]] = []

    def pathological() -> None:
        with regex_server.client() as client:
            answers.append(accepted(client, 9011, "74950000001", "7" * 30 + "x"))

    worker = threading.Thread(target=pathological)
    worker.start()
    time.sleep(0.1)
    with regex_server.client() as client:
        answer, took = accepted(client, 9012, "74950000002", "79161234567")
    worker.join(60)
    assert answer == {"CallID": 9012, "EventType": 3, "Param": "other"}
    assert took < PROMPTLY, f"another call waited {took:.2f} s"
    [(slow_answer, slow_took)] = answers
    assert slow_answer["EventType"] == 0
    assert slow_took < PROMPTLY


REFUSED = [
    pytest.param(r"^(\d)\1$", "invalid escape sequence", id="backreference"),
    pytest.param(r"^(?=7)\d+$", "invalid perl operator", id="lookahead"),
    pytest.param(r"(?<!8)800", "invalid perl operator", id="lookbehind"),
    pytest.param(r"^\d++$", "bad repetition operator", id="possessive"),
    pytest.param(r"^(?>\d+)$", "invalid perl operator", id="atomic-group"),
    pytest.param(r"^7916\d{7}\Z", "invalid escape sequence", id="python-Z"),
    pytest.param(r"^\d{1001}$", "invalid repetition size", id="repetition-over-1000"),
    pytest.param(r"\d{1000}\d{1000}", "too large: 2004 RE2 instructions, at most 1000", id="program-too-large"),
]


@pytest.mark.parametrize(("pattern", "reason"), REFUSED)
def test_check_refuses_what_re2_cannot_run(tmp_path: Path, pattern: str, reason: str) -> None:
    path = tmp_path / "rules.yaml"
    yaml_pattern = pattern.replace("'", "''")
    path.write_text(
        f"rules:\n  - id: a\n    on: CallAccepted\n    if:\n      AN: {{regex: '{yaml_pattern}'}}\n    do: Hangup\n"
    )
    result = subprocess.run(
        [*ASCRM, "check", str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert error.startswith(f"{path}:5:"), error
    assert f"bad regex {pattern!r}" in error
    assert reason in error
    assert "RE2" in error


def test_serve_refuses_to_start_on_a_pattern_re2_cannot_run(tmp_path: Path, serve: ServerFactory) -> None:
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - {id: a, on: CallAccepted, if: {AN: {regex: '(a)\\1'}}, do: Hangup}\n"
    )
    with pytest.raises(RuntimeError, match=r"rules\.yaml:2:.*bad regex"):
        serve(platform_config(rules="rules.yaml"), folder=tmp_path)


SAME_AS_RE = [
    (r"^\d{4}$", ["2005", "20055", "205", ""]),
    ("^7916", ["79161234567", "89161234567", "7916"]),
    ("4567$", ["79161234567", "79161234560"]),
    ("^2005$", ["2005", "12005", "20051"]),
    ("555", ["79165551234", "7916555", "79161234567"]),
    (r"^7(?:495|499)\d{7}$", ["74951234567", "74991234567", "74971234567", "7495123456"]),
    (r"^\+?7\d{10}$", ["+79161234567", "79161234567", "89161234567"]),
    ("^(1|2)$", ["1", "2", "12"]),
    ("", ["", "1"]),
    ("^$", ["", "1"]),
    ("ж", ["яжя", "я"]),
]


@pytest.mark.parametrize(("pattern", "values"), SAME_AS_RE)
def test_rule_patterns_answer_as_re_searched_on_numbers(pattern: str, values: list[str]) -> None:
    compiled = compile_pattern(pattern)
    for value in values:
        assert compiled.search(value) is (re.search(pattern, value) is not None), (pattern, value)
