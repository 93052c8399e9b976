"""The http target against a stand-in receiver: what it sends, its signature, what an answer means, its bounds."""

from __future__ import annotations

import asyncio
import hmac
import time
import tracemalloc
from collections.abc import AsyncIterator
from email.utils import formatdate

import aiohttp
import pytest

from ascrm.core.notify.message import Notification
from ascrm.core.notify.webhook import WebhookTarget, outcome, parse_retry_after, signature
from tests.support.net import free_port
from tests.support.receiver import Receiver, receiver

pytestmark = pytest.mark.anyio
BODY = b'{"kind": "missed", "call_id": 7}'
NOTE = Notification("7:missed:crm", "crm", "missed", 7, 1000.0, BODY)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


def target(at: Receiver | str, **fields: object) -> WebhookTarget:
    return WebhookTarget("crm", at if isinstance(at, str) else at.url, **fields)  # type: ignore[arg-type]


async def test_the_request_carries_the_body_its_key_a_timestamp_and_the_targets_headers(
    session: aiohttp.ClientSession,
) -> None:
    headers = (("Authorization", "Bearer t0ken"), ("X-Many", "1"), ("X-Many", "2"), ("Idempotency-Key", "mine"))
    async with receiver() as at:
        before = int(time.time())
        sent = await target(at, headers=headers).send(session, NOTE, 5)
        after = int(time.time())
    assert (sent.outcome, sent.status, sent.error) == ("delivered", 204, None)
    [seen] = at.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/hooks/secret-token?sig=abc", BODY)
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Idempotency-Key"] == NOTE.key  # ascrm's wins over the target's own
    assert seen.headers["Authorization"] == "Bearer t0ken"
    assert before <= int(seen.headers["X-Ascrm-Timestamp"]) <= after
    assert "X-Ascrm-Signature" not in seen.headers  # no secret, no signature


async def test_put_is_a_method_too(session: aiohttp.ClientSession) -> None:
    async with receiver() as at:
        assert (await target(at, method="PUT").send(session, NOTE, 5)).outcome == "delivered"
    assert at.seen[0].method == "PUT"


async def test_the_signature_verifies_with_the_secret_and_not_with_another(session: aiohttp.ClientSession) -> None:
    async with receiver() as at:
        await target(at, secret="s3cret").send(session, NOTE, 5)
        await target(at, secret="s3cret", signature_header="X-Hook-Sig").send(session, NOTE, 5)
    first, second = at.seen
    timestamp = int(first.headers["X-Ascrm-Timestamp"])
    header = first.headers["X-Ascrm-Signature"]
    assert header.startswith("sha256=")
    assert hmac.compare_digest(header, signature("s3cret", timestamp, first.body))
    assert not hmac.compare_digest(header, signature("other", timestamp, first.body))
    assert not hmac.compare_digest(header, signature("s3cret", timestamp + 1, first.body))  # replayed later
    assert not hmac.compare_digest(header, signature("s3cret", timestamp, first.body + b" "))
    assert second.headers["X-Hook-Sig"] == signature("s3cret", int(second.headers["X-Ascrm-Timestamp"]), BODY)
    assert "X-Ascrm-Signature" not in second.headers


def test_the_signed_bytes_are_the_timestamp_a_full_stop_and_the_body() -> None:
    import hashlib

    expected = hmac.new(b"k", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature("k", 1700000000, BODY) == f"sha256={expected}"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "delivered"),
        (201, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (408, "retry"),
        (425, "retry"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (599, "retry"),
        (301, "rejected"),
        (304, "rejected"),
        (400, "rejected"),
        (401, "rejected"),
        (404, "rejected"),
        (410, "rejected"),
        (422, "rejected"),
        (100, "rejected"),
        (600, "rejected"),
    ],
)
def test_what_a_status_means(status: int, expected: str) -> None:
    sent = outcome(status)
    assert (sent.outcome, sent.status) == (expected, status)
    assert sent.error == (None if expected == "delivered" else f"HTTP {status}")


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (500, None, ("retry", "HTTP 500", None)),
        (429, "2", ("retry", "HTTP 429", 2.0)),
        (404, "5", ("rejected", "HTTP 404", None)),
    ],
)
async def test_an_answer_over_the_wire(
    session: aiohttp.ClientSession, status: int, retry_after: str | None, expected: tuple[str, str, float | None]
) -> None:
    async with receiver(mode="status", status=status, retry_after=retry_after) as at:
        sent = await target(at).send(session, NOTE, 5)
    assert (sent.outcome, sent.error, sent.retry_after) == expected
    assert sent.status == status


