"""Where pools' state is kept: the PoolKeeper protocol, and the in-process keeper (the memory store's)."""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ascrm.core.pools.choose import Counters, choose

if TYPE_CHECKING:
    from ascrm.core.rules.pools import Member, Pool

MAX_KEPT = 1000  # pools' states kept in a process (a reload that changes a pool's members makes a new one)


@dataclass(frozen=True, slots=True)
class MemberState:
    """A member as GET /admin/pools shows it."""

    to: str
    resting_until: float | None  # epoch seconds, None when not resting
    offered: int
    answered: int


class PoolKeeper(Protocol):
    """Picks members and keeps pools' counters, resting times and counts."""

    async def pick(self, pool: Pool, candidates: Sequence[Member], deadline: float) -> str | None:
        """A member of candidates (not resting) by pool's strategy, None when all rest; within deadline."""
        ...

    def rest(self, pool: Pool, member: str) -> None:
        """member answered busy or did not answer: skip it for pool.rest_after_busy (not waited for)."""
        ...

    def answered(self, pool: Pool, member: str) -> None:
        """member answered a call the pool offered it (not waited for)."""
        ...

    async def states(self, pool: Pool) -> tuple[MemberState, ...]:
        """Each member's resting time and counts."""
        ...


class MemoryPools:
    """Pools' state in this process: exact for one process; the state of a pool whose members did not
    change survives a rule reload (it is kept by Pool.key)."""

    def __init__(self, clock: Callable[[], float] = time.time, draw: Callable[[], float] = random.random) -> None:
        self._clock, self._draw = clock, draw
        self._pools: OrderedDict[str, Counters] = OrderedDict()

    def counters(self, pool: Pool) -> Counters:
        """pool's counters (new ones the first time)."""
        found = self._pools.get(pool.key)
        if found is None:
            found = self._pools[pool.key] = Counters()
            while len(self._pools) > MAX_KEPT:
                self._pools.popitem(last=False)
        else:
            self._pools.move_to_end(pool.key)
        return found

    def pick_now(self, pool: Pool, candidates: Sequence[Member]) -> str | None:
        """pick() without waiting."""
        return choose(pool, self.counters(pool), candidates, self._clock(), self._draw())

    async def pick(self, pool: Pool, candidates: Sequence[Member], deadline: float) -> str | None:
        """A member of candidates by pool's strategy (at once: deadline is not needed)."""
        return self.pick_now(pool, candidates)

    def rest(self, pool: Pool, member: str) -> None:
        """Skip member until rest_after_busy from now."""
        if pool.rest_after_busy > 0:
            self.counters(pool).resting[member] = self._clock() + pool.rest_after_busy

    def answered(self, pool: Pool, member: str) -> None:
        """Count an answered offer."""
        counters = self.counters(pool)
        counters.answered[member] = counters.answered.get(member, 0) + 1

    async def states(self, pool: Pool) -> tuple[MemberState, ...]:
        """Each member's resting time and counts."""
        counters, now = self.counters(pool), self._clock()
        return tuple(
            MemberState(
                member.to,
                until if (until := counters.resting.get(member.to, 0.0)) > now else None,
                counters.offered.get(member.to, 0),
                counters.answered.get(member.to, 0),
            )
            for member in pool.members
        )
