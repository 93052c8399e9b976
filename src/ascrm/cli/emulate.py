"""`ascrm emulate URL`: load a CRM endpoint with concurrent calls as the platform makes them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ascrm.cli.endpoint import count, endpoint, endpoint_options, ramp, run_loop, scale, seconds

if TYPE_CHECKING:
    from ascrm.cli import Commands


def add(commands: Commands) -> argparse.ArgumentParser:
    """Add `ascrm emulate` to the `ascrm` subcommands."""
    emulate = commands.add_parser(
        "emulate",
        help="load a CRM endpoint with concurrent calls as the platform makes them; report latency and errors",
        description="Exit status: 0 no errors and no protocol violations, 1 some, 2 bad options or files,"
        " 3 unreachable or TLS failed, 4 credentials refused.",
    )
    endpoint_options(emulate)
    emulate.add_argument("--calls", type=count, default=100, metavar="N", help="concurrent calls (default: 100)")
    emulate.add_argument("--duration", type=seconds, default=30.0, metavar="S", help="seconds to run (default: 30)")
    emulate.add_argument("--ramp", type=ramp, default=0.0, metavar="S", help="seconds over which calls start (0)")
    emulate.add_argument("--warmup", type=ramp, default=0.0, metavar="S", help="seconds sent but not counted (0)")
    emulate.add_argument("--max-calls", type=count, metavar="N", help="calls started at most (default: no limit)")
    emulate.add_argument("--scenarios", type=Path, metavar="FILE", help="scenario file (default: the built-in mix)")
    emulate.add_argument("--poll-interval", type=seconds, default=3.0, metavar="S", help="seconds between polls (3)")
    emulate.add_argument("--pause-scale", type=scale, default=1.0, metavar="F", help="scale scenario pauses (1)")
    emulate.add_argument("--seed", type=int, help="random seed, for a repeatable run")
    emulate.add_argument("--connections", type=count, default=64, help="keep-alive connections at most (64)")
    emulate.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    shown = emulate.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true", help="a live progress line on stderr even when not a tty")
    shown.add_argument("--quiet", action="store_true", help="no progress output")
    return emulate


def run(args: argparse.Namespace) -> int:
    """`ascrm emulate URL`: the summary printed; 0 clean, 1 errors or violations, 3 unreachable, 4 refused."""
    import orjson

    from ascrm.tools.platform.call import Pacing
    from ascrm.tools.platform.client import UsageError
    from ascrm.tools.platform.emulate import Emulator, LoadPlan, ProgressStyle, preflight
    from ascrm.tools.platform.scenarios import load_scenarios

    target = endpoint(args, connections=args.connections)
    scenarios = load_scenarios(args.scenarios)
    pacing = Pacing(args.pause_scale, args.poll_interval)
    if args.warmup >= args.duration:
        raise UsageError(f"--warmup {args.warmup:g} must be shorter than --duration {args.duration:g}")
    plan = LoadPlan(args.calls, args.duration, args.ramp, args.max_calls, pacing, args.seed, args.warmup)
    progress = None
    if not args.quiet:
        live = args.progress or sys.stderr.isatty()
        progress = ProgressStyle(sys.stderr, live, 1.0 if live else max(1.0, min(5.0, args.duration / 10)))
    emulator = Emulator(target, scenarios, plan)

    async def main() -> Any:
        failure = await preflight(target)
        return failure if failure is not None else await emulator.run(progress)

    outcome = run_loop(main())
    if isinstance(outcome, tuple):
        code, message = outcome
        print(f"ascrm: error: {message}", file=sys.stderr)
        return int(code)
    if args.json:
        print(orjson.dumps(outcome.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(outcome.text())
    return 0 if outcome.clean else 1
