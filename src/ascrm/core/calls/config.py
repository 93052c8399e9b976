"""Where call state lives and for how long: the `state` section of the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Where call state lives and for how long."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ascrm:"
    ttl_seconds: int = 4 * 3600  # a call that never ends is dropped this long after its last event
    ended_grace_seconds: int = 300  # an ended call stays readable (late polls, the admin API) this long
    max_calls: int = 100_000
    timeout_ms: int = 1000  # the budget of one store operation before answering without it
    sweep_interval_ms: int = 1000  # how often expired calls are forgotten, whether or not requests come
    max_call_bytes: int = 64 * 1024  # event history kept per call; past it the oldest records are trimmed
