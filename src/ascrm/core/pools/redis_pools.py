"""Pools' state in Redis, one hash per pool (`<prefix>pool:<Pool.key>`), changed by one atomic script per
pick: round robin is exact over every replica, and a member resting is resting for all of them.

A pick waits for Redis at most until the decision's deadline (the look-ups' budget); when Redis fails
or is late, the member is picked from this process's own state (keeper.MemoryPools) and a warning
logged, so a call still gets a member. A script that reaches Redis after its deadline changes nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog

from ascrm.core.calls.store import StoreError
from ascrm.core.pools.keeper import MemberState, MemoryPools

if TYPE_CHECKING:
    from ascrm.core.calls.redis import RedisCallStore
    from ascrm.core.rules.pools import Member, Pool

log = structlog.get_logger("ascrm.pools")

KEPT_MS: Final = 30 * 86400 * 1000  # a pool's hash is dropped this long after its last change

# KEYS: the pool's hash. ARGV: strategy, draw, n, the n members, their n weights, n flags ('1': a
# candidate), the hash's lifetime (ms), the deadline (Redis's clock, ms). Reply: the member, '' when every
# candidate rests, false when late (nothing changed). Fields: p (round robin's next index, 0-based),
# s (picks), u:<m> (the pick number of m's last pick), c:<m> (smooth weighted's current weight),
# r:<m> (resting until, ms), o:<m> (offered), a:<m> (answered).
PICK: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if now > tonumber(ARGV[#ARGV]) then return false end
local key, strategy, draw, n = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local kept = ARGV[4 + 3 * n]
local ready, isready = {}, {}
for i = 1, n do
  if ARGV[3 + 2 * n + i] == '1' then
    local resting = tonumber(redis.call('HGET', key, 'r:' .. ARGV[3 + i]) or '0')
    if resting <= now then
      ready[#ready + 1] = i
      isready[i] = true
    end
  end
end
if #ready == 0 then return '' end
local pick = ready[1]
if strategy == 'round_robin' then
  local position = tonumber(redis.call('HGET', key, 'p') or '0')
  for step = 0, n - 1 do
    local i = (position + step) % n + 1
    if isready[i] then
      pick = i
      break
    end
  end
  redis.call('HSET', key, 'p', pick % n)
elseif strategy == 'weighted' then
  local total, best, value = 0, nil, nil
  for _, i in ipairs(ready) do
    local weight = tonumber(ARGV[3 + n + i])
    local current = redis.call('HINCRBY', key, 'c:' .. ARGV[3 + i], weight)
    total = total + weight
    if best == nil or current > value then best, value = i, current end
  end
  redis.call('HINCRBY', key, 'c:' .. ARGV[3 + best], -total)
  pick = best
elseif strategy == 'least_recent' then
  local value = nil
  for _, i in ipairs(ready) do
    local used = tonumber(redis.call('HGET', key, 'u:' .. ARGV[3 + i]) or '0')
    if value == nil or used < value then pick, value = i, used end
  end
elseif strategy == 'random' then
  pick = ready[math.min(math.floor(draw * #ready) + 1, #ready)]
end
local member = ARGV[3 + pick]
redis.call('HSET', key, 'u:' .. member, redis.call('HINCRBY', key, 's', 1))
redis.call('HINCRBY', key, 'o:' .. member, 1)
redis.call('PEXPIRE', key, kept)
return member
"""

# KEYS: the pool's hash. ARGV: the member, how long it rests (ms), the hash's lifetime (ms).
REST: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], now + tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: the pool's hash. Reply: Redis's clock (ms) and the hash as HGETALL's flat list.
STATES: Final = """
local clock = redis.call('TIME')
return {tostring(tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)), redis.call('HGETALL', KEYS[1])}
"""


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
        remaining = deadline - asyncio.get_running_loop().time() - store._margin
        if remaining > 0:
            wanted = {member.to for member in candidates}
            args: list[Any] = [pool.strategy, repr(self._draw()), len(pool.members)]
            args += [member.to for member in pool.members]
            args += [member.weight for member in pool.members]
            args += ["1" if member.to in wanted else "0" for member in pool.members]
            args += [KEPT_MS, int((time.time() + remaining) * 1000 + store._clock_offset_ms)]
            key = self._key(pool)
            future = store._batches.command(("EVAL", PICK, 1, key, *args), what="pool", key=key, deadline=deadline)
            try:
                reply = await store._wait("pool", future)
            except (StoreError, TimeoutError) as exc:
                log.warning("pool_pick_local", pool=pool.name, error=str(exc))
            else:
                if reply is not None:
                    member = bytes(reply).decode()
                    return member or None
                log.warning("pool_pick_local", pool=pool.name, error="redis answered after the deadline")
        return self.local.pick_now(pool, candidates)

    def rest(self, pool: Pool, member: str) -> None:
        """Rest member in Redis (not waited for) and here."""
        self.local.rest(pool, member)
        if pool.rest_after_busy > 0:
            self._send(pool, ("EVAL", REST, 1, self._key(pool), member, int(pool.rest_after_busy * 1000), KEPT_MS))

    def answered(self, pool: Pool, member: str) -> None:
        """Count an answered offer in Redis (not waited for)."""
        self._send(pool, ("HINCRBY", self._key(pool), f"a:{member}", 1))

    def _send(self, pool: Pool, command: tuple[Any, ...]) -> None:
        store = self._store
        future = store._batches.command(command, what="pool", key=self._key(pool), deadline=store._deadline())
        future.add_done_callback(_sent)

    async def states(self, pool: Pool) -> tuple[MemberState, ...]:
        """Each member's state as Redis holds it (StoreError when Redis fails)."""
        store = self._store
        key = self._key(pool)
        future = store._batches.command(("EVAL", STATES, 1, key), what="pool", key=key, deadline=store._deadline())
        now_ms, flat = await store._wait("pool", future)
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
