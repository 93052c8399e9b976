"""Production calendars in schedules: the reference Russian calendar's dates, shortened days, errors."""

from __future__ import annotations

import re
import shutil
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ascrm.core.rules import RulesError, load_rules
from ascrm.core.rules.calendar import CalendarError, DayKind, built_in, load_calendar, parse_calendar
from ascrm.core.rules.schedule import Schedule, ScheduleError, parse_schedule
from ascrm.core.rules.workdays import shorten

REFERENCE = Path("/work/shared/data/calendars/ru")
SHIPPED = Path(__file__).resolve().parents[1] / "src/ascrm/core/rules/calendars/ru"
MOSCOW = "Europe/Moscow"


@pytest.fixture(scope="module")
def ru() -> Any:
    return built_in("ru")


def office(ru: Any, **extra: Any) -> Schedule:
    spec = {"calendar": "ru", "mon-fri": "09:00-18:00", **extra}
    return parse_schedule(spec, MOSCOW, {"ru": ru})


def at(text: str, zone: str = MOSCOW) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def test_the_built_in_calendar_is_the_reference_data(ru: Any) -> None:
    if REFERENCE.is_dir():
        for path in sorted(REFERENCE.glob("*.xml")):
            assert (SHIPPED / path.name).read_bytes() == path.read_bytes(), path.name
    assert ru.years == tuple(range(2020, 2027))
    assert ru.last_day == date(2026, 12, 31)
    assert ru.days[date(2026, 1, 1)].holiday == "Новогодние каникулы"
    assert ru.days[date(2025, 11, 1)].kind == DayKind.SHORTENED
    assert ru.days[date(2024, 12, 28)].kind == DayKind.WORKING
    assert ru.days[date(2026, 1, 9)].moved_from == date(2026, 1, 3)
    assert ru.days[date(2026, 12, 31)].moved_from == date(2026, 1, 4)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2025-11-01 09:00", True),  # a Saturday, working (Monday's hours) and shortened: 09:00-17:00
        ("2025-11-01 16:59", True),
        ("2025-11-01 17:00", False),
        ("2025-11-03 10:00", False),  # the day off moved from that Saturday
        ("2025-11-04 10:00", False),  # the holiday
        ("2024-12-28 17:59", True),  # a working Saturday: Monday's hours, not shortened
        ("2024-12-28 18:00", False),
        ("2024-12-21 10:00", False),  # a plain Saturday: closed
        ("2024-12-30 10:00", False),  # the day off moved from 12-28
        ("2026-01-09 10:00", False),  # a Friday off, moved from 01-03
        ("2026-01-12 10:00", True),
        ("2026-04-30 16:59", True),  # shortened: 09:00-17:00
        ("2026-04-30 17:00", False),
        ("2026-04-29 17:30", True),  # the day before is a plain day
        ("2026-12-31 10:00", False),  # a Thursday off, moved from 01-04
        ("2026-12-30 17:30", True),
        ("2027-01-01 10:00", True),  # past the calendar: the plain week (a Friday)
        ("2019-12-31 10:00", True),  # before it too
    ],
)
def test_reference_dates(ru: Any, moment: str, expected: bool) -> None:
    assert office(ru).contains(at(moment)) is expected


def test_working_weekend_takes_the_named_days_hours(ru: Any) -> None:
    spec = {"calendar": "ru", "mon-thu": "09:00-18:00", "fri": "09:00-16:00", "sat": "10:00-14:00"}
    schedule = parse_schedule({**spec, "working_weekend": "fri"}, MOSCOW, {"ru": ru})
    assert schedule.contains(at("2024-12-28 15:30"))  # Friday's hours on the working Saturday
    assert not schedule.contains(at("2024-12-28 16:00"))
    assert schedule.contains(at("2024-12-21 13:00"))  # a plain Saturday keeps its own hours
    assert not schedule.contains(at("2024-12-21 15:00"))
    assert not schedule.contains(at("2025-11-01 15:00"))  # Friday's 09:00-16:00 shortened by 1h


