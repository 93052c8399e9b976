"""Production calendars: the days a country's working week departs from Monday-Friday, read from xmlcalendar files.

A file is one year (the public xmlcalendar format) or several (``<calendars>`` around such years, as
``ascrm calendar import`` writes)::

    <calendar year="2026">
      <holidays><holiday id="1" title="Новогодние каникулы"/></holidays>
      <days>
        <day d="01.01" t="1" h="1"/>      <!-- t=1: a day off; h: the holiday; f: the date it moved from -->
        <day d="04.30" t="2"/>            <!-- t=2: a shortened working day (the day before a holiday) -->
        <day d="12.28" t="3"/>            <!-- t=3: a working Saturday or Sunday -->
      </days>
    </calendar>

Files are parsed with expat, refusing a DOCTYPE (so no entity of any kind), bounded in size, years and days.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import IntEnum
from importlib.resources import files
from pathlib import Path

from ascrm.core.rules.excerpt import excerpt

__all__ = [
    "BUILT_IN",
    "Calendar",
    "CalendarDay",
    "CalendarError",
    "DayKind",
    "built_in",
    "load_calendar",
    "parse_calendar",
    "read_file",
]

MAX_FILE_BYTES = 1 << 20  # one year is about 2 KB
MAX_FILES = 200  # in a calendar folder
MAX_YEARS = 200  # in one calendar
MAX_DAYS_PER_YEAR = 366
MAX_HOLIDAYS_PER_YEAR = 100
MAX_TITLE = 200  # characters
YEARS = range(1900, 2201)
BUILT_IN = ("ru",)  # calendars shipped in the package: core/rules/calendars/NAME/*.xml
_MONTH_DAY = re.compile(r"([0-9]{2})\.([0-9]{2})")
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class CalendarError(ValueError):
    """A calendar file is wrong: the file, the line (when known) and what is wrong."""

    def __init__(self, path: Path | str | None, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        where = "" if path is None else f"{path}:{line}: " if line else f"{path}: "
        super().__init__(f"{where}{message}")


class DayKind(IntEnum):
    """A calendar day's ``t``: how it departs from the plain week."""

    OFF = 1  # a day off (a holiday, or a weekend day moved here)
    SHORTENED = 2  # a working day one hour (`shortened:`) shorter, the day before a holiday
    WORKING = 3  # a Saturday or Sunday made a working day


@dataclass(frozen=True, slots=True)
class CalendarDay:
    """One date the calendar changes, with its holiday's title and the date a moved day came from."""

    kind: DayKind
    holiday: str = ""
    moved_from: date | None = None


@dataclass(frozen=True, slots=True)
class Calendar:
    """The changed days of whole years; a year it lacks follows the plain week."""

    name: str
    years: tuple[int, ...]  # covered, ascending
    days: Mapping[date, CalendarDay] = field(default_factory=dict, hash=False)

    @property
    def last_day(self) -> date | None:
        """The last date the calendar covers (31 December of its last year), None when empty."""
        return date(self.years[-1], 12, 31) if self.years else None


def built_in(name: str) -> Calendar:
    """The calendar shipped in the package under name (one of BUILT_IN)."""
    folder = files("ascrm.core.rules").joinpath("calendars", name)
    texts = sorted((entry.name, entry.read_bytes()) for entry in folder.iterdir() if entry.name.endswith(".xml"))
    return merge(name, (parse_calendar(data, f"<built-in {name}>/{file}") for file, data in texts))


def load_calendar(name: str, path: Path) -> tuple[Calendar, list[Path]]:
    """The calendar in a file, or in a folder's *.xml files; and the files read."""
    if path.is_dir():
        found = sorted(path.glob("*.xml"))
        if not found:
            raise CalendarError(path, None, "no calendar files (*.xml) in this folder")
        if len(found) > MAX_FILES:
            raise CalendarError(path, None, f"{len(found)} calendar files: at most {MAX_FILES}")
    else:
        found = [path]
    return merge(name, (parse_calendar(read_file(each), each) for each in found)), found


def merge(name: str, parts: Iterable[Calendar]) -> Calendar:
    """One calendar of several (each named by its source); a year given twice is an error naming both."""
    days: dict[date, CalendarDay] = {}
    given: dict[int, str] = {}
    for part in parts:
        for year in part.years:
            if year in given:
                raise CalendarError(part.name, None, f"the year {year} is given twice (also in {given[year]})")
            given[year] = part.name
        days.update(part.days)
    years = list(given)
    if len(years) > MAX_YEARS:
        raise CalendarError(name, None, f"{len(years)} years: at most {MAX_YEARS}")
    return Calendar(name, tuple(sorted(years)), dict(sorted(days.items())))


