"""TransferDN and TransferDNRec take a PSTN number "in the full format": with the country code.

A national form (10 digits, or 11 starting with 8) is completed to 7… where the rule file says
`normalize: ru`, and otherwise never sent: a rendered one is answered as no action and logged
`param_rejected`, a literal one is an error of `ascrm check` (a warning with `normalize: ru`), and the
admin API refuses it.
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

from tests.support.server import Server, ServerFactory, platform_config

ASCRM = [sys.executable, "-m", "ascrm"]
ADMIN = ("ops", "admin-pässword")
PLAIN_UN, RU_UN, RU_LITERAL_UN = "74950000101", "74950000102", "74950000103"
TRANSFER_DN, TRANSFER_DN_REC = 1, 9
_call_ids = itertools.count(930_001)

PLAIN = f"""
rules:
  - {{id: plain-dn, on: CallAccepted, if: {{UN: "{PLAIN_UN}"}}, do: {{TransferDN: "{{DN1}}"}}}}
  - {{id: plain-dn-rec, on: DTMF, if: {{UN: "{PLAIN_UN}"}}, do: {{TransferDNRec: "{{DN1}}"}}}}
"""
RU = f"""
normalize: ru
rules:
  - {{id: ru-dn, on: CallAccepted, if: {{UN: "{RU_UN}"}}, do: {{TransferDN: "{{DN1}}"}}}}
  - {{id: ru-dn-rec, on: DTMF, if: {{UN: "{RU_UN}"}}, do: {{TransferDNRec: "{{DN1}}"}}}}
  - {{id: ru-literal, on: CallAccepted, if: {{UN: "{RU_LITERAL_UN}"}}, do: {{TransferDN: "84959990000"}}}}
"""


@pytest.fixture(scope="module")
def numbers_server(tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory) -> Server:
    tmp = tmp_path_factory.mktemp("full-numbers")
    (tmp / "rules").mkdir()
    (tmp / "rules" / "10-plain.yaml").write_text(textwrap.dedent(PLAIN))
    (tmp / "rules" / "20-ru.yaml").write_text(textwrap.dedent(RU))
    return serve_module(platform_config(rules="rules"), folder=tmp, admin=ADMIN)


@pytest.fixture(scope="module")
def http(numbers_server: Server) -> Iterator[httpx.Client]:
    with numbers_server.client() as client:
        yield client


def post(http: httpx.Client, call_id: int, event_type: int, **fields: Any) -> dict[str, Any]:
    body = {"CallID": call_id, "EventType": event_type, "ServiceType": 1, **fields}
    response = http.post("/CallEvent", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# DN1 as the event carries it; what a file without normalize sends; what a `normalize: ru` file sends.
RENDERED = [
    pytest.param(("74951112233", "74951112233", "74951112233"), id="full"),
    pytest.param(("441234567890", "441234567890", "441234567890"), id="full-foreign"),
    pytest.param(("4951112233", None, "74951112233"), id="ten-digits"),
    pytest.param(("84951112233", None, "74951112233"), id="eight-prefix"),
    pytest.param(("88001234567", None, "78001234567"), id="free-phone-eight"),
    pytest.param(("+7 (495) 111-22-33", None, "74951112233"), id="written-with-separators"),
    pytest.param(("123", None, None), id="too-short"),
]


@pytest.mark.parametrize("kind", [(1, TRANSFER_DN, ""), (4, TRANSFER_DN_REC, "-rec")], ids=["DN", "DNRec"])
@pytest.mark.parametrize("case", RENDERED)
def test_rendered_numbers_are_sent_in_the_full_form_or_not_at_all(
    numbers_server: Server, http: httpx.Client, kind: tuple[int, int, str], case: tuple[str, str | None, str | None]
) -> None:
    event, action, suffix = kind
    dn1, plain, ru = case
    for un, expected, rule in ((PLAIN_UN, plain, "plain-dn"), (RU_UN, ru, "ru-dn")):
        call_id = next(_call_ids)
        answer = post(http, call_id, event, UN=un, DN1=dn1)
        if expected is None:
            assert answer == {"CallID": call_id, "EventType": 0, "Param": ""}
            [logged] = numbers_server.logged("param_rejected", call_id=call_id)
            assert logged["rule"] == rule + suffix
        else:
            assert answer == {"CallID": call_id, "EventType": action, "Param": expected}


def test_a_literal_national_number_is_completed_under_normalize_ru(http: httpx.Client) -> None:
    call_id = next(_call_ids)
    assert post(http, call_id, 1, UN=RU_LITERAL_UN) == {"CallID": call_id, "EventType": 1, "Param": "74959990000"}


@pytest.mark.parametrize(
    ("param", "status"),
    [("74951234567", 201), ("4951234567", 422), ("84951234567", 422)],
)
def test_admin_pushes_take_only_full_numbers(
    http: httpx.Client, numbers_server: Server, param: str, status: int
) -> None:
    call_id = next(_call_ids)
    post(http, call_id, 2, UN="74950000199")
    with numbers_server.client(auth=ADMIN) as admin:
        response = admin.post(f"/admin/calls/{call_id}/commands", json={"action": "TransferDN", "param": param})
    assert response.status_code == status, response.text
    if status == 422:
        assert param in response.json()["message"]
        assert "national" in response.json()["message"]


LITERALS = [
    pytest.param("TransferDN", "4951112233", "74951112233", id="DN-ten-digits"),
    pytest.param("TransferDN", "84951112233", "74951112233", id="DN-eight-prefix"),
    pytest.param("TransferDNRec", "84951112233", "74951112233", id="DNRec-eight-prefix"),
]


def check(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ASCRM, "check", *args, str(folder)], capture_output=True, text=True, timeout=60, cwd=folder, check=False
    )


@pytest.mark.parametrize(("action", "written", "sent"), LITERALS)
def test_check_errs_on_a_literal_national_number(tmp_path: Path, action: str, written: str, sent: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(f'rules:\n  - id: a\n    on: CallAccepted\n    do: {{{action}: "{written}"}}\n')
    result = check(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert re.match(rf"{re.escape(str(path))}:4:\d+: error: ", error), error
    assert f"{action} param {written!r} is a national-form number" in error
    assert "normalize: ru" in error


@pytest.mark.parametrize(("action", "written", "sent"), LITERALS)
def test_check_warns_of_a_literal_national_number_under_normalize(
    tmp_path: Path, action: str, written: str, sent: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(f'normalize: ru\nrules:\n  - id: a\n    on: CallAccepted\n    do: {{{action}: "{written}"}}\n')
    result = check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [warning] = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert re.match(rf"{re.escape(str(path))}:5:\d+: warning: ", warning), warning
    assert f"{action} param {written!r} is not in the full form" in warning
    assert f"sends it as {sent!r}" in warning
    assert check(tmp_path, "--strict").returncode == 1
