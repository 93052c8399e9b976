"""`ascrm calendar import`: files and URLs merged into one calendar file that the rules then read."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ascrm.core.rules.calendar import CalendarError, DayKind, built_in, load_calendar
from ascrm.tools.calendar_import import import_calendars
from tests.support.tools import run_tool

SHIPPED = Path(__file__).resolve().parents[1] / "src/ascrm/core/rules/calendars/ru"


def days_of(year: int, changes: dict[str, str]) -> str:
    """An isdayoff-style string for year: weekends 1, weekdays 0, with changes by MM-DD."""
    first = date(year, 1, 1)
    out = []
    for offset in range((date(year + 1, 1, 1) - first).days):
        when = first + timedelta(days=offset)
        out.append(changes.get(f"{when:%m-%d}", "1" if when.weekday() >= 5 else "0"))
    return "".join(out)


def test_xml_files_merge_into_one_that_loads_as_the_originals(tmp_path: Path) -> None:
    output = tmp_path / "ru.xml"
    result = run_tool("calendar", "import", str(SHIPPED / "2025.xml"), str(SHIPPED / "2026.xml"), "-o", str(output))
    assert result.returncode == 0, result.stderr
    assert "2 year(s) covered: 2025, 2026" in result.stderr
    merged, _ = load_calendar("ru", output)
    ru = built_in("ru")
    assert merged.years == (2025, 2026)
    assert dict(merged.days) == {when: day for when, day in ru.days.items() if when.year >= 2025}


def test_json_and_xml_together_to_standard_output(tmp_path: Path) -> None:
    source = tmp_path / "2027.json"
    source.write_text(json.dumps({"2027": days_of(2027, {"01-01": "1", "04-30": "2", "12-25": "0"})}))
    result = run_tool("calendar", "import", str(SHIPPED / "2026.xml"), str(source))
    assert result.returncode == 0, result.stderr
    assert "2 year(s) covered: 2026, 2027" in result.stderr
    (tmp_path / "out.xml").write_text(result.stdout)
    calendar, _ = load_calendar("x", tmp_path / "out.xml")
    assert calendar.days[date(2027, 1, 1)].kind == DayKind.OFF
    assert calendar.days[date(2027, 4, 30)].kind == DayKind.SHORTENED
    assert calendar.days[date(2027, 12, 25)].kind == DayKind.WORKING  # a Saturday marked working
    assert date(2027, 1, 2) not in calendar.days  # a plain Saturday: nothing to say
    assert calendar.days[date(2026, 1, 1)].holiday == "Новогодние каникулы"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.xml", "<calendar year='2027'>\n<days>\n<day d='01.01' t='7'/>", ":3: <day d='01.01'> t='7'"),
        ("bad.xml", "<calendar year='2027'>\n<days>\n", ":3: not well-formed XML"),
        ("bomb.xml", "<!DOCTYPE c [<!ENTITY a 'b'>]><calendar year='2027'/>", ":1: a DOCTYPE or ENTITY"),
        ("bad.json", '{"2027": "0101"}', ": 2027: expected a string of 365 digits"),
        ("bad.json", '{"2027": ', ":1: not valid JSON"),
        ("bad.txt", "hello", ":1: neither an xmlcalendar XML file nor isdayoff-style JSON"),
    ],
)
def test_a_malformed_file_fails_naming_it(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    output = tmp_path / "out.xml"
    result = run_tool("calendar", "import", str(SHIPPED / "2026.xml"), str(path), "-o", str(output))
    assert result.returncode == 1
    assert f"ascrm calendar import: error: {path}{message}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


def test_a_year_given_twice_fails(tmp_path: Path) -> None:
    result = run_tool("calendar", "import", str(SHIPPED / "2026.xml"), str(SHIPPED / "2026.xml"))
    assert result.returncode == 1
    assert "the year 2026 is given twice" in result.stderr


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/2026.xml":
            body = (SHIPPED / "2026.xml").read_bytes()
        elif self.path == "/huge":
            body = b"<calendar year='2027'>" + b" " * (2 << 20)
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_a_url_is_fetched(web: str, tmp_path: Path) -> None:
    result = run_tool("calendar", "import", f"{web}/2026.xml", "-o", str(tmp_path / "ru.xml"))
    assert result.returncode == 0, result.stderr
    assert "1 year(s) covered: 2026" in result.stderr


def test_a_url_that_fails_or_answers_too_much(web: str) -> None:
    with pytest.raises(CalendarError, match="HTTP 404"):
        import_calendars([f"{web}/missing"])
    with pytest.raises(CalendarError, match="larger than 1048576 bytes"):
        import_calendars([f"{web}/huge"])
