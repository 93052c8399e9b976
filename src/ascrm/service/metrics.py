"""Prometheus metrics at `GET /metrics`, behind the admin credentials (or open, if so configured).

Nothing is registered globally: each scrape builds a registry around the app's Stats, its call store
and its active rule set, so two apps in one process (tests) never share a number.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ascrm.core.calls.redis_cache import FoldCache
from ascrm.core.calls.store import CallStore, StoreError
from ascrm.service.runtime import Runtime, runtime_of
from ascrm.service.stats import ADMIN_COMMAND, ConnectionStats, Histogram, Stats


class ServiceCollector(Collector):
    """The app's counters, call counts and rule set, as of the scrape."""

    def __init__(self, runtime: Runtime, calls: tuple[int, int] | None) -> None:
        self._runtime = runtime
        self._calls = calls  # (tracked, ended), or None when the store did not answer

    def collect(self) -> Iterator[Metric]:
        """The metrics, as of now."""
        stats: Stats = self._runtime.stats
        yield _counter(
            "ascrm_requests",
            "HTTP requests answered, by endpoint and status.",
            ("endpoint", "status"),
            {(endpoint, str(status)): n for (endpoint, status), n in stats.requests.items()},
        )
        yield _counter(
            "ascrm_events",
            "Platform call events received, by event type.",
            ("event_type",),
            {(name,): n for name, n in stats.events.items()},
        )
        yield _counter(
            "ascrm_decisions",
            "Answers that carried an action, by deciding rule (of the active rule set) and action.",
            ("rule", "action"),
            self._live_decisions(stats),
        )
        latency = HistogramMetricFamily(
            "ascrm_decision_seconds",
            "Time from a platform request read to its answer ready (call state and rules), by kind.",
            labels=("kind",),
        )
        for kind, histogram in stats.latency.items():
            latency.add_metric((kind,), _buckets(histogram), histogram.total)
        yield latency
        store_seconds = HistogramMetricFamily(
            "ascrm_store_seconds",
            "Time of one call store operation (the Redis store: a script call, a read), by operation.",
            labels=("operation",),
        )
        for operation, histogram in sorted(stats.store_seconds.items()):
            store_seconds.add_metric((operation,), _buckets(histogram), histogram.total)
        yield store_seconds
        yield _counter(
            "ascrm_store_errors",
            "Call store operations that failed or timed out, by operation; decode: stored call records"
            " that could not be read.",
            ("operation",),
            {(name,): n for name, n in stats.store_errors.items()} | {("decode",): self._runtime.store.unreadable},
        )
        yield _counter(
            "ascrm_parse_warnings",
            "CRMDData fields that could not be read (treated as missing).",
            ("field",),
            {(name,): n for name, n in stats.parse_warnings.items()},
        )
        yield _counter(
            "ascrm_call_history_trimmed",
            "What the per-call budgets cut from stored call history: field values truncated to"
            " 1024 characters, records emptied or dropped past state.max_call_bytes.",
            ("kind",),
            {(kind,): n for kind, n in stats.history_trimmed.items()},
        )
        yield CounterMetricFamily(
            "ascrm_params_rejected",
            "Rendered params that failed the protocol's format for their action (answered as no action).",
            value=stats.params_rejected,
        )
        yield CounterMetricFamily(
            "ascrm_actions_not_allowed",
            "Actions of rules or commands an outgoing call's poll may not take (answered as no action).",
            value=stats.actions_not_allowed,
        )
        yield CounterMetricFamily(
            "ascrm_decision_failures", "Failures while deciding (answered as no action).", value=stats.decision_failures
        )
        yield _counter(
            "ascrm_login_refusals",
            "Logins refused, by role and reason: failed (checked, wrong), throttled (over a failure budget,"
            " unchecked), busy (the KDF queue was full, unchecked).",
            ("role", "reason"),
            dict(self._runtime.logins.outcomes),
        )
        yield from self._connections(stats.connections)
        yield from self._rules()
        yield from self._store()
        yield from self._lookups()
        yield from self._notifications()
        from ascrm import __version__

        yield InfoMetricFamily("ascrm_build", "The running version.", value={"version": __version__})

    def _live_decisions(self, stats: Stats) -> dict[tuple[str, str], int]:
        """The decision counts of rules in the active set (and pushed commands); the others are dropped."""
        live = {rule.id for rule in self._runtime.rules.current.rules}
        live.add(ADMIN_COMMAND)
        for key in [key for key in stats.decisions if key[0] not in live]:
            del stats.decisions[key]
        return dict(stats.decisions)

    @staticmethod
    def _connections(connections: ConnectionStats) -> Iterator[Metric]:
        yield GaugeMetricFamily("ascrm_connections_open", "HTTP connections open now.", value=connections.open)
        yield GaugeMetricFamily(
            "ascrm_connections_limit",
            "Connections allowed open at once (limits.max_connections).",
            value=connections.limit,
        )
        yield CounterMetricFamily(
            "ascrm_connections_refused",
            "Connections closed at accept because limits.max_connections were open.",
            value=connections.refused,
        )
        yield CounterMetricFamily(
            "ascrm_client_connections_refused",
            "Connections closed at accept because their address had limits.max_connections_per_client open.",
            value=connections.refused_per_client,
        )
        yield _counter(
            "ascrm_connections_closed",
            "Connections closed by a limit: header_timeout, body_timeout, header_too_large, too_many_headers,"
            " url_too_long, invalid_request.",
            ("reason",),
            {(reason,): n for reason, n in connections.closed.items()},
        )

    def _rules(self) -> Iterator[Metric]:
        reloads = self._runtime.stats.reloads
        yield _counter(
            "ascrm_rule_reloads",
            "Rule reloads by outcome (reloaded, unchanged, rejected).",
            ("outcome",),
            {(name,): n for name, n in reloads.outcomes.items()},
        )
        yield GaugeMetricFamily(
            "ascrm_rules_last_reload_success",
            "1 if the last reload (or the start-up load) succeeded, 0 if it was rejected.",
            value=int(reloads.last_success),
        )
        yield GaugeMetricFamily(
            "ascrm_rules_last_reload_timestamp_seconds",
            "Unix time of the last reload attempt (or the start-up load).",
            value=reloads.last_at,
        )
        rules = self._runtime.rules.current
        yield InfoMetricFamily("ascrm_rules", "The active rule set.", value={"revision": rules.revision})
        yield GaugeMetricFamily("ascrm_rules_active", "Rules in the active rule set.", value=len(rules.rules))
        yield GaugeMetricFamily(
            "ascrm_rules_loaded_timestamp_seconds",
            "Unix time the active rule set was loaded.",
            value=self._runtime.reloader.loaded_at.timestamp(),
        )
        yield _calendars(rules.calendars)

    def _notifications(self) -> Iterator[Metric]:
        """The outbox's notifications (label values: target names, at most MAX_TARGET_LABELS and `other`)."""
        stats = self._runtime.stats
        yield _counter(
            "ascrm_notifications",
            "Notifications by target and outcome: queued (stored), delivered, retried (an attempt failed),"
            " failed (given up: the dead letters), dropped (the outbox was full), lost (the outbox failed).",
            ("target", "outcome"),
            dict(stats.notifications),
        )
        notifications = self._runtime.notifications
        pending = GaugeMetricFamily(
            "ascrm_notifications_pending", "Notifications waiting in the outbox, by target.", labels=("target",)
        )
        waiting: Counter[str] = Counter()
        for target, count in (notifications.pending if notifications else {}).items():
            waiting[stats.target_label(target)] += count
        for target, count in sorted(waiting.items()):
            pending.add_metric((target,), count)
        yield pending
        delivery = HistogramMetricFamily(
            "ascrm_notification_delivery_seconds",
            "Time from a call's outcome to its notification delivered, retries included, by target.",
            labels=("target",),
        )
        for target, histogram in sorted(stats.delivery_seconds.items()):
            delivery.add_metric((target,), _buckets(histogram), histogram.total)
        yield delivery

    def _lookups(self) -> Iterator[Metric]:
        """Look-ups of the active rule set's sources (label values: its source names, bounded as rules are)."""
        lookups = self._runtime.lookups
        sources = self._runtime.rules.current.sources
        counts = {} if lookups is None else lookups.counts
        yield _counter(
            "ascrm_lookup",
            "Look-ups of the rules' sources, by source and how the value was found (hit, miss, fetched, error,"
            " timeout, rate_limited, circuit_open, stale).",
            ("source", "outcome"),
            {key: n for key, n in counts.items() if key[0] in sources},
        )
        seconds = HistogramMetricFamily(
            "ascrm_lookup_seconds", "Time of one look-up for the answer that asked it, by source.", labels=("source",)
        )
        for name, histogram in sorted((lookups.seconds if lookups is not None else {}).items()):
            if name in sources:
                buckets = [
                    ("+Inf" if bound == float("inf") else repr(bound), float(n)) for bound, n in histogram.cumulative()
                ]
                seconds.add_metric((name,), buckets, histogram.sum)
        yield seconds
        breaker = GaugeMetricFamily(
            "ascrm_lookup_circuit_open",
            "1 while a source's circuit breaker skips it (open or half-open).",
            labels=("source",),
        )
        for name in sorted(sources):
            state = "closed" if lookups is None else lookups.breaker(name)
            breaker.add_metric((name,), float(state != "closed"))
        yield breaker

    def _store(self) -> Iterator[Metric]:
        store = self._runtime.store
        yield CounterMetricFamily(
            "ascrm_calls_evicted",
            "Calls dropped by this process because state.max_calls was reached.",
            value=store.evicted,
        )
        folds = getattr(store, "folds", None)
        if isinstance(folds, FoldCache):  # the Redis store
            yield _counter(
                "ascrm_store_folds",
                "Calls rebuilt from their Redis hash by this process's events and polls: from the state it"
                " held and what came since (since), or from the whole hash (whole).",
                ("kind",),
                {("since",): folds.hits, ("whole",): folds.misses},
            )
            yield GaugeMetricFamily(
                "ascrm_store_folds_held_bytes",
                "Memory (estimated) of the call states this process holds to fold only what came since.",
                value=folds.size,
            )
        yield GaugeMetricFamily(
            "ascrm_store_up", "1 if the call store answered this scrape.", value=int(self._calls is not None)
        )
        if self._calls is not None:
            tracked, ended = self._calls
            yield GaugeMetricFamily(
                "ascrm_live_calls", "Calls in progress (seen, not ended) in the call store.", value=tracked - ended
            )
            yield GaugeMetricFamily(
                "ascrm_calls_tracked", "Calls held in the call store, recently ended ones included.", value=tracked
            )


