"""Bounds on what rule, list and map files may hold, so that no file can stall or exhaust the service."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RuleLimits:
    """The largest rule set ascrm reads (`limits.rules.*`); a file past any of them is refused whole.

    The defaults fit 10,000 rules and a 1,000,000-line list file many times over, and keep a refusal
    under a couple of seconds and a few hundred MB.
    """

    file_bytes: int = 8 * MIB  # one rule file
    nodes: int = 300_000  # YAML nodes (keys, values, items) in one rule file, each alias counted as expanded
    depth: int = 64  # nesting of mappings and lists in a rule file
    data_file_bytes: int = 64 * MIB  # one list or map file
    data_file_lines: int = 2_000_000  # lines of one list or map file

    @property
    def text_chars(self) -> int:
        """Characters of scalar text one rule file may hold once its aliases are expanded."""
        return self.file_bytes