def read_file(path: Path) -> bytes:
    """A calendar file's bytes, at most MAX_FILE_BYTES (CalendarError beyond, or when it cannot be read)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CalendarError(path, None, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise CalendarError(path, None, f"larger than {MAX_FILE_BYTES} bytes")
    return data


def parse_calendar(data: bytes, source: Path | str) -> Calendar:
    """The calendar an xmlcalendar document holds; CalendarError with source and line when it is wrong."""
    if len(data) > MAX_FILE_BYTES:
        raise CalendarError(source, None, f"larger than {MAX_FILE_BYTES} bytes")
    doctype = _DOCTYPE.search(data)
    if doctype is not None:
        line = data.count(b"\n", 0, doctype.start()) + 1
        raise CalendarError(source, line, "a DOCTYPE or ENTITY declaration is not allowed in a calendar")
    reader = _Reader(source)
    parser = xml.parsers.expat.ParserCreate()
    reader.parser = parser
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.StartDoctypeDeclHandler = reader.refuse
    parser.EntityDeclHandler = reader.refuse
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        message = xml.parsers.expat.errors.messages[exc.code]
        raise CalendarError(source, exc.lineno, f"not well-formed XML: {message}") from None
    return reader.result()


class _Reader:
    """Collects one document's years and days as expat reads it."""

    def __init__(self, source: Path | str) -> None:
        self.source = source
        self.parser: xml.parsers.expat.XMLParserType | None = None
        self.stack: list[str] = []
        self.year: int | None = None
        self.years: list[int] = []
        self.titles: dict[str, str] = {}
        self.pending: list[tuple[int, date, DayKind, str, date | None]] = []  # line, day, kind, h, f
        self.days: dict[date, CalendarDay] = {}

    def fail(self, message: str) -> CalendarError:
        line = self.parser.CurrentLineNumber if self.parser is not None else None
        return CalendarError(self.source, line, message)

    def refuse(self, *_: object) -> None:
        raise self.fail("a DOCTYPE or ENTITY declaration is not allowed in a calendar")

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        parent = self.stack[-1] if self.stack else None
        self.stack.append(tag)
        if tag == "calendar" and parent in (None, "calendars"):
            self.open_year(attrs)
        elif tag == "calendars" and parent is None:
            pass
        elif tag == "holiday" and parent == "holidays" and self.year is not None:
            self.holiday(attrs)
        elif tag == "day" and parent == "days" and self.year is not None:
            self.day(attrs)
        elif parent is None:
            raise self.fail(f'the root element is <{excerpt(tag)}>: expected <calendar year="YYYY"> or <calendars>')

    def end(self, tag: str) -> None:
        self.stack.pop()
        if tag == "calendar":
            self.close_year()

    def open_year(self, attrs: dict[str, str]) -> None:
        text = attrs.get("year", "")
        if not text.isdigit() or int(text) not in YEARS:
            raise self.fail(f"<calendar year={excerpt(text)}>: expected a year {YEARS[0]}..{YEARS[-1]}")
        year = int(text)
        if year in self.years:
            raise self.fail(f"the year {year} is given twice")
        if len(self.years) >= MAX_YEARS:
            raise self.fail(f"more than {MAX_YEARS} years")
        self.year, self.titles, self.pending = year, {}, []
        self.years.append(year)

    def holiday(self, attrs: dict[str, str]) -> None:
        ident, title = attrs.get("id", ""), attrs.get("title", "")
        if not ident or len(title) > MAX_TITLE:
            raise self.fail(f'<holiday>: expected id="…" and a title of at most {MAX_TITLE} characters')
        if len(self.titles) >= MAX_HOLIDAYS_PER_YEAR:
            raise self.fail(f"more than {MAX_HOLIDAYS_PER_YEAR} holidays in {self.year}")
        self.titles[ident] = title

    def day(self, attrs: dict[str, str]) -> None:
        assert self.year is not None
        when = self.month_day("d", attrs.get("d", ""))
        kind_text = attrs.get("t", "")
        if kind_text not in ("1", "2", "3"):
            raise self.fail(f"<day d={excerpt(attrs.get('d', ''))}> t={excerpt(kind_text)}: expected 1, 2 or 3")
        moved = self.month_day("f", attrs["f"]) if "f" in attrs else None
        if when in self.days or any(when == item[1] for item in self.pending):
            raise self.fail(f"<day d={excerpt(attrs['d'])}> is given twice")
        if len(self.pending) >= MAX_DAYS_PER_YEAR:
            raise self.fail(f"more than {MAX_DAYS_PER_YEAR} days in {self.year}")
        line = self.parser.CurrentLineNumber if self.parser is not None else 0
        self.pending.append((line, when, DayKind(int(kind_text)), attrs.get("h", ""), moved))

    def month_day(self, key: str, text: str) -> date:
        assert self.year is not None
        match = _MONTH_DAY.fullmatch(text)
        try:
            if match is not None:
                return date(self.year, int(match.group(1)), int(match.group(2)))
        except ValueError:
            pass
        raise self.fail(f"{key}={excerpt(text)}: expected a date of {self.year} as MM.DD")

    def close_year(self) -> None:
        for line, when, kind, ident, moved in self.pending:
            if ident and ident not in self.titles:
                raise CalendarError(self.source, line, f"<day> h={excerpt(ident)}: no <holiday id={excerpt(ident)}>")
            self.days[when] = CalendarDay(kind, self.titles.get(ident, ""), moved)
        self.year, self.pending = None, []

    def result(self) -> Calendar:
        if not self.years:
            raise CalendarError(self.source, None, 'no <calendar year="YYYY"> in this file')
        return Calendar(str(self.source), tuple(sorted(self.years)), self.days)
