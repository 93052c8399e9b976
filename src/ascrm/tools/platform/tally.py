"""What a load run measured: latencies per request kind, status counts, protocol violations, calls."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ascrm.tools.platform.call import Exchange

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency figures of one kind of request, in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        """The figures of a list of durations (seconds); all zero when it is empty."""
        if not seconds:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        ordered = sorted(seconds)
        p50, p90, p99 = (nearest_rank(ordered, p) * 1000 for p in PERCENTILES)
        return cls(len(ordered), round(p50, 2), round(p90, 2), round(p99, 2), round(ordered[-1] * 1000, 2))


def nearest_rank(ordered: Sequence[float], percent: float) -> float:
    """The percent-th percentile of ordered (sorted, not empty) by the nearest-rank method: the smallest
    value with at least percent % of them at or below it."""
    return ordered[max(0, math.ceil(percent * len(ordered) / 100) - 1)]


@dataclass(slots=True)
class Tally:
    """Counts and latencies gathered while a run goes on (one event loop: no locking)."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: {"event": [], "poll": []})
    statuses: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # the first message of each violation kind
    calls_started: int = 0
    calls: Counter[str] = field(default_factory=Counter)  # how calls ended: completed, cut (the run's end), dropped
    requests: int = 0
    errors: int = 0  # answers other than 200, and requests with no answer

    def record(self, exchange: Exchange) -> None:
        """Count one request of a call."""
        self.requests += 1
        reply = exchange.reply
        if reply is None:
            failure = exchange.failure
            self.statuses[failure.kind if failure is not None else "failed"] += 1
            self.errors += 1
            if failure is not None:
                self.examples.setdefault(failure.kind, str(failure))
            return
        self.seconds[exchange.kind].append(reply.seconds)
        self.statuses[str(reply.status)] += 1
        if reply.status != 200:
            self.errors += 1
        verdict = exchange.verdict
        if verdict is not None and verdict.deviations:
            for deviation in verdict.deviations:
                counter = self.violations if deviation.severity == "error" else self.warnings
                counter[deviation.check] += 1
                self.examples.setdefault(deviation.check, f"{exchange.label}: {deviation.message}")


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures of a whole run."""

    elapsed: float
    concurrency: int
    requests: int
    requests_per_second: float
    latency: Latency
    events: Latency
    polls: Latency
    statuses: dict[str, int]
    errors: int
    violations: dict[str, int]
    warnings: dict[str, int]
    examples: dict[str, str]
    calls_started: int
    calls: dict[str, int]
    cpu_seconds: float  # the emulator's own CPU time: near elapsed, it is the bottleneck, not the endpoint

    @classmethod
    def of(cls, tally: Tally, elapsed: float, concurrency: int, cpu_seconds: float) -> Summary:
        """Sum up a tally over elapsed seconds."""
        every = tally.seconds["event"] + tally.seconds["poll"]
        return cls(
            elapsed=round(elapsed, 3),
            concurrency=concurrency,
            requests=tally.requests,
            requests_per_second=round(tally.requests / elapsed, 1) if elapsed > 0 else 0.0,
            latency=Latency.of(every),
            events=Latency.of(tally.seconds["event"]),
            polls=Latency.of(tally.seconds["poll"]),
            statuses=dict(sorted(tally.statuses.items())),
            errors=tally.errors,
            violations=dict(sorted(tally.violations.items())),
            warnings=dict(sorted(tally.warnings.items())),
            examples=dict(sorted(tally.examples.items())),
            calls_started=tally.calls_started,
            calls={kind: tally.calls[kind] for kind in ("completed", "cut", "dropped")},
            cpu_seconds=round(cpu_seconds, 3),
        )

    @property
    def clean(self) -> bool:
        """No errors and no protocol violations."""
        return self.errors == 0 and not self.violations

    def as_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready mapping (latencies in milliseconds)."""
        return {
            "elapsed_s": self.elapsed,
            "concurrent_calls": self.concurrency,
            "requests": self.requests,
            "requests_per_second": self.requests_per_second,
            "latency_ms": _latency(self.latency),
            "event_latency_ms": _latency(self.events),
            "poll_latency_ms": _latency(self.polls),
            "statuses": self.statuses,
            "errors": self.errors,
            "violations": self.violations,
            "warnings": self.warnings,
            "examples": self.examples,
            "calls": {"started": self.calls_started, **self.calls},
            "emulator_cpu_s": self.cpu_seconds,
        }

    def text(self) -> str:
        """The summary for people."""
        lines = [
            f"{self.requests} requests in {self.elapsed:.1f} s: {self.requests_per_second:.1f} requests/s,"
            f" {self.concurrency} concurrent calls; the emulator used {self.cpu_seconds:.1f} s of CPU",
            f"calls: {self.calls_started} started, " + ", ".join(f"{n} {kind}" for kind, n in self.calls.items()),
            "latency ms   count      p50      p90      p99      max",
        ]
        for name, figures in (("all", self.latency), ("events", self.events), ("polls", self.polls)):
            lines.append(
                f"  {name:<9}{figures.count:>7} {figures.p50:>8.2f} {figures.p90:>8.2f}"
                f" {figures.p99:>8.2f} {figures.max:>8.2f}"
            )
        lines.append("statuses: " + (", ".join(f"{k}: {v}" for k, v in self.statuses.items()) or "none"))
        for title, counts in (("protocol violations", self.violations), ("warnings", self.warnings)):
            lines.append(f"{title}: " + (", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"))
        lines += [f"  e.g. {example}" for example in self.examples.values()]
        return "\n".join(lines)


def _latency(figures: Latency) -> dict[str, float | int]:
    return {"count": figures.count, "p50": figures.p50, "p90": figures.p90, "p99": figures.p99, "max": figures.max}
