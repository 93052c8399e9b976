"""A production calendar applied to a weekly schedule: the per-date hours and why each date differs.

- a day off (t=1) is closed (an interval from the day before still runs into it until its end);
- a working Saturday or Sunday (t=3) has the hours of the ``working_weekend`` day (default Monday);
- a shortened day (t=2) has its hours (a weekend one: the ``working_weekend`` day's) less the last
  ``shortened`` minutes of them, taken from the end backwards: the last interval ends that much earlier
  (an interval shorter than the cut is dropped and the rest comes off the one before); an interval that
  crosses midnight loses the time from its end on the next morning first.
"""

from __future__ import annotations

from datetime import date

from ascrm.core.rules.calendar import Calendar, CalendarDay, DayKind

__all__ = ["calendar_dates", "shorten"]

_DAY = 24 * 60
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def calendar_dates(
    calendar: Calendar, cut: int, working_weekend: int
) -> tuple[dict[date, tuple[int, int]], dict[date, str]]:
    """Per date the calendar changes: (the weekday whose hours it has, -1 when closed; minutes to cut), and why."""
    plan: dict[date, tuple[int, int]] = {}
    notes: dict[date, str] = {}
    moved_to = {day.moved_from: when for when, day in calendar.days.items() if day.moved_from is not None}
    for when, day in calendar.days.items():
        weekend = when.weekday() >= 5
        source = working_weekend if weekend else when.weekday()
        if day.kind == DayKind.OFF:
            plan[when] = (-1, 0)
        elif day.kind == DayKind.SHORTENED:
            plan[when] = (source, cut)
        else:
            plan[when] = (source, 0)
        notes[when] = _note(calendar.name, when, day, moved_to.get(when), source if weekend else None)
    return plan, notes


def _note(name: str, when: date, day: CalendarDay, moved_to: date | None, hours_of: int | None) -> str:
    """Why the calendar changes when, in words."""
    weekday = _WEEKDAYS[when.weekday()]
    working = f"working {weekday}" + ("" if hours_of is None else f" with {_WEEKDAYS[hours_of]}'s hours")
    if day.kind == DayKind.OFF:
        text = f"holiday: {day.holiday}" if day.holiday else "day off"
        if day.moved_from is not None:
            text += f" moved from {day.moved_from}"
    elif day.kind == DayKind.SHORTENED:
        text = "shortened day before a holiday"
        if hours_of is not None:
            text += f", a {working}"
    else:
        text = working
        if moved_to is not None:
            text += f", its day off moved to {moved_to}"
    return f"calendar {name}: {text}"


def shorten(
    own: tuple[tuple[int, int], ...], spill: tuple[tuple[int, int], ...], cut: int
) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """A day's (own, spill) hours less their last cut minutes (spill: the next morning's, after own)."""
    line = [*own, *((start + _DAY, end + _DAY) for start, end in spill)]
    left = cut
    while line and left > 0:
        start, end = line[-1]
        if end - start > left:
            line[-1] = (start, end - left)
            break
        left -= end - start
        line.pop()
    kept_own = tuple((start, min(end, _DAY)) for start, end in line if start < _DAY)
    kept_spill = tuple((max(start, _DAY) - _DAY, end - _DAY) for start, end in line if end > _DAY)
    return kept_own, kept_spill
