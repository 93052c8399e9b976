"""The service's counters: plain integers bumped on the hot path, turned into metrics only when scraped.

A prometheus-client Counter takes a lock and a label look-up per increment; these are dict and list
increments (the event loop is one thread), a few hundred nanoseconds per answered request.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from ascrm.core.protocol import CRMDDATA_FIELDS, Action, EventType

# Seconds. An answer is expected in a few milliseconds; the platform gives up after a few seconds.
_MAX_STORE_OPERATIONS = 32  # operation labels of ascrm_store_seconds at most
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Seconds from a call's outcome to its notification delivered: at once, after retries, after an outage.
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
MAX_TARGET_LABELS = 64  # `target` label values of the notification metrics at most (the rules define up to 50)


def call_event_label(call_id: str | None, method: str) -> str:
    """The `endpoint` label of a GET or POST on `/CallEvent` (call_id None) or `/CallEvent/{call_id}`."""
    if method == "POST":
        return "connection_test" if call_id == "0" else "event"
    return "connection_test" if call_id is None else "poll"


def endpoint_of(path: str, method: str, root_path: str) -> str:
    """The `endpoint` label of any request: what the platform or an operator asked for."""
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :] or "/"
    if path == "/CallEvent":
        return call_event_label(None, method)
    if path.startswith("/CallEvent/"):
        return call_event_label(path.removeprefix("/CallEvent/"), method)
    if path.startswith("/admin/"):
        return "admin"
    if path in ("/health", "/ready", "/metrics", "/openapi.json"):
        return path[1:].removesuffix(".json")
    return "other"


UNKNOWN = "unknown"  # the one label value for every code outside the protocol's tables
ADMIN_COMMAND = "admin_command"  # the `rule` label of a command pushed through the admin API
_FIELDS = frozenset(CRMDDATA_FIELDS)


def event_label(event_type: int | None) -> str:
    """The `event_type` label: the protocol's name for the code, or `unknown` (a closed set)."""
    return event_type._name_ if isinstance(event_type, EventType) else UNKNOWN


def action_label(action: int) -> str:
    """The `action` label: the protocol's name for the code, or `unknown` (a closed set)."""
    return action._name_ if isinstance(action, Action) else UNKNOWN


def field_label(name: str) -> str:
    """The `field` label: a CRMDData field name, or `unknown` (a closed set)."""
    return name if name in _FIELDS else UNKNOWN


def status_label(status: int) -> int:
    """The `status` label: an HTTP status, or 0 for anything outside 100-599 (a closed set)."""
    return status if 100 <= status <= 599 else 0


class Histogram:
    """Observations counted into buckets (non-cumulative; the collector sums them), LATENCY_BUCKETS unless told."""

    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one: above every bound
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.count += 1


@dataclass(slots=True)
class ReloadStats:
    """Rule reloads by outcome, and how the last one went."""

    outcomes: Counter[str] = field(default_factory=Counter)  # reloaded, unchanged, rejected
    last_success: bool = True  # the rules loaded at start-up count as a success
    last_at: float = field(default_factory=time.time)  # Unix time of the last reload attempt (or start-up)

    def count(self, outcome: str) -> None:
        """Record a reload's outcome."""
        self.outcomes[outcome] += 1
        self.last_success = outcome != "rejected"
        self.last_at = time.time()


@dataclass(slots=True)
class ConnectionStats:
    """The HTTP edge: connections open, refused at accept, and closed by a limit (by reason)."""

    open: int = 0
    limit: int = 0  # limits.max_connections as in force (0: not serving)
    refused: int = 0  # closed at accept: the limit was reached
    refused_per_client: int = 0  # closed at accept: the peer address had limits.max_connections_per_client open
    closed: Counter[str] = field(default_factory=Counter)  # header_timeout, header_too_large, ...


@dataclass(slots=True)
class Stats:
    """Everything counted while serving; one instance per running app, read by the metrics endpoint."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (endpoint, status)
    events: Counter[str] = field(default_factory=Counter)  # by event type name
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule id, action name)
    latency: dict[str, Histogram] = field(default_factory=lambda: {"event": Histogram(), "poll": Histogram()})
    store_errors: Counter[str] = field(default_factory=Counter)  # by operation
    store_seconds: dict[str, Histogram] = field(default_factory=dict)  # the Redis store's operations, timed

    def observe_store(self, operation: str, seconds: float) -> None:
        """Time one call store operation (the store names them: a closed set, capped all the same)."""
        histogram = self.store_seconds.get(operation)
        if histogram is None:
            if len(self.store_seconds) >= _MAX_STORE_OPERATIONS:
                return
            histogram = self.store_seconds[operation] = Histogram()
        histogram.observe(seconds)

    parse_warnings: Counter[str] = field(default_factory=Counter)  # by CRMDData field
    history_trimmed: Counter[str] = field(default_factory=Counter)  # field_truncated, record_dropped
    params_rejected: int = 0
    actions_not_allowed: int = 0
    decision_failures: int = 0
    reloads: ReloadStats = field(default_factory=ReloadStats)
    notifications: Counter[tuple[str, str]] = field(default_factory=Counter)  # (target, outcome)
    delivery_seconds: dict[str, Histogram] = field(default_factory=dict)  # by target

    def count_notification(self, target: str, outcome: str, n: int = 1) -> None:
        """Count notifications of target by outcome (queued, delivered, retried, failed, dropped, lost)."""
        self.notifications[(self.target_label(target), outcome)] += n

    def observe_delivery(self, target: str, seconds: float) -> None:
        """Time one notification from its call's outcome to its delivery."""
        label = self.target_label(target)
        histogram = self.delivery_seconds.get(label)
        if histogram is None:
            histogram = self.delivery_seconds[label] = Histogram(DELIVERY_BUCKETS)
        histogram.observe(seconds)

    def target_label(self, target: str) -> str:
        """The `target` label: the target's name while fewer than MAX_TARGET_LABELS are known, else `other`."""
        known = {name for name, _ in self.notifications} | set(self.delivery_seconds)
        return target if target in known or len(known) < MAX_TARGET_LABELS else "other"

    connections: ConnectionStats = field(default_factory=ConnectionStats)  # shared with the server's connections
