"""What one server's connections share: the limits in force, the counters, the sweep that closes
connections past their deadline, and the log of connections refused at the cap (one line per interval)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Collection
from typing import Protocol

import structlog

from ascrm.service.settings import Limits
from ascrm.service.stats import ConnectionStats

log = structlog.get_logger("ascrm.edge")

SWEEP_SECONDS = 0.25  # how often deadlines are checked: a timeout fires up to this much late
SWEEP_BATCH = 64  # connections expired per turn of the event loop
REFUSAL_LOG_SECONDS = 10.0


class Expiring(Protocol):
    """A connection with a deadline (loop time; 0: none) and what to do when it passes."""

    deadline: float

    def expire(self) -> None:
        """Close the connection (answering 408 where a request is partly read)."""


class RefusalLog:
    """Connections refused at the cap: the first one logged at once, then a count per interval."""

    def __init__(
        self,
        setting: str = "limits.max_connections",
        interval: float = REFUSAL_LOG_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._setting = setting
        self._interval = interval
        self._clock = clock
        self._pending = 0
        self._since = 0.0
        self._next = 0.0

    def note(self, limit: int) -> None:
        """Count one refused connection; log if the interval has passed."""
        if not self._pending:
            self._since = self._clock()
        self._pending += 1
        self.flush(limit)

    def flush(self, limit: int) -> None:
        """Log the refusals counted so far, if any and if the interval has passed."""
        now = self._clock()
        if self._pending and now >= self._next:
            log.warning(
                "connections_refused",
                refused=self._pending,
                seconds=round(now - self._since, 3),
                limit=limit,
                setting=self._setting,
            )
            self._pending = 0
            self._next = now + self._interval


class ConnectionGuard:
    """The edge's state for one server: limits, counters, the cap, and whether it is draining."""

    def __init__(
        self, limits: Limits, stats: ConnectionStats, max_connections: int, proxies: tuple[str, ...] = ()
    ) -> None:
        self.limits = limits
        self.stats = stats
        self.max_connections = max_connections
        self.draining = False
        self.refusals = RefusalLog()
        self.client_refusals = RefusalLog("limits.max_connections_per_client")
        self._per_client: dict[str, int] = {}  # open connections by peer address (only peers with any open)
        self._proxies = tuple(ipaddress.ip_network(value, strict=False) for value in proxies)
        stats.limit = max_connections

    def admit_client(self, host: str | None) -> bool:
        """Count a new connection from host; False (and counted as refused) past its per-address cap.

        A trusted proxy (listen.forwarded_allow_ips) carries many clients, so its connections are not capped."""
        if host is None or self._is_proxy(host):
            return True
        count = self._per_client.get(host, 0)
        if count >= self.limits.max_connections_per_client:
            self.stats.refused_per_client += 1
            self.client_refusals.note(self.limits.max_connections_per_client)
            return False
        self._per_client[host] = count + 1
        return True

    def release_client(self, host: str | None) -> None:
        """Forget one connection of host (admitted by admit_client)."""
        if host is None or host not in self._per_client:
            return
        if self._per_client[host] > 1:
            self._per_client[host] -= 1
        else:
            del self._per_client[host]

    def _is_proxy(self, host: str) -> bool:
        if not self._proxies:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._proxies)

    def refuse(self) -> None:
        """Count (and log, aggregated) a connection closed at accept because the cap was reached."""
        self.stats.refused += 1
        self.refusals.note(self.max_connections)

    async def sweep(self, connections: Collection[Expiring], interval: float = SWEEP_SECONDS) -> None:
        """Until cancelled: close every connection whose deadline has passed."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            expired = [c for c in connections if 0 < c.deadline <= now]
            for start in range(0, len(expired), SWEEP_BATCH):
                if start:
                    await asyncio.sleep(0)  # let requests in between: a thousand closes at once would stall them
                for connection in expired[start : start + SWEEP_BATCH]:
                    if 0 < connection.deadline <= now:  # not answered or closed meanwhile
                        connection.expire()
            self.refusals.flush(self.max_connections)
            self.client_refusals.flush(self.limits.max_connections_per_client)
