"""The in-memory call store: bounded by a TTL since the last event and by a cap on live calls."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from ascrm.calls.state import CallState
from ascrm.protocol import CallEvent

log = structlog.get_logger("ascrm.calls")
_SWEEP_EVERY = timedelta(seconds=1)  # idle calls are dropped at most this late after their TTL


class MemoryCallStore:
    """Keeps CallState per CallID in one process; oldest-updated calls go first."""

    def __init__(self, *, ttl: timedelta = timedelta(hours=4), max_calls: int = 100_000) -> None:
        self._ttl = ttl
        self._max_calls = max_calls
        self._calls: dict[int, CallState] = {}  # ordered by last update, oldest first
        self._next_sweep: datetime | None = None

    def __len__(self) -> int:
        return len(self._calls)

    async def update(self, event: CallEvent, now: datetime) -> CallState:
        """Apply event to its call (starting a state if the call is new) and return the state."""
        call_id = event.call_id or 0
        call = self._calls.pop(call_id, None)
        if call is None:
            call = CallState.begin(call_id, event, now)
        call.apply(event, now)
        if call_id:
            self._calls[call_id] = call
            if len(self._calls) > self._max_calls or self._next_sweep is None or now >= self._next_sweep:
                self._evict(now)
        return call

    async def get(self, call_id: int) -> CallState | None:
        """The state of a call, or None when it is unknown or expired."""
        return self._calls.get(call_id)

    async def poll(self, call_id: int, now: datetime) -> CallState | None:
        """Record a GET poll of a call (talk time starts at the first one); None if the call is unknown."""
        call = self._calls.get(call_id)
        if call is not None:
            call.polled(now)
        return call

    async def fired(self, call_id: int, rule_id: str) -> None:
        """Remember that a poll rule answered this call."""
        call = self._calls.get(call_id)
        if call is not None:
            call.fired_polls.add(rule_id)

    def _evict(self, now: datetime) -> None:
        self._next_sweep = now + _SWEEP_EVERY
        calls = self._calls
        while calls:
            oldest_id = next(iter(calls))
            oldest = calls[oldest_id]
            if now - oldest.updated_at > self._ttl:
                del calls[oldest_id]
            elif len(calls) > self._max_calls:
                del calls[oldest_id]
                log.warning("call_evicted", call_id=oldest_id, reason="max_calls", max_calls=self._max_calls)
            else:
                break
