"""The `ascrm` command: one registry of subcommands; each one's work is imported only when it runs."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ascrm import __version__
from ascrm.errors import AscrmError, ListenError

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]  # the `ascrm` subcommands, as argparse adds them

# Each subcommand, by name: the module whose add(commands) adds its parser and whose run(args) runs it.
COMMANDS: Final = {
    "serve": "ascrm.cli.serve",
    "check": "ascrm.cli.check",
    "hash-password": "ascrm.cli.hash_password",
    "test": "ascrm.cli.test",
    "simulate": "ascrm.cli.simulate",
    "probe": "ascrm.cli.probe",
    "emulate": "ascrm.cli.emulate",
    "calendar": "ascrm.cli.calendar",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ascrm` console script."""
    args = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ListenError as exc:
        from ascrm.service.net.listener import EXIT_CANNOT_LISTEN

        print(f"ascrm: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    except AscrmError as exc:
        print(f"ascrm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def parser() -> argparse.ArgumentParser:
    """The `ascrm` parser, with every subcommand of COMMANDS."""
    top = argparse.ArgumentParser(prog="ascrm", description="CRM-side routing service for the Autosecretary.")
    top.add_argument("--version", action="version", version=f"ascrm {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, path in COMMANDS.items():
        module = importlib.import_module(path)
        command = module.add(commands)
        assert command.prog.endswith(f" {name}"), f"{path} adds {command.prog}, not {name}"
        command.set_defaults(handler=module.run)  # not `run`: `ascrm test --run` has that name
    return top


if __name__ == "__main__":
    sys.exit(main())
