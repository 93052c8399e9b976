"""`ascrm emulate`: many concurrent scripted calls against a CRM endpoint, as the platform makes them, measured."""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import TextIO

from ascrm.tools.platform.call import Exchange, Pacing, play_call
from ascrm.tools.platform.client import PlatformClient, Target, TransportError
from ascrm.tools.platform.probe import CREDENTIALS, UNREACHABLE
from ascrm.tools.platform.scenarios import Scenario
from ascrm.tools.platform.tally import Latency, Summary, Tally


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """How much load: calls kept going at once, for how long, how they start, and when to stop at the latest."""

    calls: int
    duration: float
    ramp: float = 0.0  # seconds over which the concurrent calls start (each first joined mid-call anyway)
    max_calls: int | None = None  # calls started at most over the run
    pacing: Pacing = field(default_factory=Pacing)
    seed: int | None = None
    warmup: float = 0.0  # seconds at the start whose requests are sent but not counted


@dataclass(frozen=True, slots=True)
class ProgressStyle:
    """Where progress goes: a line rewritten in place (live) or plain lines every interval seconds."""

    stream: TextIO
    live: bool
    interval: float


class Emulator:
    """One load run: N workers, each playing call after call until the duration or the call budget is spent."""

    def __init__(self, target: Target, scenarios: tuple[Scenario, ...], plan: LoadPlan) -> None:
        self.target = target
        self.scenarios = scenarios
        self.weights = [s.weight for s in scenarios]
        self.plan = plan
        self.tally = Tally()
        self.active = 0
        self._rng = random.Random(plan.seed)  # noqa: S311 - made-up calls, not secrets
        self._ids = itertools.count(self._rng.randrange(2**32, 2**48))
        self._started = 0.0
        self._counting = plan.warmup <= 0

    async def run(self, progress: ProgressStyle | None = None) -> Summary:
        """Play the calls; the summary of what was measured."""
        loop = asyncio.get_running_loop()
        plan = self.plan
        async with PlatformClient(self.target) as client:
            self._started = loop.time()
            cpu = time.process_time()
            deadline = self._started + plan.duration
            workers = [asyncio.create_task(self._worker(client, i, deadline)) for i in range(plan.calls)]
            reporter = asyncio.create_task(self._report(progress)) if progress else None
            housekeeper = asyncio.create_task(_freeze_survivors())
            if not self._counting:
                loop.call_later(plan.warmup, self._start_counting)
            hard_stop = plan.duration + self.target.timeout + 2  # a request under way at the deadline ends by then
            _, pending = await asyncio.wait(workers, timeout=hard_stop)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            elapsed = min(loop.time() - self._started, plan.duration) - plan.warmup
            housekeeper.cancel()
            await asyncio.gather(housekeeper, return_exceptions=True)
            gc.unfreeze()
            if reporter is not None:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
                if progress is not None and progress.live:
                    progress.stream.write("\r\x1b[K")
                    progress.stream.flush()
        return Summary.of(self.tally, max(elapsed, 1e-9), plan.calls, time.process_time() - cpu)

    def _start_counting(self) -> None:
        self._counting = True

    def _observe(self, exchange: Exchange) -> None:
        if self._counting:
            self.tally.record(exchange)

    async def _worker(self, client: PlatformClient, index: int, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        plan = self.plan
        rng = random.Random(self._rng.random())  # noqa: S311 - made-up calls, not secrets
        if plan.ramp > 0:
            await asyncio.sleep(plan.ramp * index / plan.calls)
        first = True  # the first call is joined at a random point of its script: a steady mix from the start
        while loop.time() < deadline:
            if plan.max_calls is not None and self.tally.calls_started >= plan.max_calls:
                return
            scenario = rng.choices(self.scenarios, self.weights)[0]
            joined = rng.random() if first else 0.0
            first = False
            self.tally.calls_started += 1
            self.active += 1
            try:
                outcome = await play_call(
                    client,
                    scenario,
                    next(self._ids),
                    rng,
                    self._observe,
                    pacing=plan.pacing,
                    deadline=deadline,
                    joined=joined,
                )
            finally:
                self.active -= 1
            self.tally.calls[outcome] += 1

    async def _report(self, style: ProgressStyle) -> None:
        loop = asyncio.get_running_loop()
        seen_events = seen_polls = requests = 0
        last = loop.time()
        while True:
            await asyncio.sleep(style.interval)
            now = loop.time()
            tally = self.tally
            events, polls = tally.seconds["event"], tally.seconds["poll"]
            window = events[seen_events:] + polls[seen_polls:]
            rate = (tally.requests - requests) / max(now - last, 1e-9)
            seen_events, seen_polls, requests, last = len(events), len(polls), tally.requests, now
            line = (
                f"{now - self._started:5.0f}/{self.plan.duration:.0f} s  {self.active} calls  {tally.requests} requests"
                f"  {rate:.0f}/s  p99 {Latency.of(window).p99:.1f} ms  errors {tally.errors}"
                f"  violations {sum(tally.violations.values())}"
            )
            if style.live:
                style.stream.write(f"\r\x1b[K{line}")
            else:
                style.stream.write(f"emulate: {line}\n")
            style.stream.flush()


async def _freeze_survivors() -> None:
    """Keep the collector off the long-lived calls: what has survived a second is frozen (unfrozen at the end).

    Without it, collections that scan thousands of suspended calls stall the loop for 10-90 ms, and every
    answer that arrives meanwhile is measured that much slower than the endpoint gave it.
    """
    while True:
        gc.freeze()
        await asyncio.sleep(1.0)


async def preflight(target: Target) -> tuple[int, str] | None:
    """The connection test's GET, so a wrong URL, TLS or credentials fail at once: (exit code, why), or None."""
    async with PlatformClient(target) as client:
        try:
            reply = await client.connection_test_get()
        except TransportError as exc:
            return UNREACHABLE, str(exc)
    if reply.status in (401, 403):
        return CREDENTIALS, f"{reply.status}: the endpoint refused the credentials of user {target.user!r}"
    return None