def test_shortened_by_other_amounts(ru: Any) -> None:
    half = office(ru, shortened="30m")
    assert half.contains(at("2026-04-30 17:29"))
    assert not half.contains(at("2026-04-30 17:30"))
    none = office(ru, shortened=0)
    assert none.contains(at("2026-04-30 17:59"))
    long = office(ru, shortened="1h30m")
    assert not long.contains(at("2026-04-30 16:30"))


def test_shortening_takes_the_last_intervals_from_the_end() -> None:
    # 09:00-13:00 and 17:30-18:00: an hour off drops the half hour and takes the rest from the morning
    assert shorten(((540, 780), (1050, 1080)), (), 60) == (((540, 750),), ())
    # 22:00-03:00: the next morning goes first
    assert shorten(((1320, 1440),), ((0, 180),), 60) == (((1320, 1440),), ((0, 120),))
    assert shorten(((1320, 1440),), ((0, 30),), 60) == (((1320, 1410),), ())


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2026-04-30 23:00", True),  # a night shift starting on a shortened day: 20:00-01:00 the next day
        ("2026-05-01 00:30", True),
        ("2026-05-01 01:00", False),
        ("2026-05-01 01:30", False),  # the holiday's own shift does not start (it starts at 20:00)
        ("2026-05-01 21:00", False),
        ("2026-05-02 00:30", False),  # nothing spills from the holiday
        ("2025-11-01 21:00", True),  # a working shortened Saturday with Monday's night shift
        ("2025-11-02 01:30", False),
        ("2025-11-02 00:59", True),
        ("2024-12-28 21:00", True),  # a working Saturday, not shortened: until 02:00
        ("2024-12-29 01:30", True),
        ("2026-01-08 23:00", False),  # a holiday: its shift is closed...
        ("2026-01-09 01:00", False),  # ...and spills nothing into the (moved) day off
        ("2026-01-10 01:00", False),  # nor from the day off
        ("2026-12-30 23:30", True),  # the night before a day off runs into it until its end
        ("2026-12-31 01:30", True),
        ("2026-12-31 21:00", False),
    ],
)
def test_intervals_across_midnight(ru: Any, moment: str, expected: bool) -> None:
    spec = {"calendar": "ru", "mon-fri": "20:00-02:00"}
    assert parse_schedule(spec, MOSCOW, {"ru": ru}).contains(at(moment)) is expected


def test_a_zone_other_than_moscow(ru: Any) -> None:
    schedule = parse_schedule(
        {"calendar": "ru", "mon-fri": "09:00-18:00", "timezone": "Asia/Vladivostok"}, MOSCOW, {"ru": ru}
    )
    # Vladivostok's calendar dates are its own: 30 April ends there at 17:00 local (10:00 Moscow time)
    assert schedule.contains(at("2026-04-30 16:30", "Asia/Vladivostok"))
    assert not schedule.contains(at("2026-04-30 17:00", "Asia/Vladivostok"))
    assert not schedule.contains(at("2026-04-30 10:30", MOSCOW))  # the same instant as 17:30 there
    assert schedule.contains(at("2026-04-30 09:30", MOSCOW))
    assert not schedule.contains(datetime(2026, 1, 9, 3, 0, tzinfo=UTC))  # 13:00 in Vladivostok, a day off
    # 2024-12-28 09:00 in Vladivostok is still 2024-12-27 in UTC: the local date decides
    assert schedule.contains(datetime(2024, 12, 27, 23, 30, tzinfo=UTC))


def test_except_and_include_apply_on_top(ru: Any) -> None:
    schedule = office(ru, **{"except": ["2024-12-28"], "include": {"2026-01-09": "10:00-12:00"}})
    assert not schedule.contains(at("2024-12-28 10:00"))
    assert schedule.contains(at("2026-01-09 11:00"))
    assert not schedule.contains(at("2026-01-09 13:00"))
    assert date(2024, 12, 28) not in schedule.notes
    assert date(2026, 1, 9) not in schedule.notes
    assert schedule.notes[date(2026, 1, 1)] == "calendar ru: holiday: Новогодние каникулы"