def _calendars(calendars: Mapping[str, date | None]) -> Metric:
    """The last day each production calendar of the rule set covers (00:00 UTC of it; 0: none)."""
    gauge = GaugeMetricFamily(
        "ascrm_calendar_last_day_timestamp_seconds",
        "Unix time (00:00 UTC) of the last date each production calendar of the active rules covers.",
        labels=("calendar",),
    )
    for name, last in sorted(calendars.items()):
        moment = 0.0 if last is None else datetime(last.year, last.month, last.day, tzinfo=UTC).timestamp()
        gauge.add_metric((name,), moment)
    return gauge


def _counter(name: str, documentation: str, labels: tuple[str, ...], values: dict[Any, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(label_values, value)
    return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """Cumulative buckets in prometheus-client's form, ending with +Inf."""
    buckets, running = [], 0
    for bound, count in zip((*histogram.buckets, float("inf")), histogram.counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
    return buckets


class SharedCounts:
    """The store's call counts for concurrent scrapes from one store call: a flood of scrapes (with
    `metrics.public`) takes at most one store connection at a time, never the platform's."""

    def __init__(self) -> None:
        self._running: asyncio.Future[tuple[int, int] | None] | None = None

    async def get(self, store: CallStore) -> tuple[int, int] | None:
        """(tracked, ended), or None when the store did not answer."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._counts(store))
        return await asyncio.shield(self._running)  # one scraper leaving does not cancel the others' call

    @staticmethod
    async def _counts(store: CallStore) -> tuple[int, int] | None:
        try:
            counts: tuple[int, int] = await store.counts()
        except StoreError:
            return None
        return counts


def routes(prefix: str) -> list[Route]:
    """The metrics route under prefix (unguarded: the app guards it unless `metrics.public`)."""
    shared = SharedCounts()

    async def metrics(request: Request) -> Response:
        runtime = runtime_of(request.scope)
        calls = await shared.get(runtime.store)
        registry = CollectorRegistry(auto_describe=False)  # per scrape: nothing global
        registry.register(ServiceCollector(runtime, calls))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [Route(f"{prefix}/metrics", metrics, methods=["GET"])]
