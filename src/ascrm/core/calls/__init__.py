"""Call state: what happened in each live call, and where it is kept."""

from __future__ import annotations

from datetime import timedelta

from ascrm.core.calls.config import StateSettings
from ascrm.core.calls.memory import MemoryCallStore
from ascrm.core.calls.state import CallState, Command, DecisionRecord
from ascrm.core.calls.store import CallEndedError, CallStore, StoreUnavailableError, UnknownCallError

__all__ = [
    "CallEndedError",
    "CallState",
    "CallStore",
    "Command",
    "DecisionRecord",
    "MemoryCallStore",
    "StoreUnavailableError",
    "UnknownCallError",
    "open_store",
]


def open_store(settings: StateSettings) -> CallStore:
    """The call store the settings ask for (connections are opened lazily)."""
    if settings.backend == "redis":
        from ascrm.core.calls.redis import RedisCallStore  # imported only when used

        return RedisCallStore(settings)
    return MemoryCallStore(
        ttl=timedelta(seconds=settings.ttl_seconds),
        ended_grace=timedelta(seconds=settings.ended_grace_seconds),
        max_calls=settings.max_calls,
        max_call_bytes=settings.max_call_bytes,
    )
