"""What replicas share about look-ups: cached answers and each source's rate, and the Redis that holds them.

Keys: `<prefix>lookup:<source>:<request key>` holds an answer (the value, or "" for a miss) with the
expiry of its cache period; `<prefix>lookup-rate:<source>:<window>` counts the requests sent in a fixed
window (numbered from the epoch, so that replicas agree on it) and expires soon after it.

The callers bound every operation in time (they cancel it); redis-py drops a connection whose reply was
cut short, so a cancelled operation never leaves a reply behind for the next.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import ConnectionPool, Redis


@dataclass(frozen=True, slots=True)
class SharedEntry:
    """A cached answer (None: a miss) and the seconds it is still reused."""

    value: str | None
    expires_in: float


class SharedStore(Protocol):
    """Cached answers and rate windows that replicas share."""

    async def get(self, source: str, key: str) -> SharedEntry | None:
        """The answer cached for a source's request key, or None."""

    async def set(self, source: str, key: str, value: str | None, expires_in: float) -> None:
        """Cache an answer (None: a miss) for expires_in seconds."""

    async def take(self, source: str, limit: int, window: float = 1.0) -> bool:
        """Count a request to source in the current fixed window of window seconds; False past limit."""


class RedisSharedStore:
    """A SharedStore in Redis, its keys under prefix."""

    def __init__(self, pool: ConnectionPool, *, prefix: str, wall: Callable[[], float] = time.time) -> None:
        self._redis: Redis = Redis(connection_pool=pool)
        self._prefix = prefix
        self._wall = wall  # the epoch's seconds: replicas' windows agree

    def _entry_key(self, source: str, key: str) -> str:
        return f"{self._prefix}lookup:{source}:{key}"

    async def get(self, source: str, key: str) -> SharedEntry | None:
        """The answer cached for a source's request key, or None."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self._entry_key(source, key))
            pipe.pttl(self._entry_key(source, key))
            raw, left = await pipe.execute()
        if raw is None or left is None or left <= 0:
            return None
        text = raw.decode("utf-8", "replace")
        return SharedEntry(text or None, left / 1000)

    async def set(self, source: str, key: str, value: str | None, expires_in: float) -> None:
        """Cache an answer (None: a miss, stored as "") for expires_in seconds."""
        milliseconds = int(expires_in * 1000)
        if milliseconds > 0:
            await self._redis.set(self._entry_key(source, key), (value or "").encode(), px=milliseconds)

    async def take(self, source: str, limit: int, window: float = 1.0) -> bool:
        """Count a request to source in the current fixed window of window seconds; False past limit."""
        number = math.floor(self._wall() / window)
        rate_key = f"{self._prefix}lookup-rate:{source}:{number}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(rate_key)
            pipe.pexpire(rate_key, int(window * 2000) + 1000)
            taken, _ = await pipe.execute()
        return int(taken) <= limit

    async def close(self) -> None:
        """Let the client go (the pool stays its owner's to close)."""
        await self._redis.aclose()
