"""Sweeping expired calls on a timer, so the listing and the metrics forget them without new traffic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog

from ascrm.core.calls.store import CallStore, StoreUnavailableError

log = structlog.get_logger("ascrm.calls")


async def sweep_periodically(
    store: CallStore, clock: Callable[[], datetime], interval: float, stop: asyncio.Event
) -> None:
    """Sweep store every interval seconds until stop is set; an outage is logged once, not every time."""
    failing = False
    while True:
        try:
            await asyncio.wait_for(stop.wait(), interval)
            return
        except TimeoutError:
            pass
        try:
            await store.sweep(clock())
        except StoreUnavailableError as exc:
            if not failing:
                log.warning("store_sweep_failed", error=str(exc))
            failing = True
            continue
        except Exception:
            log.exception("store_sweep_failed")
            continue
        if failing:
            log.info("store_sweep_recovered")
            failing = False
