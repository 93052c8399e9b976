"""The ASGI application, built by create_app(settings); runtime state lives in its lifespan."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ascrm.core import engine
from ascrm.core.calls import open_store
from ascrm.core.calls.sweeper import sweep_periodically
from ascrm.core.rules import load_rules, rules_source
from ascrm.service import health, metrics, openapi
from ascrm.service.admin import AdminAPI
from ascrm.service.auth.login import LoginGuard
from ascrm.service.logs import AnswerLog
from ascrm.service.platform import PlatformAPI, PlatformRoutes, Runtime, utc_now
from ascrm.service.readiness import Readiness
from ascrm.service.reload import RuleReloader, watch
from ascrm.service.responses import error_response
from ascrm.service.settings import Settings
from ascrm.service.stats import ConnectionStats, Stats, endpoint_of, status_label

log = structlog.get_logger("ascrm.app")


def plain_path(path: str) -> str:
    """path without a trailing slash and with doubled slashes collapsed (`/base//CallEvent/` -> `/base/CallEvent`)."""
    if (path.endswith("/") and path != "/") or "//" in path:
        return "/" + "/".join(part for part in path.split("/") if part)
    return path


class _App(Starlette):
    """Starlette, with the platform's endpoints served straight (no router or middleware: the hot
    path), every answered request counted by endpoint and status, and a declared oversize body
    answered with JSON before Starlette's body-limit middleware would answer it in plain text.

    A path with a trailing or doubled slash is served as the plain path, never redirected: a platform
    joining a base URL that ends in `/` with `/CallEvent` must pass its connection test, and a
    redirect would be answered before authentication, with a Location taken from the Host header."""

    def __init__(self, *args: Any, max_body_size: int, root_path: str, platform: PlatformRoutes, **kwargs: Any) -> None:
        super().__init__(*args, max_body_size=max_body_size, **kwargs)
        self.router.redirect_slashes = False
        self._limit = max_body_size
        self._root_path = root_path
        self._platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["path"] = plain_path(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self._limit:
                response = error_response(413, f"request body is larger than {self._limit} bytes")
                await response(scope, receive, send)
                self._count(scope, endpoint_of(scope["path"], scope["method"], self._root_path), 413)
                return
        found = self._platform.match(scope)
        if found is not None:
            endpoint, label = found
            self._count(scope, label, await endpoint.serve(scope, receive, send))
            return
        status = 0

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await super().__call__(scope, receive, counting_send)
        finally:
            self._count(scope, endpoint_of(scope["path"], scope["method"], self._root_path), status)

    @staticmethod
    def _count(scope: Scope, endpoint: str, status: int) -> None:
        runtime = scope.get("state", {}).get("runtime")
        if status and runtime is not None:
            runtime.stats.requests[endpoint, status_label(status)] += 1


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 413:  # Starlette's body limit, met while reading a body of unknown length
        limit = request.app.max_body_size
        return error_response(413, f"request body is larger than {limit} bytes", exc.headers)
    return error_response(exc.status_code, exc.detail, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal error")


class _SighupReload:
    """SIGHUP reloads the rules (in the main thread's event loop; elsewhere, as under a test client, no-op)."""

    def __init__(self, reloader: RuleReloader) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._installed = False
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._fire, reloader)
            self._installed = True
        except (RuntimeError, ValueError, NotImplementedError):
            log.info("sighup_reload_unavailable")

    def _fire(self, reloader: RuleReloader) -> None:
        task = asyncio.ensure_future(reloader.reload(trigger="SIGHUP"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self._installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


def create_app(
    settings: Settings,
    *,
    rules: engine.RuleSet | None = None,
    clock: Callable[[], datetime] = utc_now,
    answers: AnswerLog | None = None,
    connections: ConnectionStats | None = None,
) -> Starlette:
    """Build the application for settings; nothing runs until the server starts its lifespan.

    rules: the compiled rule set (default: loaded from settings.rules at start-up); clock: the
    server's clock; answers: the per-request log (default: through structlog); connections: the
    server's connection counters, for the metrics.
    """
    guard = LoginGuard(settings.login)  # every role's budgets, KDF pool and failure log
    api = PlatformAPI(settings, clock, answers or AnswerLog(), guard)
    admin = AdminAPI(settings, clock, guard)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        source = rules_source(settings.rules)
        ruleset = rules or load_rules(source, settings.timezone, limits=settings.limits.rules)
        store = open_store(settings.state)
        readiness = Readiness(store, settings.health.check_interval_ms / 1000, settings.state.timeout_ms / 1000)
        runtime = Runtime(
            store=store,
            rules=ruleset,
            readiness=readiness,
            logins=guard,
            stats=Stats(connections=connections or ConnectionStats()),
        )
        runtime.reloader = RuleReloader(
            runtime,
            source,
            settings.timezone,
            clock,
            stats=runtime.stats.reloads,
            settle_seconds=settings.reload.settle_ms / 1000,
            limits=settings.limits.rules,
        )
        on_sighup = _SighupReload(runtime.reloader)
        stopping = asyncio.Event()
        watcher = None
        if settings.reload.watch:
            watcher = asyncio.create_task(watch(runtime.reloader, stopping, settings.reload.debounce_ms))
        await readiness.check()  # /ready answers from the first request on
        checker = asyncio.create_task(readiness.run(stopping))
        failure_log = asyncio.create_task(guard.run(stopping))
        sweeper = asyncio.create_task(
            sweep_periodically(store, clock, settings.state.sweep_interval_ms / 1000, stopping)
        )
        log.info(
            "service_started",
            root_path=settings.root_path or "/",
            timezone=settings.timezone,
            rules=[str(path) for path in ruleset.files],
            rules_revision=ruleset.revision,
            rule_count=len(ruleset.rules),
        )
        try:
            yield {"runtime": runtime}
        finally:
            on_sighup.close()
            stopping.set()
            background = {checker, failure_log, sweeper} | ({watcher} if watcher is not None else set())
            await asyncio.wait(background, timeout=2)
            for task in background:  # still running after the grace (a store check that hangs): stop it
                task.cancel()
            guard.close()
            await store.close()
        log.info("service_stopped")

    routes = []
    prefixes = tuple(dict.fromkeys((settings.root_path, "")))  # with the prefix, or with it stripped by a proxy
    for prefix in prefixes:
        routes += api.routes(prefix)
        routes += admin.routes(prefix)
        routes += health.routes(prefix)
        routes += metrics.routes(prefix, settings, guard)
        routes += openapi.routes(prefix, settings, guard)
    return _App(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        max_body_size=settings.limits.max_body_bytes,
        root_path=settings.root_path,
        platform=PlatformRoutes(api, prefixes),
    )
