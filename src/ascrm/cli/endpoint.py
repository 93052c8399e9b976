"""What `ascrm probe` and `ascrm emulate` share: the endpoint's options, the target they make, the event loop."""

from __future__ import annotations

import argparse
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ascrm.tools.platform.client import Target

PASSWORD_ENV = "ASCRM_PROBE_PASSWORD"  # noqa: S105 - the name of a variable, not a password
T = TypeVar("T")


def endpoint_options(parser: argparse.ArgumentParser) -> None:
    """Add the URL, credential, TLS and timeout options."""
    parser.add_argument("url", help="the endpoint's base URL, e.g. https://crm.example.com/autosecretary")
    parser.add_argument("--user", default="autosecretary", help="Basic auth user (default: %(default)s)")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--password", help=f"Basic auth password (visible in shell history: prefer ${PASSWORD_ENV})")
    secret.add_argument(
        "--password-env", metavar="NAME", help=f"read the password from this environment variable ({PASSWORD_ENV})"
    )
    parser.add_argument("--cacert", type=Path, metavar="FILE", help="trust the CA certificates in this PEM file")
    parser.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")
    parser.add_argument("--timeout", type=seconds, default=5.0, metavar="S", help="seconds to wait for an answer (5)")


def endpoint(args: argparse.Namespace, connections: int = 4) -> Target:
    """The endpoint the options name, with the password from where they say."""
    from ascrm.tools.platform.client import Target, UsageError, check_url  # aiohttp: imported only by the tools

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


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop: uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop installs wherever it is supported
        import asyncio

        return asyncio.run(main)
    return uvloop.run(main)


def seconds(text: str) -> float:
    """An argparse type: seconds above 0, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds above 0, at most a day")
    return value


def ramp(text: str) -> float:
    """An argparse type: 0, or seconds as seconds() takes them."""
    return 0.0 if text.strip() in ("0", "0.0") else seconds(text)


def scale(text: str) -> float:
    """An argparse type: a factor from 0 to 100."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: give a factor from 0 to 100")
    return value


def count(text: str) -> int:
    """An argparse type: a whole number from 1 to 1,000,000."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 to 1000000")
    return value
