"""Which services (ServiceType) a rule's `if:` can let through, read from the conditions as written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ascrm.core.protocol import ServiceType, parse_code


def admits(conditions: Mapping[str, Any] | None, service: int) -> bool:
    """False when the conditions (valid, compiled) surely refuse every call of service; else True.

    Reads `service`, and `all`, `any` and `not` around it; any other condition may hold or not.
    """
    for key, value in (conditions or {}).items():
        if key == "service" and service not in _codes(value):
            return False
        if key == "all" and not all(admits(item, service) for item in value):
            return False
        if key == "any" and not any(admits(item, service) for item in value):
            return False
        if key == "not" and set(value) == {"service"} and service in _codes(value["service"]):
            return False
    return True


def only(conditions: Mapping[str, Any] | None, service: int) -> bool:
    """True when the conditions refuse every known service but this one."""
    others = (member for member in ServiceType if member != service)
    return admits(conditions, service) and not any(admits(conditions, other) for other in others)


def _codes(value: Any) -> frozenset[int]:
    items = value if isinstance(value, list) else [value]
    codes = (parse_code(item, ServiceType) for item in items)
    return frozenset(int(code) for code in codes if code is not None)
