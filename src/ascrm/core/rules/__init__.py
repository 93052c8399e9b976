"""Everything about rule files: reading, checking, compiling."""

from __future__ import annotations

from pathlib import Path

from ascrm.core.rules.compile import load_rules
from ascrm.core.rules.load import Location, Problem, RulesError
from ascrm.core.rules.rule import CompiledRule

__all__ = ["CompiledRule", "Location", "Problem", "RulesError", "example_rules", "load_rules", "rules_source"]


def example_rules() -> Path:
    """The example rule set shipped with ascrm (inside the package, or the source tree's rules/)."""
    packaged = Path(__file__).resolve().parents[2] / "example_rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[4] / "rules"


def rules_source(configured: Path | None) -> Path:
    """The rules to serve: as configured, else ./rules when present, else the shipped examples."""
    if configured is not None:
        return configured
    local = Path.cwd() / "rules"
    return local if local.is_dir() else example_rules()
