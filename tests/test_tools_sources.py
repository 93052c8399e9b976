"""Rule tests and `simulate` with `sources:`: a case gives the look-ups' values (no CRM is asked), a case
that leaves one unset has it missing, a source no case sets is reported, and `simulate --source` sets one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ascrm

ASCRM = [sys.executable, "-m", "ascrm"]
SOURCE = str(Path(ascrm.__file__).resolve().parents[1])
RULES = """
maps:
  managers: {"79161234567": "1001"}
sources:
  owner:
    url: "http://127.0.0.1:9/owner?phone={AN}"   # never asked by the tools
    value: extension
rules:
  - id: personal-manager
    on: CallAccepted
    if: {owner: {regex: "^\\\\d{4}$"}}
    do: {TransferEXT: "{owner}"}
  - id: fallback
    on: CallAccepted
    if: {AN: {in: managers}}
    do: {TransferEXT: "{managers[AN]}"}
"""
TESTS = """
rules: ..
at: 2027-03-16T10:30:00+03:00
cases:
  - name: the CRM's owner
    AN: "79161234567"
    sources: {owner: "1234"}
    steps: [{event: CallAccepted, expect: {rule: personal-manager, do: {TransferEXT: "1234"}}}]
  - name: the CRM does not answer
    AN: "79161234567"
    sources: {owner: null}
    steps: [{event: CallAccepted, expect: {rule: fallback, do: {TransferEXT: "1001"}}}]
"""
UNSET = """
rules: ..
at: 2027-03-16T10:30:00+03:00
cases:
  - name: forgot the source
    AN: "79161234567"
    steps: [{event: CallAccepted, expect: {rule: fallback}}]
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SOURCE, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([*ASCRM, *args], capture_output=True, text=True, timeout=30, cwd=cwd, env=env, check=False)


def rules_folder(tmp_path: Path, tests: str) -> Path:
    folder = tmp_path / "rules"
    (folder / "tests").mkdir(parents=True)
    (folder / "10-rules.yaml").write_text(RULES)
    (folder / "tests" / "sources.yaml").write_text(tests)
    return folder


def test_cases_give_the_look_ups_values(tmp_path: Path) -> None:
    folder = rules_folder(tmp_path, TESTS)
    result = run("test", str(folder), "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 0 failed" in result.stdout


def test_a_source_no_case_sets_is_reported(tmp_path: Path) -> None:
    folder = rules_folder(tmp_path, UNSET)
    result = run("test", str(folder), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr  # missing, as a failed look-up: the map decides
    assert "PASS" in result.stdout
    assert "warning: the rules read source owner, which no case sets" in result.stdout
    covered = run("test", str(rules_folder(tmp_path / "covered", TESTS)), cwd=tmp_path)
    assert "no case sets" not in covered.stdout


def test_simulate_takes_a_source_value(tmp_path: Path) -> None:
    folder = rules_folder(tmp_path, TESTS)
    common = ("simulate", "--rules", str(folder), "--an", "79161234567", "--events", "CallAccepted")
    given = run(*common, "--source", "owner=1234", cwd=tmp_path)
    assert given.returncode == 0, given.stderr
    assert "-> TransferEXT 1234 (personal-manager" in given.stdout
    assert "source owner: '1234' (given)" in given.stdout
    failed = run(*common, "--source", "owner=", "--format", "json", cwd=tmp_path)
    assert failed.returncode == 0, failed.stderr
    [step] = json.loads(failed.stdout)["steps"]
    assert (step["rule"], step["param"]) == ("fallback", "1001")
    assert step["lookups"] == [{"source": "owner", "outcome": "given", "value": None}]
    bad = run(*common, "--source", "owner", cwd=tmp_path)
    assert bad.returncode == 2
    assert "--source" in bad.stderr
