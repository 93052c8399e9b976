"""`ascrm serve`: the HTTP(S) service, started on sockets bound first."""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ascrm.cli.check import load_checked

if TYPE_CHECKING:
    from ascrm.cli import Commands
    from ascrm.service.settings import Settings

GENERATED_USER = "autosecretary"


def add(commands: Commands) -> argparse.ArgumentParser:
    """Add `ascrm serve` to the `ascrm` subcommands."""
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
    return serve


def run(args: argparse.Namespace) -> int:
    """Load the config and rules, bind, and serve until stopped; 2 when it cannot start."""
    from ascrm.service.auth.basic import Credential
    from ascrm.service.net.listener import bind

    settings = _settings_from(args)
    if not settings.platform_credentials and not _is_loopback(settings.listen.host):
        print(
            f"ascrm: error: refusing to listen on {settings.listen.host} without credentials:"
            " set auth.platform in the config (or ASCRM_PLATFORM_PASSWORD)",
            file=sys.stderr,
        )
        return 2
    rules = load_checked(settings.rules, settings.timezone, settings.limits.rules)
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
    from ascrm.service.server import run as serve

    serve(settings, rules, sockets)
    return 0


def _settings_from(args: argparse.Namespace) -> Settings:
    from ascrm.service.settings import load_settings, trusted_proxies

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
