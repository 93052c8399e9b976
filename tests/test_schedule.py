"""Weekly schedules: parsing specs, and which instants they contain."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import pytest
import yaml

from ascrm.core.rules.schedule import Day, Schedule, ScheduleError, parse_schedule

EXAMPLE = """
schedules:
  office:
    timezone: Europe/Moscow
    mon-fri: "09:00-18:00"
    sat: "10:00-15:00"
    except: [2027-01-01, 2027-01-07, "2027-05-01..2027-05-03"]
    include: {"2027-02-20": "10:00-14:00"}
  night:
    daily: ["00:00-08:00", "20:00-24:00"]
  support:
    mon,wed,fri: ["09:00-13:00", "14:00-18:00"]
    tue: "22:00-06:00"
    sun: closed
"""
SCHEDULES: dict[str, Any] = yaml.safe_load(EXAMPLE)["schedules"]


def at(text: str) -> datetime:
    """An aware datetime from an ISO string with an offset (2027-01-11 is a Monday)."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return moment


def check(spec: dict[str, Any], moment: str, expected: bool, default_timezone: str = "UTC") -> None:
    """Parse spec and assert whether it contains moment."""
    assert parse_schedule(spec, default_timezone).contains(at(moment)) is expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2027-01-11T09:00:00+03:00", True),  # Monday opens
        ("2027-01-11T08:59:59.999999+03:00", False),
        ("2027-01-15T17:59:00+03:00", True),  # Friday
        ("2027-01-15T17:59:59.999+03:00", True),
        ("2027-01-15T18:00:00+03:00", False),
        ("2027-01-16T09:59:00+03:00", False),  # Saturday hours
        ("2027-01-16T10:00:00+03:00", True),
        ("2027-01-16T14:59:00+03:00", True),
        ("2027-01-16T15:00:00+03:00", False),
        ("2027-01-17T12:00:00+03:00", False),  # Sunday: no key, closed
        ("2027-01-01T12:00:00+03:00", False),  # holidays (date objects from YAML)
        ("2027-01-07T12:00:00+03:00", False),
        ("2026-12-31T12:00:00+03:00", True),
        ("2027-01-08T12:00:00+03:00", True),
        ("2027-05-01T12:00:00+03:00", False),  # a range, inclusive at both ends
        ("2027-05-02T12:00:00+03:00", False),
        ("2027-05-03T12:00:00+03:00", False),  # a Monday
        ("2027-05-04T12:00:00+03:00", True),
        ("2027-02-20T09:59:00+03:00", False),  # the working Saturday has its own hours
        ("2027-02-20T10:00:00+03:00", True),
        ("2027-02-20T13:59:00+03:00", True),
        ("2027-02-20T14:30:00+03:00", False),  # weekly Saturday hours replaced
        ("2027-02-13T14:30:00+03:00", True),  # an ordinary Saturday
        ("2027-01-11T06:30:00Z", True),  # 09:30 in Moscow
        ("2027-01-11T09:30:00+00:00", True),  # 12:30 in Moscow
        ("2027-01-11T05:59:00+00:00", False),  # 08:59 in Moscow
        ("2027-01-11T15:00:00+00:00", False),  # 18:00 in Moscow
        ("2027-01-11T01:30:00-05:00", True),  # New York's 01:30 is Moscow's 09:30
        ("2027-01-17T01:00:00+14:00", True),  # Sunday in Kiritimati, Saturday 14:00 in Moscow
        ("2027-01-16T07:30:00+09:00", False),  # Saturday in Tokyo, Saturday 01:30 in Moscow
        ("2027-07-05T06:00:00Z", True),  # Moscow has no DST: 09:00 in summer too
        ("2027-07-05T05:59:00Z", False),
    ],
)
def test_office(moment: str, expected: bool) -> None:
    check(SCHEDULES["office"], moment, expected)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2027-01-11T12:59:00Z", True),  # two intervals on Monday
        ("2027-01-11T13:00:00Z", False),
        ("2027-01-11T13:59:59Z", False),
        ("2027-01-11T14:00:00Z", True),
        ("2027-01-15T17:59:59.999Z", True),
        ("2027-01-15T18:00:00Z", False),
        ("2027-01-12T12:00:00Z", False),  # Tuesday: only the night
        ("2027-01-12T21:59:00Z", False),
        ("2027-01-12T22:00:00Z", True),
        ("2027-01-12T23:00:00Z", True),
        ("2027-01-13T00:00:00Z", True),  # into Wednesday
        ("2027-01-13T05:59:00Z", True),
        ("2027-01-13T06:00:00Z", False),
        ("2027-01-11T23:00:00Z", False),  # Monday night
        ("2027-01-11T05:00:00Z", False),  # Monday morning: Sunday has no night
        ("2027-01-14T05:00:00Z", False),  # Thursday morning: Wednesday has no night
        ("2027-01-17T12:00:00Z", False),  # Sunday: closed
    ],
)
def test_support(moment: str, expected: bool) -> None:
    check(SCHEDULES["support"], moment, expected)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2027-01-11T00:00:00Z", True),
        ("2027-01-11T07:59:00Z", True),
        ("2027-01-11T08:00:00Z", False),
        ("2027-01-13T19:59:00Z", False),
        ("2027-01-13T20:00:00Z", True),
        ("2027-01-16T23:59:59.999999Z", True),
        ("2027-01-17T03:00:00Z", True),
        ("2027-01-17T12:00:00Z", False),
    ],
)
def test_daily(moment: str, expected: bool) -> None:
    check(SCHEDULES["night"], moment, expected)


