"""Weekly schedules (a call centre's working hours): parsed once from a rule file, asked per call event.

A spec maps day keys to hours, plus the optional keys ``timezone``, ``except`` and ``include``::

    timezone: Europe/Moscow                  # IANA name; default: the caller's (the rule file's) zone
    mon-fri: "09:00-18:00"                   # mon..sun, ranges (fri-mon wraps), lists (mon-wed,fri), daily
    sat: ["10:00-13:00", "14:00-15:00"]      # one interval, a list of them, "closed" or []
    tue: "22:00-06:00"                       # end before start: until 06:00 on the next day
    except: [2027-01-01, "2027-05-01..2027-05-03"]      # dates closed
    include: {"2027-02-20": "10:00-14:00"}              # dates with their own hours (a list: Monday's)

An interval ``HH:MM-HH:MM`` (or ``H:MM``) is half-open: open at its start, closed at its end. Times are
local wall-clock times in the schedule's zone, so DST changes follow the local clock (a clock time the
transition skips is never open; one it repeats is open both times).

Every interval belongs to the local date it starts on: ``except`` closes the intervals that start on
that date (an interval from the day before still runs into it until its end), and ``include`` replaces
the hours that start on that date (spill into the next date included). ``except`` wins over
``include``; a date given twice in ``include`` is an error, while ``except`` entries may overlap.

With ``calendar: NAME`` (a production calendar, see calendar.py and workdays.py) the calendar's dates
come first: days off closed, working weekend days with the hours of ``working_weekend`` (default mon),
shortened days ``shortened`` (default 1h) shorter; ``include`` and ``except`` then apply on top. A year
the calendar does not cover follows the plain week.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ascrm.core.rules.calendar import BUILT_IN, Calendar
from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.workdays import calendar_dates, shorten

__all__ = ["Day", "Schedule", "ScheduleError", "parse_schedule"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_RANGE_DAYS = 366
_INTERVAL = re.compile(r"\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ONE_DAY = timedelta(days=1)
_DURATION = re.compile(r"\s*(?:([0-9]{1,2})\s*h)?\s*(?:([0-9]{1,3})\s*m(?:in)?)?\s*")
MAX_SHORTENED = 12 * 60  # minutes
_CALENDAR_KEYS = ("calendar", "shortened", "working_weekend")

Intervals = tuple[tuple[int, int], ...]


class ScheduleError(ValueError):
    """A schedule spec is wrong; the message names the bad key and value."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True, slots=True)
class Day:
    """The hours that start on one date, in minutes since local midnight: [start, end) pairs, merged."""

    own: Intervals = ()
    spill: Intervals = ()  # the parts of midnight-crossing intervals that fall on the next date


CLOSED = Day()


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly working hours in one time zone, with per-date exceptions; see the module's docstring."""

    timezone: str
    week: tuple[Day, ...] = (CLOSED,) * 7  # Monday first
    dates: Mapping[date, Day] = field(default_factory=dict, hash=False)  # calendar, except/include overrides
    notes: Mapping[date, str] = field(default_factory=dict, hash=False, compare=False)  # why a calendar date differs
    calendar: Calendar | None = field(default=None, compare=False)
    zone: ZoneInfo = field(init=False, repr=False, compare=False)
    spills: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", _zone(self.timezone))
        days = (*self.week, *self.dates.values())
        object.__setattr__(self, "spills", any(day.spill for day in days))

    def contains(self, moment: datetime) -> bool:
        """True when the schedule is open at the instant moment (a timezone-aware datetime)."""
        if moment.tzinfo is None:
            raise ValueError(f"Schedule.contains needs a timezone-aware datetime, got {moment!r}")
        local = moment.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        today = local.date()
        day = self.dates.get(today) or self.week[today.weekday()]  # a Day is always truthy
        for start, end in day.own:
            if minute < start:
                break
            if minute < end:
                return True
        if self.spills:
            yesterday = today - _ONE_DAY
            day = self.dates.get(yesterday) or self.week[yesterday.weekday()]
            for start, end in day.spill:
                if minute < start:
                    break
                if minute < end:
                    return True
        return False


