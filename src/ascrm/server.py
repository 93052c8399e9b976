"""Running the app under uvicorn (uvloop + httptools), in this process."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

import uvicorn

from ascrm.app import create_app
from ascrm.engine import RuleSet
from ascrm.observe import AnswerLog, configure_logging
from ascrm.settings import Settings
from ascrm.tls import server_context

# How ascrm runs uvicorn; bench/bare_app.py runs its baseline with the very same options.
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
    settings: Settings, rules: RuleSet | None = None, answers: AnswerLog | None = None
) -> uvicorn.Config:
    """The uvicorn configuration ascrm runs with."""
    context = server_context(settings.tls) if settings.tls else None  # bad files fail here, with the key

    def tls_factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        assert context is not None
        return context

    return uvicorn.Config(
        create_app(settings, rules=rules, answers=answers),
        host=settings.listen.host,
        port=settings.listen.port,
        ssl_context_factory=tls_factory if context else None,
        proxy_headers=bool(settings.listen.forwarded_allow_ips),
        forwarded_allow_ips=list(settings.listen.forwarded_allow_ips),
        **UVICORN_OPTIONS,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, flushing buffered log lines once it has shut down (it then re-raises the
    signal that stopped it, which ends the process without Python's own clean-up)."""

    def __init__(self, config: uvicorn.Config, flush: Callable[[], None]) -> None:
        super().__init__(config)
        self._flush = flush

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            self._flush()


def run(settings: Settings, rules: RuleSet) -> None:
    """Serve rules until SIGINT or SIGTERM, then finish the requests under way and stop."""
    logs = configure_logging(settings.log)
    _Server(uvicorn_config(settings, rules, logs.answers), logs.flush).run()