@pytest.mark.parametrize(
    ("key", "moment", "expected"),
    [
        ("fri-mon", "2027-01-15T10:30:00Z", True),
        ("fri-mon", "2027-01-16T10:30:00Z", True),
        ("fri-mon", "2027-01-17T10:30:00Z", True),
        ("fri-mon", "2027-01-18T10:30:00Z", True),
        ("fri-mon", "2027-01-12T10:30:00Z", False),
        ("fri-mon", "2027-01-14T10:30:00Z", False),
        ("sun-mon", "2027-01-17T10:30:00Z", True),
        ("sun-mon", "2027-01-16T10:30:00Z", False),
        ("mon-wed,fri", "2027-01-13T10:30:00Z", True),
        ("mon-wed,fri", "2027-01-14T10:30:00Z", False),
        ("mon-wed,fri", "2027-01-15T10:30:00Z", True),
        ("MON, Wed , fri", "2027-01-13T10:30:00Z", True),
        ("MON, Wed , fri", "2027-01-12T10:30:00Z", False),
        ("Daily", "2027-01-14T10:30:00Z", True),
        ("Daily", "2027-01-14T11:00:00Z", False),
    ],
)
def test_day_keys(key: str, moment: str, expected: bool) -> None:
    check({key: "10:00-11:00"}, moment, expected)


