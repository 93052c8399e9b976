"""How ascrm connects to Redis (core/calls/redis_connection.py): TLS checked against a CA file, a
client certificate, a Unix socket, a bounded pool that waits, and Sentinel: a demoted master's
READONLY, then a failover and a dead master while a real `ascrm serve` answers a stream of calls.

Real servers on loopback, started by the tests: redis-server (also on a TLS port or a Unix socket,
or as a replica) and redis-sentinel, which takes a master for down after one second here.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme

from ascrm.core.calls import StoreUnavailableError, redis_connection
from ascrm.core.calls.config import StateSettings
from ascrm.core.calls.redis import RedisCallStore
from ascrm.core.calls.redis_connection import connection_pool
from ascrm.core.protocol import CallEvent, EventType
from tests.support.net import free_port
from tests.support.redis import RedisServer, client_certificate, needs_redis, redis_tls
from tests.support.sentinel import Sentinels, client, needs_sentinel
from tests.support.server import Server, ServerFactory, platform_config
from tests.support.waiting import wait_until

pytestmark = needs_redis
TIMEOUT_MS = 500  # the store's budget in these tests
MARGIN = 0.05  # seconds an answer may take beyond the budget
RULES = 'rules:\n  - {id: menu-123, on: DTMF, if: {digits: "123"}, do: {TransferEXT: "1234"}}\n'
_CALL_IDS = itertools.count(9_100_001)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def state(url: str, **extra: Any) -> StateSettings:
    return StateSettings(
        backend="redis", redis_url=url, key_prefix=f"conn-{uuid.uuid4().hex[:8]}:", timeout_ms=TIMEOUT_MS, **extra
    )


def accepted(call_id: int) -> CallEvent:
    return CallEvent(call_id=call_id, event_type=EventType.CallAccepted, event_time=datetime.now(UTC))


async def stored_and_read(store: RedisCallStore, call_id: int) -> bool:
    """Whether a call's first event is stored and read back through store."""
    await store.update(accepted(call_id), datetime.now(UTC))
    call = await store.get(call_id)
    return call is not None and call.call_id == call_id


# ----------------------------------------------------------------------------------------------------
# One server: TLS, a Unix socket, the bound


