"""Every source's look-ups for one process: the HTTP session, the caches, the limits and the counters.

A look-up answers, in this order: from the process's cache ("hit", the value or None for a miss
remembered); by joining the identical look-up already under way (its outcome, whichever caller started
it); from the shared store when there is one ("hit"); else by a request, when the source's circuit
breaker and rate let one go ("fetched" or "miss"; "error", "timeout", "circuit_open", "rate_limited"
otherwise). A failure is answered by the last good value instead ("stale") while it is younger than
the source's `stale`. A caller whose deadline passes stops waiting ("timeout" or "stale"); the request
goes on for the others, and its answer is cached for the next.

The shared store is asked within a part of the caller's remaining time; when it fails or is slow, the
look-ups go on with this process's cache and limits alone, and leave it alone for a second.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import aiohttp
import structlog

from ascrm.core.lookups.cache import CacheKey, Entry, LocalCache
from ascrm.core.lookups.fetch import Fetched, client_session, fetch
from ascrm.core.lookups.limits import CLOSED, Breaker, Histogram, TokenBucket
from ascrm.core.lookups.request import Extract, LookupRequest
from ascrm.core.lookups.shared import SharedEntry, SharedStore
from ascrm.core.lookups.source import Outcome, SourceSettings

log = structlog.get_logger("ascrm.lookups")

FAILURES: Final = frozenset({"error", "timeout", "rate_limited", "circuit_open"})
"""The outcomes that the last good value answers instead of, while it is young enough."""

_SHARED_MOST: Final = 0.1  # seconds one shared-store operation may take at most
_SHARED_SHARE: Final = 0.5  # of a look-up's remaining time, for one shared-store operation at most
_SHARED_LEAST: Final = 0.001  # seconds left below which the shared store is not asked
_SHARED_PAUSE: Final = 1.0  # seconds the shared store is left alone after it failed

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Result:
    outcome: str
    value: str | None = None


class _Source:
    """One source's limits, as its latest settings give them."""

    def __init__(self, settings: SourceSettings, now: float) -> None:
        self.settings = settings
        self.bucket = TokenBucket(settings.rate, settings.burst, now) if settings.rate is not None else None
        self.breaker = Breaker()

    def update(self, settings: SourceSettings, now: float) -> None:
        """New settings (the rules reloaded): a new bucket if its rate or size changed; the breaker stays."""
        if (settings.rate, settings.burst) != (self.settings.rate, self.settings.burst):
            self.bucket = TokenBucket(settings.rate, settings.burst, now) if settings.rate is not None else None
        self.settings = settings


