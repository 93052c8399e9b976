"""`ascrm calendar import`: merge production calendar files (or URLs) into one xmlcalendar file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ascrm.cli import Commands


def add(commands: Commands) -> argparse.ArgumentParser:
    """Add `ascrm calendar` to the `ascrm` subcommands."""
    calendar = commands.add_parser("calendar", help="production calendars: import (merge) xmlcalendar files")
    actions = calendar.add_subparsers(dest="calendar_command", required=True, metavar="ACTION")
    merge = actions.add_parser(
        "import",
        help="merge xmlcalendar XML files or isdayoff-style JSON (paths or http(s) URLs) into one calendar file",
    )
    merge.add_argument("sources", nargs="+", metavar="FILE|URL", help="xmlcalendar XML or isdayoff-style JSON")
    merge.add_argument("-o", "--output", type=Path, help="the calendar file to write (default: standard output)")
    return calendar


def run(args: argparse.Namespace) -> int:
    """Merge the sources; 1 (and the file and what is wrong) when one is malformed or unreadable."""
    from ascrm.core.rules.calendar import CalendarError
    from ascrm.tools.calendar_import import import_calendars, render

    try:
        calendar = import_calendars(args.sources)
    except CalendarError as exc:
        print(f"ascrm calendar import: error: {exc}", file=sys.stderr)
        return 1
    text = render(calendar)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"ascrm calendar import: error: {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    years = ", ".join(str(year) for year in calendar.years)
    print(f"{len(calendar.years)} year(s) covered: {years}; {len(calendar.days)} changed days", file=sys.stderr)
    return 0
