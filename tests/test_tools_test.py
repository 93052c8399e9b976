"""`ascrm test` as an admin runs it: rule tests beside the rules, PASS/FAIL lines, diffs, errors at file:line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ascrm
from ascrm.cli.test import HELP

ASCRM = [sys.executable, "-m", "ascrm"]
SOURCE = str(Path(ascrm.__file__).resolve().parents[1])  # the subprocess runs the code under test, from any cwd
EXAMPLES = Path(__file__).resolve().parents[1] / "rules"

RULES = r"""timezone: Europe/Moscow
schedules:
  office: {mon-fri: "09:00-18:00", except: ["2027-01-01"]}
lists:
  blocked: ["74990000000"]
maps:
  managers: {"79161234567": "1001"}
rules:
  - {id: block, on: CallAccepted, if: {AN: {in: blocked}}, do: Hangup}
  - {id: manager, on: CallAccepted, if: {AN: {in: managers}, time: office}, do: {TransferEXT: "{managers[AN]}"}}
  - {id: closed, on: CallAccepted, if: {time: {not: office}}, do: {PlayPrompt: closed}}
  - {id: sales, on: DTMF, if: {DTMF: "1"}, do: {TransferDN: "74951112233"}}
  - {id: short, on: DTMF, if: {DTMF: "9"}, do: {TransferEXT: "{DTMF}"}}
  - {id: long, on: poll, if: {talk_seconds: {gt: 60}}, do: {TransferPBX: PBX4951234}}
"""
PASSING = """at: 2027-01-11T10:00:00+03:00
cases:
  - name: a client reaches their manager
    AN: "79161234567"
    steps:
      - {event: CallAccepted, expect: {rule: manager, do: {TransferEXT: "1001"}}}
      - {event: DTMF, DTMF: "1", after: 5s, expect: {TransferDN: "74951112233"}}
"""
FAILING = """at: 2027-01-11T10:00:00+03:00
cases:
  - name: pressing 2 reaches sales
    AN: "79031112233"
    steps:
      - {event: CallAccepted, expect: none}
      - {event: DTMF, DTMF: "2", expect: {TransferDN: "74951112233"}}
  - name: holiday callers reach the manager
    at: 2027-01-01T12:00:00+03:00
    AN: "79161234567"
    steps:
      - {event: CallAccepted, expect: {rule: manager}}
"""


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SOURCE, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([*ASCRM, *args], capture_output=True, text=True, timeout=30, cwd=cwd, env=env, check=False)


def rules_folder(tmp_path: Path, **tests: str) -> Path:
    """tmp_path/rules with RULES and the given tests/<name>.yaml files."""
    folder = tmp_path / "rules"
    (folder / "tests").mkdir(parents=True)
    (folder / "10-rules.yaml").write_text(RULES)
    for name, text in tests.items():
        (folder / "tests" / f"{name}.yaml").write_text(text)
    return folder


def where(text: str, needle: str, nth: int = 0) -> str:
    """`line:column` of the nth occurrence of needle in text (1-based, as the messages give them)."""
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(needle, offset + 1)
    line = text.count("\n", 0, offset) + 1
    return f"{line}:{offset - (text.rfind(chr(10), 0, offset) + 1) + 1}"


def line_of(text: str, needle: str) -> int:
    return int(where(text, needle).split(":")[0])


def test_the_shipped_example_tests_pass() -> None:
    result = run("test", "rules", cwd=EXAMPLES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = [
        (path, case["name"])
        for path in sorted((EXAMPLES / "tests").glob("*.yaml"))
        for case in yaml.safe_load(path.read_text())["cases"]
    ]
    lines = result.stdout.splitlines()
    assert len(cases) >= 25
    assert lines[-1] == f"{len(cases)} passed, 0 failed"
    assert [line.split(" ", 2)[2] for line in lines[:-1]] == [name for _, name in cases]
    assert all(line.startswith("PASS rules/tests/") for line in lines[:-1])
    assert result.stderr == ""


def test_pass_and_fail_with_a_readable_diff(tmp_path: Path) -> None:
    folder = rules_folder(tmp_path, a_passing=PASSING, b_failing=FAILING)
    result = run("test", "rules", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    rules_line = {rule: line_of(RULES, f"{{id: {rule},") for rule in ("block", "manager", "closed", "sales", "short")}
    expected = f"""\