def parse_schedule(
    spec: Mapping[str, Any], default_timezone: str, calendars: Mapping[str, Calendar] | None = None
) -> Schedule:
    """The Schedule a spec describes (calendars: those `calendar:` may name); ScheduleError names the first bad key."""
    if not isinstance(spec, Mapping):
        raise ScheduleError("schedule", f"must be a mapping of day keys to hours, got {excerpt(spec)}")
    timezone = spec.get("timezone", default_timezone)
    _zone(timezone)
    week: list[Day | None] = [None] * 7
    given_by: dict[int, str] = {}
    for key, value in spec.items():
        if key in ("timezone", "except", "include", *_CALENDAR_KEYS):
            continue
        name = str(key)
        weekdays, day = _day_key(name), _hours(name, value)
        for weekday in weekdays:
            if weekday in given_by:
                raise ScheduleError(name, f"{DAY_NAMES[weekday]} is already given by {excerpt(given_by[weekday])}")
            given_by[weekday] = name
            week[weekday] = day
    weekly = tuple(day or CLOSED for day in week)
    if calendars is None and "calendar" in spec:
        raise ScheduleError("calendar", "only a named schedule (under schedules:) takes a calendar")
    calendar, dates, notes = _calendar(spec, weekly, calendars or {})
    include = spec.get("include", {})
    if isinstance(include, Mapping):
        entries = [(f"include[{k}]", k, _hours(f"include[{k}]", v)) for k, v in include.items()]
    elif isinstance(include, list | tuple):
        if include and weekly[0] == CLOSED:
            raise ScheduleError("include", "a list of dates takes Monday's hours, but Monday has none")
        entries = [(f"include[{i}]", item, weekly[0]) for i, item in enumerate(include)]
    else:
        raise ScheduleError("include", f"expected a mapping of dates to hours or a list, got {excerpt(include)}")
    included: set[date] = set()
    for name, when, day in entries:
        for each in _dates(name, when):
            if each in included:
                raise ScheduleError(name, f"{each} is already included")
            included.add(each)
            dates[each] = day
            notes.pop(each, None)
    closed = spec.get("except", [])
    if isinstance(closed, list | tuple):
        named = [(f"except[{i}]", when) for i, when in enumerate(closed)]
    else:
        named = [("except", closed)]
    for name, when in named:
        for each in _dates(name, when):
            dates[each] = CLOSED
            notes.pop(each, None)
    return Schedule(timezone, weekly, dates, notes, calendar)


def _calendar(
    spec: Mapping[str, Any], weekly: tuple[Day, ...], calendars: Mapping[str, Calendar]
) -> tuple[Calendar | None, dict[date, Day], dict[date, str]]:
    """The calendar a spec names, with the hours and notes of the dates it changes."""
    if "calendar" not in spec:
        for key in _CALENDAR_KEYS[1:]:
            if key in spec:
                raise ScheduleError(key, "takes effect with a production calendar: add calendar: NAME")
        return None, {}, {}
    name = spec["calendar"]
    if not isinstance(name, str) or name not in calendars:
        known = ", ".join(sorted({*calendars, *BUILT_IN}))
        raise ScheduleError("calendar", f"no calendar named {excerpt(name)} (known: {known})")
    cut = _minutes("shortened", spec.get("shortened", "1h"))
    source = spec.get("working_weekend", "mon")
    if not isinstance(source, str) or source.strip().lower() not in DAY_NAMES:
        raise ScheduleError("working_weekend", f"expected a day mon..sun, got {excerpt(source)}")
    plan, notes = calendar_dates(calendars[name], cut, DAY_NAMES.index(source.strip().lower()))
    dates: dict[date, Day] = {}
    for when, (weekday, minutes) in plan.items():
        day = CLOSED if weekday < 0 else weekly[weekday]
        dates[when] = Day(*shorten(day.own, day.spill, minutes)) if minutes and day != CLOSED else day
    return calendars[name], dates, notes


