"""The outbox's values: a notification, one leased for delivery, one listed; the outbox's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

States = Literal["pending", "failed"]
STATES: tuple[States, ...] = ("pending", "failed")


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one target about one call, as stored before the call's answer is sent.

    key is the idempotency key (`<CallID>:<kind>:<notify id>`): the outbox stores a key once, and the
    receiver gets it in the `Idempotency-Key` header to drop a repeat. body is the JSON document: the
    rendered body template for an `http` target, the call's summary for a CRM preset (which builds the
    CRM's own requests from it). It holds no secret: URLs and headers come from the target at delivery.
    """

    key: str
    target: str  # the target's name in the rule files' `targets:`
    kind: str  # missed, ended, connected, or an event's name
    call_id: int
    created_at: float  # Unix seconds: when the outcome was seen
    body: bytes


@dataclass(frozen=True, slots=True)
class Leased:
    """A notification handed to this process to deliver: how many attempts it had before this one, and
    the outbox's handle to settle it with (a row id, a stream entry id)."""

    notification: Notification
    attempts: int
    handle: str


@dataclass(frozen=True, slots=True)
class Listed:
    """A notification as the admin API lists it: where it stands, and why it is there."""

    notification: Notification
    state: States
    attempts: int
    due_at: float | None  # pending: when it is tried next; failed: None
    last_error: str | None  # "HTTP 500", "TimeoutError", "gave up after 24h": never a URL or a secret


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """The `notify` section of the settings: how long, how often and how many."""

    give_up_after: float = 24 * 3600.0  # seconds from created_at; then the notification is failed
    max_pending: int = 100_000  # notifications waiting in all; past it a new one is dropped (and logged)
    concurrency: int = 4  # deliveries in flight per target
    attempt_timeout: float = 10.0  # seconds of one attempt (all its HTTP requests)
    backoff_initial: float = 1.0  # seconds before the first retry; doubled each retry, jittered
    backoff_max: float = 600.0  # the longest wait between two attempts
    claim_after: float = 60.0  # Redis: a notification leased this long by a replica that died is claimed
    poll_interval: float = 1.0  # how often the outbox is asked for due notifications when idle


class OutboxError(Exception):
    """The outbox could not store or settle notifications (its file, or Redis, failed)."""


class OutboxFullError(OutboxError):
    """max_pending notifications are waiting: the new ones were not stored."""