async def test_a_redirect_is_not_followed(session: aiohttp.ClientSession) -> None:
    async with receiver(mode="status", status=302) as at:
        sent = await target(at).send(session, NOTE, 5)
    assert (sent.outcome, sent.error) == ("rejected", "HTTP 302")
    assert len(at.seen) == 1


async def test_a_receiver_that_hangs_is_a_timeout_within_the_attempts_time(session: aiohttp.ClientSession) -> None:
    async with receiver(mode="hang") as at:
        started = time.monotonic()
        sent = await target(at).send(session, NOTE, 0.3)
        took = time.monotonic() - started
    assert (sent.outcome, sent.error, sent.status) == ("retry", "TimeoutError", None)
    assert 0.3 <= took < 0.8


async def test_no_time_left_is_a_timeout_without_a_request(session: aiohttp.ClientSession) -> None:
    async with receiver() as at:
        sent = await target(at).send(session, NOTE, 0)
    assert (sent.outcome, sent.error) == ("retry", "TimeoutError")
    assert at.seen == []


async def test_a_closed_port_is_a_retry_named_by_its_error_class(session: aiohttp.ClientSession) -> None:
    sent = await target(f"http://127.0.0.1:{free_port()}/hook").send(session, NOTE, 2)
    assert (sent.outcome, sent.error) == ("retry", "ClientConnectorError")


async def test_a_bad_url_never_raises(session: aiohttp.ClientSession) -> None:
    sent = await target("not a url at all").send(session, NOTE, 2)
    assert sent.outcome == "retry"
    assert sent.error is not None


@pytest.mark.parametrize("mode", ["huge", "endless"])
async def test_a_huge_or_endless_answer_is_read_64_kib_at_most(session: aiohttp.ClientSession, mode: str) -> None:
    async with receiver(mode=mode) as at:
        tracemalloc.start()
        try:
            started = time.monotonic()
            sent = await target(at).send(session, NOTE, 5)
            took = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await asyncio.sleep(0.1)
        written = at.written
        await asyncio.sleep(0.2)
        assert at.written == written  # the connection was dropped: the receiver writes no more
    assert (sent.outcome, sent.status) == ("delivered", 200)
    assert took < 1.0
    assert peak < 2 * 1024 * 1024
    assert written < 10 * 1024 * 1024


async def test_a_small_answer_leaves_the_connection_for_the_next_request() -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session, receiver(mode="status", status=200) as at:
        for _ in range(3):
            assert (await target(at).send(session, NOTE, 2)).outcome == "delivered"
    assert len(at.seen) == 3
    assert len({one.peer for one in at.seen}) == 1  # one connection for the three


def test_its_repr_shows_no_header_value_no_secret_and_no_url() -> None:
    shown = repr(
        target("https://crm.example/hooks/t0ken?key=k3y", headers=(("Authorization", "Bearer t0ken"),), secret="s3cret")
    )
    assert "crm" in shown
    assert "Authorization" in shown
    for hidden in ("t0ken", "s3cret", "k3y", "hooks"):
        assert hidden not in shown
    assert target("http://x").kind == "http"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("2", 2.0),
        (" 120 ", 120.0),
        ("86400", 86400.0),
        ("86401", 86400.0),
        ("9" * 30, 86400.0),
        ("9" * 100, None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("2 s", None),
        ("0x10", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        (formatdate(1_700_000_030.0, usegmt=True), 30.0),
        (formatdate(1_700_000_000.0 + 10 * 86400, usegmt=True), 86400.0),
        ("Wed, 99 Oct 2015 07:28:00 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 -0000", 0.0),
    ],
)
def test_retry_after_is_delta_seconds_or_an_http_date_within_a_day(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, 1_700_000_000.0) == expected
