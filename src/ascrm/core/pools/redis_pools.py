"""Pools' state in Redis, one hash per pool (`<prefix>pool:<Pool.key>`), changed by one atomic script per
pick: round robin is exact over every replica, and a member resting is resting for all of them.

A pick waits for Redis at most until the decision's deadline (the look-ups' budget); when Redis fails
or is late, the member is picked from this process's own state (keeper.MemoryPools) and a warning
logged, so a call still gets a member. A script that reaches Redis after its deadline changes nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog

from ascrm.core.calls.redis_scripts import POOL_PICK, POOL_REST, POOL_STATES
from ascrm.core.calls.store import StoreError
from ascrm.core.pools.keeper import MemberState, MemoryPools

if TYPE_CHECKING:
    from ascrm.core.calls.redis import RedisCallStore
    from ascrm.core.rules.pools import Member, Pool

log = structlog.get_logger("ascrm.pools")

KEPT_MS: Final = 30 * 86400 * 1000  # a pool's hash is dropped this long after its last change


class RedisPools:
    """Pools' state shared by every replica on one Redis (the Redis store's connections and lane)."""

    def __init__(self, store: RedisCallStore, draw: Callable[[], float] = random.random) -> None:
        self._store = store
        self._draw = draw
        self.local = MemoryPools()  # picks while Redis fails; rests are noted here too

    def _key(self, pool: Pool) -> str:
        return f"{self._store._prefix}pool:{pool.key}"

    async def pick(self, pool: Pool, candidates: Sequence[Member], deadline: float) -> str | None:
        """A member picked in Redis within deadline; picked locally when Redis fails or is late."""
        store = self._store
        if deadline - asyncio.get_running_loop().time() - store._margin > 0:
            wanted = {member.to for member in candidates}
            args: list[Any] = [pool.strategy, repr(self._draw()), len(pool.members)]
            args += [member.to for member in pool.members]
            args += [member.weight for member in pool.members]
            args += ["1" if member.to in wanted else "0" for member in pool.members]
            args.append(KEPT_MS)  # and the deadline, last: the store adds it (a late script changes nothing)
            key = self._key(pool)
            try:
                reply = await store._run("pool", POOL_PICK, (key,), args, key=key, deadline=deadline)
            except (StoreError, TimeoutError) as exc:
                log.warning("pool_pick_local", pool=pool.name, error=str(exc))
            else:
                return bytes(reply).decode() or None
        return self.local.pick_now(pool, candidates)

    def rest(self, pool: Pool, member: str) -> None:
        """Rest member in Redis (not waited for) and here."""
        self.local.rest(pool, member)
        if pool.rest_after_busy > 0:
            store, key = self._store, self._key(pool)
            args = (member, int(pool.rest_after_busy * 1000), KEPT_MS)
            rested = store._script("pool", POOL_REST, (key,), args, key=key, deadline=store._deadline(), timed=False)
            rested.add_done_callback(_sent)

    def answered(self, pool: Pool, member: str) -> None:
        """Count an answered offer in Redis (not waited for)."""
        store, key = self._store, self._key(pool)
        counted = store._batches.command(
            ("HINCRBY", key, f"a:{member}", 1), what="pool", key=key, deadline=store._deadline()
        )
        counted.add_done_callback(_sent)

    async def states(self, pool: Pool) -> tuple[MemberState, ...]:
        """Each member's state as Redis holds it (StoreError when Redis fails)."""
        store = self._store
        key = self._key(pool)
        now_ms, flat = await store._run(
            "pool", POOL_STATES, (key,), (), key=key, deadline=store._deadline(), timed=False
        )
        fields = {bytes(flat[i]).decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        now = int(now_ms)
        return tuple(
            MemberState(
                member.to,
                until / 1000 if (until := fields.get(f"r:{member.to}", 0)) > now else None,
                fields.get(f"o:{member.to}", 0),
                fields.get(f"a:{member.to}", 0),
            )
            for member in pool.members
        )


def _sent(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("store_unavailable", lost="pool state", error=str(future.exception()))