@pytest.mark.parametrize(
    ("spec", "moment", "expected"),
    [
        ({"mon": ["09:00-12:00", "11:00-14:00", "14:00-15:00"]}, "2027-01-11T14:30:00Z", True),
        ({"mon": ["09:00-12:00", "11:00-14:00", "14:00-15:00"]}, "2027-01-11T15:00:00Z", False),
        ({"mon": "9:00-18:00"}, "2027-01-11T09:00:00Z", True),
        ({"mon": " 9:00 - 18:00 "}, "2027-01-11T08:59:00Z", False),
        ({"mon": "00:00-24:00"}, "2027-01-11T23:59:59Z", True),
        ({"mon": "00:00-24:00"}, "2027-01-12T00:00:00Z", False),
        ({"mon": "18:00-00:00"}, "2027-01-11T23:59:00Z", True),
        ({"mon": "18:00-00:00"}, "2027-01-12T00:00:00Z", False),
        ({"sun": "22:00-02:00"}, "2027-01-18T01:59:00Z", True),  # Sunday night wraps into Monday
        ({"sun": "22:00-02:00"}, "2027-01-18T02:00:00Z", False),
        ({"mon": "closed", "tue": []}, "2027-01-11T12:00:00Z", False),
        ({"mon": "CLOSED", "tue": []}, "2027-01-12T12:00:00Z", False),
        ({"tue": "22:00-06:00", "except": ["2027-01-13"]}, "2027-01-13T05:00:00Z", True),
        ({"tue": "22:00-06:00", "except": ["2027-01-12"]}, "2027-01-12T23:00:00Z", False),
        ({"tue": "22:00-06:00", "except": ["2027-01-12"]}, "2027-01-13T05:00:00Z", False),
        ({"tue": "22:00-06:00", "except": "2027-01-12"}, "2027-01-19T23:00:00Z", True),
        ({"mon": "09:00-18:00", "include": ["2027-01-16"]}, "2027-01-16T09:30:00Z", True),
        ({"mon": "09:00-18:00", "include": ["2027-01-16"]}, "2027-01-16T18:00:00Z", False),
        ({"mon": "09:00-18:00", "include": ["2027-01-16"]}, "2027-01-23T09:30:00Z", False),
        ({"mon": "20:00-02:00", "include": [date(2027, 1, 16)]}, "2027-01-17T01:00:00Z", True),
        ({"sat": "10:00-15:00", "include": {"2027-01-16": "20:00-02:00"}}, "2027-01-16T12:00:00Z", False),
        ({"sat": "10:00-15:00", "include": {"2027-01-16": "20:00-02:00"}}, "2027-01-17T01:00:00Z", True),
        ({"sat": "20:00-02:00", "include": {"2027-01-16": "10:00-15:00"}}, "2027-01-17T01:00:00Z", False),
        ({"include": {"2027-01-16..2027-01-17": ["10:00-11:00", "12:00-13:00"]}}, "2027-01-17T12:30Z", True),
        ({"include": {"2027-01-16..2027-01-17": ["10:00-11:00", "12:00-13:00"]}}, "2027-01-18T12:30Z", False),
        ({"mon-fri": "09:00-18:00", "include": {"2027-01-13": "closed"}}, "2027-01-13T12:00:00Z", False),
        (
            {"sat": "10:00-15:00", "include": {"2027-01-16": "10:00-14:00"}, "except": ["2027-01-16"]},
            "2027-01-16T11:00:00Z",
            False,
        ),
        (
            {"mon": "09:00-18:00", "include": ["2027-01-16"], "except": ["2027-01-15..2027-01-17"]},
            "2027-01-16T11:00:00Z",
            False,
        ),
    ],
)
def test_specs(spec: dict[str, Any], moment: str, expected: bool) -> None:
    check(spec, moment, expected)


