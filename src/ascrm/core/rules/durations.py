"""Durations as rule files write them: a number and its unit (300ms, 2s, 10m, 1h, 1d)."""

from __future__ import annotations

import re
from typing import Any, Final

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(value: Any) -> float | None:
    """value in seconds when it is a duration with its unit (a string such as 300ms or 10m), else None."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    return None if match is None else float(match.group(1)) * _UNITS[match.group(2)]
