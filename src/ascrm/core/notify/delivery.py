"""The delivery loop: due notifications leased from the outbox, sent to their targets, settled.

A notification is sent by its target (at most `concurrency` in flight per target) and then settled:
delivered; retried after a backoff (doubled each attempt, jittered, never shorter than the receiver's
Retry-After) until its created_at plus give_up_after, then failed; failed at once when its target
rejected it. Its target gone from the rule files (a reload) is retried like an error, as it may come back.

The loop leases no more than its targets can have in flight at once, so a leased notification starts soon
(its lease outliving claim_after is no double delivery here: a key under way is not started twice).
Nothing a target or the outbox raises stops the loop: it is logged, and the loop backs off.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Final, Literal

import aiohttp
import structlog

from ascrm.core.notify.message import Leased, NotifySettings, OutboxError
from ascrm.core.notify.outbox import Outbox
from ascrm.core.notify.target import Sent, Target

log = structlog.get_logger("ascrm.notify")

BATCH: Final = 100  # notifications leased at most at once
SHUTDOWN_GRACE: Final = 2.0  # seconds the sends under way get to finish when the loop is cancelled
ATTEMPT_GRACE: Final = 1.0  # seconds past attempt_timeout after which a target's send is cut short
OUTBOX_BACKOFF_MAX: Final = 30.0  # seconds between two tries of an outbox that keeps failing
UNKNOWN_TARGET: Final = "unknown target"
MAX_DETAIL: Final = 300  # characters of an outbox error's message logged


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """How one attempt at a notification was settled, for the metrics."""

    target: str
    outcome: Literal["delivered", "retried", "failed"]
    seconds: float  # from the notification's created_at to its settling
    attempts: int  # this one included


class Deliverer:
    """The loop that delivers an outbox's notifications to their targets; run() until cancelled."""

    def __init__(
        self,
        outbox: Outbox,
        targets: Callable[[], Mapping[str, Target]],
        session: aiohttp.ClientSession,
        settings: NotifySettings,
        *,
        clock: Callable[[], float] = time.time,
        observe: Callable[[DeliveryOutcome], None] | None = None,
        rng: random.Random | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE,
    ) -> None:
        """targets: the current targets by name (asked each round, so a reload is seen)."""
        self._outbox = outbox
        self._targets = targets
        self._session = session
        self._settings = settings
        self._clock = clock
        self._observe = observe
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter, not secrets)
        self._grace = shutdown_grace
        self._wake = asyncio.Event()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._held: dict[str, asyncio.Task[None]] = {}  # by key: leased, not settled yet
        self._more = False  # the last lease was cut by the room left: more may be due
        self._outbox_failures = 0

    @property
    def held(self) -> int:
        """Notifications leased and not settled yet."""
        return len(self._held)

    def wake(self) -> None:
        """New notifications were put: look for them now rather than after poll_interval."""
        self._wake.set()

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Seconds to wait after attempt number attempts + 1 failed: backoff_initial doubled per attempt
        before, up to backoff_max, jittered in [0.5, 1] of that; never less than retry_after (up to backoff_max)."""
        settings = self._settings
        wait = min(settings.backoff_max, settings.backoff_initial * 2.0 ** min(attempts, 64))
        wait *= self._rng.uniform(0.5, 1.0)
        if retry_after is not None:
            wait = max(wait, min(retry_after, settings.backoff_max))
        return wait

    async def run(self) -> None:
        """Deliver until cancelled; then give the sends under way shutdown_grace seconds, and leave the rest
        leased (the lease expires, or is voided when the outbox is opened next)."""
        try:
            while True:
                self._wake.clear()
                try:
                    await self._round()
                except Exception as error:  # the outbox failed (or anything else): log, back off, go on
                    self._outbox_failures += 1
                    pause = self._outbox_pause()
                    log.warning("notification_outbox_error", **_outbox_error(error), retry_in=round(pause, 3))
                    await asyncio.sleep(pause)
                    continue
                self._outbox_failures = 0
                if self._more and len(self._held) < self._budget(self._targets()):
                    await asyncio.sleep(0)  # more are due and can start: lease again now
                    continue
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.poll_interval):
                        await self._wake.wait()
        finally:
            await self._stop()

    def _outbox_pause(self) -> float:
        return min(OUTBOX_BACKOFF_MAX, self._settings.poll_interval * 2.0 ** min(self._outbox_failures, 16))

    def _budget(self, targets: Mapping[str, Target]) -> int:
        """Leased notifications held at most: what the targets can have in flight at once."""
        return self._settings.concurrency * max(1, len(targets))

    async def _round(self) -> None:
        targets = self._targets()
        room = min(BATCH, self._budget(targets) - len(self._held))
        if room <= 0:
            self._more = True
            return
        leased = await self._outbox.lease(room, self._clock())
        started = 0
        for one in leased:
            key = one.notification.key
            if key not in self._held:  # else still under way here: its lease outlived claim_after
                target = targets.get(one.notification.target)
                self._held[key] = asyncio.create_task(self._deliver(one, target), name=f"notify {key}")
                started += 1
        self._more = len(leased) == room and started > 0

    async def _deliver(self, leased: Leased, target: Target | None) -> None:
        notification = leased.notification
        try:
            if target is None:
                sent = Sent("retry", error=UNKNOWN_TARGET)
            else:
                slot = self._slots.setdefault(notification.target, asyncio.Semaphore(self._settings.concurrency))
                async with slot:
                    sent = await self._attempt(target, leased)
            await self._settle(leased, sent)
        except Exception as error:  # the outbox failed to settle it: it comes back when its lease expires
            log.warning(
                "notification_settle_error",
                target=notification.target,
                kind=notification.kind,
                call_id=notification.call_id,
                key=notification.key,
                **_outbox_error(error),
            )
        finally:
            self._held.pop(notification.key, None)
            if self._more:
                self._wake.set()

    async def _attempt(self, target: Target, leased: Leased) -> Sent:
        timeout = self._settings.attempt_timeout
        try:
            async with asyncio.timeout(timeout + ATTEMPT_GRACE):
                return await target.send(self._session, leased.notification, timeout)
        except Exception as error:  # a target that broke its promise never to raise, or to keep its time
            return Sent("retry", error=type(error).__name__)

    async def _settle(self, leased: Leased, sent: Sent) -> None:
        notification = leased.notification
        now = self._clock()
        attempts = leased.attempts + 1
        fields = {
            "target": notification.target,
            "kind": notification.kind,
            "call_id": notification.call_id,
            "key": notification.key,
            "attempts": attempts,
        }
        if sent.outcome == "delivered":
            await self._outbox.delivered(leased)
            log.info("notification_delivered", **fields, status=sent.status)
            self._tell(leased, "delivered", now)
            return
        error = sent.error or (f"HTTP {sent.status}" if sent.status is not None else sent.outcome)
        if sent.outcome == "retry":
            wait = self.backoff(leased.attempts, sent.retry_after)
            give_up_after = self._settings.give_up_after
            if now + wait <= notification.created_at + give_up_after:
                await self._outbox.retry_at(leased, now + wait, error)
                log.warning("notification_retry", **fields, error=error, status=sent.status, retry_in=round(wait, 3))
                self._tell(leased, "retried", now)
                return
            error = f"gave up after {duration(give_up_after)}: {error}"
        await self._outbox.fail(leased, error)
        log.warning("notification_failed", **fields, error=error, status=sent.status)
        self._tell(leased, "failed", now)

    def _tell(self, leased: Leased, outcome: Literal["delivered", "retried", "failed"], now: float) -> None:
        if self._observe is None:
            return
        notification = leased.notification
        seconds = max(0.0, now - notification.created_at)
        told = DeliveryOutcome(notification.target, outcome, seconds, leased.attempts + 1)
        try:
            self._observe(told)
        except Exception as error:  # the metrics must not stop a delivery
            log.warning("notification_observe_error", error=type(error).__name__)

    async def _stop(self) -> None:
        tasks = list(self._held.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self._grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


def _outbox_error(error: Exception) -> dict[str, str]:
    """An error's class, and an OutboxError's own message (a path, the storage's words: no secret)."""
    told = {"error": type(error).__name__}
    if isinstance(error, OutboxError):
        told["detail"] = str(error)[:MAX_DETAIL]
    return told


def duration(seconds: float) -> str:
    """seconds as the admin reads them: 24h, 90m, 45s, 1.5s."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
