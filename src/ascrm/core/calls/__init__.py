"""Call state: what happened in each live call, and where it is kept.

The names below are imported from their modules on first use, so that importing `calls.state` (which
the rule engine does) does not import the stores (which import the rule engine).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ascrm.core.calls.config import StateSettings

if TYPE_CHECKING:
    from ascrm.core.calls.memory import MemoryCallStore
    from ascrm.core.calls.state import CallState, Command, DecisionRecord
    from ascrm.core.calls.store import (
        CallEndedError,
        CallStore,
        StoreUnavailableError,
        UnknownCallError,
        UnreadableRecordError,
    )

_PUBLIC = {
    "CallEndedError": "store",
    "CallState": "state",
    "CallStore": "store",
    "Command": "state",
    "DecisionRecord": "state",
    "MemoryCallStore": "memory",
    "StoreUnavailableError": "store",
    "UnknownCallError": "store",
    "UnreadableRecordError": "store",
}

__all__ = [
    "CallEndedError",
    "CallState",
    "CallStore",
    "Command",
    "DecisionRecord",
    "MemoryCallStore",
    "StateSettings",
    "StoreUnavailableError",
    "UnknownCallError",
    "UnreadableRecordError",
    "open_store",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module the first time it is asked for."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ascrm.core.calls' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ascrm.core.calls.{module}"), name)
    globals()[name] = value
    return value


def open_store(settings: StateSettings, *, observe: Callable[[str, float], None] | None = None) -> CallStore:
    """The call store the settings ask for (connections are opened lazily). observe(operation, seconds)
    is told how long each operation of the Redis store took."""
    if settings.backend == "redis":
        from ascrm.core.calls.redis import RedisCallStore  # imported only when used

        return RedisCallStore(settings, observe)
    from ascrm.core.calls.memory import MemoryCallStore

    return MemoryCallStore(
        ttl=timedelta(seconds=settings.ttl_seconds),
        ended_grace=timedelta(seconds=settings.ended_grace_seconds),
        max_calls=settings.max_calls,
        max_call_bytes=settings.max_call_bytes,
    )