def test_notes_say_why(ru: Any) -> None:
    notes = office(ru).notes
    assert "shortened day before a holiday" in notes[date(2026, 4, 30)]
    assert "working Saturday" in notes[date(2025, 11, 1)]
    assert "shortened" in notes[date(2025, 11, 1)]
    assert notes[date(2024, 12, 28)].endswith("working Saturday with Monday's hours, its day off moved to 2024-12-30")
    assert notes[date(2026, 1, 9)] == "calendar ru: day off moved from 2026-01-03"


@pytest.mark.parametrize(
    ("spec", "key", "match"),
    [
        ({"calendar": "xx", "mon": "09:00-18:00"}, "calendar", r"no calendar named 'xx' \(known: ru\)"),
        ({"calendar": "ru", "shortened": "an hour"}, "shortened", "expected a duration"),
        ({"calendar": "ru", "shortened": "13h"}, "shortened", "longer than 12h"),
        ({"calendar": "ru", "working_weekend": "monday"}, "working_weekend", "expected a day mon..sun"),
        ({"shortened": "1h"}, "shortened", "add calendar: NAME"),
        ({"working_weekend": "tue"}, "working_weekend", "add calendar: NAME"),
    ],
)
def test_bad_calendar_keys(ru: Any, spec: dict[str, Any], key: str, match: str) -> None:
    with pytest.raises(ScheduleError, match=match) as caught:
        parse_schedule(spec, MOSCOW, {"ru": ru})
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"calendar": "xx"}, "calendar: no calendar named 'xx' (known: acme, ru)"),
        (
            {"calendar": "ru", "shortened": "an hour"},
            "shortened: expected a duration such as 1h, 30m or 0, got 'an hour'",
        ),
        ({"calendar": "ru", "shortened": "13h"}, "shortened: '13h' is longer than 12h"),
        ({"calendar": "ru", "working_weekend": "monday"}, "working_weekend: expected a day mon..sun, got 'monday'"),
        ({"shortened": "1h"}, "shortened: takes effect with a production calendar: add calendar: NAME"),
        ({"working_weekend": "tue"}, "working_weekend: takes effect with a production calendar: add calendar: NAME"),
    ],
)
def test_calendar_key_errors_in_full(ru: Any, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(spec, MOSCOW, {"ru": ru, "acme": ru})
    assert str(caught.value) == message


@pytest.mark.parametrize("shortened", ["0", " 0 ", 0])
def test_shortened_zero_keeps_the_full_hours(ru: Any, shortened: Any) -> None:
    schedule = office(ru, shortened=shortened)
    assert schedule.contains(at("2026-04-30 17:59"))  # a shortened day, not shortened
    assert not schedule.contains(at("2026-04-30 18:00"))


def test_shortened_by_twelve_hours_at_most(ru: Any) -> None:
    schedule = office(ru, shortened="12h")  # 09:00-18:00 less 12 hours: nothing left
    assert not schedule.contains(at("2026-04-30 09:30"))
    assert schedule.contains(at("2026-04-29 09:30"))


def test_a_holiday_is_closed_whatever_the_weeks_hours(ru: Any) -> None:
    schedule = parse_schedule({"calendar": "ru", "daily": "09:00-18:00"}, MOSCOW, {"ru": ru})
    assert not schedule.contains(at("2026-01-01 10:00"))  # a Thursday holiday: not Sunday's hours either
    assert not schedule.contains(at("2026-01-09 10:00"))  # a Friday off (moved from 01-03)
    assert schedule.contains(at("2026-01-12 10:00"))
    assert schedule.contains(at("2026-01-11 10:00"))  # a plain Sunday keeps the week's hours


# --- calendar files -------------------------------------------------------------------------------

YEAR = """\
<?xml version="1.0" encoding="UTF-8"?>
<calendar year="{year}">
  <holidays><holiday id="1" title="Company day"/></holidays>
  <days>
    <day d="03.02" t="1" h="1"/>
  </days>
</calendar>
"""


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("<calendar year='2027'><days><day d='13.01' t='1'/></days></calendar>", 1, r"d='13\.01': expected a date"),
        ("<calendar year='2027'>\n<days>\n<day d='01.01' t='5'/></days></calendar>", 3, "t='5': expected 1, 2 or 3"),
        ("<calendar year='2027'>\n<days>\n<day d='01.01' t='1' h='9'/></days></calendar>", 3, "no <holiday id='9'>"),
        ("<calendar year='2027'><days>\n<day d='01.01' t='1'/>\n<day d='01.01' t='2'/></days></calendar>", 3, "twice"),
        ("<calendar year='27'></calendar>", 1, "expected a year"),
        ("<calendar year='2027'>\n<days><day d='01.01' t='1'/>\n</calendar>", 3, "not well-formed XML: mismatched tag"),
        ("<html/>", 1, "the root element is <'html'>"),
        ("\n\n<!DOCTYPE x [<!ENTITY a 'aaaa'>]><calendar year='2027'>&a;</calendar>", 3, "DOCTYPE or ENTITY"),
    ],
)
def test_malformed_calendar_files(text: str, line: int, match: str) -> None:
    with pytest.raises(CalendarError, match=match) as caught:
        parse_calendar(text.encode(), "bad.xml")
    assert caught.value.line == line
    assert str(caught.value).startswith(f"bad.xml:{line}: ")


