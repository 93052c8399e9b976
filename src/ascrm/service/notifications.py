"""The service's notifications: the outbox of its store's kind, the delivery loop, and the request path's side.

Memory store: a SQLite file `<state.data_dir>/notifications.sqlite3` (without data_dir, an in-memory
database: lost at exit, which start-up logs). Redis store: a stream with a consumer group in the same
Redis, so every replica delivers and claims a dead one's. The request path only stores (within the
store's budget, state.timeout_ms) and wakes the delivery loop; it never waits on a receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence

import aiohttp
import structlog
from redis.asyncio import Redis

from ascrm.core.calls.redis import RedisCallStore
from ascrm.core.calls.redis_connection import connection_pool
from ascrm.core.calls.store import CallStore
from ascrm.core.lookups.fetch import client_session
from ascrm.core.notify.delivery import Deliverer, DeliveryOutcome
from ascrm.core.notify.message import Notification, NotifySettings, OutboxError, OutboxFullError
from ascrm.core.notify.outbox import Outbox
from ascrm.core.notify.redis_outbox import RedisOutbox
from ascrm.core.notify.sqlite_outbox import SqliteOutbox
from ascrm.core.notify.target import Target
from ascrm.service.settings import Settings
from ascrm.service.stats import Stats

log = structlog.get_logger("ascrm.notify")

OUTBOX_FILE = "notifications.sqlite3"
_PENDING_EVERY = 5.0  # seconds between two reads of the pending counts (the metrics' gauge)
_REDIS_CONNECTIONS = 8  # the Redis outbox's own pool and its calls in flight (requests' stores, delivery's settling)


class Notifications:
    """Set up with an outbox and the targets of the rules being served, then: store() on the request path,
    run() in the background (delivery and the pending counts), close() at exit."""

    def __init__(
        self,
        outbox: Outbox,
        targets: Callable[[], Mapping[str, Target]],
        settings: NotifySettings,
        stats: Stats,
        *,
        store_timeout: float,
        session: aiohttp.ClientSession,
        durable: bool,
        closing: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.outbox, self.settings, self.durable = outbox, settings, durable
        self._stats, self._timeout, self._session, self._closing = stats, store_timeout, session, closing
        self.pending: Mapping[str, int] = {}  # by target, as of the last read (metrics, admin)
        self._deliverer = Deliverer(outbox, targets, session, settings, observe=self._observe)

    async def store(self, notifications: Sequence[Notification]) -> None:
        """Store what an answer made before the answer goes out; never raises (the answer matters more)."""
        try:
            async with asyncio.timeout(self._timeout):
                stored = await self.outbox.put(notifications)
        except OutboxFullError:
            self._refused(notifications, "dropped", "notify_outbox_full", f"{self.settings.max_pending} pending")
            return
        except (OutboxError, TimeoutError) as exc:
            self._refused(notifications, "lost", "notification_lost", str(exc) or type(exc).__name__)
            return
        if stored:
            for note in notifications:
                self._stats.count_notification(note.target, "queued")
            self._deliverer.wake()

    def _refused(self, notifications: Sequence[Notification], outcome: str, event: str, why: str) -> None:
        """Notifications the outbox did not store, counted and logged (their keys: a receiver's to check)."""
        for note in notifications:
            self._stats.count_notification(note.target, outcome)
        log.error(event, error=why, keys=[note.key for note in notifications])

    def wake(self) -> None:
        """Have the delivery loop look at the outbox now (a notification was stored or retried)."""
        self._deliverer.wake()

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until stopping is set; keep the pending counts fresh."""
        delivering = asyncio.create_task(self._deliverer.run())
        try:
            while not stopping.is_set():
                await self._read_pending()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), _PENDING_EVERY)
        finally:
            delivering.cancel()
            await asyncio.gather(delivering, return_exceptions=True)

    async def close(self) -> None:
        """Let go of the outbox and the HTTP session (pending notifications stay in the outbox)."""
        await self.outbox.close()
        await self._session.close()
        if self._closing is not None:
            await self._closing()

    async def _read_pending(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                self.pending = dict(await self.outbox.pending_counts())
        except (OutboxError, TimeoutError) as exc:
            log.warning("notify_pending_unknown", error=str(exc) or type(exc).__name__)

    def _observe(self, outcome: DeliveryOutcome) -> None:
        self._stats.count_notification(outcome.target, outcome.outcome)
        if outcome.outcome == "delivered":
            self._stats.observe_delivery(outcome.target, outcome.seconds)


async def open_notifications(
    service: Settings, store: CallStore, targets: Callable[[], Mapping[str, Target]], *, stats: Stats
) -> Notifications:
    """The notifications of a service whose call store is store; OutboxError when its outbox cannot open."""
    state, settings = service.state, service.notify
    outbox: Outbox
    closing: Callable[[], Awaitable[None]] | None = None
    if isinstance(store, RedisCallStore):
        pool = connection_pool(state, max_connections=_REDIS_CONNECTIONS, timeout=state.timeout_ms / 1000)
        client = Redis(connection_pool=pool)
        consumer = f"{socket.gethostname()}:{os.getpid()}"
        redis_outbox = RedisOutbox(
            client,
            state.key_prefix,
            consumer,
            settings,
            timeout=state.timeout_ms / 1000,
            connections=_REDIS_CONNECTIONS,
        )
        try:
            async with asyncio.timeout(state.timeout_ms / 1000):
                await redis_outbox.start()
        except (OutboxError, TimeoutError) as exc:  # Redis away at start-up: made at the first put or lease
            log.warning("notify_outbox_not_ready", error=str(exc) or "Redis did not answer")
        outbox, durable, closing = redis_outbox, True, pool.aclose
    else:
        path = None if state.data_dir is None else state.data_dir / OUTBOX_FILE
        outbox, durable = await SqliteOutbox.open(path, settings), path is not None
    return Notifications(
        outbox,
        targets,
        settings,
        stats,
        store_timeout=state.timeout_ms / 1000,
        session=client_session(service.lookups.ca_file),
        durable=durable,
        closing=closing,
    )
