"""A real `ascrm serve` routing by a schedule with a production calendar, and the calendar's metric."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.metrics import ADMIN, scrape, value
from tests.support.server import Server, ServerFactory, platform_config

RULES = """\
timezone: Europe/Moscow
calendars:
  company: {file: company.xml}
schedules:
  office:
    calendar: ru
    mon-fri: "09:00-18:00"
    sat: "10:00-15:00"
  support:
    calendar: company
    daily: "08:00-20:00"
rules:
  - id: office-hours
    on: CallAccepted
    if: {UN: "74950000001", time: office}
    do: {TransferEXT: "1001"}
  - id: support-hours
    on: CallAccepted
    if: {UN: "74950000002", time: support}
    do: {TransferEXT: "2001"}
  - id: closed
    on: CallAccepted
    do: {PlayPrompt: closed}
"""
COMPANY = """\
<?xml version="1.0" encoding="UTF-8"?>
<calendar year="2030">
  <holidays><holiday id="1" title="Founders' day"/></holidays>
  <days><day d="06.03" t="1" h="1"/></days>
</calendar>
"""
CALL_IDS = itertools.count(7_300_001)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory) -> Server:
    folder = tmp_path_factory.mktemp("calendar")
    (folder / "rules.yaml").write_text(RULES)
    (folder / "company.xml").write_text(COMPANY)
    config = platform_config(rules=str(folder / "rules.yaml"), reload={"watch": False})
    return serve_module(config, folder=folder, admin=ADMIN)


def accepted(server: Server, called: str, moment: str) -> dict[str, Any]:
    body = {"CallID": next(CALL_IDS), "EventType": "CallAccepted", "EventTime": moment, "ServiceType": 1}
    with server.client() as http:
        response = http.post("/CallEvent", json={**body, "AN": "79161234567", "UN": called})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize(
    ("moment", "param"),
    [
        ("2025-11-01T16:30:00+03:00", "1001"),  # a working Saturday, shortened: Monday's hours less an hour
        ("2025-11-01T17:15:00+03:00", "closed"),
        ("2024-12-28T17:30:00+03:00", "1001"),  # a working Saturday, past Saturday's own 15:00
        ("2024-12-21T12:00:00+03:00", "1001"),  # a plain Saturday keeps its hours
        ("2026-01-09T10:00:00+03:00", "closed"),  # a day off moved from 01-03
        ("2026-04-30T17:30:00+03:00", "closed"),  # shortened
        ("2026-04-30T13:30:00+01:00", "1001"),  # 15:30 in Moscow: the schedule's zone decides
        ("2026-12-31T10:00:00+03:00", "closed"),  # a day off moved from 01-04
        ("2027-01-04T10:00:00+03:00", "1001"),  # past the calendar: the plain week
    ],
)
def test_calls_are_routed_by_the_calendar(server: Server, moment: str, param: str) -> None:
    assert accepted(server, "74950000001", moment)["Param"] == param


def test_a_calendar_from_a_file_next_to_the_rules(server: Server) -> None:
    assert accepted(server, "74950000002", "2030-06-03T12:00:00+03:00")["Param"] == "closed"
    assert accepted(server, "74950000002", "2030-06-04T12:00:00+03:00")["Param"] == "2001"


def test_the_last_covered_day_is_a_metric(server: Server) -> None:
    with server.client(auth=ADMIN) as admin:
        samples = scrape(admin)
    name = "ascrm_calendar_last_day_timestamp_seconds"
    assert value(samples, name, calendar="ru") == datetime(2026, 12, 31, tzinfo=UTC).timestamp()
    assert value(samples, name, calendar="company") == datetime(2030, 12, 31, tzinfo=UTC).timestamp()
    assert {labels for (metric, labels) in samples if metric == name} == {
        (("calendar", "company"),),
        (("calendar", "ru"),),
    }


def test_the_check_warns_of_a_calendar_ending_this_year(tmp_path: Path) -> None:
    from ascrm.core.rules import load_rules

    this_year = datetime.now(UTC).year
    (tmp_path / "company.xml").write_text(COMPANY.replace("2030", str(this_year)))
    (tmp_path / "rules.yaml").write_text(RULES)
    warnings = [str(w) for w in load_rules(tmp_path / "rules.yaml", "Europe/Moscow").warnings]
    assert any(f"calendar 'company' ends on {this_year}-12-31" in w for w in warnings), warnings


def test_an_edited_calendar_file_is_reloaded_and_a_bad_one_refused(tmp_path: Path, serve: ServerFactory) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "company.xml").write_text(COMPANY)
    config = platform_config(rules=str(tmp_path / "rules.yaml"), reload={"watch": False})
    server = serve(config, folder=tmp_path / "ascrm", admin=ADMIN)
    try:
        with server.client(auth=ADMIN) as admin:
            assert accepted(server, "74950000002", "2030-06-04T12:00:00+03:00")["Param"] == "2001"
            (tmp_path / "company.xml").write_text(COMPANY.replace('d="06.03"', 'd="06.04"'))
            assert admin.post("/admin/reload").json()["status"] == "reloaded"
            assert accepted(server, "74950000002", "2030-06-04T12:00:00+03:00")["Param"] == "closed"
            (tmp_path / "company.xml").write_text(COMPANY.replace('t="1"', 't="9"'))
            rejected = admin.post("/admin/reload")
            assert rejected.status_code == 422
            assert f"{tmp_path / 'company.xml'}:4:" in rejected.json()["problems"][0]
            assert accepted(server, "74950000002", "2030-06-04T12:00:00+03:00")["Param"] == "closed"  # the last good
    finally:
        server.stop()