PASS rules/tests/a_passing.yaml:3 a client reaches their manager
FAIL rules/tests/b_failing.yaml:3 pressing 2 reaches sales
  step 2, rules/tests/b_failing.yaml:{line_of(FAILING, "{event: DTMF")}: DTMF DTMF=2 at 2027-01-11 10:00:00+03:00
    expected: TransferDN 74951112233
    got:      no action
    rules tried:
      sales  rules/10-rules.yaml:{rules_line["sales"]}  line {rules_line["sales"]}: DTMF "1": got "2"
      short  rules/10-rules.yaml:{rules_line["short"]}  line {rules_line["short"]}: DTMF "9": got "2"
FAIL rules/tests/b_failing.yaml:{line_of(FAILING, "- name: holiday")} holiday callers reach the manager
  step 1, rules/tests/b_failing.yaml:{line_of(FAILING, "{event: CallAccepted, expect: {rule")}: CallAccepted at 2027-01-01 12:00:00+03:00
    expected: rule manager
    got:      PlayPrompt closed (closed, rules/10-rules.yaml:{rules_line["closed"]})
    rules tried:
      block    rules/10-rules.yaml:{rules_line["block"]}   line {rules_line["block"]}: AN in list blocked: "79161234567" not in list
      manager  rules/10-rules.yaml:{rules_line["manager"]}  line {rules_line["manager"]}: time office: closed at Fri 2027-01-01 12:00 Europe/Moscow (holiday 2027-01-01)
      closed   rules/10-rules.yaml:{rules_line["closed"]}  answers
1 passed, 2 failed
"""  # noqa: E501
    assert result.stdout == expected
    assert result.stderr == ""
    assert folder.is_dir()


def test_a_rule_that_is_never_tried_is_named_in_the_diff(tmp_path: Path) -> None:
    tests = """at: 2027-01-11T10:00:00+03:00
cases:
  - name: blocked callers get the manager
    AN: "74990000000"
    steps:
      - {event: CallAccepted, expect: {rule: manager}}
      - {event: DTMF, DTMF: "1", expect: {rule: manager}}
"""
    rules_folder(tmp_path, t=tests)
    result = run("test", "rules", cwd=tmp_path)
    assert result.returncode == 1
    manager = f"rules/10-rules.yaml:{line_of(RULES, '{id: manager,')}"
    assert f"    rule manager ({manager}) was not tried: an earlier rule answered\n" in result.stdout
    assert f"    rule manager ({manager}) is not for DTMF\n" in result.stdout


STEP_FORMS = [
    ('{event: CallAccepted, expect: {TransferEXT: "1001"}}', True),
    ('{event: callaccepted, expect: {transferext: "1001"}}', True),
    ('{event: 1, expect: {2: "1001"}}', True),
    ("{event: CallAccepted, expect: none}", False),
    ("{event: CallAccepted, expect: no action}", False),
    ("{event: CallAccepted, expect: {rule: manager}}", True),
    ('{event: CallAccepted, expect: {rule: closed, do: {TransferEXT: "1001"}}}', False),
    ('{event: CallAccepted, an: "79990000000", expect: none}', True),
    ('{event: CallAccepted, EventTime: "2027-01-11T19:00:00+03:00", expect: {PlayPrompt: closed}}', True),
    ("{event: CallAccepted, after: 9h, expect: {PlayPrompt: closed}}", True),
    ("{event: CallAccepted, after: 28800, expect: {PlayPrompt: closed}}", True),
    ('{event: CallAccepted, after: 7h59m59s, expect: {TransferEXT: "1001"}}', True),
    ("{event: DTMF, DTMF: 9, expect: {rule: short, do: none}}", True),
    ('{event: DTMF, Dtmf: "1", expect: {TransferDN: "74951112233"}}', True),
    ('{event: 4, DTMF: "1", expect: Hangup}', False),
    ("{event: 42, expect: none}", True),
    ("{event: CallAccepted}", True),
]


@pytest.fixture(scope="module")
def step_forms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One run over a case per STEP_FORMS row: its PASS/FAIL line by case name."""
    tmp_path = tmp_path_factory.mktemp("forms")
    cases = "".join(
        f'  - name: form {number}\n    aN: "79161234567"\n    steps:\n      - {steps}\n'
        for number, (steps, _) in enumerate(STEP_FORMS)
    )
    rules_folder(tmp_path, t=f"at: 2027-01-11T10:00:00+03:00\ncases:\n{cases}")
    result = run("test", "rules/tests/t.yaml", cwd=tmp_path)
    assert result.stderr == ""
    assert result.returncode == 1  # some rows fail on purpose
    return {line.split(" ", 2)[2]: line[:4] for line in result.stdout.splitlines() if line[:4] in ("PASS", "FAIL")}