class Lookups:
    """Every source's look-ups for one process: one aiohttp ClientSession, caches, limits, counters."""

    def __init__(
        self,
        *,
        ca_file: Path | None = None,
        shared: SharedStore | None = None,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ca_file = ca_file
        self._shared = shared
        self._clock = clock  # the caches', buckets' and breakers' time (seconds)
        self._cache = LocalCache(max_entries)
        self._session: aiohttp.ClientSession | None = None
        self._flights: dict[CacheKey, asyncio.Future[_Result]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sources: dict[str, _Source] = {}
        self._shared_ok = True
        self._shared_paused_until = 0.0  # on the loop's clock
        self.counts: dict[tuple[str, str], int] = {}
        """(source, outcome) -> look-ups (ascrm_lookup_total)."""
        self.seconds: dict[str, Histogram] = {}
        """source -> the time its look-ups took their callers (ascrm_lookup_seconds)."""

    async def look_up(
        self, source: SourceSettings, request: LookupRequest, extract: Extract, *, deadline: float
    ) -> Outcome:
        """The value of request at source, by deadline (the running loop's time) at the latest."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await self._answer(source, request, extract, deadline, loop)
        seconds = loop.time() - started
        self._count(source.name, result.outcome, seconds)
        return Outcome(result.value, result.outcome, seconds)

    def cached(self, source: SourceSettings, request: LookupRequest) -> Outcome | None:
        """The value of request at source when this process's cache holds a fresh answer ("hit"), at once;
        None when it must be looked up (then look_up() is asked)."""
        entry = self._cache.fresh((source.name, request), self._clock())
        if entry is None:
            return None
        self._count(source.name, "hit", 0.0)
        return entry.hit

    def breaker(self, name: str) -> str:
        """The circuit breaker of a source: "closed", "open" or "half_open"."""
        state = self._sources.get(name)
        if state is None:
            return CLOSED
        return state.breaker.shown(self._clock(), state.settings.cooldown)

    async def close(self) -> None:
        """Stop the requests under way and close the HTTP session."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _count(self, name: str, outcome: str, seconds: float) -> None:
        """One look-up of source name in counts and in its latency histogram."""
        self.counts[name, outcome] = self.counts.get((name, outcome), 0) + 1
        histogram = self.seconds.get(name)
        if histogram is None:
            histogram = self.seconds[name] = Histogram()
        histogram.observe(seconds)

    async def _answer(
        self,
        source: SourceSettings,
        request: LookupRequest,
        extract: Extract,
        deadline: float,
        loop: asyncio.AbstractEventLoop,
    ) -> _Result:
        key = (source.name, request)
        entry = self._cache.fresh(key, self._clock())
        if entry is not None:
            return _Result("hit", entry.value)
        flight = self._flights.get(key)
        if flight is None:
            if loop.time() >= deadline:
                return self._instead(key, "timeout")
            flight = loop.create_future()
            self._flights[key] = flight
            task = loop.create_task(self._fly(source, request, extract, key, deadline=deadline, flight=flight))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not flight.done():
            # asyncio.wait never cancels what it waits for: the request goes on for the others
            await asyncio.wait((flight,), timeout=max(0.0, deadline - loop.time()))
        if not flight.done():
            return self._instead(key, "timeout")
        result = flight.result()
        return self._instead(key, result.outcome) if result.outcome in FAILURES else result

    def _instead(self, key: CacheKey, outcome: str) -> _Result:
        """A failure's answer: the last good value while it is young enough, else the failure."""
        now = self._clock()
        entry = self._cache.get(key, now)
        stale = entry.stale_value(now) if entry is not None else None
        return _Result("stale", stale) if stale is not None else _Result(outcome)

    async def _fly(
        self,
        source: SourceSettings,
        request: LookupRequest,
        extract: Extract,
        key: CacheKey,
        *,
        deadline: float,
        flight: asyncio.Future[_Result],
    ) -> None:
        """The one request of identical look-ups; its answer is cached here, then in the shared store."""
        result = _Result("error")
        try:
            result = await self._obtain(source, request, extract, key, deadline)
        except Exception as error:  # a fault of the engine itself: the look-up fails, the process goes on
            log.exception("lookup_failed", source=source.name, outcome="error", error=type(error).__name__)
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if not flight.done():
                flight.set_result(result)
        if self._shared is not None and result.outcome in ("fetched", "miss"):
            shared = self._shared
            expires_in = source.ttl if result.outcome == "fetched" else source.miss_ttl
            loop = asyncio.get_running_loop()
            await self._shared_call(
                lambda: shared.set(source.name, request.key(), result.value, expires_in), loop.time() + _SHARED_MOST
            )

    async def _obtain(
        self, source: SourceSettings, request: LookupRequest, extract: Extract, key: CacheKey, deadline: float
    ) -> _Result:
        shared = self._shared
        if shared is not None:
            found = await self._shared_call(lambda: shared.get(source.name, request.key()), deadline)
            if isinstance(found, SharedEntry):
                self._cache.put(key, self._from_shared(source, found))
                return _Result("hit", found.value)
        now = self._clock()
        state = self._state(source, now)
        if not state.breaker.allow(now, source.cooldown):
            return _Result("circuit_open")
        if not await self._rate_token(source, state, now, deadline):
            state.breaker.abandon()
            return _Result("rate_limited")
        loop = asyncio.get_running_loop()
        fetched = await fetch(self._http(), request, extract, min(source.timeout, deadline - loop.time()))
        return self._fetched(source, state, key, fetched)

    def _fetched(self, source: SourceSettings, state: _Source, key: CacheKey, fetched: Fetched) -> _Result:
        now = self._clock()
        if fetched.outcome in ("fetched", "miss"):
            if state.breaker.succeeded():
                log.info("lookup_circuit_closed", source=source.name)
            if fetched.value is None:
                self._cache.put(key, Entry(None, now + source.miss_ttl, now))
            else:
                self._cache.put(key, Entry(fetched.value, now + source.ttl, now + source.stale))
            return _Result(fetched.outcome, fetched.value)
        log.warning(
            "lookup_failed", source=source.name, outcome=fetched.outcome, status=fetched.status, error=fetched.error
        )
        if state.breaker.failed_once(now, source.failures):
            log.warning(
                "lookup_circuit_opened", source=source.name, failures=state.breaker.failed, cooldown=source.cooldown
            )
        return _Result(fetched.outcome)

    def _from_shared(self, source: SourceSettings, found: SharedEntry) -> Entry:
        """A shared answer as this process keeps it: its age is what its cache period has used up."""
        now = self._clock()
        if found.value is None:
            return Entry(None, now + found.expires_in, now)
        fetched_at = now - max(0.0, source.ttl - found.expires_in)
        return Entry(found.value, now + found.expires_in, fetched_at + source.stale)

    def _state(self, source: SourceSettings, now: float) -> _Source:
        state = self._sources.get(source.name)
        if state is None:
            state = self._sources[source.name] = _Source(source, now)
        elif state.settings != source:
            state.update(source, now)
        return state

    async def _rate_token(self, source: SourceSettings, state: _Source, now: float, deadline: float) -> bool:
        """A token of this process's bucket, then of the replicas' window (when the shared store answers)."""
        if state.bucket is None or source.rate is None:
            return True
        if not state.bucket.take(now):
            return False
        shared = self._shared
        if shared is None:
            return True
        # a window of one second, or of as many as hold one request when the rate is lower
        window = 1.0 if source.rate >= 1 else float(math.ceil(1 / source.rate))
        limit = max(1, math.floor(source.rate * window))
        taken = await self._shared_call(lambda: shared.take(source.name, limit, window), deadline)
        return taken is not False

    async def _shared_call(self, operation: Callable[[], Awaitable[T]], deadline: float) -> T | None:
        """What operation answers, within part of the time left; None when the store failed or is left alone."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._shared_paused_until or deadline - now < _SHARED_LEAST:
            return None
        try:
            async with asyncio.timeout_at(min(deadline, now + min(_SHARED_MOST, _SHARED_SHARE * (deadline - now)))):
                answer = await operation()
        except Exception as error:  # down, slow, refused: this process's cache and limits answer alone
            self._shared_paused_until = loop.time() + _SHARED_PAUSE
            if self._shared_ok:
                self._shared_ok = False
                log.warning("lookup_shared_unavailable", error=type(error).__name__)
            return None
        if not self._shared_ok:
            self._shared_ok = True
            log.info("lookup_shared_recovered")
        return answer

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = client_session(self._ca_file)
        return self._session
