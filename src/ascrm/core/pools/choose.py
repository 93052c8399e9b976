"""How a strategy chooses among a pool's available members, from the pool's counters (in-process form;
redis_pools.py's script does the same in Redis)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ascrm.core.rules.pools import Member, Pool


@dataclass(slots=True)
class Counters:
    """What one pool's strategy remembers, and each member's resting time and counts (mutable, local)."""

    position: int = 0  # round robin: the index in members to start from
    sequence: int = 0  # least_recent: bumped by each pick
    used: dict[str, int] = field(default_factory=dict)  # least_recent: member -> sequence of its last pick
    current: dict[str, int] = field(default_factory=dict)  # weighted: the smooth weighted round robin's
    resting: dict[str, float] = field(default_factory=dict)  # member -> until (epoch seconds)
    offered: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)


def choose(pool: Pool, counters: Counters, candidates: Sequence[Member], now: float, draw: float) -> str | None:
    """The member picked among candidates (those not tried and on schedule) that are not resting at now
    (epoch seconds); counters are brought up to date. draw: a number in [0, 1), for `random`."""
    ready = [member for member in candidates if counters.resting.get(member.to, 0.0) <= now]
    if not ready:
        return None
    strategy = pool.strategy
    if strategy == "round_robin":
        picked = _round_robin(pool, counters, {member.to for member in ready})
    elif strategy == "weighted":
        picked = _weighted(counters, ready)
    elif strategy == "least_recent":
        picked = min(ready, key=lambda member: counters.used.get(member.to, 0)).to
    elif strategy == "random":
        picked = ready[min(int(draw * len(ready)), len(ready) - 1)].to
    else:  # in_order
        picked = ready[0].to
    counters.sequence += 1
    counters.used[picked] = counters.sequence
    counters.offered[picked] = counters.offered.get(picked, 0) + 1
    return picked


def _round_robin(pool: Pool, counters: Counters, ready: set[str]) -> str:
    """The first ready member from the position on, in the members' order; the position moves past it."""
    count = len(pool.members)
    for step in range(count):
        index = (counters.position + step) % count
        if pool.members[index].to in ready:
            counters.position = (index + 1) % count
            return pool.members[index].to
    raise AssertionError("a ready member is a member")


def _weighted(counters: Counters, ready: Sequence[Member]) -> str:
    """Smooth weighted round robin (as nginx's): exact shares over each cycle of the weights' sum."""
    total = 0
    best: Member | None = None
    for member in ready:
        value = counters.current.get(member.to, 0) + member.weight
        counters.current[member.to] = value
        total += member.weight
        if best is None or value > counters.current[best.to]:
            best = member
    assert best is not None
    counters.current[best.to] -= total
    return best.to
