"""Look-ups against a stand-in CRM on loopback: outcomes, cache, coalescing, rate, circuit breaker, secrets."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from structlog.testing import capture_logs

from ascrm.core.lookups.lookups import Lookups
from ascrm.core.lookups.request import LookupRequest
from ascrm.core.lookups.source import SourceSettings
from tests.support.crm_standin import CrmStandIn, crm_standin

pytestmark = pytest.mark.anyio
SLACK = 0.05


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """A clock the tests move."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def standin() -> AsyncIterator[CrmStandIn]:
    async with crm_standin() as running:
        yield running


@pytest.fixture
async def lookups_and_clock() -> AsyncIterator[tuple[Lookups, Clock]]:
    clock = Clock()
    lookups = Lookups(clock=clock)
    yield lookups, clock
    await lookups.close()


def value(answer: Any) -> str | None:
    return answer.get("value") if isinstance(answer, dict) else None


def request(standin: CrmStandIn, path: str = "/owner?phone=1") -> LookupRequest:
    return LookupRequest("GET", standin.url + path)


def deadline(seconds: float = 1.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_a_value_is_fetched_then_reused_from_the_cache(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    lookups, clock = lookups_and_clock
    source = SourceSettings("owner", ttl=10)
    first = await lookups.look_up(source, request(standin), value, deadline=deadline())
    second = await lookups.look_up(source, request(standin), value, deadline=deadline())
    assert (first.value, first.outcome, second.value, second.outcome) == ("ivanov", "fetched", "ivanov", "hit")
    assert standin.requests == 1
    clock.now += 10
    assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).outcome == "fetched"
    assert standin.requests == 2
    assert lookups.counts == {("owner", "fetched"): 2, ("owner", "hit"): 1}
    assert lookups.seconds["owner"].count == 3


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [
        ("404", "miss"),
        ("null", "miss"),
        ("500", "error"),
        ("429", "error"),
        ("503", "error"),
        ("garbage", "error"),
        ("huge", "error"),
        ("redirect", "error"),
        ("hang", "timeout"),
    ],
)
async def test_each_answer_has_its_outcome_within_the_deadline(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock], mode: str, outcome: str
) -> None:
    lookups, _ = lookups_and_clock
    standin.mode = mode
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await lookups.look_up(
        SourceSettings("owner", timeout=0.2), request(standin), value, deadline=deadline(0.3)
    )
    assert (answer.value, answer.outcome) == (None, outcome)
    assert loop.time() - started < 0.3 + SLACK
    assert standin.requests == 1


async def test_a_refused_connection_and_a_failing_extract_are_errors(lookups_and_clock: tuple[Lookups, Clock]) -> None:
    lookups, _ = lookups_and_clock
    refused = LookupRequest("GET", "http://127.0.0.1:9/nothing-listens")
    assert (await lookups.look_up(SourceSettings("a"), refused, value, deadline=deadline())).outcome == "error"
    async with crm_standin() as standin:

        def broken(answer: Any) -> str | None:
            raise KeyError("value")

        assert (await lookups.look_up(SourceSettings("b"), request(standin), broken, deadline=deadline())).outcome == (
            "error"
        )


async def test_the_deadline_cuts_a_slow_answer(standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]) -> None:
    lookups, _ = lookups_and_clock
    standin.mode, standin.delay = "slow", 1.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await lookups.look_up(SourceSettings("owner", timeout=5), request(standin), value, deadline=deadline(0.1))
    assert answer.outcome == "timeout"
    assert loop.time() - started < 0.1 + SLACK


async def test_a_long_value_is_cut_to_1024_characters(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    lookups, _ = lookups_and_clock
    standin.value = "я" * 5000
    answer = await lookups.look_up(SourceSettings("owner"), request(standin), value, deadline=deadline())
    assert answer.value == "я" * 1024


async def test_a_miss_is_remembered_for_miss_ttl(standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]) -> None:
    """A miss from the cache answers "hit" with no value."""
    lookups, clock = lookups_and_clock
    standin.mode = "404"
    source = SourceSettings("owner", miss_ttl=5)
    assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).outcome == "miss"
    cached = await lookups.look_up(source, request(standin), value, deadline=deadline())
    assert (cached.value, cached.outcome, standin.requests) == (None, "hit", 1)
    clock.now += 5
    assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).outcome == "miss"
    assert standin.requests == 2


