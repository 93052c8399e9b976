"""A rule file's `pools:`: each pool compiled into an immutable Pool, every mistake naming its key (the
state a pool keeps, and how it picks: core/pools/)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ascrm.core.rules.durations import duration_seconds
from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.schedule import Schedule

STRATEGIES: Final = ("round_robin", "weighted", "least_recent", "random", "in_order")
POOL_NAME: Final = r"[A-Za-z_][A-Za-z0-9_-]*"
MAX_POOLS: Final = 100  # in one rule set
MAX_MEMBERS: Final = 100  # in one pool
MAX_WEIGHT: Final = 1000
MAX_REST: Final = 86400.0  # rest_after_busy at most, in seconds
MAX_MEMBER_CHARS: Final = 64  # an extension or a full number
DEFAULT_REST: Final = 30.0
_MEMBER = re.compile(r"^\+?[0-9A-Za-z*#_.-]{1,64}$")
_KEYS: Final = frozenset({"strategy", "members", "rest_after_busy"})
_MEMBER_KEYS: Final = frozenset({"to", "weight", "time"})


class PoolError(Exception):
    """A pool is wrong; path is relative to its mapping."""

    def __init__(self, path: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a pool: where a call goes, its weight, and the schedule it is a member during."""

    to: str
    weight: int = 1
    schedule: str | None = None  # the schedule's name
    hours: Schedule | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Pool:
    """A compiled pool; key names its shared state, the same while its name and members' numbers are."""

    name: str
    strategy: str
    members: tuple[Member, ...]
    rest_after_busy: float = DEFAULT_REST
    key: str = field(init=False)

    def __post_init__(self) -> None:
        text = "\0".join((self.name, *(member.to for member in self.members)))
        object.__setattr__(self, "key", hashlib.sha256(text.encode()).hexdigest()[:16])

    def has(self, destination: str) -> bool:
        """Whether destination is one of the members."""
        return any(member.to == destination for member in self.members)


def parse_pool(name: str, spec: Any, schedules: Mapping[str, Schedule]) -> Pool:
    """Compile one pool's mapping; PoolError names the bad key and value."""
    if not isinstance(spec, dict):
        raise PoolError((), f"a pool is a mapping with strategy and members, not {excerpt(spec)}")
    unknown = sorted(str(key) for key in spec if key not in _KEYS)
    if unknown:
        raise PoolError((unknown[0],), f"unknown key {excerpt(unknown[0])} (known: members, rest_after_busy, strategy)")
    strategy = spec.get("strategy", "round_robin")
    if strategy not in STRATEGIES:
        raise PoolError(("strategy",), f"unknown strategy {excerpt(strategy)} (known: {', '.join(STRATEGIES)})")
    raw = spec.get("members")
    if not isinstance(raw, list) or not raw:
        raise PoolError(("members",), "members: a list of one or more extensions or numbers")
    if len(raw) > MAX_MEMBERS:
        raise PoolError(("members",), f"members: {len(raw)} members, more than {MAX_MEMBERS}")
    members: list[Member] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        member = _member(item, schedules, index)
        if member.to in seen:
            raise PoolError(("members", index), f"member {excerpt(member.to)} is listed twice")
        seen.add(member.to)
        members.append(member)
    rest = _rest(spec["rest_after_busy"]) if "rest_after_busy" in spec else DEFAULT_REST
    return Pool(name, strategy, tuple(members), rest)


def _rest(written: Any) -> float:
    """rest_after_busy in seconds: 0, or a duration with its unit up to MAX_REST."""
    if written in (0, "0") and not isinstance(written, bool):
        return 0.0
    amount = duration_seconds(written)
    if amount is None:
        raise PoolError(("rest_after_busy",), f"rest_after_busy: {excerpt(written)} is not a duration (30s, 2m, 0)")
    if amount > MAX_REST:
        raise PoolError(("rest_after_busy",), f"rest_after_busy: {excerpt(written)} is over {MAX_REST:g} seconds")
    return amount


def _member(item: Any, schedules: Mapping[str, Schedule], index: int) -> Member:
    at: tuple[Any, ...] = ("members", index)
    if isinstance(item, (str, int)) and not isinstance(item, bool):
        return Member(_destination(item, at))
    if not isinstance(item, dict):
        raise PoolError(at, f"a member is an extension, a number or {{to: …}}, not {excerpt(item)}")
    unknown = sorted(str(key) for key in item if key not in _MEMBER_KEYS)
    if unknown:
        raise PoolError((*at, unknown[0]), f"unknown key {excerpt(unknown[0])} (known: time, to, weight)")
    if "to" not in item:
        raise PoolError(at, "a member needs to: (its extension or number)")
    to = _destination(item["to"], (*at, "to"))
    weight = item.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
        raise PoolError((*at, "weight"), f"weight: {excerpt(weight)} is not a whole number 1-{MAX_WEIGHT}")
    schedule = item.get("time")
    if schedule is None:
        return Member(to, weight)
    if not isinstance(schedule, str) or schedule not in schedules:
        known = ", ".join(sorted(schedules)) or "none"
        raise PoolError((*at, "time"), f"time: no schedule named {excerpt(schedule)} (defined: {known})")
    return Member(to, weight, schedule, schedules[schedule])


def _destination(value: Any, at: tuple[Any, ...]) -> str:
    text = str(value)
    if not _MEMBER.match(text):
        message = f"member {excerpt(value)} is not an extension or a number (1-{MAX_MEMBER_CHARS} characters)"
        raise PoolError(at, message)
    return text
