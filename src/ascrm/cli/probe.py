"""`ascrm probe URL`: act as the platform against a CRM endpoint and report how it deviates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ascrm.cli.endpoint import endpoint, endpoint_options, run_loop, seconds

if TYPE_CHECKING:
    from ascrm.cli import Commands


def add(commands: Commands) -> argparse.ArgumentParser:
    """Add `ascrm probe` to the `ascrm` subcommands."""
    probe = commands.add_parser(
        "probe",
        help="act as the platform against a CRM endpoint and report how it deviates from the protocol",
        description="Exit status: 0 passed, 1 deviations from the protocol, 2 bad options or files,"
        " 3 unreachable or TLS failed, 4 credentials refused.",
    )
    endpoint_options(probe)
    probe.add_argument("--un", default="74951234567", help="UN sent in the connection test (default: %(default)s)")
    probe.add_argument(
        "--call", nargs="?", const="menu-sales-talk", metavar="SCENARIO",
        help="also play one scripted call with polls (default scenario: %(const)s)",
    )  # fmt: skip
    probe.add_argument("--scenarios", type=Path, metavar="FILE", help="scenario file for --call (default: built in)")
    probe.add_argument("--polls", type=int, default=2, help="polls while the call is connected (default: 2)")
    probe.add_argument("--poll-interval", type=seconds, default=3.0, metavar="S", help="seconds between polls (3)")
    probe.add_argument("--strict", action="store_true", help="warnings fail the probe too")
    probe.add_argument("--json", action="store_true", help="print the report as JSON")
    return probe


def run(args: argparse.Namespace) -> int:
    """`ascrm probe URL`: the report printed; 0 passed, 1 deviations, 3 unreachable, 4 credentials refused."""
    import orjson

    from ascrm.tools.platform.call import Pacing
    from ascrm.tools.platform.client import UsageError
    from ascrm.tools.platform.probe import ProbeOptions, probe
    from ascrm.tools.platform.scenarios import load_scenarios, pick

    target = endpoint(args)
    call = pick(load_scenarios(args.scenarios), args.call) if args.call else None
    if args.polls < 0:
        raise UsageError(f"--polls {args.polls}: give 0 or more")
    talk = args.poll_interval * (args.polls + 0.5)
    options = ProbeOptions(un=args.un, call=call, pacing=Pacing(0.0, args.poll_interval, talk), strict=args.strict)
    report = run_loop(probe(target, options))
    if args.json:
        print(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(report.text())
    if report.fatal is not None and not args.json:
        print(f"ascrm: error: {report.fatal}", file=sys.stderr)
    return report.exit_code