BERLIN_OFFICE = {"timezone": "Europe/Berlin", "mon-fri": "09:00-18:00"}


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2027-03-26T07:59:00Z", False),  # Friday before spring forward: CET, UTC+1
        ("2027-03-26T08:00:00Z", True),
        ("2027-03-26T16:59:00Z", True),
        ("2027-03-26T17:00:00Z", False),
        ("2027-03-29T06:59:00Z", False),  # Monday after: CEST, UTC+2
        ("2027-03-29T07:00:00Z", True),
        ("2027-03-29T15:59:00Z", True),
        ("2027-03-29T16:00:00Z", False),
        ("2027-10-29T06:59:00Z", False),  # Friday before fall back: CEST
        ("2027-10-29T07:00:00Z", True),
        ("2027-10-29T16:00:00Z", False),
        ("2027-11-01T07:00:00Z", False),  # Monday after: CET
        ("2027-11-01T08:00:00Z", True),
        ("2027-11-01T16:59:00Z", True),
        ("2027-11-01T17:00:00Z", False),
        ("2027-11-01T09:00:00+01:00", True),  # the same instant written in local time
    ],
)
def test_dst_follows_local_time(moment: str, expected: bool) -> None:
    check(BERLIN_OFFICE, moment, expected)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2027-03-28T00:59:59Z", False),  # 01:59:59 CET
        ("2027-03-28T01:00:00Z", False),  # 03:00 CEST: 02:00-03:00 never happens that day
        ("2027-03-29T00:30:00Z", True),  # 02:30 CEST the next day
        ("2027-10-30T23:59:00Z", False),  # 01:59 CEST
        ("2027-10-31T00:00:00Z", True),  # 02:00 CEST
        ("2027-10-31T00:59:00Z", True),
        ("2027-10-31T01:00:00Z", True),  # 02:00 CET: the repeated hour is open again
        ("2027-10-31T01:59:00Z", True),
        ("2027-10-31T02:00:00Z", False),  # 03:00 CET
    ],
)
def test_dst_transition_hours(moment: str, expected: bool) -> None:
    check({"timezone": "Europe/Berlin", "daily": "02:00-03:00"}, moment, expected)


def test_default_timezone() -> None:
    schedule = parse_schedule({"daily": "09:00-10:00"}, "America/New_York")
    assert schedule.timezone == "America/New_York"
    assert schedule.contains(at("2027-01-11T14:30:00Z"))  # 09:30 EST
    assert not schedule.contains(at("2027-07-12T14:30:00Z"))  # 10:30 EDT
    assert parse_schedule({"timezone": "Asia/Tokyo"}, "America/New_York").timezone == "Asia/Tokyo"


@pytest.mark.parametrize(
    ("objects", "strings"),
    [
        ({"except": [date(2027, 1, 1)]}, {"except": ["2027-01-01"]}),
        ({"except": date(2027, 1, 1)}, {"except": " 2027-01-01 "}),
        ({"except": [date(2027, 1, 1), date(2027, 1, 2)]}, {"except": ["2027-01-01 .. 2027-01-02"]}),
        ({"include": {date(2027, 1, 2): "10:00-11:00"}}, {"include": {"2027-01-02": "10:00-11:00"}}),
        ({"include": [date(2027, 1, 2)]}, {"include": ["2027-01-02..2027-01-02"]}),
    ],
)
def test_dates_as_objects_or_strings(objects: dict[str, Any], strings: dict[str, Any]) -> None:
    week = {"mon-fri": "09:00-18:00"}
    assert parse_schedule(week | objects, "UTC") == parse_schedule(week | strings, "UTC")


def test_precomputed_value() -> None:
    schedule = parse_schedule(SCHEDULES["support"], "UTC")
    assert schedule.week[0] == Day(own=((540, 780), (840, 1080)))
    assert schedule.week[1] == Day(own=((1320, 1440),), spill=((0, 360),))
    assert schedule.week[6] == Day()
    assert schedule == parse_schedule(dict(reversed(SCHEDULES["support"].items())), "UTC")
    assert hash(schedule) == hash(parse_schedule(SCHEDULES["support"], "UTC"))
    with pytest.raises(AttributeError):
        schedule.timezone = "UTC"  # type: ignore[misc]


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware") as excinfo:
        Schedule("UTC").contains(datetime(2027, 1, 11, 12, 0))
    assert not isinstance(excinfo.value, ScheduleError)


