"""A rule-set mistake is found at load time, before it reaches a call, with one message naming file and line.

Every bad rule file below holds exactly one mistake. Loading it must raise RulesError with exactly one
problem, placed at the file and line a telephony admin would go to in order to fix it, with a message
that names what is wrong. Then: several mistakes are all reported, `ascrm check` says the same on
stderr (never a traceback), and the lint warnings flag rules the platform would ignore.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ascrm.core.rules import Problem, RulesError, load_rules

TIMEZONE = "Europe/Moscow"
ASCRM = [sys.executable, "-m", "ascrm"]
SHIPPED_RULES = Path(__file__).resolve().parents[1] / "rules"


def text(yaml_text: str) -> str:
    """A dedented YAML text whose first line is line 1."""
    return textwrap.dedent(yaml_text).lstrip("\n")


def write(folder: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text(content), encoding="utf-8")


def problems_of(source: Path) -> list[Problem]:
    with pytest.raises(RulesError) as caught:
        load_rules(source, TIMEZONE)
    problems = caught.value.problems
    assert problems, "RulesError without problems"
    return problems


def shown(problems: list[Problem]) -> str:
    return "\n".join(str(problem) for problem in problems)


def find(problems: list[Problem], file: Path, line: int, message: str) -> Problem:
    """The problem at file:line whose message contains message; fails listing what was reported."""
    for problem in problems:
        if problem.location.file == file and problem.location.line == line and message in problem.message:
            return problem
    pytest.fail(f"expected a problem at {file}:{line} containing {message!r}; got:\n{shown(problems)}")


def assert_only(problems: list[Problem], file: Path, line: int, message: str) -> None:
    """Exactly one error, at file:line, containing message, and printed as `file:line:col: error: …`."""
    problem = find(problems, file, line, message)
    assert len(problems) == 1, f"one mistake, one message; got:\n{shown(problems)}"
    assert problem.severity == "error"
    assert str(problem).startswith(f"{file}:{line}:"), str(problem)
    assert re.match(rf"{re.escape(str(file))}:{line}:\d+: error: ", str(problem)), str(problem)


# (YAML text of rules.yaml, the 1-based line of the mistake, a substring of the message).
# "<file>" in the message stands for the rule file's path.
BAD_RULE_FILES = [
    # --- not YAML -------------------------------------------------------------------------------
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
             do: Hangup
        """,
        4,
        "not valid YAML",
        id="yaml-bad-indentation",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: {TransferDN: "74951112233"
          - id: b
            on: DTMF
            do: Hangup
        """,
        4,
        "not valid YAML",
        id="yaml-unclosed-brace",
    ),
    pytest.param(
        """
        rules: []
        lists:
          vip: ["7916*", "7495*"
        """,
        3,
        "not valid YAML",
        id="yaml-unclosed-bracket-at-end-of-file",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: Hangup
            on: DTMF
        """,
        5,
        "duplicate key 'on' (first on line 3)",
        id="yaml-duplicate-key",
    ),
    # --- the file's shape ---------------------------------------------------------------------
    pytest.param(
        """
        - id: a
          on: CallAccepted
          do: Hangup
        """,
        1,
        "a rule file is a mapping",
        id="top-level-list",
    ),
    pytest.param(
        """
        Hangup every call
        """,
        1,
        "a rule file is a mapping",
        id="top-level-scalar",
    ),
    pytest.param(
        """
        timezone: Europe/Moscow
        rule:
          - id: a
            on: CallAccepted
            do: Hangup
        """,
        2,
        "unknown key 'rule'",
        id="unknown-top-level-key",
    ),
    pytest.param(
        """
        rules:
          id: a
          on: CallAccepted
          do: Hangup
        """,
        2,
        "'rules' must be a list",
        id="rules-not-a-list",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            iff: {AN: "7916*"}
            do: Hangup
        """,
        4,
        "unknown key 'iff'",
        id="unknown-rule-key",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: Hangup
          - on: DTMF
            do: Hangup
        """,
        5,
        "missing key 'id'",
        id="missing-id",
    ),
    pytest.param(
        """
        rules:
          - id: a
            do: Hangup
        """,
        2,
        "missing key 'on'",
        id="missing-on",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if: {AN: "7916*"}
        """,
        2,
        "missing key 'do'",
        id="missing-do",
    ),
    pytest.param(
        """
        rules:
          - id: block spam
            on: CallAccepted
            do: Hangup
        """,
        2,
        "'block spam' is not a valid name",
        id="bad-id",
    ),
    pytest.param(
        """
        rules:
          - id: menu
            on: DTMF
            do: Hangup
          - id: menu
            on: CallAccepted
            do: Hangup
        """,
        5,
        "rule id 'menu' is used twice (first at <file>:2:",
        id="duplicate-rule-id",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            repeat: yes
            do: Hangup
        """,
        4,
        "'repeat' must be a boolean",
        id="repeat-not-boolean",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if: {}
            do: Hangup
        """,
        4,
        "'if' must not be empty",
        id="if-empty",
    ),
    pytest.param(
        """
        normalize: russia
        rules: []
        """,
        1,
        "'normalize': 'russia' is not one of none, ru",
        id="bad-normalize",
    ),
    pytest.param(
        """
        lists:
          vip: "7916*"
        """,
        2,
        "'vip': a list of numbers",
        id="list-given-as-text",
    ),
    # --- on -----------------------------------------------------------------------------------
    pytest.param(
        """
        rules:
          - id: a
            on: CallAcepted
            do: Hangup
        """,
        3,
        "unknown event 'CallAcepted'",
        id="unknown-event",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on:
              - CallAccepted
              - Dtmf1
            do: Hangup
        """,
        5,
        "unknown event 'Dtmf1'",
        id="unknown-event-in-list",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: {event: CallAccepted}
            do: Hangup
        """,
        3,
        "'on' takes an event name, a code, 'poll', or a list of them",
        id="on-wrong-type",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: []
            do: Hangup
        """,
        3,
        "'on' takes an event name, a code, 'poll', or a list of them",
        id="on-empty-list",
    ),
    # --- if -----------------------------------------------------------------------------------
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if:
              AN: "7916*"
              ANI: "7495*"
            do: Hangup
        """,
        6,
        "unknown condition 'ANI'",
        id="unknown-condition",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if:
              any:
                - AN: "7916*"
                - Caller: "7495*"
            do: Hangup
        """,
        7,
        "unknown condition 'Caller'",
        id="unknown-condition-inside-any",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if:
              DTMF: {prefx: "1"}
            do: Hangup
        """,
        5,
        "unknown matcher 'prefx'",
        id="unknown-matcher",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if:
              AN: {prefix: "7*9"}
            do: Hangup
        """,
        5,
        "7*9",
        id="prefix-with-star-inside",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if:
              AN: {regex: "^7(916"}
            do: Hangup
        """,
        5,
        "bad regex '^7(916'",
        id="bad-regex",
    ),
    pytest.param(
        """
        schedules:
          office: {mon-fri: "09:00-18:00"}
        rules:
          - id: a
            on: CallAccepted
            if: {time: ofice}
            do: Hangup
        """,
        6,
        "no schedule named 'ofice'",
        id="undefined-schedule",
    ),
    pytest.param(
        """
        schedules:
          office: {mon-fri: "09:00-18:00"}
        rules:
          - id: a
            on: CallAccepted
            if:
              time: {not: ofice}
            do: Hangup
        """,
        7,
        "no schedule named 'ofice'",
        id="undefined-schedule-under-not",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if:
              time: {mon: "9-18"}
            do: Hangup
        """,
        5,
        "bad interval '9-18'",
        id="bad-inline-schedule",
    ),
    pytest.param(
        """
        lists:
          blocked: ["74951234567"]
        rules:
          - id: a
            on: CallAccepted
            if: {AN: {in: blokced}}
            do: Hangup
        """,
        6,
        "no list or map named 'blokced'",
        id="undefined-list-in-in",
    ),
    pytest.param(
        """
        rules:
          - id: long
            on: poll
            if: {talk_seconds: {gt: ten}}
            do: {TransferPBX: PBX4951234}
        """,
        4,
        "talk_seconds.gt takes a number of seconds, not 'ten'",
        id="talk-seconds-not-a-number",
    ),
    pytest.param(
        """
        rules:
          - id: long
            on: poll
            if:
              talk_seconds: {over: 600}
            do: {TransferPBX: PBX4951234}
        """,
        5,
        "unknown comparison 'over'",
        id="unknown-comparison",
    ),
    pytest.param(
        """
        rules:
          - id: failover
            on: PrepareToConnect
            if: {last_transfer_result: [busy, noanswer]}
            do: {TransferDN: "74959990000"}
        """,
        4,
        "'noanswer' is not one of busy, no_answer, connected",
        id="bad-last-transfer-result",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if: {service: Teleport}
            do: Hangup
        """,
        4,
        "unknown ServiceType 'Teleport'",
        id="unknown-service",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: EndCall
            if: {seen: Nope}
            do: Hangup
        """,
        4,
        "unknown EventType 'Nope'",
        id="unknown-event-in-seen",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if: {any: {AN: "7916*"}}
            do: Hangup
        """,
        4,
        "'any' takes a list of condition mappings",
        id="any-not-a-list",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            if: {not: "7916*"}
            do: Hangup
        """,
        4,
        "'not' takes a mapping of conditions",
        id="not-not-a-mapping",
    ),
    # --- do -----------------------------------------------------------------------------------
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: Transfer
        """,
        4,
        "unknown action 'Transfer'",
        id="unknown-action-bare",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: {TransferDNN: "74951112233"}
        """,
        4,
        "unknown action 'TransferDNN'",
        id="unknown-action-with-param",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: TransferDN
        """,
        4,
        "TransferDN needs a param",
        id="action-needs-param-given-bare",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: {TransferDN: "123"}
        """,
        4,
        "TransferDN param '123' must be a full-format number",
        id="param-transfer-dn",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do:
              TransferEXT: "12345"
        """,
        5,
        "TransferEXT param '12345' must be a 4-digit short number",
        id="param-transfer-ext",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: {TransferPBX: XYZ}
        """,
        4,
        "TransferPBX param 'XYZ' must be a softswitch number",
        id="param-transfer-pbx",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: {PlayPrompt: x.wav}
        """,
        4,
        "PlayPrompt param 'x.wav' must be the prompt's name without the file extension",
        id="param-play-prompt",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: {Hangup: now}
        """,
        4,
        "Hangup param 'now' takes no param",
        id="param-hangup",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: {TransferDN: ["74951112233", "74951112234"]}
        """,
        4,
        "TransferDN's param is text",
        id="param-a-list",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: {TransferEXT: "{nomap[AN]}"}
        """,
        4,
        "no map named 'nomap'",
        id="template-undefined-map",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: {TransferDN: "{Foo}"}
        """,
        4,
        "unknown field {Foo}",
        id="template-unknown-field",
    ),
    pytest.param(
        """
        rules:
          - id: a
            on: CallAccepted
            do: {PlayPrompt: "greeting}"}
        """,
        4,
        "stray '}'",
        id="template-stray-brace",
    ),
    # --- schedules ----------------------------------------------------------------------------
    pytest.param(
        """
        schedules:
          night:
            daily: "25:00-26:00"
        rules: []
        """,
        3,
        "bad time in '25:00-26:00'",
        id="schedule-bad-time",
    ),
    pytest.param(
        """
        schedules:
          office:
            mon-fri: "09:00-18:00"
            saturday: "10:00-15:00"
        """,
        4,
        "saturday: unknown key",
        id="schedule-unknown-weekday",
    ),
    pytest.param(
        """
        schedules:
          office:
            mon-fri: "09:00-18:00"
            except: ["2027-01-01", "2027-02-30"]
        """,
        4,
        "bad date '2027-02-30'",
        id="schedule-bad-date-in-except-quoted",
    ),
    pytest.param(
        """
        schedules:
          office:
            mon-fri: "09:00-18:00"
            except: [2027-01-01, 2027-02-30]
        """,
        4,
        "2027-02-30",
        id="schedule-bad-date-in-except-unquoted",
    ),
    pytest.param(
        """
        schedules:
          office:
            mon-fri: "09:00-18:00"
            except: "2027-05-03..2027-05-01"
        """,
        4,
        "bad range '2027-05-03..2027-05-01'",
        id="schedule-backwards-range",
    ),
    pytest.param(
        """
        schedules:
          office:
            mon-fri: "09:00-18:00"
            include: {2027-02-30: "10:00-14:00"}
        """,
        4,
        "2027-02-30",
        id="schedule-bad-date-in-include-unquoted",
    ),
    pytest.param(
        """
        timezone: Europe/Moskow
        rules: []
        """,
        1,
        "unknown time zone 'Europe/Moskow'",
        id="file-unknown-timezone",
    ),
    pytest.param(
        """
        schedules:
          office:
            timezone: Asia/Novosibirk
            mon-fri: "09:00-18:00"
        """,
        3,
        "unknown time zone 'Asia/Novosibirk'",
        id="schedule-unknown-timezone",
    ),
    # --- lists --------------------------------------------------------------------------------
    pytest.param(
        """
        lists:
          vip: ["79161234567", "79*16"]
        rules: []
        """,
        2,
        "'79*16' has '*' inside",
        id="list-star-inside-flow",
    ),
    pytest.param(
        """
        lists:
          vip:
            - "79161234567"
            - "79*16"
        rules: []
        """,
        4,
        "'79*16' has '*' inside",
        id="list-star-inside-block",
    ),
]


@pytest.mark.parametrize(("yaml_text", "line", "message"), BAD_RULE_FILES)
def test_a_mistake_is_reported_once_at_its_file_and_line(
    tmp_path: Path, yaml_text: str, line: int, message: str
) -> None:
    path = tmp_path / "rules.yaml"
    write(tmp_path, {"rules.yaml": yaml_text})
    assert_only(problems_of(path), path, line, message.replace("<file>", str(path)))


@dataclass(frozen=True)
class Case:
    """A rule set of several files; the mistake is in file `at` (relative to the folder)."""

    files: dict[str, str]
    at: str
    line: int
    message: str  # "<dir>" stands for the folder
    source: str = "rules.yaml"  # what is loaded, relative to the folder ("." for the folder itself)


BAD_RULE_SETS = [
    pytest.param(
        Case(
            files={
                "rules.yaml": """
                    lists:
                      vip: ["79161234567"]
                      blocked: {file: lists/nope.txt}
                    rules: []
                """
            },
            at="rules.yaml",
            line=3,
            message="lists/nope.txt",
        ),
        id="list-file-missing",
    ),
    pytest.param(
        Case(
            files={
                "rules.yaml": """
                    maps:
                      managers: {file: maps/nope.csv}
                """
            },
            at="rules.yaml",
            line=2,
            message="maps/nope.csv",
        ),
        id="map-file-missing",
    ),
    pytest.param(
        Case(
            files={
                "rules.yaml": """
                    lists:
                      blocked: {file: lists/blocked.txt}
                """,
                "lists/blocked.txt": """
                    # robocallers
                    7495*
                    74*95
                """,
            },
            at="lists/blocked.txt",
            line=3,
            message="'74*95' has '*' inside",
        ),
        id="list-file-star-inside",
    ),
    pytest.param(
        Case(
            files={
                "rules.yaml": """
                    maps:
                      managers: {file: maps/managers.csv}
                """,
                "maps/managers.csv": """
                    number,extension
                    79161234567,1001
                    79162223344,1002
                    79161234567,1003
                """,
            },
            at="maps/managers.csv",
            line=4,
            message="duplicate key '79161234567' (first on line 2)",
        ),
        id="map-file-duplicate-key",
    ),
    pytest.param(
        Case(
            files={
                "rules.yaml": """
                    normalize: ru
                    maps:
                      managers: {file: maps/managers.csv}
                """,
                "maps/managers.csv": """
                    89161234567,1001
                    +7 916 123-45-67,1002
                """,
            },
            at="maps/managers.csv",
            line=2,
            message="duplicate key '79161234567' (first on line 1)",
        ),
        id="map-file-duplicate-key-after-normalize",
    ),
    pytest.param(
        Case(
            files={
                "10-inbound.yaml": """
                    schedules:
                      office: {mon-fri: "09:00-18:00"}
                """,
                "20-support.yaml": """
                    timezone: Asia/Yekaterinburg
                    schedules:
                      support: {daily: "08:00-20:00"}
                      office: {mon-fri: "10:00-19:00"}
                """,
            },
            at="20-support.yaml",
            line=4,
            message="schedule 'office' is defined twice (first at <dir>/10-inbound.yaml:2",
            source=".",
        ),
        id="schedule-defined-in-two-files",
    ),
    pytest.param(
        Case(
            files={
                "10-a.yaml": """
                    lists:
                      vip: ["79161234567"]
                """,
                "20-b.yaml": """
                    rules: []
                    lists:
                      vip: ["79160000000"]
                """,
            },
            at="20-b.yaml",
            line=3,
            message="list 'vip' is defined twice (first at <dir>/10-a.yaml:2",
            source=".",
        ),
        id="list-defined-in-two-files",
    ),
    pytest.param(
        Case(
            files={
                "10-a.yaml": """
                    rules:
                      - id: spam
                        on: CallAccepted
                        do: Hangup
                """,
                "20-b.yaml": """
                    rules:
                      - id: menu
                        on: DTMF
                        do: Hangup
                      - id: spam
                        on: DTMF
                        do: Hangup
                """,
            },
            at="20-b.yaml",
            line=5,
            message="rule id 'spam' is used twice (first at <dir>/10-a.yaml:2",
            source=".",
        ),
        id="rule-id-in-two-files",
    ),
]


@pytest.mark.parametrize("case", BAD_RULE_SETS)
def test_a_mistake_across_files_is_reported_at_its_file_and_line(tmp_path: Path, case: Case) -> None:
    write(tmp_path, case.files)
    source = tmp_path / case.source if case.source != "." else tmp_path
    at = tmp_path / case.at
    assert_only(problems_of(source), at, case.line, case.message.replace("<dir>", str(tmp_path)))


# --- several mistakes: all reported -------------------------------------------------------------


def test_every_shape_error_of_a_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(
        tmp_path,
        {
            "rules.yaml": """
                timezone: Europe/Moscow
                shedules:
                  office: {mon-fri: "09:00-18:00"}
                rules:
                  - id: a
                    on: CallAccepted
                  - id: b c
                    on: DTMF
                    do: Hangup
                  - id: d
                    on: DTMF
                    when: {DTMF: "1"}
                    do: Hangup
            """
        },
    )
    problems = problems_of(path)
    find(problems, path, 2, "unknown key 'shedules'")
    find(problems, path, 5, "missing key 'do'")
    find(problems, path, 7, "'b c' is not a valid name")
    find(problems, path, 12, "unknown key 'when'")
    assert len(problems) == 4, shown(problems)


def test_every_definition_error_of_a_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(
        tmp_path,
        {
            "rules.yaml": """
                schedules:
                  office:
                    mon-fri: "09:00-18:60"
                  night:
                    daily: "22:00-06:00"
                    timezone: Mars/Olympus
                lists:
                  vip: ["79*161234567"]
                  blocked: {file: lists/nope.txt}
            """
        },
    )
    problems = problems_of(path)
    find(problems, path, 3, "bad time in '09:00-18:60'")
    find(problems, path, 6, "unknown time zone 'Mars/Olympus'")
    find(problems, path, 8, "has '*' inside")
    assert any("nope.txt" in str(problem) for problem in problems), shown(problems)
    assert len(problems) == 4, shown(problems)


def test_every_rule_error_of_a_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(
        tmp_path,
        {
            "rules.yaml": """
                rules:
                  - id: a
                    on: CallAcepted
                    do: Hangup
                  - id: b
                    on: DTMF
                    if: {time: office}
                    do: Hangup
                  - id: c
                    on: DTMF
                    do: {TransferEXT: "12345"}
                  - id: a
                    on: DTMF
                    do: Hangup
            """
        },
    )
    problems = problems_of(path)
    find(problems, path, 3, "unknown event 'CallAcepted'")
    find(problems, path, 7, "no schedule named 'office'")
    find(problems, path, 11, "TransferEXT param '12345'")
    find(problems, path, 12, "rule id 'a' is used twice")
    assert len(problems) == 4, shown(problems)


def test_a_bad_on_and_a_bad_do_of_one_rule_are_both_reported(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(
        tmp_path,
        {
            "rules.yaml": """
                rules:
                  - id: a
                    on: Dropped
                    do: {TransferDN: "123"}
            """
        },
    )
    problems = problems_of(path)
    find(problems, path, 3, "unknown event 'Dropped'")
    find(problems, path, 4, "TransferDN param '123'")
    assert len(problems) == 2, shown(problems)


def test_mistakes_in_several_files_are_all_reported(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "10-a.yaml": """
                rules:
                  - id: a
                    on: CallAccepted
                    do: Hangup
                    do: Hangup
            """,
            "20-b.yaml": """
                normalize: yes
            """,
            "30-c.yaml": """
                rules:
                  - id: c
                    on: CallAccepted
                    do: Hangup
                    repeat: 1
            """,
        },
    )
    problems = problems_of(tmp_path)
    find(problems, tmp_path / "10-a.yaml", 5, "duplicate key 'do'")
    find(problems, tmp_path / "20-b.yaml", 1, "'normalize'")
    find(problems, tmp_path / "30-c.yaml", 5, "'repeat' must be a boolean")
    assert len(problems) == 3, shown(problems)


# --- ascrm check ----------------------------------------------------------------------------------


def check(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*ASCRM, "check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def test_check_passes_the_shipped_rules_strictly(tmp_path: Path) -> None:
    from ascrm.core.rules.calendar import built_in

    last = built_in("ru").last_day
    assert last is not None
    expired = last.year < datetime.now(UTC).year + 1  # the built-in calendar needs next year's data
    result = check("--strict", SHIPPED_RULES, cwd=tmp_path)
    assert result.returncode == (1 if expired else 0), result.stderr
    if expired:  # the one warning: the calendar's end
        [warning] = result.stderr.splitlines()
        assert re.search(r"10-inbound\.yaml:\d+:\d+: warning: schedule 'office': calendar 'ru' ends on", warning)
    else:
        assert result.stderr == ""
    [summary] = result.stdout.splitlines()
    warnings = 1 if expired else 0
    assert re.fullmatch(rf"(\d+) rules in .*10-inbound\.yaml.*: no errors, {warnings} warning\(s\)", summary), summary
    assert int(summary.split()[0]) >= 10


def test_check_reports_errors_as_file_line_column(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(
        tmp_path,
        {
            "rules.yaml": """
                rules:
                  - id: a
                    on: CallAcepted
                    do: Hangup
                  - id: b
                    on: DTMF
                    do: {TransferDN: "123"}
            """
        },
    )
    result = check(path, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if re.match(rf"{re.escape(str(path))}:\d+:\d+: error: ", line)]
    assert len(errors) == 2, result.stderr
    assert errors[0].startswith(f"{path}:3:9: error: ")
    assert "unknown event 'CallAcepted'" in errors[0]
    assert errors[1].startswith(f"{path}:7:")
    assert "TransferDN param '123'" in errors[1]
    assert lines[-1] == f"ascrm: error: 2 problem(s) in the rules at {path}"


def test_check_reports_a_mistake_in_a_map_file_at_the_map_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "rules.yaml": "maps:\n  managers: {file: maps/managers.csv}\n",
            "maps/managers.csv": "79161234567,1001\n79161234567,1002\n",
        },
    )
    result = check(tmp_path, cwd=tmp_path)
    assert result.returncode == 1
    assert f"{tmp_path / 'maps' / 'managers.csv'}:2:1: error: duplicate key" in result.stderr


WARNING_ONLY = """
    rules:
      - id: goodbye
        on: EndCall
        do: Hangup