async def test_identical_look_ups_share_one_request(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    lookups, _ = lookups_and_clock
    standin.mode, standin.delay = "slow", 0.05
    answers = await asyncio.gather(
        *(lookups.look_up(SourceSettings("owner"), request(standin), value, deadline=deadline()) for _ in range(50))
    )
    assert {answer.value for answer in answers} == {"ivanov"}
    assert standin.requests == 1


async def test_a_caller_that_stops_waiting_leaves_the_request_to_the_others(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    lookups, _ = lookups_and_clock
    standin.mode, standin.delay = "slow", 0.15
    source = SourceSettings("owner", timeout=1)
    patient = asyncio.ensure_future(lookups.look_up(source, request(standin), value, deadline=deadline(1)))
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    hurried = await lookups.look_up(source, request(standin), value, deadline=deadline(0.05))
    assert hurried.outcome == "timeout"
    assert loop.time() - started < 0.05 + SLACK
    assert (await patient).value == "ivanov"
    assert standin.requests == 1


async def test_the_rate_limit_answers_at_once_and_the_last_good_value_stands_in(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    lookups, clock = lookups_and_clock
    source = SourceSettings("owner", rate=1, burst=2, ttl=0, stale=60)
    outcomes = [
        (await lookups.look_up(source, request(standin, f"/{n}"), value, deadline=deadline())).outcome for n in range(3)
    ]
    assert outcomes == ["fetched", "fetched", "rate_limited"]
    stale = await lookups.look_up(source, request(standin, "/0"), value, deadline=deadline())
    assert (stale.value, stale.outcome) == ("ivanov", "stale")
    assert standin.requests == 2
    clock.now += 1
    assert (await lookups.look_up(source, request(standin, "/9"), value, deadline=deadline())).outcome == "fetched"


async def test_the_circuit_opens_after_failures_then_one_trial_closes_it(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    lookups, clock = lookups_and_clock
    source = SourceSettings("owner", failures=3, cooldown=30, ttl=0)
    standin.mode = "500"
    with capture_logs() as logs:
        for _ in range(3):
            assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).outcome == "error"
    assert lookups.breaker("owner") == "open"
    assert any(entry["event"] == "lookup_circuit_opened" for entry in logs)
    assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).outcome == "circuit_open"
    assert standin.requests == 3
    clock.now += 30
    assert lookups.breaker("owner") == "half_open"
    assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).outcome == "error"
    assert (lookups.breaker("owner"), standin.requests) == ("open", 4)
    clock.now += 30
    standin.mode = "value"
    assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).outcome == "fetched"
    assert lookups.breaker("owner") == "closed"


async def test_secrets_in_headers_and_url_are_never_logged(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    lookups, _ = lookups_and_clock
    standin.mode = "500"
    secret = LookupRequest("POST", standin.url + "/rest/1/URLSECRET/crm", (("Authorization", "HEADERSECRET"),), b"{}")
    with capture_logs() as logs:
        await lookups.look_up(SourceSettings("owner", failures=1), secret, value, deadline=deadline())
    assert standin.headers[0]["Authorization"] == "HEADERSECRET"
    assert logs
    assert "SECRET" not in repr(logs)


@pytest.mark.parametrize("mode", ["500", "503", "hang"])
async def test_the_last_good_value_answers_a_failure_while_young_enough(standin: CrmStandIn, mode: str) -> None:
    clock = Clock()
    lookups = Lookups(clock=clock)
    try:
        source = SourceSettings("owner", ttl=10, stale=100, timeout=0.1)
        assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).outcome == "fetched"
        standin.mode = mode
        clock.now += 50
        stale = await lookups.look_up(source, request(standin), value, deadline=deadline())
        assert (stale.value, stale.outcome) == ("ivanov", "stale")
        clock.now += 50
        failed = await lookups.look_up(source, request(standin), value, deadline=deadline())
        assert (failed.value, failed.outcome) == (None, "timeout" if mode == "hang" else "error")
    finally:
        await lookups.close()