@pytest.mark.parametrize(
    ("spec", "key", "match"),
    [
        ({"mon-fri": "25:00-18:00"}, "mon-fri", "'25:00-18:00'"),
        ({"mon": "09:60-18:00"}, "mon", "'09:60-18:00'"),
        ({"mon": "09:00-24:30"}, "mon", "'09:00-24:30'"),
        ({"mon": "24:00-06:00"}, "mon", "'24:00-06:00'"),
        ({"mon": "nine"}, "mon", "bad interval 'nine'"),
        ({"mon": "09:00"}, "mon", "bad interval '09:00'"),
        ({"mon": "009:00-18:00"}, "mon", "bad interval '009:00-18:00'"),
        ({"mon": "09:00-09:00"}, "mon", "empty interval '09:00-09:00'"),
        ({"mon": ["09:00-13:00", 14]}, "mon", "got ['09:00-13:00', 14]"),
        ({"mon": None}, "mon", "got None"),
        ({"mon": ""}, "mon", "bad interval ''"),
        ({"mon-fri": "09:00-18:00", "fri": "10:00-11:00"}, "fri", "fri is already given by 'mon-fri'"),
        ({"daily": "09:00-18:00", "Sun": "10:00-11:00"}, "Sun", "sun is already given by 'daily'"),
        ({"mon-wed,tue": "09:00-18:00"}, "mon-wed,tue", "tue is given twice"),
        ({"mon-mon": "09:00-18:00"}, "mon-mon", "'mon-mon' starts and ends on the same day"),
        ({"monday": "09:00-18:00"}, "monday", "unknown key"),
        ({"mon,": "09:00-18:00"}, "mon,", "unknown key"),
        ({"holidays": ["2027-01-01"]}, "holidays", "unknown key"),
        ({1: "09:00-18:00"}, "1", "unknown key"),
        ({"timezone": "Mars/Base"}, "timezone", "'Mars/Base'"),
        ({"timezone": "Europe"}, "timezone", "'Europe'"),
        ({"timezone": "../etc/passwd"}, "timezone", "'../etc/passwd'"),
        ({"timezone": "localtime"}, "timezone", "'localtime'"),
        ({"timezone": 3}, "timezone", "got 3"),
        ({"except": ["2027-01-01", "2027-01-05", "2027-02-30"]}, "except[2]", "bad date '2027-02-30'"),
        ({"except": ["2027/05/01"]}, "except[0]", "bad date '2027/05/01'"),
        ({"except": ["20270501"]}, "except[0]", "bad date '20270501'"),
        ({"except": ["2027-05-01.."]}, "except[0]", "bad date '2027-05-01..'"),
        ({"except": ["2027-05-03..2027-05-01"]}, "except[0]", "'2027-05-03..2027-05-01'"),
        ({"except": "2027-01-01..2030-01-01"}, "except", "at most a year"),
        ({"except": [datetime(2027, 1, 1, 9, 0)]}, "except[0]", "datetime"),
        ({"except": None}, "except", "got None"),
        ({"include": {"2027-02-20": "10:00"}}, "include[2027-02-20]", "bad interval '10:00'"),
        ({"include": {"2027-02-20": None}}, "include[2027-02-20]", "got None"),
        ({"include": {"20.02.2027": "10:00-14:00"}}, "include[20.02.2027]", "bad date '20.02.2027'"),
        ({"sat": "10:00-15:00", "include": ["2027-02-20"]}, "include", "Monday has none"),
        (
            {"include": {"2027-02-20..2027-02-21": "10:00-14:00", date(2027, 2, 21): "10:00-11:00"}},
            "include[2027-02-21]",
            "2027-02-21 is already included",
        ),
        ({"mon": "09:00-18:00", "include": ["2027-02-20", "2027-02-20"]}, "include[1]", "already included"),
        ({"include": "2027-02-20"}, "include", "got '2027-02-20'"),
    ],
)
def test_bad_specs(spec: dict[Any, Any], key: str, match: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(match)) as excinfo:
        parse_schedule(spec, "Europe/Moscow")
    assert excinfo.value.key == key
    assert str(excinfo.value) == f"{key}: {excinfo.value.message}"
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize(
    ("spec", "default_timezone", "key"),
    [
        ({}, "Nowhere/City", "timezone"),
        (["mon", "09:00-18:00"], "UTC", "schedule"),
    ],
)
def test_bad_arguments(spec: Any, default_timezone: str, key: str) -> None:
    with pytest.raises(ScheduleError) as excinfo:
        parse_schedule(spec, default_timezone)
    assert excinfo.value.key == key


