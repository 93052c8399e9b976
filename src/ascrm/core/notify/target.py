"""What a notification target does with a notification: one attempt at delivering it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ascrm.core.notify.message import Notification

if TYPE_CHECKING:  # the core answers without loading an HTTP client
    import aiohttp

Outcome = Literal["delivered", "retry", "rejected"]


class TargetError(ValueError):
    """A target's settings are wrong; path is relative to its mapping (never holds a secret's value)."""

    def __init__(self, path: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


@dataclass(frozen=True, slots=True)
class Sent:
    """How one attempt went: delivered (2xx), retry (an error, a timeout, 408, 429 or 5xx) or rejected
    (any other answer: retrying would get it again). retry_after: the receiver's Retry-After, in seconds.
    error: short and secret-free ("HTTP 500", "TimeoutError", "ClientConnectorError")."""

    outcome: Outcome
    status: int | None = None
    retry_after: float | None = None
    error: str | None = None


class Target(Protocol):
    """A receiver of notifications, compiled from the rule files' `targets:`; immutable."""

    @property
    def name(self) -> str:
        """Its name in `targets:`, the `target` label of the metrics."""
        ...

    @property
    def kind(self) -> str:
        """http, bitrix24, amocrm or retailcrm."""
        ...

    async def send(self, session: aiohttp.ClientSession, notification: Notification, timeout: float) -> Sent:
        """One attempt at delivering notification within timeout seconds; never raises."""
        ...
