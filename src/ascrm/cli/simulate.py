"""`ascrm simulate`: one call replayed against the rules; the work is in ascrm.tools.rulecheck.simulate."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ascrm.core.defaults import DEFAULT_TIMEZONE

if TYPE_CHECKING:
    from ascrm.cli import Commands

EVENTS_HELP = """\
--events is a comma-separated timeline: an event name or code (as the server reads EventType),
`poll` for GET /CallEvent/{CallID}, or `+30s` (also 30, 5m, 1h30m, 250ms) to move the clock on before
the next step. An event takes fields after colons: FIELD=VALUE, or a bare value for its main field
(DTMF:1 sets DTMF; Transfer:1289, ShortTransfer:… and EndCall:… set Result; GoToTransfer:… DN1;
GoToShortTransfer:… EXT1; OperatorTransfer:… EXT2). Every event carries --an, --un, --service and
EventTime = the clock.

  ascrm simulate --an 79161234567 --un 74951234567 --at 2027-01-01T19:05:00+03:00 \\
      --events CallAccepted,+5s,DTMF:1,+10s,Transfer:1280,+601s,poll,+3s,poll --explain

--file replays a case of a rule test file (--case NAME picks one; --an, --un, --service and --at
replace the case's). --format json prints the same timeline for machines: each step's request,
answer as sent, deciding rule and, with --explain, each rule tried and why it passed.
"""


def add(commands: Commands) -> argparse.ArgumentParser:
    """Add `ascrm simulate` to the `ascrm` subcommands."""
    parser = commands.add_parser(
        "simulate",
        help="replay one call against the rules and print each answer (--explain: and why)",
        description="Replay one call against the rules, as `ascrm serve` would answer it.",
        epilog=EVENTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rules", type=Path, help="rules file or folder (default: as `serve` would; with --file, its)")
    parser.add_argument("--timezone", help=f"for rule files naming none and --at without offset ({DEFAULT_TIMEZONE})")
    parser.add_argument("--an", help="the caller's number (AN), carried by every event")
    parser.add_argument("--un", help="the number called (UN), carried by every event")
    parser.add_argument("--service", help="ServiceType: MTSSecretary (default), MTSPBX, … or a code")
    parser.add_argument("--at", help="when the call starts, ISO 8601 (default: now)")
    parser.add_argument("--events", help="the call's timeline, e.g. CallAccepted,DTMF:1,+30s,poll (see below)")
    parser.add_argument("--file", type=Path, help="a rule test file: replay one of its cases")
    parser.add_argument("--case", help="with --file: the name of the case to replay")
    parser.add_argument(
        "--source",
        action="append",
        metavar="NAME=VALUE",
        help="the value a look-up of the rules' sources gives (NAME= : it fails); no CRM is asked; repeatable",
    )
    parser.add_argument("--explain", action="store_true", help="for each answer, the rules tried and why they passed")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")
    return parser


def run(args: argparse.Namespace) -> int:
    """Replay the call the arguments give; the exit status."""
    from ascrm.tools.rulecheck.simulate import run as simulate

    return simulate(args)