def test_an_entity_bomb_is_refused_unexpanded() -> None:
    entities = "".join(f'<!ENTITY e{n} "&e{n - 1};&e{n - 1};&e{n - 1};&e{n - 1};">' for n in range(1, 30))
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE calendar [<!ENTITY e0 "x">{entities}]><calendar year="2027">&e29;</calendar>'
    )
    with pytest.raises(CalendarError, match="DOCTYPE or ENTITY"):
        parse_calendar(bomb.encode(), "bomb.xml")
    utf16 = bomb.replace('<?xml version="1.0"?>', "").encode("utf-16")  # not caught by a byte search
    with pytest.raises(CalendarError, match="DOCTYPE or ENTITY"):
        parse_calendar(utf16, "bomb16.xml")


def test_size_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "huge.xml"
    path.write_bytes(b"<calendar year='2027'>" + b" " * (1 << 20) + b"</calendar>")
    with pytest.raises(CalendarError, match="larger than"):
        load_calendar("huge", path)


def test_a_folder_of_years(tmp_path: Path) -> None:
    for year in (2027, 2028):
        (tmp_path / f"{year}.xml").write_text(YEAR.format(year=year))
    calendar, read = load_calendar("company", tmp_path)
    assert calendar.years == (2027, 2028)
    assert len(read) == 2
    assert calendar.days[date(2028, 3, 2)].holiday == "Company day"
    (tmp_path / "again.xml").write_text(YEAR.format(year=2028))
    with pytest.raises(CalendarError, match=r"again\.xml: the year 2028 is given twice \(also in .*2028\.xml\)"):
        load_calendar("company", tmp_path)


# --- in rule files --------------------------------------------------------------------------------


