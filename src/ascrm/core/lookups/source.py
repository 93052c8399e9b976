"""A source's settings as a rule file gives them, and the outcome of one look-up."""

from __future__ import annotations

from dataclasses import dataclass

OUTCOMES = ("hit", "miss", "fetched", "error", "timeout", "rate_limited", "circuit_open", "stale")


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """How one source is asked: its time limit, cache and limits."""

    name: str
    timeout: float = 0.3  # seconds, one HTTP request
    ttl: float = 600.0  # a found value is reused this long
    miss_ttl: float = 60.0  # "nothing found" is remembered this long
    stale: float = 0.0  # on failure, the last good value answers while younger than this (0: never)
    rate: float | None = None  # requests per second to this source at most (None: unlimited)
    burst: int = 1  # token-bucket size
    failures: int = 5  # consecutive failures that open the circuit breaker
    cooldown: float = 30.0  # seconds it stays open, then one trial request


@dataclass(frozen=True, slots=True)
class Outcome:
    """A look-up's value (None: missing), how it was found (one of OUTCOMES), and the time it took."""

    value: str | None
    outcome: str
    seconds: float