@pytest.fixture
def tls_redis(ca: trustme.CA, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", tls=redis_tls(ca, tmp_path / "tls"))
    server.start()
    yield server
    server.stop()


@pytest.mark.anyio
async def test_rediss_checks_the_server_against_the_ca_file(tls_redis: RedisServer) -> None:
    assert tls_redis.tls is not None
    store = RedisCallStore(state(tls_redis.tls_url, tls_ca_file=tls_redis.tls.cafile))
    try:
        assert await stored_and_read(store, 1)
        assert await store.ping()
    finally:
        await store.close()


@pytest.mark.anyio
async def test_rediss_refuses_a_server_whose_certificate_another_ca_signed(
    tls_redis: RedisServer, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    store = RedisCallStore(state(tls_redis.tls_url, tls_ca_file=other_ca))
    try:
        with pytest.raises(StoreUnavailableError, match="certificate verify failed"):
            await store.update(accepted(2), datetime.now(UTC))
        with pytest.raises(StoreUnavailableError, match="certificate verify failed"):
            await store.get(2)
        assert not await store.ping()
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_client_certificate_for_a_server_that_asks_for_one(ca: trustme.CA, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", tls=redis_tls(ca, tmp_path / "tls", client_auth=True))
    server.start()
    assert server.tls is not None
    certfile, keyfile = client_certificate(ca, tmp_path / "client")
    without = RedisCallStore(state(server.tls_url, tls_ca_file=server.tls.cafile))
    with_one = RedisCallStore(
        state(server.tls_url, tls_ca_file=server.tls.cafile, tls_cert_file=certfile, tls_key_file=keyfile)
    )
    try:
        with pytest.raises(StoreUnavailableError):
            await without.get(3)
        assert await stored_and_read(with_one, 3)
    finally:
        await without.close()
        await with_one.close()
        server.stop()


@pytest.mark.anyio
async def test_a_unix_socket(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", unix_socket=True)
    server.start()
    store = RedisCallStore(state(server.socket_url))
    try:
        assert await stored_and_read(store, 4)
        with client(server.port) as direct:
            assert [entry["addr"] for entry in direct.client_list() if entry["addr"].startswith("/")] != []
    finally:
        await store.close()
        server.stop()


@pytest.mark.anyio
async def test_at_its_limit_the_store_waits_for_a_free_connection_then_gives_up(own_redis: RedisServer) -> None:
    """max_connections bounds the connections the requests use: with Redis hung, two operations hold
    both, and a third waits for one (it is not refused at once for want of a connection: the pool
    would raise MaxConnectionsError beyond its two) until the budget ends it like the others."""
    store = RedisCallStore(replace(state(own_redis.url, max_connections=2), timeout_ms=300))

    async def timed() -> tuple[float, BaseException | None]:
        started = time.monotonic()
        try:
            await store.get(71)
        except StoreUnavailableError as exc:
            return time.monotonic() - started, exc
        return time.monotonic() - started, None

    try:
        assert await stored_and_read(store, 71)
        own_redis.pause()
        try:
            results = await asyncio.gather(*(timed() for _ in range(3)))
        finally:
            own_redis.resume()
        for elapsed, error in results:
            assert 0.25 < elapsed < 0.6, results  # each gave up at the budget, not before nor later
            assert "took more than 300 ms" in str(error), results
        assert await stored_and_read(store, 72)  # and it works again
    finally:
        await store.close()


# ----------------------------------------------------------------------------------------------------
# Sentinel


@dataclass
class Group:
    """A master, its replica and the sentinels watching them."""

    master: RedisServer
    replica: RedisServer
    sentinels: Sentinels
    prefix: str = field(default_factory=lambda: f"sentinel-{uuid.uuid4().hex[:8]}:")

    def state(self, *, dead_sentinel: bool = False) -> dict[str, Any]:
        """The config's state section for ascrm; dead_sentinel lists a sentinel nothing listens on first."""
        dead = [f"127.0.0.1:{free_port()}"] if dead_sentinel else []
        return {
            "backend": "redis",
            "sentinels": [*dead, *self.sentinels.addresses],
            "sentinel_master": self.sentinels.master_name,
            "key_prefix": self.prefix,
            "timeout_ms": TIMEOUT_MS,
        }

    def new_master(self, before: tuple[str, int]) -> int:
        """The port of the master the sentinels name once it is another than before (waits up to 10 s)."""

        def named() -> int:
            now = self.sentinels.master()
            return now[1] if now != before else 0

        return wait_until(named, "the sentinels to name a new master", timeout=10, interval=0.02)


# a replica syncs at once (not after the 5 s that a diskless sync waits for more replicas); a master
# stops at once (not after waiting up to 10 s for its replicas to catch up)
REPLICATION = ("--repl-diskless-sync-delay", "0", "--shutdown-timeout", "0")


def replica_in_sync(replica: RedisServer) -> bool:
    with client(replica.port) as direct:
        return direct.info("replication").get("master_link_status") == "up"


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    master = RedisServer(tmp_path / "master", args=REPLICATION)
    master.start()
    replica = RedisServer(tmp_path / "replica", replica_of=master.port, args=REPLICATION)
    sentinels = Sentinels(tmp_path / "sentinels", master.port)
    try:
        replica.start()
        wait_until(lambda: replica_in_sync(replica), "the replica to sync with the master")
        sentinels.start()
        yield Group(master, replica, sentinels)
    finally:
        sentinels.stop()
        replica.stop()
        master.stop()


@needs_sentinel
@pytest.mark.anyio
async def test_a_demoted_master_answering_readonly_sends_the_next_connection_to_the_new_master(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the pool's own checks of the sentinels out of the way, READONLY alone moves it."""
    monkeypatch.setattr(redis_connection, "_CHECK_EVERY", 3600.0)
    monkeypatch.setattr(redis_connection, "_FRESH_FOR", 3600.0)
    settings = StateSettings(
        backend="redis", sentinels=tuple(group.sentinels.addresses), sentinel_master="ascrm-master"
    )
    pool = connection_pool(settings, max_connections=2, timeout=0.5)
    try:
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        assert getattr(connection, "port", None) == group.master.port
        await connection.send_command("SET", "k", "before")
        assert await connection.read_response() == b"OK"
        await pool.release(connection)

        before = group.sentinels.master()
        group.sentinels.failover()
        assert group.new_master(before) == group.replica.port
        # what the sentinels do to the former master some seconds later, without closing its clients
        with client(group.master.port) as former:
            former.replicaof("127.0.0.1", str(group.replica.port))
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        assert getattr(connection, "port", None) == group.master.port  # the former master's, still open
        await connection.send_command("SET", "k", "after")
        with pytest.raises(redis.ConnectionError, match="previous master is now a slave"):
            await connection.read_response()
        assert not connection.is_connected
        await pool.release(connection)

        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        assert getattr(connection, "port", None) == group.replica.port
        await connection.send_command("SET", "k", "after")
        assert await connection.read_response() == b"OK"
        await pool.release(connection)
    finally:
        await pool.aclose()


@needs_sentinel
@pytest.mark.anyio
async def test_sentinel_over_tls_checks_the_sentinels_and_the_master_against_the_ca_file(
    ca: trustme.CA, tmp_path: Path
) -> None:
    tls = redis_tls(ca, tmp_path / "tls")
    master = RedisServer(tmp_path / "master", tls=tls, args=REPLICATION)
    master.start()
    replica = RedisServer(tmp_path / "replica", tls=tls, replica_of=master.tls_port, args=REPLICATION)
    sentinels = Sentinels(tmp_path / "sentinels", master.tls_port, tls=tls)
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    opened: list[RedisCallStore] = []
    try:
        replica.start()
        wait_until(lambda: replica_in_sync(replica), "the replica to sync with the master over TLS")
        sentinels.start()
        settings = state(
            "rediss://127.0.0.1/0",  # host and port unused: the sentinels name the master
            tls_ca_file=tls.cafile,
            sentinels=tuple(sentinels.addresses),  # their TLS ports
            sentinel_master=sentinels.master_name,
        )
        opened += [RedisCallStore(settings), RedisCallStore(replace(settings, tls_ca_file=other_ca))]
        trusted, refused = opened
        assert await stored_and_read(trusted, 5)
        with client(master.port) as direct:  # the master's plain port, for reading what went over TLS
            assert any(direct.scan_iter(match=f"{settings.key_prefix}*5*"))
        with pytest.raises(StoreUnavailableError):
            await refused.get(5)
    finally:
        for store in opened:
            await store.close()
        sentinels.stop()
        replica.stop()
        master.stop()


@dataclass
class Answer:
    started: float
    seconds: float
    status: int


@dataclass
class CallStream:
    """A few threads each sending calls (CallAccepted, then digits 1 2 3) one request after another
    until stopped; every answer timed."""

    server: Server
    threads: int = 3
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _running: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> CallStream:
        for _ in range(self.threads):
            thread = threading.Thread(target=self._send, daemon=True)
            thread.start()
            self._running.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._running:
            thread.join(10)

    def _send(self) -> None:
        with self.server.client(timeout=5) as http:
            while not self._stop.is_set():
                call_id = next(_CALL_IDS)
                for event in call_events(call_id):
                    started = time.monotonic()
                    status = http.post("/CallEvent", json=event).status_code
                    self.answers.append(Answer(started, time.monotonic() - started, status))

    def late_or_failed(self) -> list[Answer]:
        return [
            answer for answer in self.answers if answer.status != 200 or answer.seconds > TIMEOUT_MS / 1000 + MARGIN
        ]


def call_events(call_id: int) -> list[dict[str, Any]]:
    at = datetime.now(UTC).isoformat()
    first = {"CallID": call_id, "EventTime": at, "UN": "74950000001", "EventType": int(EventType.CallAccepted)}
    digits = [{"CallID": call_id, "EventTime": at, "EventType": int(EventType.DTMF), "DTMF": d} for d in "123"]
    return [first, *digits]


def serve_on_sentinels(serve: ServerFactory, group: Group, tmp_path: Path) -> Server:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return serve(platform_config(rules=str(rules), state=group.state(dead_sentinel=True)))


def stored_on(port: int, group: Group, server: Server) -> bool:
    """Whether a new call's events are stored on the Redis at port, and decided from that state."""
    call_id = next(_CALL_IDS)
    with server.client() as http:
        answers = [http.post("/CallEvent", json=event).json() for event in call_events(call_id)]
    with client(port) as direct:
        found = any(direct.scan_iter(match=f"{group.prefix}*{call_id}*", count=1000))
    return found and answers[-1] == {"CallID": call_id, "EventType": 2, "Param": "1234"}


@needs_sentinel
@pytest.mark.parametrize("fault", ["sentinel-failover", "master-down"])
def test_a_failover_moves_ascrm_to_the_new_master_with_every_request_answered_in_time(
    group: Group, serve: ServerFactory, tmp_path: Path, fault: str
) -> None:
    """SENTINEL FAILOVER (a maintenance: the master stays up), or the master stopped (requests answered
    within the budget without state until the replica is promoted): ascrm follows, without a restart."""
    server = serve_on_sentinels(serve, group, tmp_path)
    before = group.sentinels.master()
    assert wait_until(lambda: stored_on(before[1], group, server), "a call stored on the master")
    with CallStream(server) as stream:
        wait_until(lambda: len(stream.answers) >= 30, "the stream's first answers")
        if fault == "sentinel-failover":
            group.sentinels.failover()
        else:
            group.master.stop()
        new = group.new_master(before)
        switched = time.monotonic()
        wait_until(lambda: stored_on(new, group, server), "a new call stored on the new master", timeout=5)
        moved_after = time.monotonic() - switched
        sent = len(stream.answers)
        wait_until(lambda: len(stream.answers) >= sent + 30, "answers after the move")
    assert new == group.replica.port
    assert moved_after < 2, f"new calls reached the new master {moved_after:.2f} s after the sentinels named it"
    assert stream.late_or_failed() == []
    if fault == "sentinel-failover":
        assert server.logged("redis_master_changed", new=f"127.0.0.1:{new}")
    else:
        assert server.logged("store_unavailable")  # the master was down for a second or two: answered without state
    assert "Traceback" not in server.log_text()
