"""The look-ups of one running service: the engine, and with the Redis store its cache shared in Redis."""

from __future__ import annotations

from pathlib import Path

from ascrm.core.calls.config import StateSettings
from ascrm.core.lookups.lookups import Lookups
from ascrm.core.lookups.shared import RedisSharedStore

_SHARED_CONNECTIONS = 8  # the shared cache's and rate window's Redis connections (bounded calls, at most 0.1 s)


class OpenedLookups:
    """Lookups for the service (shared by the replicas when the call store is Redis), and its closing."""

    def __init__(self, state: StateSettings, ca_file: Path | None) -> None:
        self._shared: RedisSharedStore | None = None
        if state.backend == "redis":
            from ascrm.core.calls.redis_connection import connection_pool

            pool = connection_pool(state, max_connections=_SHARED_CONNECTIONS, timeout=state.timeout_ms / 1000)
            self._shared = RedisSharedStore(pool, prefix=state.key_prefix)
        self.lookups = Lookups(ca_file=ca_file, shared=self._shared)

    async def close(self) -> None:
        """Cancel look-ups still under way, close the HTTP session and the shared store's connections."""
        await self.lookups.close()
        if self._shared is not None:
            await self._shared.close()
