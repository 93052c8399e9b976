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
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ascrm.core.rules.excerpt import excerpt

__all__ = ["Day", "Schedule", "ScheduleError", "parse_schedule"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_RANGE_DAYS = 366
_INTERVAL = re.compile(r"\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ONE_DAY = timedelta(days=1)

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
    dates: Mapping[date, Day] = field(default_factory=dict, hash=False)  # except/include overrides
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


def parse_schedule(spec: Mapping[str, Any], default_timezone: str) -> Schedule:
    """The Schedule a spec describes; raises ScheduleError naming the first bad key."""
    if not isinstance(spec, Mapping):
        raise ScheduleError("schedule", f"must be a mapping of day keys to hours, got {excerpt(spec)}")
    timezone = spec.get("timezone", default_timezone)
    _zone(timezone)
    week: list[Day | None] = [None] * 7
    given_by: dict[int, str] = {}
    for key, value in spec.items():
        if key in ("timezone", "except", "include"):
            continue
        name = str(key)
        weekdays, day = _day_key(name), _hours(name, value)
        for weekday in weekdays:
            if weekday in given_by:
                raise ScheduleError(name, f"{DAY_NAMES[weekday]} is already given by {excerpt(given_by[weekday])}")
            given_by[weekday] = name
            week[weekday] = day
    weekly = tuple(day or CLOSED for day in week)
    dates: dict[date, Day] = {}
    include = spec.get("include", {})
    if isinstance(include, Mapping):
        entries = [(f"include[{k}]", k, _hours(f"include[{k}]", v)) for k, v in include.items()]
    elif isinstance(include, list | tuple):
        if include and weekly[0] == CLOSED:
            raise ScheduleError("include", "a list of dates takes Monday's hours, but Monday has none")
        entries = [(f"include[{i}]", item, weekly[0]) for i, item in enumerate(include)]
    else:
        raise ScheduleError("include", f"expected a mapping of dates to hours or a list, got {excerpt(include)}")
    for name, when, day in entries:
        for each in _dates(name, when):
            if each in dates:
                raise ScheduleError(name, f"{each} is already included")
            dates[each] = day
    closed = spec.get("except", [])
    if isinstance(closed, list | tuple):
        named = [(f"except[{i}]", when) for i, when in enumerate(closed)]
    else:
        named = [("except", closed)]
    for name, when in named:
        dates.update(dict.fromkeys(_dates(name, when), CLOSED))
    return Schedule(timezone, weekly, dates)


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
