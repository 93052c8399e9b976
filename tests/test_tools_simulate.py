"""`ascrm simulate`: one call replayed against the rules, as text and JSON, explained; and it answers as serve does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import ascrm
from ascrm.errors import ConfigError
from ascrm.tools.rulecheck.simulate import parse_events
from ascrm.tools.timeline import Step
from tests.support.server import Server, ServerFactory, platform_config

ASCRM = [sys.executable, "-m", "ascrm"]
SOURCE = str(Path(ascrm.__file__).resolve().parents[1])
ROOT = Path(__file__).resolve().parents[1]
INBOUND = (ROOT / "rules" / "10-inbound.yaml").read_text()
CALLER = ("--an", "79161234567", "--un", "74951234567")
HOLIDAY = ("--at", "2027-01-01T19:05:00+03:00")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SOURCE, os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [*ASCRM, "simulate", *args], capture_output=True, text=True, timeout=30, cwd=ROOT, env=env, check=False
    )


def simulate_json(*args: str) -> dict[str, Any]:
    result = run(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def line(needle: str) -> int:
    """The line of rules/10-inbound.yaml where needle first appears."""
    return INBOUND[: INBOUND.index(needle)].count("\n") + 1


def test_a_timeline_of_events_and_answers() -> None:
    result = run("--rules", "rules", *CALLER, *HOLIDAY, "--events", "CallAccepted,+5s,DTMF:1,+20s,Transfer:1289")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"rules: rules (13 rules, revision {result.stdout.split('revision ')[1].split(')')[0]})",
        "call 1: AN=79161234567 UN=74951234567 ServiceType=MTSSecretary, from 2027-01-01 19:05:00+03:00",
        "2027-01-01 19:05:00+03:00  CallAccepted          -> PlayPrompt after_hours"
        f" (after-hours, rules/10-inbound.yaml:{line('id: after-hours')})",
        "2027-01-01 19:05:05+03:00  DTMF DTMF=1           -> TransferDN 74951112233"
        f" (menu-sales, rules/10-inbound.yaml:{line('id: menu-sales')})",
        "2027-01-01 19:05:25+03:00  Transfer Result=1289  -> no action",
    ]
    assert re.fullmatch(r"[0-9a-f]{12}", result.stdout.split("revision ")[1].split(")")[0])


def test_explain_gives_each_rule_tried_and_its_first_failing_condition() -> None:
    result = run("--rules", "rules", *CALLER, *HOLIDAY, "--events", "CallAccepted,RecStart", "--explain")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    block, manager, after = line("id: block-spam"), line("id: personal-manager"), line("id: after-hours")
    crm = line("id: crm-manager")
    assert lines[2:8] == [
        "2027-01-01 19:05:00+03:00  CallAccepted  -> PlayPrompt after_hours"
        f" (after-hours, rules/10-inbound.yaml:{after})",
        f"    block-spam        rules/10-inbound.yaml:{block}  line {line('{AN: {in: blocked}}')}: AN in list blocked:"
        ' "79161234567" not in list',
        f"    crm-manager       rules/10-inbound.yaml:{crm}  line {line('time: office, crm_manager')}: time office:"
        " closed at Fri 2027-01-01 19:05 Europe/Moscow (holiday 2027-01-01)",
        f"    personal-manager  rules/10-inbound.yaml:{manager}  line {line('time: office}')}: time office: closed at"
        " Fri 2027-01-01 19:05 Europe/Moscow (holiday 2027-01-01)",
        f"    after-hours       rules/10-inbound.yaml:{after}  answers",
        "2027-01-01 19:05:00+03:00  RecStart      -> no action",
    ]
    assert lines[8:] == ["    no rule is for RecStart"]


def test_json_for_machines() -> None:
    data = simulate_json(
        "--rules", "rules", *CALLER, "--at", "2027-01-11T10:00:00+03:00", "--service", "MTSSecretary",
        "--events", "CallAccepted,+3s,DTMF:7,+1s,GoToTransfer:74951112233,+30s,Transfer:Result=1289,PrepareToConnect",
        "--explain",
    )  # fmt: skip
    assert data["rules"]["source"] == "rules"
    assert data["rules"]["files"] == ["rules/10-inbound.yaml", "rules/20-outgoing.yaml"]
    assert data["call"] == {
        "name": "command line",
        "call_id": 1,
        "at": "2027-01-11T10:00:00+03:00",
        "fields": {"ServiceType": 1, "AN": "79161234567", "UN": "74951234567"},
    }
    steps = data["steps"]
    assert [step["event"] for step in steps] == ["CallAccepted", "DTMF", "GoToTransfer", "Transfer", "PrepareToConnect"]
    assert [step["at"][11:19] for step in steps] == ["10:00:00", "10:00:03", "10:00:04", "10:00:34", "10:00:34"]
    assert steps[1]["request"] == {
        "CallID": 1,
        "EventTime": "2027-01-11T10:00:03+03:00",
        "EventType": 4,
        "ServiceType": 1,
        "AN": "79161234567",
        "UN": "74951234567",
        "DTMF": "7",
    }
    assert steps[2]["request"]["DN1"] == "74951112233"
    assert steps[3]["request"]["Result"] == "1289"
    assert [step["answer"] for step in steps] == [
        {"CallID": 1, "EventType": 2, "Param": "1001"},
        {"CallID": 1, "EventType": 0, "Param": ""},
        {"CallID": 1, "EventType": 0, "Param": ""},
        {"CallID": 1, "EventType": 0, "Param": ""},
        {"CallID": 1, "EventType": 8, "Param": "vip_client"},
    ]
    first = steps[0]
    assert first["lookups"] == [{"source": "crm_manager", "outcome": "not given", "value": None}]
    assert (first["action"], first["param"], first["rule"], first["problem"]) == (
        "TransferEXT",
        "1001",
        "personal-manager",
        None,
    )
    assert first["rule_location"] == {
        "file": "rules/10-inbound.yaml",
        "line": line("id: personal-manager"),
        "column": 9,
    }
    assert first["explain"] == [
        {
            "rule": "block-spam",
            "location": {"file": "rules/10-inbound.yaml", "line": line("id: block-spam"), "column": 9},
            "answers": False,
            "reason": 'AN in list blocked: "79161234567" not in list',
            "reason_location": {"file": "rules/10-inbound.yaml", "line": line("{AN: {in: blocked}}"), "column": 10},
        },
        {  # the CRM is not asked: a rule test or simulate gives its value, or it is missing
            "rule": "crm-manager",
            "location": {"file": "rules/10-inbound.yaml", "line": line("id: crm-manager"), "column": 9},
            "answers": False,
            "reason": "source crm_manager matches regex '^\\d{4}$': its look-up found nothing, failed or took too long",
            "reason_location": {
                "file": "rules/10-inbound.yaml",
                "line": line("time: office, crm_manager"),
                "column": 47,
            },
        },
        {
            "rule": "personal-manager",
            "location": {"file": "rules/10-inbound.yaml", "line": line("id: personal-manager"), "column": 9},
            "answers": True,
            "reason": None,
            "reason_location": None,
        },
    ]
    dtmf = steps[1]["explain"]
    assert [(item["rule"], item["reason"]) for item in dtmf] == [
        ("menu-sales", 'DTMF "1": got "7"'),
        ("menu-support", 'digits "3": got "7"'),
        ("extension-dialled", "digits matches regex '^\\d{4}$': got \"7\""),
    ]
    whisper = steps[4]["explain"]
    assert [(item["rule"], item["answers"]) for item in whisper] == [("whisper-vip", True)]


def test_polls_answer_once_after_ten_minutes_of_talk() -> None:
    data = simulate_json(
        "--rules", "rules", *CALLER, *HOLIDAY, "--events", "Transfer:1280,+600s,poll,+1s,poll,+3s,poll"
    )
    assert [(step["event"], step["action"], step["rule"]) for step in data["steps"]] == [
        ("Transfer", None, None),
        ("poll", None, None),
        ("poll", "TransferPBX", "escalate-long-call"),
        ("poll", None, None),
    ]
    assert all(step["request"] is None for step in data["steps"][1:])
    assert "explain" not in data["steps"][0]


def test_a_case_of_a_test_file_with_flags_replacing_its_values() -> None:
    tests = "rules/tests/inbound.yaml"
    data = simulate_json("--file", tests, "--case", "a busy operator line fails over to the duty phone")
    assert data["rules"]["source"] == "rules"
    assert data["steps"][-1]["answer"] == {"CallID": 1, "EventType": 1, "Param": "74959990000"}
    blocked = simulate_json("--file", tests, "--case", "blocking wins over the personal manager")  # its list replaced
    assert blocked["steps"][0]["rule"] == "block-spam"
    later = simulate_json("--file", tests, "--case", "a known client reaches their manager in office hours", *HOLIDAY)
    assert (later["call"]["at"], later["steps"][0]["action"]) == ("2027-01-01T19:05:00+03:00", "PlayPrompt")
    free_phone = "an outgoing call to a free-phone number is dialled as it is"
    outgoing = simulate_json("--file", "rules/tests/outgoing.yaml", "--case", free_phone, "--service", "1")
    assert outgoing["steps"][0]["action"] is None


def test_without_at_the_call_starts_now() -> None:
    data = simulate_json("--rules", "rules", "--events", "CallAccepted", "--timezone", "Asia/Vladivostok")
    started = datetime.fromisoformat(data["call"]["at"])
    assert started.utcoffset() == timedelta(hours=10)
    assert abs(datetime.now(UTC) - started) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--events", "CallAccepted,DTFM:1"),
            "ascrm: error: --events: 'DTFM:1': unknown event 'DTFM' (known: CallAccepted",
        ),
        (("--events", "CallAccepted", "--at", "tomorrow"), "ascrm: error: --at: not an ISO 8601 date and time"),
        (("--events", "CallAccepted", "--service", "MTSFoo"), "ascrm: error: --service: not a ServiceType (known:"),
        (("--events", "CallAccepted", "--timezone", "Moscow"), "ascrm: error: --timezone: unknown time zone"),
        ((), "ascrm: error: --events: required (or --file)"),
        (("--file", "rules/tests/inbound.yaml"), "ascrm: error: --case: the file has"),
        (("--file", "rules/tests/inbound.yaml", "--case", "nope"), "ascrm: error: --case: no such case in the file"),
        (
            ("--file", "rules/tests/inbound.yaml", "--events", "DTMF"),
            "ascrm: error: --events: give the call's events or",
        ),
        (("--case", "x", "--events", "DTMF"), "ascrm: error: --case: picks a case of --file; give --file too"),
        (
            ("--rules", "rules/tests/inbound.yaml", "--events", "DTMF"),
            "problem(s) in the rules at rules/tests/inbound.yaml",
        ),
    ],
)
def test_bad_flags_exit_2_and_name_the_flag(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("CallAccepted", [Step(1, timedelta(0), {})]),
        ("dtmf:12,+1m30s,poll", [Step(4, timedelta(0), {"DTMF": "12"}), Step("poll", timedelta(seconds=90), {})]),
        ("9:1284,EndCall:2", [Step(9, timedelta(0), {"Result": "1284"}), Step(15, timedelta(0), {"Result": "2"})]),
        ("+250ms,GoToTransfer:74951112233", [Step(8, timedelta(milliseconds=250), {"DN1": "74951112233"})]),
        (
            "OperatorTransfer:1234,GoToShortTransfer:5678",
            [Step(12, fields={"EXT2": "1234"}), Step(10, fields={"EXT1": "5678"})],
        ),
        ("CallAccepted:an=79161234567:dn1=88001234567", [Step(1, fields={"AN": "79161234567", "DN1": "88001234567"})]),
        ("42:Result=1", [Step(42, fields={"Result": "1"})]),
    ],
)
def test_events_on_the_command_line(text: str, steps: list[Step]) -> None:
    assert list(parse_events(text)) == steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CallAccepted:1", "--events: 'CallAccepted:1': CallAccepted has no main field: write FIELD=VALUE"),
        ("poll:AN=1", "--events: 'poll:AN=1': a poll carries no fields (it is a GET)"),
        ("DTMF:Digits=1", "--events: 'DTMF:Digits=1': unknown field 'Digits' (an event takes AN, UN, DN1, DN2, EXT1,"),
        ("DTMF,+5", "--events: a pause at the end moves the clock on before nothing (got 'DTMF,+5')"),
        ("+5x,DTMF", "--events: '+5x': '5x' is not a pause: seconds (30), or 30s, 5m, 1h30m, 250ms"),
        ("-1", "--events: '-1': unknown event '-1'"),
    ],
)
def test_bad_events_name_the_token(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_events(text)
    assert str(raised.value).startswith(message)


@pytest.fixture(scope="module")
def examples_server(serve_module: ServerFactory) -> Server:
    """`ascrm serve` with the example rules."""
    config = platform_config(rules=str(ROOT / "rules"), reload={"watch": False})
    return serve_module(config)


def test_simulate_answers_as_serve_does(examples_server: Server) -> None:
    moscow = timezone(timedelta(hours=3))
    start = (datetime.now(UTC) - timedelta(minutes=20)).astimezone(moscow).replace(microsecond=0)  # polls: server clock
    timeline = (
        "CallAccepted,+3s,DTMF:1,+2s,GoToTransfer:74951112233,+5s,Transfer:1289,+1s,PrepareToConnect,"
        "+4s,Transfer:1280,+601s,poll,+3s,poll,+60s,BDropped,+5s,EndCall:1"
    )
    data = simulate_json("--rules", "rules", *CALLER, "--at", start.isoformat(), "--events", timeline)
    call_id = 4_000_000_000 + os.getpid()
    with examples_server.client() as http:
        for step in data["steps"]:
            if step["request"] is None:
                response = http.get(f"/CallEvent/{call_id}")
            else:
                response = http.post("/CallEvent", json={**step["request"], "CallID": call_id})
            assert response.status_code == 200
            assert response.json() == {**step["answer"], "CallID": call_id}, step
    assert [step["action"] for step in data["steps"][1:]] == [
        "TransferDN",
        None,
        None,
        "PlayPromptToOperator",
        None,
        "TransferPBX",
        None,
        "PlayMenuBlock",
        None,
    ]