def test_never_open_without_hours() -> None:
    schedule = parse_schedule({}, "UTC")
    assert not any(schedule.contains(at(f"2027-01-{day:02d}T12:00:00Z")) for day in range(11, 18))


@pytest.mark.parametrize(
    ("hours", "moment", "expected"),
    [
        # the minutes of a start count (09:30 is 570 minutes past midnight, not 510)
        ("09:30-10:15", "2027-01-11T09:29:59+00:00", False),
        ("09:30-10:15", "2027-01-11T09:30:00+00:00", True),
        ("09:30-10:15", "2027-01-11T10:14:59+00:00", True),
        ("09:30-10:15", "2027-01-11T10:15:00+00:00", False),
        # the edges a clock can show
        ("23:00-23:59", "2027-01-11T23:58:00+00:00", True),
        ("23:59-24:00", "2027-01-11T23:59:30+00:00", True),
        ("00:00-00:59", "2027-01-11T00:58:00+00:00", True),
        ("00:00-00:59", "2027-01-11T00:59:00+00:00", False),
    ],
)
def test_interval_edges(hours: str, moment: str, expected: bool) -> None:
    check({"mon": hours}, moment, expected)


@pytest.mark.parametrize("hours", ["24:00-01:00", "10:60-11:00", "10:00-25:00", "10:00-11:60", "10:00-24:01"])
def test_times_past_the_clock_are_refused(hours: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule({"mon": hours}, "UTC")
    assert str(raised.value) == f"mon: bad time in {hours!r}: 00:00..23:59, or 24:00 as an end"


def test_touching_intervals_merge_into_one() -> None:
    schedule = parse_schedule({"mon": ["12:00-13:00", "09:00-12:00", "10:00-11:00"]}, "UTC")
    assert schedule.week[0] == Day(own=((540, 780),))


def test_a_date_range_of_a_year_at_most() -> None:
    assert parse_schedule({"except": "2027-01-01..2028-01-01"}, "UTC").dates  # 366 days
    with pytest.raises(ScheduleError, match="at most a year"):
        parse_schedule({"except": "2027-01-01..2028-01-02"}, "UTC")  # 367


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (["mon"], "schedule: must be a mapping of day keys to hours, got ['mon']"),
        ({"mo": "09:00-18:00"}, "mo: unknown key: expected mon..sun, a range like mon-fri, a list, or daily"),
        (
            {"sat": "10:00-15:00", "include": ["2027-02-20"]},
            "include: a list of dates takes Monday's hours, but Monday has none",
        ),
        (
            {"calendar": "ru", "mon": "09:00-18:00"},
            "calendar: only a named schedule (under schedules:) takes a calendar",
        ),
    ],
)
def test_schedule_errors_in_full(spec: Any, message: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule(spec, "UTC")
    assert str(raised.value) == message


def test_the_night_before_still_counts_on_a_day_with_hours_of_its_own() -> None:
    spec = {"tue": "22:00-06:00", "wed": "09:00-18:00"}  # 2027-01-13 is a Wednesday
    check(spec, "2027-01-13T05:00:00+00:00", True)  # before Wednesday's own hours: Tuesday's night
    check(spec, "2027-01-13T07:00:00+00:00", False)
    check(spec, "2027-01-13T09:00:00+00:00", True)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Europe/" + "x" * 57, "unknown time zone"),  # 64 characters: looked up (and not found)
        ("Europe/" + "x" * 58, "must be an IANA time zone name"),  # 65: refused unread
    ],
)
def test_a_long_zone_name_is_refused_before_it_is_looked_up(name: str, message: str) -> None:
    assert len(name) in (64, 65)
    with pytest.raises(ScheduleError, match=message):
        parse_schedule({"timezone": name}, "UTC")