def _minutes(key: str, value: object) -> int:
    """Minutes of a duration: '1h', '30m', '1h30m', or 0."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if value == 0 or (isinstance(value, str) and value.strip() == "0"):
        return 0
    if match is None or not any(match.groups()):
        raise ScheduleError(key, f"expected a duration such as 1h, 30m or 0, got {excerpt(value)}")
    minutes = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    if minutes > MAX_SHORTENED:
        raise ScheduleError(key, f"{excerpt(value)} is longer than {MAX_SHORTENED // 60}h")
    return minutes


def _zone(name: object) -> ZoneInfo:
    """The ZoneInfo for an IANA zone name, else ScheduleError(key="timezone")."""
    if not isinstance(name, str) or name == "localtime" or len(name) > 64:  # IANA names have at most 32
        raise ScheduleError("timezone", f"must be an IANA time zone name, got {excerpt(name)}")
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        raise ScheduleError("timezone", f"unknown time zone {excerpt(name)}") from None


def _day_key(key: str) -> list[int]:
    """The weekdays (0 = Monday) a day key names, in order; duplicates within the key are an error."""
    if key.strip().lower() == "daily":
        return list(range(7))
    days: list[int] = []
    for item in key.lower().split(","):
        first, sep, last = (part.strip() for part in item.partition("-"))
        if first not in DAY_NAMES or (sep and last not in DAY_NAMES):
            raise ScheduleError(key, "unknown key: expected mon..sun, a range like mon-fri, a list, or daily")
        start = DAY_NAMES.index(first)
        stop = DAY_NAMES.index(last) if sep else start
        if sep and stop == start:
            raise ScheduleError(key, f"the range {excerpt(item.strip())} starts and ends on the same day")
        for offset in range((stop - start) % 7 + 1):
            weekday = (start + offset) % 7
            if weekday in days:
                raise ScheduleError(key, f"{DAY_NAMES[weekday]} is given twice")
            days.append(weekday)
    return days


def _hours(key: str, value: object) -> Day:
    """The Day an interval string, a list of them, "closed" or [] describes."""
    if isinstance(value, str) and value.strip().lower() == "closed":
        return CLOSED
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ScheduleError(key, f"expected 'HH:MM-HH:MM', a list of them, or 'closed', got {excerpt(value)}")
    own: list[tuple[int, int]] = []
    spill: list[tuple[int, int]] = []
    for item in items:
        start, end = _interval(key, item)
        if end > start:
            own.append((start, end))
        else:  # crosses midnight
            own.append((start, 24 * 60))
            if end:
                spill.append((0, end))
    return Day(_merge(own), _merge(spill))


def _interval(key: str, text: str) -> tuple[int, int]:
    """(start, end) minutes since midnight of an 'HH:MM-HH:MM' string."""
    match = _INTERVAL.fullmatch(text)
    if match is None:
        raise ScheduleError(key, f"bad interval {excerpt(text)}: expected 'HH:MM-HH:MM'")
    sh, sm, eh, em = (int(group) for group in match.groups())
    if sh > 23 or sm > 59 or eh > 24 or em > 59 or (eh == 24 and em):
        raise ScheduleError(key, f"bad time in {excerpt(text)}: 00:00..23:59, or 24:00 as an end")
    start, end = sh * 60 + sm, eh * 60 + em
    if start == end:
        raise ScheduleError(key, f"empty interval {excerpt(text)}: start and end are the same")
    return start, end


def _merge(intervals: Iterable[tuple[int, int]]) -> Intervals:
    """The sorted union of half-open intervals, touching ones joined."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _dates(key: str, value: object) -> list[date]:
    """The dates a date, a 'YYYY-MM-DD' string or an inclusive 'YYYY-MM-DD..YYYY-MM-DD' range names."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return [value]
    if not isinstance(value, str):
        raise ScheduleError(key, f"expected 'YYYY-MM-DD' or 'YYYY-MM-DD..YYYY-MM-DD', got {excerpt(value)}")
    first, sep, last = (part.strip() for part in value.partition(".."))
    start, end = _date(key, value, first), _date(key, value, last if sep else first)
    days = (end - start).days + 1
    if not 1 <= days <= MAX_RANGE_DAYS:
        raise ScheduleError(key, f"bad range {excerpt(value)}: the start must not be after the end, at most a year")
    return [start + timedelta(days=n) for n in range(days)]


def _date(key: str, value: str, text: str) -> date:
    """The date of a strict 'YYYY-MM-DD' string (text, a part of value)."""
    try:
        if _DATE.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise ScheduleError(key, f"bad date {excerpt(value)}: expected 'YYYY-MM-DD' or 'YYYY-MM-DD..YYYY-MM-DD'")
