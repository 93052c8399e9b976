"""`ascrm hash-password`: a `password_hash` for the config, from a password typed twice or on standard input."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ascrm.cli import Commands


def add(commands: Commands) -> argparse.ArgumentParser:
    """Add `ascrm hash-password` to the `ascrm` subcommands."""
    hashing = commands.add_parser("hash-password", help="print a password_hash for the config")
    hashing.add_argument("--stdin", action="store_true", help="read the password from standard input")
    return hashing


def run(args: argparse.Namespace) -> int:
    """Print the hash; 1 when the password is empty or typed differently twice."""
    from ascrm.service.auth.basic import hash_password

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
