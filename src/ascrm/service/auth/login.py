"""What every Basic-auth check shares: failure budgets per client and per user, the KDF pool, the log.

One LoginGuard serves every role of an app (platform, admin, metrics, openapi), so a client that
fails on one endpoint has used its budget on all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ascrm.errors import AscrmError
from ascrm.service.auth.failures import FailureTally
from ascrm.service.auth.kdf import KdfBusyError, KdfPool
from ascrm.service.auth.throttle import FailureBudget

T = TypeVar("T")
UNKNOWN_CLIENT = "-"
_MAX_USER = 64  # characters of a user name kept as a key and logged


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """How many failed logins are allowed, and what checking a password may cost."""

    window_seconds: int = 60  # failures count within a window of this length
    per_client: int = 10  # failures per client address in a window; past it, 429 without a check
    per_user: int = 100  # failures per user name in a window; past it, a client that failed gets 429
    tracked_keys: int = 10_000  # client addresses and user names remembered (each budget), at most
    kdf_workers: int = 1  # password hash checks running at once
    kdf_queue: int = 16  # more waiting; past it, 503 without a check
    log_interval_seconds: int = 60  # one aggregated `auth_failed` line per client and user per interval
    log_max_keys: int = 1000  # distinct (client, user) lines per interval; the rest in one line


class LoginRefusedError(AscrmError):
    """A login attempt refused without checking its password: the HTTP status and when to retry."""

    def __init__(self, status: int, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class Attempt:
    """One login attempt that passed the budgets: charged in advance, settled once checked."""

    __slots__ = ("_client", "_guard", "_role", "_user", "rank")

    def __init__(self, guard: LoginGuard, role: str, client: str, user: str, rank: int) -> None:
        self._guard = guard
        self._role = role
        self._client = client
        self._user = user
        self.rank = rank  # the client's failures before this attempt: the KDF queue's order

    def succeeded(self) -> None:
        """The password was right: the advance charge is taken back."""
        self._refund()

    def failed(self) -> None:
        """The password was wrong: the charge stays, and the failure is logged (aggregated)."""
        self._guard.tally.add(self._role, self._client, self._user)
        self._guard.outcomes[self._role, "failed"] += 1

    def unchecked(self) -> None:
        """The attempt was never checked (the KDF queue refused it): the charge is taken back."""
        self._refund()
        self._guard.outcomes[self._role, "busy"] += 1

    def _refund(self) -> None:
        self._guard.clients.refund(self._client)
        self._guard.users.refund(self._user)


class LoginGuard:
    """The budgets, the KDF pool and the failure log of one app."""

    def __init__(self, limits: LoginLimits | None = None) -> None:
        self.limits = limits = limits or LoginLimits()
        self.clients = FailureBudget(limits.per_client, limits.window_seconds, limits.tracked_keys)
        self.users = FailureBudget(limits.per_user, limits.window_seconds, limits.tracked_keys)
        self.tally = FailureTally(limits.log_max_keys)
        self.kdf = KdfPool(limits.kdf_workers, limits.kdf_queue)
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (role, failed | throttled | busy)

    def client_within_budget(self, client: str | None) -> bool:
        """Whether the client may still try (it has not used up its failure budget)."""
        return not self.clients.exhausted(client or UNKNOWN_CLIENT)

    def admit_client(self, role: str, client: str | None, user: Callable[[], bytes]) -> None:
        """LoginRefusedError (429) when the client has used up its own budget; checked before anything else.

        user: the user name the attempt gives, read only to log a refusal.
        """
        key = client or UNKNOWN_CLIENT
        if self.clients.exhausted(key):
            self._throttled(role, key, _name(user()), self.clients.retry_after(key))

    def begin(self, role: str, client: str | None, user: bytes) -> Attempt:
        """Charge an attempt to the client and the user name in advance; LoginRefusedError (429) when over.

        Over the user name's budget only clients that failed in this window are refused: a client
        with a clean record (the platform, after a restart) is still checked.
        """
        key = client or UNKNOWN_CLIENT
        name = _name(user)
        rank = self.clients.count(key)
        if rank >= self.clients.limit:
            self._throttled(role, key, name, self.clients.retry_after(key))
        if rank > 0 and self.users.exhausted(name):
            self._throttled(role, key, name, self.users.retry_after(name))
        self.clients.add(key)
        self.users.add(name)
        return Attempt(self, role, key, name, rank)

    def malformed(self, role: str, client: str | None) -> None:
        """A header that is not Basic credentials: one failure of the client."""
        key = client or UNKNOWN_CLIENT
        self.clients.add(key)
        self.tally.add(role, key, "")
        self.outcomes[role, "failed"] += 1

    async def check(self, attempt: Attempt, check: Callable[[], T]) -> T:
        """check() (a KDF run) on the KDF pool, ranked by the attempt; LoginRefusedError (503) if the queue is full."""
        try:
            return await self.kdf.run(attempt.rank, check)
        except KdfBusyError:
            attempt.unchecked()
            raise LoginRefusedError(503, "too many password checks under way; retry shortly", 1) from None

    async def run(self, stop: asyncio.Event) -> None:
        """Write the aggregated failure lines every log interval until stop is set, then once more."""
        interval = self.limits.log_interval_seconds
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            self.tally.flush(interval)

    def close(self) -> None:
        """Stop the KDF threads."""
        self.kdf.close()

    def _throttled(self, role: str, client: str, user: str, retry_after: int) -> None:
        self.tally.add(role, client, user, throttled=True)
        self.outcomes[role, "throttled"] += 1
        raise LoginRefusedError(429, "too many failed logins; retry later", retry_after)


def _name(user: bytes) -> str:
    """A user name as a budget key and in the log: text, cut to _MAX_USER characters."""
    return user.decode("utf-8", "replace")[:_MAX_USER]
