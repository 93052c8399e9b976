"""A source's limits in one process: its token bucket, its circuit breaker and its latency histogram."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Final

LATENCY_BOUNDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""The upper bounds (seconds) of ascrm_lookup_seconds's buckets, +Inf after them."""

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"


class TokenBucket:
    """At most rate tokens a second, burst at once; never waits: take() says whether one was there."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._at = now

    def take(self, now: float) -> bool:
        """Take a token if one is there."""
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(slots=True)
class Breaker:
    """Opens after `failures` consecutive failures for `cooldown` seconds, then lets one trial through."""

    state: str = CLOSED
    failed: int = 0  # consecutive failures
    opened_at: float = 0.0
    trial: bool = False  # the half-open trial is under way

    def shown(self, now: float, cooldown: float) -> str:
        """closed, open, or half_open (an open breaker whose cooldown is over lets the next request through)."""
        if self.state == OPEN and now >= self.opened_at + cooldown:
            return HALF_OPEN
        return self.state

    def allow(self, now: float, cooldown: float) -> bool:
        """Whether a request may be sent now (in half-open: the one trial)."""
        if self.shown(now, cooldown) == CLOSED:
            return True
        if self.shown(now, cooldown) == OPEN or self.trial:
            return False
        self.state, self.trial = HALF_OPEN, True
        return True

    def abandon(self) -> None:
        """A request allowed was not sent after all: the trial is free again."""
        self.trial = False

    def succeeded(self) -> bool:
        """An answer came (a value or a miss): closed again; True when it was not closed before."""
        reopened = self.state != CLOSED
        self.state, self.failed, self.trial = CLOSED, 0, False
        return reopened

    def failed_once(self, now: float, threshold: int) -> bool:
        """An error or timeout; True when it opens the breaker now."""
        self.failed += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failed >= max(1, threshold)):
            self.state, self.opened_at, self.trial = OPEN, now, False
            return True
        return False


@dataclass(slots=True)
class Histogram:
    """Observations by LATENCY_BOUNDS (counts[i]: at most bounds[i]; the last: beyond them), their sum and count."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    sum: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at most it) as Prometheus's buckets have them, +Inf last."""
        total, buckets = 0, []
        for bound, n in zip((*LATENCY_BOUNDS, float("inf")), self.counts, strict=True):
            total += n
            buckets.append((bound, total))
        return buckets
