"""`ascrm check`: load a rule set as `ascrm serve` would and print its errors and warnings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ascrm.core.defaults import DEFAULT_TIMEZONE

if TYPE_CHECKING:
    from ascrm.cli import Commands
    from ascrm.core.engine import RuleSet
    from ascrm.core.rules.limits import RuleLimits


def add(commands: Commands) -> argparse.ArgumentParser:
    """Add `ascrm check` to the `ascrm` subcommands."""
    check = commands.add_parser("check", help="check rule files; exit 1 on errors (or warnings with --strict)")
    check.add_argument("path", type=Path, nargs="?", help="rules file or folder (default: as `serve` would)")
    check.add_argument("--strict", action="store_true", help="warnings fail the check too")
    check.add_argument("--timezone", default=DEFAULT_TIMEZONE, help="zone for files that name none (%(default)s)")
    check.add_argument(
        "--config", type=Path, help="config file whose limits.rules apply (default: the built-in limits)"
    )
    return check


def run(args: argparse.Namespace) -> int:
    """Print the rules' problems; 1 on errors, or on warnings with --strict."""
    from ascrm.core.rules import rules_source
    from ascrm.core.rules.limits import RuleLimits
    from ascrm.service.settings import load_settings

    source = rules_source(args.path)
    limits = load_settings(args.config).limits.rules if args.config else RuleLimits()
    rules = load_checked(source, args.timezone, limits)
    if rules is None:
        return 1
    files = ", ".join(str(path) for path in rules.files)
    print(f"{len(rules.rules)} rules in {files}: no errors, {len(rules.warnings)} warning(s)")
    return 1 if args.strict and rules.warnings else 0


def load_checked(configured: Path | None, timezone: str, limits: RuleLimits) -> RuleSet | None:
    """The compiled rules, with warnings printed; None (after printing why) when they have errors."""
    from ascrm.core.rules import RulesError, load_rules, rules_source

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
