"""Connection pools for the Redis call store, built from StateSettings: one server named by a URL, or
the master that Redis Sentinel names.

`state.redis_url` takes redis-py's URL forms: `redis://[[user]:password@]host:port/db`, `rediss://…`
(TLS: the server's certificate is checked against `tls_ca_file`, else the system's CAs;
`tls_cert_file` and `tls_key_file` present a client certificate) and `unix:///path/to/redis.sock?db=0`.
With `state.sentinels`, the sentinels name the master of `state.sentinel_master`: the URL's host and
port are not used, its scheme (rediss: TLS to the sentinels and the master alike), user, password and
database are; `sentinel_password` is the sentinels' own password.

Every connection, to a server or to a sentinel, gets options that fit the store's budget (redis-py's
defaults do not): an explicit connect timeout, and a read timeout on the sentinels' clients (the
store's own budget bounds everything it sends the master, see connection_pool); no retries (the
Redis() client of redis-py 6+ retries timeouts and connection errors 3 times with backoff, whatever
retry_on_timeout says: an empty Retry turns that off); a PING before using a connection idle for a
while; RESP2, so the pool checks that a connection it hands out has no unread data (redis-py 8
defaults to RESP3 with "maintenance notifications", and then skips that check).

A pool opens at most `max_connections`; the store in front of it waits for a free one (a semaphore,
within its budget) rather than ask for more. The plain pool raises MaxConnectionsError at its limit,
which the store never reaches; the Sentinel pool is a BlockingConnectionPool, whose wait ends with a
ConnectionError ("No connection available.") after `timeout`. The plain pool is used where it can be:
BlockingConnectionPool's condition and timeout around every checkout cost about 40 us of CPU per
operation, measured.

Sentinel: redis-py's SentinelConnectionPool asks the sentinels for the master only when it opens a
connection, and drops a connection only when it breaks or answers READONLY. After a failover the
former master, if it is still up, stays a master until the sentinels reconfigure it (about ten
seconds later, when they also disconnect its clients), so connections opened before the failover
would go on writing to it, and lose those writes. The pool here also asks the sentinels once a
second while it is used, in the background (a request never waits for it), and when the master they
name changes it closes the idle connections and each busy one when it comes back: every operation
after that reaches the new master. A connection that broke or was refused, or that met READONLY
(redis-py then disconnects it), makes the next new connection ask the sentinels again rather than
trust their last answer. Concurrent questions to the sentinels are one question; when no sentinel
answers, connections go to the master they named last.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

import structlog
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from ascrm.core.calls.config import StateSettings, sentinel_address

log = structlog.get_logger("ascrm.calls")

_HEALTH_CHECK_INTERVAL = 10  # seconds a pooled connection may idle before a PING checks it
_CHECK_EVERY = 1.0  # seconds between two questions to the sentinels while a pool is used
_FRESH_FOR = 2.0  # seconds a new connection trusts the sentinels' last answer; later it asks them itself
_AFTER_TROUBLE = 0.1  # after a broken or refused connection, the sentinels are asked again this soon at most

Address = tuple[str, int]


def connection_pool(settings: StateSettings, *, max_connections: int, timeout: float) -> ConnectionPool:
    """A pool of at most max_connections connections to the Redis of settings, each with timeout
    (seconds) as its connect timeout (the sentinels': also their read timeout); the Sentinel pool makes a
    caller wait at most timeout for a free connection, the plain one raises at its limit.
    ValueError when the settings do not make a deployment (tls_* without rediss://, Sentinel with a
    unix:// URL): load_settings refuses those first."""
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry_on_timeout": False,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": _HEALTH_CHECK_INTERVAL,
        "protocol": 2,
    }
    options.update(_tls_options(settings))
    # The store bounds each of its operations, reads and writes included, with its own budget
    # (asyncio's timeout, after which redis-py disconnects): a socket timeout on top would only make
    # redis-py wrap every write in a task of its own (asyncio.wait_for), a third of a script call's
    # CPU. The sentinels' clients, queried outside the store's budget, keep theirs.
    master = {**options, "socket_timeout": None}
    if settings.sentinels:
        return _sentinel_pool(settings, max_connections, timeout, options, master)
    # a plain pool: BlockingConnectionPool's condition and timeout around every checkout cost 40 us of
    # a script call's CPU; the store waits for a free connection in front of it (RedisCallStore._slots)
    return ConnectionPool.from_url(settings.redis_url, max_connections=max_connections, **master)


def _tls_options(settings: StateSettings) -> dict[str, str]:
    files = {
        "ssl_ca_certs": settings.tls_ca_file,
        "ssl_certfile": settings.tls_cert_file,
        "ssl_keyfile": settings.tls_key_file,
    }
    given = {option: str(path) for option, path in files.items() if path is not None}
    if given and urlsplit(settings.redis_url).scheme != "rediss":
        raise ValueError("tls_ca_file, tls_cert_file and tls_key_file need a rediss:// redis_url")
    return given


def _sentinel_pool(
    settings: StateSettings, max_connections: int, timeout: float, options: dict[str, Any], master: dict[str, Any]
) -> ConnectionPool:
    url: dict[str, Any] = dict(parse_url(settings.redis_url))  # the master's user, password, database, TLS
    connection_class = url.pop("connection_class", None)
    if connection_class is UnixDomainSocketConnection:
        raise ValueError("Sentinel names TCP addresses: redis_url cannot be unix:// with sentinels")
    for unused in ("host", "port"):
        url.pop(unused, None)
    tls = connection_class is SSLConnection
    # the sentinels' Redis() clients take the same options but retry_on_timeout, which they deprecate
    # (a timeout is a retried error anyway, and the empty Retry retries nothing)
    sentinel_options = {name: value for name, value in options.items() if name != "retry_on_timeout"}
    if tls:
        sentinel_options["ssl"] = True
    if settings.sentinel_password is not None:
        sentinel_options["password"] = settings.sentinel_password
    sentinels = Sentinel(
        [sentinel_address(entry) for entry in settings.sentinels],
        sentinel_kwargs=sentinel_options,
    )
    return _SentinelPool(
        settings.sentinel_master,
        sentinels,
        max_connections=max_connections,
        timeout=timeout,
        ssl=tls,
        **master,
        **url,
    )


class _SentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Connections to the master the sentinels name, at most max_connections, rechecked while in use
    (see the module's docstring)."""

    def __init__(self, service_name: str, sentinels: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinels, **kwargs)  # type: ignore[no-untyped-call]
        self._question: asyncio.Task[Address | Exception] | None = None
        self._asked_at = -_CHECK_EVERY  # monotonic time of the last question that was answered or failed
        self._next_check = 0.0  # the next get_connection after this asks in the background
        self._fresh_until = 0.0  # until then a new connection goes to master_address without asking
        self._unanswered = False  # the last question found no sentinel that named a master

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        """A connected connection to the master, waiting for a free one at the limit."""
        if time.monotonic() >= self._next_check:
            self._ask()  # in the background: this caller goes on with the answer it has
        try:
            connection: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except BaseException:  # refused, timed out, cancelled by the caller's budget while connecting
            self._distrust()
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        """Take a connection back; one to a former master is closed first, so it reconnects to the new one."""
        if not connection.is_connected:  # it broke, or met READONLY (redis-py closes it then)
            self._distrust()
        elif (getattr(connection, "host", None), getattr(connection, "port", None)) != self.master_address:
            await connection.disconnect()
        await super().release(connection)

    async def get_master_address(self) -> Address:
        """Where the master is (called by a connection that connects): the sentinels' last answer while
        it is fresh, else theirs now; their last answer when none answers now."""
        known: Address | None = self.master_address
        if known is not None and time.monotonic() < self._fresh_until:
            return known
        answer = await asyncio.shield(self._ask())
        if not isinstance(answer, Exception):
            return answer
        named_last: Address | None = self.master_address
        if named_last is not None:
            return named_last
        raise MasterNotFoundError(f"no sentinel names the master {self.service_name!r}: {answer}") from answer

    async def aclose(self) -> None:
        """Close every connection, to the master and to the sentinels; stop asking them."""
        if self._question is not None:
            self._question.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._question
        await super().aclose()
        await self.sentinel_manager.aclose()

    def _ask(self) -> asyncio.Task[Address | Exception]:
        """The question to the sentinels under way, or a new one."""
        if self._question is None or self._question.done():
            self._next_check = time.monotonic() + _CHECK_EVERY
            self._question = asyncio.get_running_loop().create_task(self._discover())
        return self._question

    async def _discover(self) -> Address | Exception:
        """Ask the sentinels where the master is; redis-py's pool closes its idle connections when that
        changed. Never raises: the error is the answer."""
        before = self.master_address
        started = time.monotonic()
        try:
            address: Address = await super().get_master_address()  # type: ignore[no-untyped-call]
        except Exception as exc:  # no sentinel answered, or none names a master that is up
            self._asked_at = started
            self._next_check = started + _CHECK_EVERY
            if not self._unanswered:
                self._unanswered = True
                log.warning("redis_master_unknown", master=self.service_name, error=f"{type(exc).__name__}: {exc}")
            return exc
        self._asked_at = started
        self._next_check = started + _CHECK_EVERY
        self._fresh_until = started + _FRESH_FOR
        self._unanswered = False
        if before is not None and before != address:
            log.warning("redis_master_changed", master=self.service_name, old=_shown(before), new=_shown(address))
        return address

    def _distrust(self) -> None:
        """A connection broke or was refused: new connections ask the sentinels again (not at once after
        a question, so a master that is down costs the sentinels one question per _AFTER_TROUBLE)."""
        soon = self._asked_at + _AFTER_TROUBLE
        self._fresh_until = min(self._fresh_until, soon)
        self._next_check = min(self._next_check, soon)


def _shown(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