def rules(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rules.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_rule_files_name_calendars_relative_to_themselves(tmp_path: Path) -> None:
    this_year = datetime.now(UTC).year
    (tmp_path / "calendars").mkdir()
    for year in (this_year, this_year + 1):
        (tmp_path / "calendars" / f"{year}.xml").write_text(YEAR.format(year=year))
    path = rules(
        tmp_path,
        """\
        calendars:
          company: {file: calendars}
        schedules:
          office: {calendar: company, daily: "09:00-18:00"}
        rules:
          - {id: open, on: CallAccepted, if: {time: office}, do: Hangup}
        """,
    )
    ruleset = load_rules(path, MOSCOW)
    assert list(ruleset.warnings) == []  # it covers next year
    assert ruleset.calendars == {"company": date(this_year + 1, 12, 31)}
    assert set(ruleset.data_files) == {tmp_path / "calendars" / f"{y}.xml" for y in (this_year, this_year + 1)}


def test_a_calendar_ending_before_next_year_is_warned_of(tmp_path: Path) -> None:
    this_year = datetime.now(UTC).year
    (tmp_path / "company.xml").write_text(YEAR.format(year=this_year))
    path = rules(
        tmp_path,
        """\
        calendars:
          company: {file: company.xml}
        schedules:
          office:
            calendar: company
            daily: "09:00-18:00"
          office2: {calendar: company, daily: "09:00-17:00"}
        rules: []
        """,
    )
    [warning] = load_rules(path, MOSCOW).warnings  # once per calendar
    assert warning.severity == "warning"
    assert warning.location.line == 5
    assert f"calendar 'company' ends on {this_year}-12-31, before {this_year + 1}" in warning.message


def test_the_built_in_calendar_needs_no_file(tmp_path: Path) -> None:
    path = rules(tmp_path, 'schedules:\n  office: {calendar: ru, mon-fri: "09:00-18:00"}\nrules: []\n')
    assert load_rules(path, MOSCOW).calendars == {"ru": date(2026, 12, 31)}


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        (
            'schedules:\n  office:\n    calendar: nope\n    mon: "09:00-18:00"\nrules: []\n',
            3,
            "no calendar named 'nope'",
        ),
        ("calendars:\n  c: {file: missing.xml}\nrules: []\n", 2, "calendar 'c': .*missing.xml: cannot read"),
        ("calendars:\n  c: {file: ''}\nrules: []\n", 2, "'file' must not be empty"),
        ("calendars:\n  c: {file: bad.xml}\nrules: []\n", 2, None),  # the line is in bad.xml
    ],
)
def test_calendar_errors_in_rule_files(tmp_path: Path, text: str, line: int, match: str | None) -> None:
    (tmp_path / "bad.xml").write_text("<calendar year='2027'>\n<days>\n<day d='02.30' t='1'/>\n</days></calendar>\n")
    path = rules(tmp_path, text)
    with pytest.raises(RulesError) as caught:
        load_rules(path, MOSCOW)
    [problem] = caught.value.problems
    if match is None:
        assert problem.location.file == tmp_path / "bad.xml"
        assert problem.location.line == 3
        assert "calendar 'c': d='02.30': expected a date of 2027 as MM.DD" in problem.message
    else:
        assert problem.location.file == path, problem
        assert problem.location.line == line, problem
        assert re.search(match, problem.message), problem.message


def test_an_inline_schedule_takes_no_calendar(tmp_path: Path) -> None:
    text = "rules:\n  - id: r\n    on: CallAccepted\n    if: {time: {calendar: ru, mon: 09:00-18:00}}\n    do: Hangup\n"
    with pytest.raises(RulesError) as caught:
        load_rules(rules(tmp_path, text), MOSCOW)
    [problem] = caught.value.problems
    assert problem.location.line == 4
    assert "only a named schedule (under schedules:) takes a calendar" in problem.message


def test_a_bad_calendar_leaves_no_half_applied_rule_set(tmp_path: Path) -> None:
    shutil.copy(SHIPPED / "2026.xml", tmp_path / "ok.xml")
    (tmp_path / "bad.xml").write_text("<calendar year='2027'><days><day d='01.01' t='x'/></days></calendar>")
    path = rules(
        tmp_path,
        """\
        calendars:
          good: {file: ok.xml}
          bad: {file: bad.xml}
        schedules:
          office: {calendar: good, mon-fri: "09:00-18:00"}
        rules:
          - {id: open, on: CallAccepted, if: {time: office}, do: Hangup}
        """,
    )
    with pytest.raises(RulesError, match="t='x'"):
        load_rules(path, MOSCOW)