@pytest.mark.parametrize(("number", "steps", "passes"), [(n, *row) for n, row in enumerate(STEP_FORMS)])
def test_step_forms_and_expectations(step_forms: dict[str, str], number: int, steps: str, passes: bool) -> None:
    assert step_forms[f"form {number}"] == ("PASS" if passes else "FAIL"), steps


def test_talk_time_and_a_poll_rule_answering_once(tmp_path: Path) -> None:
    tests = """at: 2027-01-11T10:00:00+03:00
cases:
  - name: escalated once after a minute of talk
    AN: "79990000000"
    steps:
      - {event: CallAccepted}
      - {event: Transfer, Result: "1280", after: 5s}
      - {event: poll, after: 60s, expect: none}
      - {event: poll, after: 3s, expect: {TransferPBX: PBX4951234}}
      - {event: poll, after: 3s, expect: none}
"""
    rules_folder(tmp_path, t=tests)
    result = run("test", "-v", "rules", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "  step 4: poll at 2027-01-11 10:01:08+03:00 -> TransferPBX PBX4951234 (long, rules/10-rules.yaml:" in (
        result.stdout
    )
    assert "  step 5: poll at 2027-01-11 10:01:11+03:00 -> no action\n" in result.stdout


def test_lists_and_maps_replaced_per_case(tmp_path: Path) -> None:
    tests = """at: 2027-01-11T10:00:00+03:00
cases:
  - name: blocked in this case only
    AN: "79161234567"
    lists: {blocked: ["7916*"]}
    steps: [{event: CallAccepted, expect: Hangup}]
  - name: another manager
    AN: "79161234567"
    maps: {managers: {"79161234567": "2002"}}
    steps: [{event: CallAccepted, expect: {TransferEXT: "2002"}}]
  - name: the rules' own list and map again
    AN: "79161234567"
    steps: [{event: CallAccepted, expect: {TransferEXT: "1001"}}]
"""
    rules_folder(tmp_path, t=tests)
    result = run("test", "rules", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.endswith("3 passed, 0 failed\n")


HEAD = "at: 2027-01-11T10:00:00+03:00\ncases:\n  - name: x\n"
BAD_FILES = [
    ("cases:\n  - name: x\n    at: 2027-01-11T10:00:00+03:00\n    stepz: []\n", "stepz", "unknown key 'stepz'"),
    ("cases:\n  - name: x\n    at: 2027-01-11T10:00:00+03:00\n    stepz: []\n", "name", "missing key 'steps'"),
    ("cases: []\n", "[]", "'cases' must not be empty"),
    ("- a list\n", "- a", "a rule test file is a mapping with `cases:` (and `rules:`)"),
    ("cases:\n  - name: x\n   at: 1\n", "at: 1", "not valid YAML: did not find expected '-' indicator"),
    (
        "cases:\n  - name: x\n    steps: [{event: CallAccepted}]\n",
        "name",
        "case 'x': missing key 'at' (when the call starts: 2027-01-11T10:00:00+03:00), or `at:` for the file",
    ),
    (
        HEAD + "    steps: [{event: DTFM}]\n",
        "DTFM",
        "case 'x': step 1: unknown event 'DTFM' (known: CallAccepted, CallAnswered, HelloMessage, DTMF, T38, FaxTone,"
        " RunIVR, GoToTransfer, Transfer, GoToShortTransfer, ShortTransfer, OperatorTransfer, RecStart, RecStop,"
        " EndCall, PrepareToConnect, BDropped, SubscriberFreeReceived, poll, or a code)",
    ),
    (
        HEAD + "    steps:\n      - {event: DTMF, expect: {Transfer: x}}\n",
        "{Transfer",
        "case 'x': step 1: expect: unknown action 'Transfer' (known: TransferDN, TransferEXT, PlayPrompt, Hangup,"
        " TransferPBX, PlayMenuBlock, PlayPromptAndBack, PlayPromptToOperator, TransferDNRec, TransferPBXRec,"
        " IgnorePromptToOperator, BackFromConsultCall, or none)",
    ),
    (
        HEAD + "    steps:\n      - {event: DTMF, expect: {TransferEXT: 12}}\n",
        "{TransferEXT",
        "case 'x': step 1: expect: TransferEXT param '12' must be a 4-digit short number (1234)",
    ),
    (
        HEAD + "    steps:\n      - {event: DTMF, expect: PlayPrompt}\n",
        "PlayPrompt",
        "case 'x': step 1: expect: PlayPrompt needs a param: {PlayPrompt: …}",
    ),
    (
        HEAD + "    steps:\n      - {event: DTMF, expect: [none]}\n",
        "[none]",
        "case 'x': step 1: expect takes none, an action (Hangup, {TransferDN: \"74951234567\"}), {rule: ID} or"
        " {rule: ID, do: ACTION}, not ['none']",
    ),
    (
        HEAD + "    steps:\n      - {event: DTMF, expect: {rule: nope}}\n",
        "{rule",
        "case 'x': no rule 'nope' in the rules at rules",
    ),
    (
        HEAD + "    steps:\n      - {event: DTMF, after: soon}\n",
        "soon",
        "case 'x': step 1: after: 'soon' is not a pause: seconds (30), or 30s, 5m, 1h30m, 250ms",
    ),
    (
        HEAD + "    steps:\n      - {event: poll, DTMF: '1'}\n",
        "'1'",
        "case 'x': step 1: a poll carries no fields (it is a GET): DTMF",
    ),
    (
        HEAD + "    AN: '1'\n    an: '2'\n    steps: [{event: DTMF}]\n",
        "an:",
        "AN is given twice, as 'AN' and 'an' (field names match in any case)",
    ),
    (
        HEAD + "    ServiceType: MTSFoo\n    steps: [{event: DTMF}]\n",
        "MTSFoo",
        "case 'x': ServiceType 'MTSFoo': expected a ServiceType code or name",
    ),
    (
        HEAD + "    steps: [{event: DTMF, EventTime: noon}]\n",
        "noon",
        "case 'x': step 1: EventTime 'noon': expected an ISO 8601 date and time",
    ),
    (
        "at: 2027-13-01T10:00\ncases:\n  - name: x\n    steps: [{event: DTMF}]\n",
        "2027",
        "at: '2027-13-01T10:00' is not an ISO 8601 date and time (2027-01-11T10:00:00+03:00)",
    ),
    (
        "timezone: Moscow\nat: 2027-01-11T10:00:00\ncases:\n  - name: x\n    steps: [{event: DTMF}]\n",
        "Moscow",
        "unknown time zone 'Moscow' (an IANA name: Europe/Moscow)",
    ),
    (
        HEAD + "    lists: {blocked: ['7*1']}\n    steps: [{event: DTMF}]\n",
        "['7*1']",
        "case 'x': list 'blocked': entry 1: '7*1' has '*' inside: only a trailing '*' is a prefix",
    ),
    (
        HEAD + "    lists: {blokced: []}\n    steps: [{event: DTMF}]\n",
        "name",
        "case 'x': no list named 'blokced' to replace (the rules define: blocked)",
    ),
    (
        "at: 2027-01-11T10:00:00+03:00\ncases:\n"
        "  - {name: x, steps: [{event: DTMF}]}\n  - {name: x, steps: [{event: DTMF}]}\n",
        "x, steps",
        "case name 'x' is used twice (first on line 3)",
    ),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """One run over a folder holding each BAD_FILES row as bad<N>.yaml, and one good file."""
    tmp_path = tmp_path_factory.mktemp("bad")
    rules_folder(tmp_path, good=PASSING, **{f"bad{number:02d}": text for number, (text, _, _) in enumerate(BAD_FILES)})
    return run("test", "rules", cwd=tmp_path)


@pytest.mark.parametrize(
    ("number", "text", "needle", "message"),
    [(n, *row) for n, row in enumerate(BAD_FILES)],
    ids=[r[2][:40] for r in BAD_FILES],
)
def test_a_bad_test_file_is_reported_at_its_line(
    bad_files: subprocess.CompletedProcess[str], number: int, text: str, needle: str, message: str
) -> None:
    nth = 1 if message.startswith("case name") else 0
    assert f"rules/tests/bad{number:02d}.yaml:{where(text, needle, nth)}: error: {message}\n" in bad_files.stderr


def test_bad_test_files_exit_2_and_the_good_ones_still_run(bad_files: subprocess.CompletedProcess[str]) -> None:
    assert bad_files.returncode == 2
    assert "Traceback" not in bad_files.stderr
    reported = {line.split(":")[0] for line in bad_files.stderr.splitlines()}
    assert reported == {f"rules/tests/bad{number:02d}.yaml" for number in range(len(BAD_FILES))}
    assert bad_files.stdout == (
        "PASS rules/tests/good.yaml:3 a client reaches their manager\n"
        f"1 passed, 0 failed, {len(BAD_FILES)} with errors\n"
    )


def test_rules_with_errors_are_printed_and_pointed_at(tmp_path: Path) -> None:
    folder = rules_folder(tmp_path, t="rules: ../../other\n" + PASSING)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "r.yaml").write_text("rules:\n  - {id: a, on: Dtmf, do: {TransferEXT: '12'}}\n")
    result = run("test", "rules/tests", cwd=tmp_path)
    assert result.returncode == 2
    assert folder.is_dir()
    assert result.stderr.splitlines() == [
        "other/r.yaml:2:41: error: rule 'a': TransferEXT param '12' must be a 4-digit short number (1234)",
        "rules/tests/t.yaml:1:8: error: rules: 1 problem(s) in the rules at other",
    ]
    missing = rules_folder(tmp_path / "2", t="rules: nowhere\n" + PASSING)
    result = run("test", str(missing), cwd=tmp_path / "2")
    assert result.returncode == 2
    assert "rules/tests/nowhere: error: no such file or folder\n" in result.stderr


def test_bad_files_win_over_failures_and_paths_are_checked(tmp_path: Path) -> None:
    rules_folder(tmp_path, bad="cases: 1\n", failing=FAILING)
    result = run("test", "rules", "absent", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "ascrm: error: absent: no such file or folder\n" in result.stderr
    assert f"ascrm: error: {tmp_path}: no test files (looked for {tmp_path}/tests/*.yaml and *.yml)\n" in result.stderr
    assert "rules/tests/bad.yaml:1:8: error: 'cases' must be a list, not 1\n" in result.stderr
    assert result.stdout.endswith("0 passed, 2 failed, 3 with errors\n")


def test_run_picks_cases_by_name(tmp_path: Path) -> None:
    rules_folder(tmp_path, a=PASSING, b=FAILING)
    result = run("test", "rules", "--run", "manager$", cwd=tmp_path)
    assert result.returncode == 1
    assert [line.split(" ", 2)[2] for line in result.stdout.splitlines() if line[:4] in ("PASS", "FAIL")] == [
        "a client reaches their manager",
        "holiday callers reach the manager",
    ]
    result = run("test", "rules", "--run", "nothing like it", cwd=tmp_path)
    assert result.returncode == 2
    assert "ascrm: error: no test case ran (none matches --run 'nothing like it')" in result.stderr
    result = run("test", "rules", "--run", "(", cwd=tmp_path)
    assert result.returncode == 2
    assert "ascrm: error: --run: not a regular expression" in result.stderr


def test_help_documents_where_tests_live_and_the_exit_status() -> None:
    result = run("test", "--help")
    assert result.returncode == 0
    for text in ("rules/tests/*.yaml", "expect:", "after:", "lists:", "Exit status: 0", "1 a case failed", "2 a test"):
        assert text in result.stdout


def test_the_documented_examples_pass(tmp_path: Path) -> None:
    in_help = "\n".join(line[2:] for line in HELP.split("\n\n")[1].splitlines())
    in_docs = (EXAMPLES.parent / "docs" / "tools.md").read_text()
    in_readme = in_docs.split("# rules/tests/inbound.yaml\n")[1].split("```")[0]
    (tmp_path / "tests").mkdir()
    for name, text in (("help", in_help), ("readme", in_readme)):
        assert text.startswith("rules: ..")
        (tmp_path / "tests" / f"{name}.yaml").write_text(text.replace("rules: ..", f"rules: {EXAMPLES}", 1))
    result = run("test", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.endswith("3 passed, 0 failed\n")