"""


def test_check_with_only_warnings_passes_unless_strict(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(tmp_path, {"rules.yaml": WARNING_ONLY})

    relaxed = check(path, cwd=tmp_path)
    assert relaxed.returncode == 0, relaxed.stderr
    assert re.search(rf"^{re.escape(str(path))}:2:\d+: warning: rule 'goodbye': ", relaxed.stderr, re.M)
    assert "error" not in relaxed.stderr
    assert relaxed.stdout.strip().endswith("no errors, 1 warning(s)")

    strict = check("--strict", path, cwd=tmp_path)
    assert strict.returncode == 1
    assert strict.stderr == relaxed.stderr


def test_check_of_a_missing_path_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-rules"
    result = check(missing, cwd=tmp_path)
    assert result.returncode == 1
    assert f"{missing}: error: no such file or folder" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param({"rules.yaml": b"rules: [\n"}, "not valid YAML", id="not-yaml"),
        pytest.param({"rules.yaml": b"rules: []\n# \xff\xfe\n"}, "not UTF-8", id="not-utf8"),
        pytest.param({"notes.txt": b"rules: []\n"}, "no rule files", id="folder-without-rule-files"),
        pytest.param(
            {"rules.yaml": b"schedules:\n  office:\n    mon-fri: '09:00-18:00'\n    except: [2027-02-30]\n"},
            "2027-02-30",
            id="impossible-unquoted-date",
        ),
        pytest.param(
            {"rules.yaml": b"lists:\n  vip: {file: lists}\n", "lists/x.txt": b"7916*\n"},
            "cannot read",
            id="list-file-is-a-folder",
        ),
        pytest.param(
            {"rules.yaml": b"rules:\n  - id: a\n    on: 1\n    if: {AN: {prefix: '7*9'}}\n    do: Hangup\n"},
            "7*9",
            id="prefix-with-star-inside",
        ),
    ],
)
def test_check_fails_cleanly_without_a_traceback(tmp_path: Path, files: dict[str, bytes], expected: str) -> None:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    result = check(tmp_path, cwd=tmp_path)  # check() itself asserts there is no traceback
    assert result.returncode == 1, result.stderr
    assert expected in result.stderr
    assert result.stderr.splitlines()[-1].startswith("ascrm: error: ")


# --- lint warnings ----------------------------------------------------------------------------------

# (YAML text, the id of the rule warned about, the line of its id, a substring of the warning).
WARNINGS = [
    pytest.param(
        """
        rules:
          - id: goodbye
            on: EndCall
            do: Hangup
        """,
        "goodbye",
        2,
        "the platform does not read the answer to EndCall, so Hangup has no effect",
        id="answer-to-an-unread-event",
    ),
    pytest.param(
        """
        rules:
          - id: whisper
            on: CallAccepted
            do: {PlayPromptToOperator: vip_client}
        """,
        "whisper",
        2,
        "PlayPromptToOperator is honoured only as the answer to PrepareToConnect, not CallAccepted",
        id="operator-prompt-outside-prepare-to-connect",
    ),
    pytest.param(
        """
        rules:
          - id: no-whisper
            on: DTMF
            do: IgnorePromptToOperator
        """,
        "no-whisper",
        2,
        "IgnorePromptToOperator is honoured only as the answer to PrepareToConnect, not DTMF",
        id="ignore-prompt-outside-prepare-to-connect",
    ),
    pytest.param(
        """
        rules:
          - id: back
            on: DTMF
            if: {DTMF: "0"}
            do: BackFromConsultCall
        """,
        "back",
        2,
        "BackFromConsultCall is honoured only in answers to polls",
        id="back-from-consult-call-outside-polls",
    ),
    pytest.param(
        """
        rules:
          - id: nag
            on: poll
            if: {talk_seconds: {gt: 300}}
            do: {PlayPrompt: hurry_up}
        """,
        "nag",
        2,
        "PlayPrompt is not sent to a poll of an outgoing call",
        id="poll-with-play-prompt",
    ),
    pytest.param(
        """
        rules:
          - id: outgoing-greeting
            on: CallAccepted
            if: {service: MTSPBX}
            do: {PlayPrompt: greeting}
        """,
        "outgoing-greeting",
        2,
        "for outgoing calls (MTSPBX) the platform reads only TransferDN on CallAccepted, not PlayPrompt",
        id="outgoing-play-prompt",
    ),
    pytest.param(
        """
        rules:
          - id: everyone-to-sales
            on: CallAccepted
            do: {TransferDN: "74951112233"}
          - id: vip
            on: CallAccepted
            if: {AN: "79161234567"}
            do: {TransferEXT: "1001"}
        """,
        "vip",
        5,
        "rule 'vip' can never match: rule 'everyone-to-sales'",
        id="unreachable-after-unconditional-rule",
    ),
    pytest.param(
        """
        rules:
          - id: escalate
            on: poll
            repeat: true
            do: {TransferPBX: PBX4951234}
          - id: back
            on: poll
            do: BackFromConsultCall
        """,
        "back",
        6,
        "rule 'back' can never match: rule 'escalate'",
        id="unreachable-after-repeating-poll-rule",
    ),
]


@pytest.mark.parametrize(("yaml_text", "rule_id", "line", "message"), WARNINGS)
def test_a_rule_the_platform_ignores_is_warned_about(
    tmp_path: Path, yaml_text: str, rule_id: str, line: int, message: str
) -> None:
    path = tmp_path / "rules.yaml"
    write(tmp_path, {"rules.yaml": yaml_text})
    warnings = list(load_rules(path, TIMEZONE).warnings)
    assert len(warnings) == 1, shown(warnings)
    [warning] = warnings
    assert warning.severity == "warning"
    assert warning.message.startswith(f"rule {rule_id!r}"), warning.message
    assert message in warning.message, warning.message
    assert warning.location.file == path
    assert warning.location.line == line
    assert str(warning).startswith(f"{path}:{line}:")
    assert ": warning: " in str(warning)


NO_WARNINGS = [
    pytest.param(
        """
        rules:
          - id: escalate
            on: poll
            do: {TransferPBX: PBX4951234}
          - id: back
            on: poll
            if: {talk_seconds: {gt: 600}}
            do: BackFromConsultCall
        """,
        id="one-shot-poll-rule-then-another-poll-rule",
    ),
    pytest.param(
        """
        rules:
          - id: rate-operator
            on: BDropped
            do: {PlayMenuBlock: rating}
        """,
        id="rating-menu-on-b-dropped",
    ),
    pytest.param(
        """
        rules:
          - id: to-dialled
            on: CallAccepted
            do: {TransferDN: "{DN1}"}
          - id: fallback
            on: CallAccepted
            do: {TransferDN: "74951112233"}
        """,
        id="rule-after-a-templated-rule-is-reachable",
    ),
    pytest.param(
        """
        rules:
          - id: everyone-to-sales
            on: CallAccepted
            do: {TransferDN: "74951112233"}
          - id: menu
            on: [CallAccepted, DTMF]
            do: {TransferEXT: "1001"}
        """,
        id="rule-reachable-on-another-event",
    ),
    pytest.param(
        """
        rules:
          - id: whisper
            on: PrepareToConnect
            do: {PlayPromptToOperator: vip_client}
          - id: outgoing
            on: CallAccepted
            if: {service: MTSPBX, DN1: {prefix: "8800"}}
            do: {TransferDN: "{DN1}"}
        """,
        id="honoured-answers",
    ),
]


@pytest.mark.parametrize("yaml_text", NO_WARNINGS)
def test_a_rule_the_platform_honours_is_not_warned_about(tmp_path: Path, yaml_text: str) -> None:
    path = tmp_path / "rules.yaml"
    write(tmp_path, {"rules.yaml": yaml_text})
    rules = load_rules(path, TIMEZONE)
    assert len(rules.rules) == text(yaml_text).count("- id:")
    assert list(rules.warnings) == []


def test_the_shipped_rules_have_no_warnings() -> None:
    """None but the built-in calendar's end, once next year is past its data."""
    rules = load_rules(SHIPPED_RULES, TIMEZONE)
    assert len(rules.rules) >= 10
    expired = rules.calendars["ru"].year < datetime.now(UTC).year + 1
    others = [w for w in rules.warnings if not (expired and "calendar 'ru' ends on" in w.message)]
    assert others == [], shown(others)
    assert len(rules.warnings) == (1 if expired else 0), shown(list(rules.warnings))
