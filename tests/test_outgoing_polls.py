"""Outgoing calls' (ServiceType 2, MTSPBX) polls take only TransferPBX or BackFromConsultCall; inbound ones any.

The original ("Исходящая связь", item 2) limits the answers to an outgoing call's polls; for inbound calls
it lists no limit. Another action on an outgoing call's poll is never sent (no action, logged
`action_not_allowed`), the admin API refuses it for a call known to be outgoing, and `ascrm check`
warns of poll rules that could answer an outgoing call with it.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.protocol import ACTION_CODES
from tests.support.server import Server, ServerFactory, platform_config

ASCRM = [sys.executable, "-m", "ascrm"]
ADMIN = ("ops", "admin-pässword")
INBOUND, OUTGOING = 1, 2
_call_ids = itertools.count(950_001)

# (action, param): what a poll rule with no `service` condition answers; the UN picks the rule.
POLL_ANSWERS = [
    ("TransferDN", "74951112233"),
    ("TransferEXT", "1234"),
    ("PlayPrompt", "hold_on"),
    ("Hangup", ""),
    ("PlayMenuBlock", "rating"),
    ("PlayPromptAndBack", "hold_on"),
    ("PlayPromptToOperator", "hold_on"),
    ("TransferDNRec", "74951112233"),
    ("TransferPBXRec", "PBX4951234"),
    ("IgnorePromptToOperator", ""),
    ("BackFromConsultCall", ""),
]
OUTGOING_PBX = "80004951234567101"


def un_of(action: str) -> str:
    return f"749500{ACTION_CODES[action]:05d}"


def rules_text() -> str:
    rules = []
    for action, param in POLL_ANSWERS:
        do = action if param == "" else f'{{{action}: "{param}"}}'
        rules.append(f'  - {{id: poll-{action}, on: poll, repeat: true, if: {{UN: "{un_of(action)}"}}, do: {do}}}')
    pbx = f'{{TransferPBX: "{OUTGOING_PBX}"}}'
    rules.append(f'  - {{id: poll-pbx, on: poll, repeat: true, if: {{UN: "74950099999"}}, do: {pbx}}}')
    return "rules:\n" + "\n".join(rules) + "\n"


@pytest.fixture(scope="module")
def polls_server(tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory) -> Server:
    tmp = tmp_path_factory.mktemp("outgoing-polls")
    (tmp / "rules.yaml").write_text(rules_text())
    return serve_module(platform_config(rules="rules.yaml"), folder=tmp, admin=ADMIN)


@pytest.fixture(scope="module")
def http(polls_server: Server) -> Iterator[httpx.Client]:
    with polls_server.client() as client:
        yield client


@pytest.fixture(scope="module")
def admin(polls_server: Server) -> Iterator[httpx.Client]:
    with polls_server.client(auth=ADMIN) as client:
        yield client


def new_call(http: httpx.Client, un: str, service: int | None) -> int:
    call_id = next(_call_ids)
    body: dict[str, Any] = {"CallID": call_id, "EventType": 2, "UN": un, "AN": "79161234567"}
    if service is not None:
        body["ServiceType"] = service
    assert http.post("/CallEvent", json=body).status_code == 200
    return call_id


def poll(http: httpx.Client, call_id: int) -> dict[str, Any]:
    response = http.get(f"/CallEvent/{call_id}")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def noop(call_id: int) -> dict[str, Any]:
    return {"CallID": call_id, "EventType": 0, "Param": ""}


@pytest.mark.parametrize(("action", "param"), POLL_ANSWERS)
def test_poll_answers_by_service(polls_server: Server, http: httpx.Client, action: str, param: str) -> None:
    inbound = new_call(http, un_of(action), INBOUND)
    assert poll(http, inbound) == {"CallID": inbound, "EventType": ACTION_CODES[action], "Param": param}
    outgoing = new_call(http, un_of(action), OUTGOING)
    if action == "BackFromConsultCall":
        assert poll(http, outgoing) == {"CallID": outgoing, "EventType": 12, "Param": ""}
        return
    assert poll(http, outgoing) == noop(outgoing)
    [logged] = polls_server.logged("action_not_allowed", call_id=outgoing)
    assert (logged["action"], logged["rule"], logged["command"]) == (action, f"poll-{action}", None)
    assert "TransferPBX or BackFromConsultCall" in logged["problem"]


def test_transfer_pbx_in_the_outgoing_form_answers_an_outgoing_poll(http: httpx.Client) -> None:
    outgoing = new_call(http, "74950099999", OUTGOING)
    assert poll(http, outgoing) == {"CallID": outgoing, "EventType": 5, "Param": OUTGOING_PBX}


ADMIN_PUSHES = [
    # (service, action, param): pushed to a call of that service (None: not known yet)
    pytest.param((OUTGOING, "TransferDN", "74951112233"), (422, False), id="outgoing-TransferDN"),
    pytest.param((OUTGOING, "Hangup", ""), (422, False), id="outgoing-Hangup"),
    pytest.param((OUTGOING, "PlayPrompt", "hold_on"), (422, False), id="outgoing-PlayPrompt"),
    pytest.param((OUTGOING, "TransferPBX", OUTGOING_PBX), (201, False), id="outgoing-TransferPBX"),
    pytest.param((OUTGOING, "BackFromConsultCall", ""), (201, False), id="outgoing-BackFromConsultCall"),
    pytest.param((INBOUND, "TransferDN", "74951112233"), (201, False), id="inbound-TransferDN"),
    pytest.param((INBOUND, "PlayPrompt", "hold_on"), (201, False), id="inbound-PlayPrompt"),
    pytest.param((None, "TransferDN", "74951112233"), (201, True), id="unknown-service-TransferDN"),
]


@pytest.mark.parametrize(("push", "outcome"), ADMIN_PUSHES)
def test_admin_pushes_by_service(
    http: httpx.Client, admin: httpx.Client, push: tuple[int | None, str, str], outcome: tuple[int, bool]
) -> None:
    (service, action, param), (status, warned) = push, outcome
    call_id = new_call(http, "74950088888", service)
    response = admin.post(f"/admin/calls/{call_id}/commands", json={"action": action, "param": param})
    assert response.status_code == status, response.text
    body = response.json()
    if status == 422:
        assert body["error"]
        assert action in body["message"]
        assert "outgoing" in body["message"]
        assert "TransferPBX or BackFromConsultCall" in body["message"]
        assert poll(http, call_id) == noop(call_id)
        return
    assert ("warning" in body) is warned, body
    assert poll(http, call_id) == {"CallID": call_id, "EventType": ACTION_CODES[action], "Param": param}


def test_a_command_pushed_before_the_call_shows_outgoing_is_not_sent(
    polls_server: Server, http: httpx.Client, admin: httpx.Client
) -> None:
    call_id = new_call(http, "74950088888", None)
    pushed = admin.post(f"/admin/calls/{call_id}/commands", json={"action": "TransferDN", "param": "74951112233"})
    assert pushed.status_code == 201, pushed.text
    assert "outgoing" in pushed.json()["warning"]
    body = {"CallID": call_id, "EventType": 9, "Result": "1280", "ServiceType": OUTGOING}
    assert http.post("/CallEvent", json=body).status_code == 200
    assert poll(http, call_id) == noop(call_id)
    [logged] = polls_server.logged("action_not_allowed", call_id=call_id)
    assert (logged["action"], logged["rule"], logged["command"]) == ("TransferDN", None, pushed.json()["command"]["id"])
    assert poll(http, call_id) == noop(call_id)  # taken off the queue, not sent


# --- ascrm check --------------------------------------------------------------------------------------


def check(tmp_path: Path, rule: str, *args: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n" + textwrap.indent(textwrap.dedent(rule).strip(), "  ") + "\n")
    result = subprocess.run(
        [*ASCRM, "check", *args, str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert "Traceback" not in result.stderr
    return path, result


# (rule, the warning expected or None); the rule's id is on line 2.
POLL_RULE_WARNINGS = [
    pytest.param(
        "- {id: r, on: poll, do: {TransferDN: '74951112233'}}",
        "TransferDN is not sent to a poll of an outgoing call",
        id="no-service-condition",
    ),
    pytest.param(
        "- {id: r, on: poll, if: {service: [MTSSecretary, MTSPBX]}, do: {PlayPrompt: p}}",
        "PlayPrompt is not sent to a poll of an outgoing call",
        id="admits-outgoing",
    ),
    pytest.param(
        "- {id: r, on: poll, if: {service: MTSPBX}, do: Hangup}",
        "Hangup never answers its polls",
        id="outgoing-only",
    ),
    pytest.param(
        "- {id: r, on: poll, if: {any: [{service: MTSPBX}, {AN: '7916'}]}, do: Hangup}",
        "Hangup is not sent to a poll of an outgoing call",
        id="any-admits-outgoing",
    ),
    pytest.param("- {id: r, on: poll, if: {service: MTSSecretary}, do: {PlayPrompt: p}}", None, id="inbound-only"),
    pytest.param("- {id: r, on: poll, if: {not: {service: MTSPBX}}, do: Hangup}", None, id="not-outgoing"),
    pytest.param(
        "- {id: r, on: poll, if: {any: [{service: MTSSecretary}, {service: 3}]}, do: Hangup}", None, id="any-inbound"
    ),
    pytest.param("- {id: r, on: poll, if: {all: [{service: 1}]}, do: {TransferEXT: '1234'}}", None, id="all-inbound"),
    pytest.param("- {id: r, on: poll, do: BackFromConsultCall}", None, id="back-from-consult-call"),
    pytest.param("- {id: r, on: poll, do: {TransferPBX: PBX4951234}}", None, id="transfer-pbx"),
]


@pytest.mark.parametrize(("rule", "warning"), POLL_RULE_WARNINGS)
def test_check_warns_of_poll_rules_an_outgoing_call_would_refuse(
    tmp_path: Path, rule: str, warning: str | None
) -> None:
    path, result = check(tmp_path, rule, "--strict")
    if warning is None:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return
    assert result.returncode == 1, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert re.match(rf"{re.escape(str(path))}:2:\d+: warning: rule 'r': ", line), line
    assert warning in line
    assert "polls take only TransferPBX or BackFromConsultCall" in line


# (rule, a fragment of the error, or None when the rule is fine); the param is on line 2.
POLL_PARAMS = [
    pytest.param(
        "- {id: r, on: poll, if: {service: MTSPBX}, do: {TransferPBX: PBX123}}",
        "TransferPBX param 'PBX123' fits no poll this rule answers: its calls are outgoing (MTSPBX)",
        id="softswitch-number-for-outgoing-only",
    ),
    pytest.param(
        f"- {{id: r, on: poll, if: {{service: MTSSecretary}}, do: {{TransferPBX: '{OUTGOING_PBX}'}}}}",
        f"TransferPBX param '{OUTGOING_PBX}' fits no poll this rule answers: its calls are not outgoing",
        id="outgoing-form-for-inbound-only",
    ),
    pytest.param("- {id: r, on: poll, if: {service: MTSPBX}, do: {TransferPBX: '4951234567U1a2B'}}", None, id="login"),
    pytest.param(f"- {{id: r, on: poll, if: {{service: 2}}, do: {{TransferPBX: '{OUTGOING_PBX}'}}}}", None, id="pbx"),
    pytest.param("- {id: r, on: poll, do: {TransferPBX: PBX123}}", None, id="any-service-softswitch"),
    pytest.param(f"- {{id: r, on: poll, do: {{TransferPBX: '{OUTGOING_PBX}'}}}}", None, id="any-service-outgoing"),
]


@pytest.mark.parametrize(("rule", "error"), POLL_PARAMS)
def test_check_errs_on_a_poll_param_no_call_could_take(tmp_path: Path, rule: str, error: str | None) -> None:
    path, result = check(tmp_path, rule)
    if error is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert re.match(rf"{re.escape(str(path))}:2:\d+: error: rule 'r': ", line), line
    assert error in line
