"""The delivery loop against stand-in receivers on loopback: delivered, retried, failed, bounded, unbreakable."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from ascrm.core.notify.delivery import Deliverer, DeliveryOutcome, duration
from ascrm.core.notify.message import Leased, Listed, Notification, NotifySettings, OutboxError, States
from ascrm.core.notify.sqlite_outbox import SqliteOutbox
from ascrm.core.notify.target import Sent, Target
from ascrm.core.notify.webhook import WebhookTarget
from tests.support.receiver import Receiver, receiver

pytestmark = pytest.mark.anyio
FAST = NotifySettings(
    give_up_after=60.0,
    concurrency=2,
    attempt_timeout=0.3,
    backoff_initial=0.05,
    backoff_max=0.2,
    claim_after=30.0,
    poll_interval=0.02,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """A clock the tests move; None: the real one."""

    def __init__(self, now: float | None = None) -> None:
        self.now = now

    def __call__(self) -> float:
        return time.time() if self.now is None else self.now


@dataclass
class Loop:
    """A deliverer running, with its outbox, targets, clock and what it observed."""

    outbox: SqliteOutbox
    deliverer: Deliverer
    targets: dict[str, Target]
    clock: Clock
    seen: list[DeliveryOutcome] = field(default_factory=list)

    async def put(self, *notifications: Notification) -> None:
        await self.outbox.put(notifications)
        self.deliverer.wake()

    async def listed(self, state: States) -> list[Listed]:
        return await self.outbox.listing(state, 1000, 0)


@asynccontextmanager
async def running(
    targets: Mapping[str, Target],
    settings: NotifySettings = FAST,
    *,
    clock: Clock | None = None,
    outbox: Any = None,
    path: Path | None = None,
) -> AsyncIterator[Loop]:
    opened = await SqliteOutbox.open(path, settings)
    clock = clock or Clock()
    shared = dict(targets)
    seen: list[DeliveryOutcome] = []
    async with aiohttp.ClientSession() as session:
        deliverer = Deliverer(
            outbox if outbox is not None else opened,
            lambda: shared,
            session,
            settings,
            clock=clock,
            observe=seen.append,
            rng=random.Random(1),
        )
        task = asyncio.create_task(deliverer.run())
        try:
            yield Loop(opened, deliverer, shared, clock, seen)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await opened.close()


def note(key: str, target: str = "crm", created_at: float | None = None) -> Notification:
    at = time.time() if created_at is None else created_at
    return Notification(key, target, "missed", 7, at, b'{"key": "' + key.encode() + b'"}')


async def until(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    stop_at = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > stop_at:
            pytest.fail(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.01)


async def until_async(check: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    stop_at = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > stop_at:
            pytest.fail(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.01)


def webhook(at: Receiver, name: str = "crm") -> WebhookTarget:
    return WebhookTarget(name, at.url)


async def test_notifications_are_delivered_once_each_and_logged_without_the_url() -> None:
    async with receiver() as at, running({"crm": webhook(at)}) as loop:
        with capture_logs() as logs:
            await loop.put(*(note(f"k{i}") for i in range(5)))
            await until(lambda: len(at.delivered) == 5, "five delivered")
            await until(lambda: loop.outbox.pending == 0, "the outbox emptied")
    assert set(at.delivered.values()) == {1}
    assert [(one.target, one.outcome, one.attempts) for one in loop.seen] == [("crm", "delivered", 1)] * 5
    delivered = [entry for entry in logs if entry["event"] == "notification_delivered"]
    assert len(delivered) == 5
    assert {k: delivered[0][k] for k in ("target", "kind", "call_id", "attempts")} == {
        "target": "crm",
        "kind": "missed",
        "call_id": 7,
        "attempts": 1,
    }
    assert "secret-token" not in repr(logs)
    assert "127.0.0.1" not in repr(logs)


async def test_wake_sends_a_new_notification_at_once_rather_than_after_poll_interval() -> None:
    async with receiver() as at, running({"crm": webhook(at)}, replace(FAST, poll_interval=30.0)) as loop:
        await asyncio.sleep(0.05)  # the loop is waiting its poll_interval
        started = time.monotonic()
        await loop.put(note("now"))
        await until(lambda: at.delivered["now"] == 1, "delivered")
    assert time.monotonic() - started < 1.0


async def test_a_500_is_retried_until_it_succeeds() -> None:
    async with receiver(mode="fail_first", failures=2) as at, running({"crm": webhook(at)}) as loop:
        with capture_logs() as logs:
            await loop.put(note("a"))
            await until(lambda: at.delivered["a"] == 1, "delivered after two 500s")
            await until(lambda: len(loop.seen) == 3, "three settled")
    assert len(at.attempts("a")) == 3
    assert [(one.outcome, one.attempts) for one in loop.seen] == [("retried", 1), ("retried", 2), ("delivered", 3)]
    retries = [entry for entry in logs if entry["event"] == "notification_retry"]
    assert [(entry["error"], entry["attempts"]) for entry in retries] == [("HTTP 500", 1), ("HTTP 500", 2)]
    gaps = [b.at - a.at for a, b in zip(at.seen, at.seen[1:], strict=False)]
    assert gaps[0] >= 0.05 * 0.5  # the first backoff, jittered
    assert gaps[1] >= 0.1 * 0.5  # doubled


async def test_a_429_with_retry_after_waits_that_long() -> None:
    settings = replace(FAST, backoff_max=5.0)
    async with (
        receiver(mode="status", status=429, retry_after="2") as at,
        running({"crm": webhook(at)}, settings) as loop,
    ):
        await loop.put(note("a"))
        await until(lambda: len(at.seen) == 1, "the first attempt")
        at.mode = "ok"
        [listed] = await loop.listed("pending")
        assert (listed.attempts, listed.last_error) == (1, "HTTP 429")
        await until(lambda: at.delivered["a"] == 1, "delivered after Retry-After", timeout=5)
    first, second = at.seen
    assert second.at - first.at >= 2.0 - 0.01


async def test_a_receiver_that_hangs_is_retried_after_the_attempts_timeout() -> None:
    async with receiver(mode="hang") as at, running({"crm": webhook(at)}) as loop:
        await loop.put(note("a"))
        await until(lambda: loop.seen, "the first attempt settled")
        [listed] = await loop.listed("pending")
        assert (listed.attempts, listed.last_error) == (1, "TimeoutError")
        at.mode = "ok"
        await until(lambda: at.delivered["a"] == 1, "delivered once the receiver answers")
    assert loop.seen[0].outcome == "retried"


async def test_a_receiver_gone_for_a_while_gets_every_notification_once_back() -> None:
    async with receiver() as at, running({"crm": webhook(at)}) as loop:
        await loop.put(note("before"))
        await until(lambda: at.delivered["before"] == 1, "the first delivered")
        await at.stop()
        await loop.put(*(note(f"k{i}") for i in range(20)))
        await until(lambda: sum(one.outcome == "retried" for one in loop.seen) >= 20, "each tried while it is away")
        errors = {one.last_error for one in await loop.listed("pending")}
        assert errors == {"ClientConnectorError"}
        await asyncio.sleep(0.3)  # a few rounds of retries
        await at.start()
        await until(lambda: len(at.delivered) == 21, "all delivered once it is back")
        await until(lambda: loop.outbox.pending == 0, "the outbox emptied")
        await asyncio.sleep(0.3)  # time for any repeat to arrive
    assert set(at.delivered.values()) == {1}  # none twice
    assert len(at.seen) == 21


async def test_a_404_fails_at_once() -> None:
    async with receiver(mode="status", status=404) as at, running({"crm": webhook(at)}) as loop:
        with capture_logs() as logs:
            await loop.put(note("a"))
            await until(lambda: loop.seen, "settled")
            [failed] = await loop.listed("failed")
    assert (failed.notification.key, failed.attempts, failed.last_error) == ("a", 1, "HTTP 404")
    assert [(one.outcome, one.attempts) for one in loop.seen] == [("failed", 1)]
    assert len(at.seen) == 1
    assert loop.outbox.pending == 0
    [entry] = [entry for entry in logs if entry["event"] == "notification_failed"]
    assert (entry["error"], entry["key"], entry["target"]) == ("HTTP 404", "a", "crm")


async def test_past_give_up_after_a_notification_fails() -> None:
    clock = Clock(1_700_000_000.0)
    settings = replace(FAST, give_up_after=10.0)
    async with receiver(mode="status", status=500) as at, running({"crm": webhook(at)}, settings, clock=clock) as loop:
        await loop.put(note("a", created_at=clock.now))
        await until(lambda: len(loop.seen) == 1, "the first attempt")
        assert loop.seen[0].outcome == "retried"
        assert clock.now is not None
        clock.now += 9.99  # the next retry would be past the deadline
        await until(lambda: len(loop.seen) == 2, "the second attempt")
        [failed] = await loop.listed("failed")
    assert failed.last_error == "gave up after 10s: HTTP 500"
    assert (loop.seen[1].outcome, loop.seen[1].attempts) == ("failed", 2)
    assert loop.seen[1].seconds == pytest.approx(9.99)
    assert len(at.seen) == 2


async def test_the_concurrency_per_target_is_never_exceeded_nor_more_leased_than_can_start() -> None:
    held: list[int] = []
    async with (
        receiver(delay=0.1) as slow,
        receiver() as quick,
        running({"slow": webhook(slow, "slow"), "quick": webhook(quick, "quick")}) as loop,
    ):
        await loop.put(*(note(f"s{i}", "slow") for i in range(12)))
        await loop.put(*(note(f"q{i}", "quick") for i in range(12)))

        def sample() -> bool:
            held.append(loop.deliverer.held)
            return len(slow.delivered) + len(quick.delivered) == 24

        await until(sample, "all delivered")
    assert slow.most_in_flight == FAST.concurrency
    assert quick.most_in_flight <= FAST.concurrency
    assert max(held) <= FAST.concurrency * 2  # two targets' slots: nothing leased to wait long


class Raising:
    """A target that breaks its promise: send raises."""

    name = "broken"
    kind = "http"

    async def send(self, session: aiohttp.ClientSession, notification: Notification, timeout: float) -> Sent:
        raise RuntimeError("broken")


async def test_a_target_that_raises_is_retried_and_the_others_go_on() -> None:
    async with receiver() as at, running({"crm": webhook(at), "broken": Raising()}) as loop:
        await loop.put(note("x", "broken"), note("a"))
        await until(lambda: at.delivered["a"] == 1, "the other delivered")
        await until(lambda: any(one.target == "broken" for one in loop.seen), "the broken one settled")
        [listed] = await loop.listed("pending")
        assert (listed.notification.key, listed.last_error) == ("x", "RuntimeError")
        await loop.put(note("b"))
        await until(lambda: at.delivered["b"] == 1, "the loop still delivers")


class FlakyOutbox:
    """An outbox whose lease and delivered raise while told to."""

    def __init__(self, inner: SqliteOutbox) -> None:
        self.inner = inner
        self.lease_failures = 0
        self.delivered_failures = 0
        self.leases = 0

    async def put(self, notifications: Sequence[Notification]) -> int:
        return await self.inner.put(notifications)

    async def lease(self, limit: int, now: float) -> list[Leased]:
        self.leases += 1
        if self.lease_failures:
            self.lease_failures -= 1
            raise OutboxError("disk I/O error") if self.lease_failures % 2 else ValueError("anything")
        return await self.inner.lease(limit, now)

    async def delivered(self, leased: Leased) -> None:
        if self.delivered_failures:
            self.delivered_failures -= 1
            raise OutboxError("database is locked")
        await self.inner.delivered(leased)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_an_outbox_that_raises_does_not_stop_the_loop(tmp_path: Path) -> None:
    settings = replace(FAST, claim_after=0.3)
    inner = await SqliteOutbox.open(tmp_path / "n.sqlite3", settings)
    flaky = FlakyOutbox(inner)
    flaky.lease_failures = 4
    flaky.delivered_failures = 1
    async with aiohttp.ClientSession() as session, receiver() as at:
        deliverer = Deliverer(flaky, lambda: {"crm": webhook(at)}, session, settings)
        with capture_logs() as logs:
            task = asyncio.create_task(deliverer.run())
            await inner.put([note("a")])
            await until(lambda: at.delivered["a"] >= 1, "delivered after the lease failures")
            await until(lambda: inner.pending == 0, "settled, once its lease expired and it went again")
            await inner.put([note("b")])
            deliverer.wake()
            await until(lambda: at.delivered["b"] == 1, "the loop goes on")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    await inner.close()
    assert at.delivered["a"] == 2  # its settling failed: it came back (the receiver drops it by its key)
    events = [entry["event"] for entry in logs]
    assert events.count("notification_outbox_error") == 4
    assert events.count("notification_settle_error") == 1
    outbox_errors = [entry for entry in logs if entry["event"] == "notification_outbox_error"]
    assert {entry["error"] for entry in outbox_errors} == {"OutboxError", "ValueError"}
    pauses = [entry["retry_in"] for entry in outbox_errors]
    assert pauses == sorted(pauses)  # backed off, more each time


async def test_a_target_gone_from_the_rules_is_retried_until_it_comes_back() -> None:
    async with receiver() as at, running({}) as loop:
        await loop.put(note("a"))
        await until(lambda: len(loop.seen) >= 2, "retried while unknown")
        [listed] = await loop.listed("pending")
        assert listed.last_error == "unknown target"
        loop.targets["crm"] = webhook(at)
        await until(lambda: at.delivered["a"] == 1, "delivered once it is back")


async def test_an_unknown_target_past_give_up_after_fails() -> None:
    clock = Clock(1_700_000_000.0)
    async with running({}, replace(FAST, give_up_after=1.0), clock=clock) as loop:
        await loop.put(note("a", created_at=clock.now - 5))
        await until(lambda: loop.seen, "settled")
        [failed] = await loop.listed("failed")
    assert failed.last_error == "gave up after 1s: unknown target"


class Hanging:
    """A target whose send never ends (nor keeps its timeout) until let go."""

    name = "crm"
    kind = "http"

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0

    async def send(self, session: aiohttp.ClientSession, notification: Notification, timeout: float) -> Sent:
        self.started += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return Sent("delivered")


async def test_cancelled_the_loop_waits_briefly_then_leaves_sends_pending(tmp_path: Path) -> None:
    hanging = Hanging()
    path = tmp_path / "n.sqlite3"
    settings = replace(FAST, attempt_timeout=60.0)
    outbox = await SqliteOutbox.open(path, settings)
    async with aiohttp.ClientSession() as session:
        deliverer = Deliverer(outbox, lambda: {"crm": hanging}, session, settings, shutdown_grace=0.2)
        task = asyncio.create_task(deliverer.run())
        await outbox.put([note("a")])
        deliverer.wake()
        await until(lambda: hanging.started == 1, "the send under way")
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - started
    await outbox.close()
    assert 0.2 <= took < 1.0
    assert hanging.cancelled == 1
    reopened = await SqliteOutbox.open(path, settings)
    try:
        [again] = await reopened.lease(10, time.time())  # its lease voided at open
        assert (again.notification.key, again.attempts) == ("a", 0)
    finally:
        await reopened.close()


async def test_a_send_past_its_timeout_is_cut_short() -> None:
    hanging = Hanging()
    async with running({"crm": hanging}, replace(FAST, attempt_timeout=0.1)) as loop:
        await loop.put(note("a"))
        await until(lambda: loop.seen, "settled", timeout=3)
        [listed] = await loop.listed("pending")
    assert listed.last_error == "TimeoutError"
    assert hanging.cancelled >= 1


async def test_an_observer_that_raises_stops_nothing() -> None:
    def observe(_: DeliveryOutcome) -> None:
        raise ZeroDivisionError

    async with aiohttp.ClientSession() as session, receiver() as at:
        outbox = await SqliteOutbox.open(None, FAST)
        deliverer = Deliverer(outbox, lambda: {"crm": webhook(at)}, session, FAST, observe=observe)
        task = asyncio.create_task(deliverer.run())
        await outbox.put([note("a"), note("b")])
        deliverer.wake()
        await until(lambda: len(at.delivered) == 2, "both delivered")
        await until(lambda: outbox.pending == 0, "both settled")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await outbox.close()


def deliverer_with(settings: NotifySettings, seed: int = 3) -> Deliverer:
    return Deliverer(None, dict, None, settings, rng=random.Random(seed))  # type: ignore[arg-type]


@pytest.mark.parametrize("attempts", [0, 1, 2, 5, 10, 100, 10_000])
def test_the_backoff_doubles_jittered_up_to_its_most(attempts: int) -> None:
    settings = NotifySettings(backoff_initial=1.0, backoff_max=600.0)
    deliverer = deliverer_with(settings)
    ceiling = min(600.0, 2.0 ** min(attempts, 64))
    waits = [deliverer.backoff(attempts, None) for _ in range(200)]
    assert all(ceiling * 0.5 <= wait <= ceiling for wait in waits)
    assert max(waits) - min(waits) > ceiling * 0.3  # jittered, not fixed


def test_retry_after_is_a_floor_bounded_by_backoff_max() -> None:
    deliverer = deliverer_with(NotifySettings(backoff_initial=1.0, backoff_max=600.0))
    assert deliverer.backoff(0, 120.0) == 120.0
    assert deliverer.backoff(0, 86400.0) == 600.0
    assert 0.5 <= deliverer.backoff(0, 0.0) <= 1.0  # a shorter Retry-After leaves the backoff


@pytest.mark.parametrize(
    ("seconds", "shown"), [(86400.0, "24h"), (3600.0, "1h"), (5400.0, "90m"), (90.0, "90s"), (1.5, "1.5s"), (0.0, "0s")]
)
def test_a_duration_as_the_admin_reads_it(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


async def test_a_send_outliving_its_lease_is_not_started_twice() -> None:
    settings = replace(FAST, claim_after=0.1, attempt_timeout=2.0)
    async with receiver(delay=0.5) as at, running({"crm": webhook(at)}, settings) as loop:
        await loop.put(note("a"))
        await until(lambda: at.delivered["a"] == 1, "delivered")
        await until(lambda: loop.outbox.pending == 0, "settled")
    assert len(at.seen) == 1  # re-leased meanwhile (claim_after passed), but not sent again


async def test_a_slot_freed_leases_the_next_at_once_rather_than_after_poll_interval() -> None:
    settings = replace(FAST, poll_interval=30.0, concurrency=1)
    async with receiver(delay=0.05) as at, running({"crm": webhook(at)}, settings) as loop:
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await loop.put(*(note(f"k{i}") for i in range(6)))
        await until(lambda: len(at.delivered) == 6, "all delivered", timeout=3)
    assert time.monotonic() - started < 2.0
    assert at.most_in_flight == 1