async def test_the_cache_keeps_max_entries_the_least_recently_used_go_first(standin: CrmStandIn) -> None:
    lookups = Lookups(max_entries=2)
    try:
        source = SourceSettings("owner")
        for path in ("/a", "/b", "/a", "/c"):  # /b is the least recently used when /c comes
            await lookups.look_up(source, request(standin, path), value, deadline=deadline())
        assert standin.requests == 3
        assert (await lookups.look_up(source, request(standin, "/a"), value, deadline=deadline())).outcome == "hit"
        assert (await lookups.look_up(source, request(standin, "/b"), value, deadline=deadline())).outcome == "fetched"
    finally:
        await lookups.close()


async def test_the_latency_histogram_counts_each_look_up(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    lookups, _ = lookups_and_clock
    standin.mode, standin.delay = "slow", 0.03
    await lookups.look_up(SourceSettings("owner"), request(standin), value, deadline=deadline())
    await lookups.look_up(SourceSettings("owner"), request(standin), value, deadline=deadline())
    histogram = lookups.seconds["owner"]
    buckets = dict(histogram.cumulative())
    assert (histogram.count, buckets[float("inf")]) == (2, 2)
    assert buckets[0.005] == 1  # the hit
    assert buckets[0.025] == 1  # the fetch took at least 30 ms
    assert 0.03 <= histogram.sum < 1


async def test_tls_is_checked_against_the_ca_file(ca: trustme.CA, tmp_path: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    async with crm_standin(tls=context) as standin:
        trusting, untrusting = Lookups(ca_file=tmp_path / "ca.pem"), Lookups()
        try:
            source = SourceSettings("owner")
            assert (await trusting.look_up(source, request(standin), value, deadline=deadline())).outcome == "fetched"
            assert (await untrusting.look_up(source, request(standin), value, deadline=deadline())).outcome == "error"
        finally:
            await trusting.close()
            await untrusting.close()


async def test_a_fresh_answer_is_known_at_once_a_stale_one_is_looked_up(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    """cached() answers from the cache alone, fresh entries only (a stale one is looked up, to be refreshed)."""
    lookups, clock = lookups_and_clock
    source = SourceSettings("owner", ttl=10, stale=60)
    assert lookups.cached(source, request(standin)) is None  # never asked
    await lookups.look_up(source, request(standin), value, deadline=deadline())
    hit = lookups.cached(source, request(standin))
    assert hit is not None
    assert (hit.value, hit.outcome) == ("ivanov", "hit")
    assert lookups.cached(source, request(standin, "/owner?phone=2")) is None  # another request
    clock.now += 10
    assert lookups.cached(source, request(standin)) is None  # stale: only a failure may be answered by it
    assert lookups.counts == {("owner", "fetched"): 1, ("owner", "hit"): 1}
    assert lookups.seconds["owner"].count == 2


async def test_timeouts_count_toward_the_circuit_breaker(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    """A CRM that hangs opens the circuit as one that fails does: then callers stop waiting for it at all."""
    lookups, _ = lookups_and_clock
    source = SourceSettings("owner", failures=2, cooldown=30, ttl=0, timeout=0.05)
    standin.mode = "hang"
    for _ in range(2):
        assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).outcome == "timeout"
    assert lookups.breaker("owner") == "open"
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).outcome == "circuit_open"
    assert loop.time() - started < 0.05  # answered at once, not after another timeout
    assert standin.requests == 2


async def test_a_miss_replaces_the_last_good_value(
    standin: CrmStandIn, lookups_and_clock: tuple[Lookups, Clock]
) -> None:
    """Once the CRM says nobody owns a number, a later failure does not bring the former owner back."""
    lookups, clock = lookups_and_clock
    source = SourceSettings("owner", ttl=10, miss_ttl=5, stale=3600)
    assert (await lookups.look_up(source, request(standin), value, deadline=deadline())).value == "ivanov"
    clock.now += 10
    standin.mode = "404"
    missed = await lookups.look_up(source, request(standin), value, deadline=deadline())
    assert (missed.value, missed.outcome) == (None, "miss")
    clock.now += 5
    standin.mode = "500"
    failed = await lookups.look_up(source, request(standin), value, deadline=deadline())
    assert (failed.value, failed.outcome) == (None, "error")  # not "stale" with ivanov
    assert standin.requests == 3
