"""Running the app under uvicorn (uvloop + httptools, bounded by the edge's limits), in this process."""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

import structlog
import uvicorn

from ascrm.core.engine import RuleSet
from ascrm.service.app import create_app
from ascrm.service.logs import AnswerLog, configure_logging
from ascrm.service.net.connections import ConnectionGuard
from ascrm.service.net.http import bind_guard
from ascrm.service.net.openfiles import raise_open_files_limit
from ascrm.service.net.tls import server_context
from ascrm.service.settings import Settings
from ascrm.service.stats import ConnectionStats

log = structlog.get_logger("ascrm.server")

STARTUP_FAILURE = 3  # uvicorn's exit status when the lifespan's start-up fails

# How ascrm runs uvicorn; bench/bare_app.py runs its baseline with the very same options (uvicorn_config
# replaces `http` with the bounded protocol and takes `timeout_keep_alive` from limits.keep_alive_seconds).
UVICORN_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "lifespan": "on",
    "access_log": False,
    "log_config": None,
    "server_header": False,
    "timeout_graceful_shutdown": 10,
    "timeout_keep_alive": 5,  # seconds an idle connection stays open; a proxy's upstream pool must idle less
}


def uvicorn_config(
    settings: Settings,
    rules: RuleSet | None = None,
    answers: AnswerLog | None = None,
    guard: ConnectionGuard | None = None,
) -> uvicorn.Config:
    """The uvicorn configuration ascrm runs with (guard: the edge's state; default: one at the configured cap)."""
    context = server_context(settings.tls) if settings.tls else None  # bad files fail here, with the key
    limits = settings.limits
    guard = guard or ConnectionGuard(
        limits, ConnectionStats(), limits.max_connections, settings.listen.forwarded_allow_ips
    )

    def tls_factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        assert context is not None
        return context

    options = {
        **UVICORN_OPTIONS,
        "http": bind_guard(guard),
        "ws": "none",
        "timeout_keep_alive": limits.keep_alive_seconds,
    }
    return uvicorn.Config(
        create_app(settings, rules=rules, answers=answers, connections=guard.stats),
        host=settings.listen.host,
        port=settings.listen.port,
        ssl_context_factory=tls_factory if context else None,
        proxy_headers=bool(settings.listen.forwarded_allow_ips),
        forwarded_allow_ips=list(settings.listen.forwarded_allow_ips),
        **options,
    )


class _Server(uvicorn.Server):
    """uvicorn's server on sockets bound beforehand, with the edge's deadline sweep and drain, flushing
    buffered log lines once it has shut down (it then re-raises the signal that stopped it, which ends
    the process without Python's own clean-up)."""

    def __init__(self, config: uvicorn.Config, guard: ConnectionGuard, flush: Callable[[], None]) -> None:
        super().__init__(config)
        self._guard = guard
        self._flush = flush
        self._sweeper: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """As uvicorn's, on the given sockets, with a TLS handshake timeout, the sweep, and the address logged."""
        assert sockets, "bind the sockets first (ascrm.service.net.listener.bind)"
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)  # as uvicorn does
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if config.ssl:
            tls = {"ssl": config.ssl, "ssl_handshake_timeout": self._guard.limits.tls_handshake_timeout_seconds}
        self.servers = [
            await loop.create_server(create_protocol, sock=sock, backlog=config.backlog, **tls) for sock in sockets
        ]
        self._sweeper = asyncio.create_task(self._guard.sweep(self.server_state.connections))  # type: ignore[arg-type]
        self._log_started_message(sockets)
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Refuse new connections, drain the open ones (see GuardedHttpProtocol.shutdown), stop."""
        self._guard.draining = True
        try:
            await super().shutdown(sockets)
        finally:
            if self._sweeper is not None:
                self._sweeper.cancel()
            self._flush()


def run(settings: Settings, rules: RuleSet, sockets: list[socket.socket]) -> None:
    """Serve rules on the bound sockets until SIGINT or SIGTERM, then answer what was received and stop."""
    logs = configure_logging(settings.log)
    files = raise_open_files_limit()
    cap = files.connections(settings.limits.max_connections)
    guard = ConnectionGuard(settings.limits, ConnectionStats(), cap, settings.listen.forwarded_allow_ips)
    config = uvicorn_config(settings, rules, logs.answers, guard)  # a bad TLS file stops here, before any log line
    log.info("open_files_limit", soft=files.soft, hard=files.hard, before=files.before, max_connections=cap)
    if cap < settings.limits.max_connections:
        log.warning(
            "max_connections_lowered",
            setting="limits.max_connections",
            configured=settings.limits.max_connections,
            max_connections=cap,
            open_files_limit=files.soft,
        )
    _Server(config, guard, logs.flush).run(sockets=sockets)
