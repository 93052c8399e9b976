"""The `ascrm` command: thin argument parsing over the modules that do the work."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ascrm import __version__
from ascrm.core.engine import RuleSet
from ascrm.core.rules import RulesError, load_rules, rules_source
from ascrm.core.rules.limits import RuleLimits
from ascrm.errors import AscrmError, ListenError
from ascrm.service.auth.basic import Credential, hash_password
from ascrm.service.net.listener import EXIT_CANNOT_LISTEN, bind
from ascrm.service.settings import Settings, load_settings, trusted_proxies

GENERATED_USER = "autosecretary"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ascrm` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ListenError as exc:
        print(f"ascrm: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    except AscrmError as exc:
        print(f"ascrm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ascrm", description="CRM-side routing service for the Autosecretary.")
    parser.add_argument("--version", action="version", version=f"ascrm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP(S) service")
    serve.add_argument("--config", type=Path, help="config file (default: $ASCRM_CONFIG, else built-in defaults)")
    serve.add_argument("--rules", type=Path, help="rules file or folder (overrides the config's `rules`)")
    serve.add_argument("--host", help="address to listen on (overrides `listen.host`)")
    serve.add_argument("--port", type=int, help="port to listen on (overrides `listen.port`)")
    serve.add_argument(
        "--forwarded-allow-ips",
        metavar="LIST",
        help="comma-separated proxy addresses or networks whose X-Forwarded-For is believed; '' for none"
        " (overrides `listen.forwarded_allow_ips`)",
    )
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check", help="check rule files; exit 1 on errors (or warnings with --strict)")
    check.add_argument("path", type=Path, nargs="?", help="rules file or folder (default: as `serve` would)")
    check.add_argument("--strict", action="store_true", help="warnings fail the check too")
    check.add_argument("--timezone", default="Europe/Moscow", help="zone for files that name none")
    check.add_argument(
        "--config", type=Path, help="config file whose limits.rules apply (default: the built-in limits)"
    )
    check.set_defaults(func=_check)

    hashing = commands.add_parser("hash-password", help="print a password_hash for the config")
    hashing.add_argument("--stdin", action="store_true", help="read the password from standard input")
    hashing.set_defaults(func=_hash_password)

    from ascrm.tools import simulate, test  # the rule tools: their own modules, flags and help
    from ascrm.tools.commands import add_tool_commands  # probe, emulate: options only, the work is imported lazily

    test.add_command(commands)
    simulate.add_command(commands)
    add_tool_commands(commands)
    return parser


def _settings_from(args: argparse.Namespace) -> Settings:
    path = args.config or (Path(os.environ["ASCRM_CONFIG"]) if os.environ.get("ASCRM_CONFIG") else None)
    settings = load_settings(path)
    listen = replace(
        settings.listen,
        host=args.host or settings.listen.host,
        port=settings.listen.port if args.port is None else args.port,
    )
    if args.forwarded_allow_ips is not None:
        values = [value for value in args.forwarded_allow_ips.split(",") if value.strip()]
        listen = replace(listen, forwarded_allow_ips=trusted_proxies(values, "--forwarded-allow-ips"))
    return settings.with_overrides(listen=listen, rules=args.rules or settings.rules)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    if not settings.platform_credentials and not _is_loopback(settings.listen.host):
        print(
            f"ascrm: error: refusing to listen on {settings.listen.host} without credentials:"
            " set auth.platform in the config (or ASCRM_PLATFORM_PASSWORD)",
            file=sys.stderr,
        )
        return 2
    rules = _load_rules(settings.rules, settings.timezone, settings.limits.rules)
    if rules is None:
        return 2
    sockets = bind(settings.listen.host, settings.listen.port)  # a taken port: one error line, before anything starts
    if not settings.platform_credentials:
        password = secrets.token_urlsafe(18)
        settings = settings.with_overrides(platform_credentials=(Credential(user=GENERATED_USER, password=password),))
        print(
            f"ascrm: no platform credentials configured; for this run only: user={GENERATED_USER} password={password}",
            file=sys.stderr,
            flush=True,
        )
    from ascrm.service.server import run

    run(settings, rules, sockets)
    return 0


def _load_rules(configured: Path | None, timezone: str, limits: RuleLimits) -> RuleSet | None:
    """The compiled rules, with warnings printed; None (after printing why) when they have errors."""
    source = rules_source(configured)
    try:
        rules = load_rules(source, timezone, limits=limits)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"ascrm: error: {len(exc.problems)} problem(s) in the rules at {source}", file=sys.stderr)
        return None
    for warning in rules.warnings:
        print(warning, file=sys.stderr)
    return rules


def _check(args: argparse.Namespace) -> int:
    source = rules_source(args.path)
    limits = load_settings(args.config).limits.rules if args.config else RuleLimits()
    rules = _load_rules(source, args.timezone, limits)
    if rules is None:
        return 1
    files = ", ".join(str(path) for path in rules.files)
    print(f"{len(rules.rules)} rules in {files}: no errors, {len(rules.warnings)} warning(s)")
    return 1 if args.strict and rules.warnings else 0


def _hash_password(args: argparse.Namespace) -> int:
    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("ascrm: error: the passwords differ", file=sys.stderr)
            return 1
    if not password:
        print("ascrm: error: the password is empty", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    sys.exit(main())
