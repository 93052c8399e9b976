"""`ascrm calendar import`: xmlcalendar files (or isdayoff-style JSON), local or fetched, merged into one file.

isdayoff-style JSON is an object of years to strings of one digit per day of that year, as isdayoff.ru's
``getdata?year=YYYY&pre=1`` gives for one year: ``0`` a working day, ``1`` a day off, ``2`` a shortened
working day, ``4`` a working day (in that service's special modes)::

    {"2027": "11111111000001100000..."}

A digit says what the day is; only the days that depart from the plain week (Saturday and Sunday off)
are kept. It names no holidays and no moved days: an xmlcalendar file tells more.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from xml.sax.saxutils import quoteattr

from ascrm.core.rules.calendar import (
    MAX_FILE_BYTES,
    YEARS,
    Calendar,
    CalendarDay,
    CalendarError,
    DayKind,
    merge,
    parse_calendar,
    read_file,
)

__all__ = ["FETCH_TIMEOUT", "import_calendars", "parse_source", "read_source", "render"]

FETCH_TIMEOUT = 20.0  # seconds, for the whole fetch of one URL
_DIGITS = {"0": None, "1": DayKind.OFF, "2": DayKind.SHORTENED, "4": None}


def import_calendars(sources: Iterable[str]) -> Calendar:
    """The calendar of every source (a path or an http(s) URL) merged; CalendarError names a bad one."""
    parts = []
    for source in sources:
        parts.append(parse_source(read_source(source), source))
    return merge("imported", parts)


def read_source(source: str) -> bytes:
    """A file's bytes, or a URL's body; at most MAX_FILE_BYTES, a fetch at most FETCH_TIMEOUT long."""
    if source.startswith(("http://", "https://")):
        return asyncio.run(_fetch(source))
    return read_file(Path(source))


async def _fetch(url: str) -> bytes:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                raise CalendarError(url, None, f"the server answered HTTP {response.status}")
            data = b""
            async for chunk in response.content.iter_chunked(65536):
                data += chunk
                if len(data) > MAX_FILE_BYTES:
                    raise CalendarError(url, None, f"the answer is larger than {MAX_FILE_BYTES} bytes")
            return data
    except TimeoutError:
        raise CalendarError(url, None, f"no whole answer within {FETCH_TIMEOUT:g}s") from None
    except aiohttp.ClientError as exc:
        raise CalendarError(url, None, f"cannot fetch: {exc}") from None


def parse_source(data: bytes, source: str) -> Calendar:
    """The calendar in an xmlcalendar document or an isdayoff-style JSON object."""
    head = data.lstrip()[:1]
    if head == b"<":
        return parse_calendar(data, source)
    if head == b"{":
        return _from_json(data, source)
    raise CalendarError(source, 1, 'neither an xmlcalendar XML file nor isdayoff-style JSON ({"YYYY": "0110…"})')


def _from_json(data: bytes, source: str) -> Calendar:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise CalendarError(source, line, f"not valid JSON: {getattr(exc, 'msg', exc)}") from None
    if not isinstance(document, dict) or not document:
        raise CalendarError(source, None, 'expected an object of years to day strings: {"2027": "1111…"}')
    days: dict[date, CalendarDay] = {}
    years = []
    for key, digits in document.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) in YEARS):
            raise CalendarError(source, None, f"{key!r}: expected a year {YEARS[0]}..{YEARS[-1]}")
        year = int(key)
        first, length = date(year, 1, 1), (date(year + 1, 1, 1) - date(year, 1, 1)).days
        if not isinstance(digits, str) or len(digits) != length or set(digits) - set(_DIGITS):
            raise CalendarError(source, None, f"{year}: expected a string of {length} digits 0, 1, 2 or 4")
        years.append(year)
        for offset, digit in enumerate(digits):
            when = first + timedelta(days=offset)
            kind = _DIGITS[digit]
            weekend = when.weekday() >= 5
            if kind == DayKind.SHORTENED or (kind == DayKind.OFF and not weekend):
                days[when] = CalendarDay(kind)
            elif kind is None and weekend:
                days[when] = CalendarDay(DayKind.WORKING)
    return Calendar(source, tuple(sorted(years)), days)


def render(calendar: Calendar) -> str:
    """The calendar as one xmlcalendar file of its years (``<calendars>`` around one ``<calendar>`` a year)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<calendars>"]
    for year in calendar.years:
        days = [(when, day) for when, day in calendar.days.items() if when.year == year]
        titles = list(dict.fromkeys(day.holiday for _, day in days if day.holiday))
        lines.append(f'  <calendar year="{year}">')
        lines.append("    <holidays>")
        lines += [f'      <holiday id="{n}" title={quoteattr(title)}/>' for n, title in enumerate(titles, 1)]
        lines += ["    </holidays>", "    <days>"]
        for when, day in sorted(days):
            extra = f' h="{titles.index(day.holiday) + 1}"' if day.holiday else ""
            if day.moved_from is not None:
                extra += f' f="{day.moved_from:%m.%d}"'
            lines.append(f'      <day d="{when:%m.%d}" t="{int(day.kind)}"{extra}/>')
        lines += ["    </days>", "  </calendar>"]
    lines.append("</calendars>")
    return "\n".join(lines) + "\n"
