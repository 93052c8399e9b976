"""Readiness checked in the background: one store check per interval, whatever the request rate.

`GET /ready` reads the outcome of the last check; it never reaches the store itself, so a flood of
health checks costs the store nothing and can never take a connection a platform request needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import structlog

from ascrm.core.calls.store import CallStore

log = structlog.get_logger("ascrm.readiness")


@dataclass(frozen=True, slots=True)
class StoreCheck:
    """The outcome of one background check of the call store."""

    ok: bool
    at: float  # time.monotonic() when the check finished


class Readiness:
    """The last store check, refreshed by run(); stale when the checks stop coming in."""

    def __init__(self, store: CallStore, interval: float, timeout: float) -> None:
        self._store = store
        self._interval = interval
        self._stale_after = 3 * interval + timeout  # a check that hangs past its budget, twice over
        self._last: StoreCheck | None = None

    def current(self) -> tuple[bool, str]:
        """Whether the store is usable, and why: `ok`, `unavailable`, `unchecked` or `stale`."""
        last = self._last
        if last is None:
            return False, "unchecked"
        if time.monotonic() - last.at > self._stale_after:
            return False, "stale"
        return (True, "ok") if last.ok else (False, "unavailable")

    async def check(self) -> StoreCheck:
        """Check the store once (store.ping() is bounded by the store's own budget) and remember it."""
        ok = await self._store.ping()
        previous, self._last = self._last, StoreCheck(ok, time.monotonic())
        if previous is None or previous.ok != ok:
            log.info("store_readiness", ok=ok)
        return self._last

    async def run(self, stop: asyncio.Event) -> None:
        """Check every interval until stop is set."""
        while not stop.is_set():
            try:
                await self.check()
            except Exception:  # a check must never end the loop
                log.exception("store_check_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
