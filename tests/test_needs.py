"""A test that needs a missing tool is skipped here and is an error in CI (tests/support/needs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NEEDY_TESTS = """
from tests.support.needs import missing, needs

@needs(None, "frobnicator is not installed (apt-get install frobnicator)")
def test_with_a_missing_tool():
    pass

@needs("/usr/bin/frobnicator", "frobnicator is not installed")
def test_with_the_tool():
    pass

def test_finding_it_missing_on_the_way():
    missing("frobnicator-server is not installed")
"""


def run_needy(tmp_path: Path, ci: str | None) -> str:
    (tmp_path / "test_needy.py").write_text(NEEDY_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(ROOT)}
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-p", "tests.support.needs", "-p", "no:cacheprovider", "-rA", "-q"]
    done = subprocess.run(
        [*command, str(tmp_path / "test_needy.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_a_missing_tool_skips(tmp_path: Path, ci: str | None) -> None:
    out = run_needy(tmp_path, ci)
    assert "1 passed, 2 skipped" in out, out
    assert "frobnicator is not installed (apt-get install frobnicator)" in out


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_in_ci_a_missing_tool_is_an_error(tmp_path: Path, ci: str) -> None:
    out = run_needy(tmp_path, ci)
    assert "1 failed, 1 passed, 1 error" in out, out
    assert "frobnicator is not installed (apt-get install frobnicator); in CI every tool" in out
    assert "frobnicator-server is not installed; in CI every tool" in out
