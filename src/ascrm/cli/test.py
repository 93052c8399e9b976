"""`ascrm test`: the rule tests beside the rules; the work is in ascrm.tools.rulecheck.test."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ascrm.cli import Commands

HELP = """\
Test files are YAML files in a `tests/` folder beside the rules (rules/tests/*.yaml): a rules folder
loads only its own *.yaml and *.yml, never a subfolder's, so tests are never taken for rules. PATH is
a test file, a `tests` folder, or a rules folder (its tests/ is read); by default, the rules that
`ascrm serve` would load.

  rules: ..                        # the rules tested, relative to this file (default: the folder above it)
  timezone: Europe/Moscow          # for rule files that name none and for times without an offset
  at: 2027-01-11T10:00:00+03:00    # when each call starts, unless its case says
  cases:
    - name: a caller dialling 1 reaches sales
      at: 2027-01-11T19:00:00+03:00             # this call's start (ISO 8601, as EventTime is read)
      AN: "79990000000"                          # CRMDData fields every event carries (ServiceType: 1
      UN: "74951234567"                          #   unless given; null sends none); names in any case
      lists: {blocked: ["7800*"]}                # replace a list or a map of the rules for this case
      steps:
        - event: CallAccepted                    # a name or code as the server reads EventType, or poll
          expect: {PlayPrompt: after_hours}      # none, Hangup, {Action: param}, {rule: ID}, {rule: ID, do: ...}
        - event: DTMF
          after: 5s                              # the clock moves on first: 30, 30s, 5m, 1h30m, 250ms
          DTMF: "1"                              # this event's own fields (EventTime too)
          expect: {TransferDN: "74951112233"}

A case is one call (CallID 1), replayed as `ascrm serve` answers it: the same rules, call history
and in-memory call store, on a clock that starts at `at` and moves on by each step's `after`; every
event carries that clock as EventTime, and polls are decided at it. A step without `expect` is played
but not checked.

Prints PASS or FAIL, file:line and the name of each case; under a failure, each step that answered
otherwise than expected, with the rules tried and why each passed; then `N passed, N failed`.
Exit status: 0 every case passed, 1 a case failed, 2 a test file or its rules have errors (printed
as file:line:column on standard error; that file's cases do not run) or nothing ran.
"""


def add(commands: Commands) -> argparse.ArgumentParser:
    """Add `ascrm test` to the `ascrm` subcommands."""
    parser = commands.add_parser(
        "test",
        help="run rule tests (rules/tests/*.yaml); exit 1 when a case fails, 2 on a bad test file",
        description="Run rule tests: calls replayed through the rules, each answer checked.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", type=Path, nargs="*", metavar="PATH", help="test files or folders (see below)")
    parser.add_argument("--run", metavar="REGEX", help="only the cases whose name this regular expression finds")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every step of every case")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the tests the arguments name; the exit status."""
    from ascrm.tools.rulecheck.test import run_tests

    return run_tests(args.paths, args.run, verbose=args.verbose)
