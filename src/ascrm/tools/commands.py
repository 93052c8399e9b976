"""The `ascrm probe` and `ascrm emulate` subcommands: options, and the runs they start."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

if TYPE_CHECKING:
    from ascrm.tools.client import Target

PASSWORD_ENV = "ASCRM_PROBE_PASSWORD"  # noqa: S105 - the name of a variable, not a password
T = TypeVar("T")


def add_tool_commands(commands: Any) -> None:
    """Add `probe` and `emulate` to the `ascrm` subcommands (argparse's subparsers action)."""
    probe = commands.add_parser(
        "probe",
        help="act as the platform against a CRM endpoint and report how it deviates from the protocol",
        description="Exit status: 0 passed, 1 deviations from the protocol, 2 bad options or files,"
        " 3 unreachable or TLS failed, 4 credentials refused.",
    )
    _endpoint_options(probe)
    probe.add_argument("--un", default="74951234567", help="UN sent in the connection test (default: %(default)s)")
    probe.add_argument(
        "--call", nargs="?", const="menu-sales-talk", metavar="SCENARIO",
        help="also play one scripted call with polls (default scenario: %(const)s)",
    )  # fmt: skip
    probe.add_argument("--scenarios", type=Path, metavar="FILE", help="scenario file for --call (default: built in)")
    probe.add_argument("--polls", type=int, default=2, help="polls while the call is connected (default: 2)")
    probe.add_argument("--poll-interval", type=_seconds, default=3.0, metavar="S", help="seconds between polls (3)")
    probe.add_argument("--strict", action="store_true", help="warnings fail the probe too")
    probe.add_argument("--json", action="store_true", help="print the report as JSON")
    probe.set_defaults(func=run_probe)

    emulate = commands.add_parser(
        "emulate",
        help="load a CRM endpoint with concurrent calls as the platform makes them; report latency and errors",
        description="Exit status: 0 no errors and no protocol violations, 1 some, 2 bad options or files,"
        " 3 unreachable or TLS failed, 4 credentials refused.",
    )
    _endpoint_options(emulate)
    emulate.add_argument("--calls", type=_count, default=100, metavar="N", help="concurrent calls (default: 100)")
    emulate.add_argument("--duration", type=_seconds, default=30.0, metavar="S", help="seconds to run (default: 30)")
    emulate.add_argument("--ramp", type=_ramp, default=0.0, metavar="S", help="seconds over which calls start (0)")
    emulate.add_argument("--warmup", type=_ramp, default=0.0, metavar="S", help="seconds sent but not counted (0)")
    emulate.add_argument("--max-calls", type=_count, metavar="N", help="calls started at most (default: no limit)")
    emulate.add_argument("--scenarios", type=Path, metavar="FILE", help="scenario file (default: the built-in mix)")
    emulate.add_argument("--poll-interval", type=_seconds, default=3.0, metavar="S", help="seconds between polls (3)")
    emulate.add_argument("--pause-scale", type=_scale, default=1.0, metavar="F", help="scale scenario pauses (1)")
    emulate.add_argument("--seed", type=int, help="random seed, for a repeatable run")
    emulate.add_argument("--connections", type=_count, default=64, help="keep-alive connections at most (64)")
    emulate.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    shown = emulate.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true", help="a live progress line on stderr even when not a tty")
    shown.add_argument("--quiet", action="store_true", help="no progress output")
    emulate.set_defaults(func=run_emulate)


def _endpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the endpoint's base URL, e.g. https://crm.example.com/autosecretary")
    parser.add_argument("--user", default="autosecretary", help="Basic auth user (default: %(default)s)")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--password", help=f"Basic auth password (visible in shell history: prefer ${PASSWORD_ENV})")
    secret.add_argument(
        "--password-env", metavar="NAME", help=f"read the password from this environment variable ({PASSWORD_ENV})"
    )
    parser.add_argument("--cacert", type=Path, metavar="FILE", help="trust the CA certificates in this PEM file")
    parser.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")
    parser.add_argument("--timeout", type=_seconds, default=5.0, metavar="S", help="seconds to wait for an answer (5)")


def _target(args: argparse.Namespace, connections: int = 4) -> Target:
    from ascrm.tools.client import Target, UsageError, check_url  # aiohttp: imported only by the tools

    password = args.password
    if password is None:
        name = args.password_env or PASSWORD_ENV
        password = os.environ.get(name)
        if password is None and args.password_env:
            raise UsageError(f"--password-env {name}: the environment variable {name} is not set")
    return Target(
        base_url=check_url(args.url),
        user=args.user if password is not None else None,
        password=password,
        cacert=args.cacert,
        insecure=args.insecure,
        timeout=args.timeout,
        connections=connections,
    )


def run_probe(args: argparse.Namespace) -> int:
    """`ascrm probe URL`."""
    from ascrm.tools.call import Pacing
    from ascrm.tools.client import UsageError
    from ascrm.tools.probe import ProbeOptions, probe
    from ascrm.tools.scenarios import load_scenarios, pick

    target = _target(args)
    call = pick(load_scenarios(args.scenarios), args.call) if args.call else None
    if args.polls < 0:
        raise UsageError(f"--polls {args.polls}: give 0 or more")
    talk = args.poll_interval * (args.polls + 0.5)
    options = ProbeOptions(un=args.un, call=call, pacing=Pacing(0.0, args.poll_interval, talk), strict=args.strict)
    report = _run(probe(target, options))
    if args.json:
        print(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(report.text())
    if report.fatal is not None and not args.json:
        print(f"ascrm: error: {report.fatal}", file=sys.stderr)
    return report.exit_code


def run_emulate(args: argparse.Namespace) -> int:
    """`ascrm emulate URL`."""
    from ascrm.tools.call import Pacing
    from ascrm.tools.client import UsageError
    from ascrm.tools.emulate import Emulator, LoadPlan, ProgressStyle, preflight
    from ascrm.tools.scenarios import load_scenarios

    target = _target(args, connections=args.connections)
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

    outcome = _run(main())
    if isinstance(outcome, tuple):
        code, message = outcome
        print(f"ascrm: error: {message}", file=sys.stderr)
        return int(code)
    if args.json:
        print(orjson.dumps(outcome.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(outcome.text())
    return 0 if outcome.clean else 1


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop: uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop installs wherever it is supported
        return asyncio.run(main)
    return uvloop.run(main)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds above 0, at most a day")
    return value


def _ramp(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else _seconds(text)


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: give a factor from 0 to 100")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 to 1000000")
    return value
