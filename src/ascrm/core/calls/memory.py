"""The in-memory call store: one process; bounded by a TTL, a grace period after EndCall, and a cap."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import datetime, timedelta

import structlog

from ascrm.core.calls.state import DEFAULT_HISTORY_BYTES, CallState, Command, DecisionRecord
from ascrm.core.calls.sticky import MemorySticky, StickySettings
from ascrm.core.calls.store import CallEndedError, UnknownCallError, settle_poll
from ascrm.core.engine import Decider, RuleSet
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, Decision

log = structlog.get_logger("ascrm.calls")
_SWEEP_EVERY = timedelta(seconds=1)  # idle calls are dropped at most this late after their TTL


class MemoryCallStore:
    """Keeps CallState per CallID in this process; the oldest-updated calls go first."""

    def __init__(
        self,
        *,
        ttl: timedelta = timedelta(hours=4),
        ended_grace: timedelta = timedelta(minutes=5),
        max_calls: int = 100_000,
        max_call_bytes: int = DEFAULT_HISTORY_BYTES,
    ) -> None:
        self._ttl = ttl
        self._max_call_bytes = max_call_bytes
        self._grace = ended_grace
        self._max_calls = max_calls
        self._calls: dict[int, CallState] = {}  # ordered by last update, oldest first
        self._ended: deque[tuple[datetime, int]] = deque()  # (drop at, call id), in order
        self._next_sweep: datetime | None = None
        self.evicted = 0  # calls dropped because of the cap
        self.unreadable = 0  # always: nothing is decoded

    def __len__(self) -> int:
        return len(self._calls)

    def sticky(self, settings: StickySettings) -> MemorySticky:
        """The last operators, kept in this process (calls/sticky.py)."""
        return MemorySticky(settings)

    async def update(self, event: CallEvent, now: datetime) -> CallState:
        """Apply event to its call (starting a state if the call is new) and return the state."""
        call_id = event.call_id or 0
        call = self._calls.pop(call_id, None)
        if call is None:
            call = CallState.begin(call_id, event, now)
        was_ended = call.ended
        call.apply(event, now, self._max_call_bytes)
        if call_id:
            self._calls[call_id] = call
            if call.ended and not was_ended:
                self._ended.append((now + self._grace, call_id))
            if len(self._calls) > self._max_calls or self._next_sweep is None or now >= self._next_sweep:
                self._evict(now)
        return call

    async def answer_poll(
        self, call_id: int, now: datetime, rules: RuleSet, decide: Decider
    ) -> tuple[CallState | None, Decision]:
        """A GET poll: the oldest pushed command, else the rules; the answer recorded in the same step."""
        call = self._calls.pop(call_id, None)
        if call is None:
            return None, NO_ACTION
        self._calls[call_id] = call
        call.polled(now)
        return call, settle_poll(call, now, rules, decide)

    def record(self, call_id: int, record: DecisionRecord) -> asyncio.Future[None]:
        """Remember an answer that carried an action (at once: the future returned is done)."""
        call = self._calls.get(call_id)
        if call is not None:
            call.decided(record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def get(self, call_id: int) -> CallState | None:
        """The state of a call, or None when it is unknown or expired."""
        return self._calls.get(call_id)

    async def calls(
        self,
        *,
        an: str | None = None,
        un: str | None = None,
        state: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[CallState], int]:
        """Calls matching the filters, most recently updated first, and how many match in all."""
        found = [
            call
            for call in reversed(self._calls.values())
            if (an is None or call.an == an)
            and (un is None or call.un == un)
            and (state is None or call.status == state)
        ]
        return found[offset : offset + limit], len(found)

    async def push(self, call_id: int, action: Action, param: str, now: datetime) -> tuple[Command, int]:
        """Queue a command for a live call; it and its position in the queue."""
        call = self._calls.get(call_id)
        if call is None:
            raise UnknownCallError(f"no call {call_id}")
        if call.ended:
            raise CallEndedError(f"call {call_id} has ended")
        return call.push(action, param, now)

    async def cancel(self, call_id: int, command_id: int) -> bool:
        """Drop a pending command; whether it was still pending."""
        call = self._calls.get(call_id)
        if call is None:
            raise UnknownCallError(f"no call {call_id}")
        return call.cancel_command(command_id)

    async def sweep(self, now: datetime) -> None:
        """Forget calls idle past the TTL or ended past the grace period (the timer's sweep)."""
        self._evict(now)

    async def counts(self) -> tuple[int, int]:
        """How many calls are held, and how many of those have ended."""
        return len(self._calls), sum(1 for call in self._calls.values() if call.ended_at is not None)

    async def ping(self) -> bool:
        """Always: memory answers."""
        return True

    async def close(self) -> None:
        """Nothing to release."""

    def _evict(self, now: datetime) -> None:
        self._next_sweep = now + _SWEEP_EVERY
        calls = self._calls
        while self._ended and self._ended[0][0] <= now:  # ended calls past their grace period
            calls.pop(self._ended.popleft()[1], None)
        while calls:
            oldest_id = next(iter(calls))
            oldest = calls[oldest_id]
            if now - oldest.updated_at > self._ttl:
                del calls[oldest_id]
            elif len(calls) > self._max_calls:
                del calls[oldest_id]
                self.evicted += 1
                log.warning("call_evicted", call_id=oldest_id, reason="max_calls", max_calls=self._max_calls)
            else:
                break
