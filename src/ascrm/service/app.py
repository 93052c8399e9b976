"""The ASGI application, built by create_app(settings): composition only; runtime state lives in its lifespan."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ascrm.core.calls import open_store
from ascrm.core.calls.redis import RedisCallStore
from ascrm.core.calls.sticky import Sticky
from ascrm.core.calls.store import CallStore, StoreUnavailableError
from ascrm.core.calls.sweeper import sweep_periodically
from ascrm.core.engine import RuleSet
from ascrm.core.lookups.lookups import Lookups
from ascrm.core.lookups.opened import OpenedLookups
from ascrm.core.notify.message import OutboxError
from ascrm.core.pools.keeper import MemoryPools, PoolKeeper
from ascrm.core.pools.redis_pools import RedisPools
from ascrm.core.rules import load_rules, rules_source
from ascrm.service import admin, health, metrics, openapi
from ascrm.service.auth.login import LoginGuard
from ascrm.service.collector import collect_periodically
from ascrm.service.edge import Edge
from ascrm.service.editable import ListKeeper
from ascrm.service.guard import ADMIN, PLATFORM, Guard
from ascrm.service.logs import AnswerLog
from ascrm.service.notifications import Notifications, open_notifications
from ascrm.service.platform import PlatformAPI
from ascrm.service.readiness import Readiness
from ascrm.service.reload import ActiveRules, RuleReloader, watch
from ascrm.service.responses import error_response
from ascrm.service.runtime import STATE_KEY, Clock, Runtime, utc_now
from ascrm.service.settings import Settings
from ascrm.service.stats import ConnectionStats, Stats, call_event_label

log = structlog.get_logger("ascrm.app")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal error")


async def _first_sync(lists: ListKeeper, rules: RuleSet) -> None:
    """The editable lists of rules loaded by the caller adopted (a reload keeps them), and their contents
    before the first request (their seeds while the backend is away)."""
    lists.registry.adopt(rules.editable_lists)
    try:
        await lists.sync(rules)
    except (StoreUnavailableError, ValueError) as exc:
        log.warning("lists_sync_failed", error=str(exc))


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


def _routing_data(settings: Settings, store: CallStore, looked: OpenedLookups) -> tuple[Sticky | None, Lookups, float]:
    """The runtime's last operators (None when sticky.days is 0), look-ups and their budget in seconds."""
    sticky = store.sticky(settings.sticky) if settings.sticky.days else None
    return sticky, looked.lookups, settings.lookups.budget_ms / 1000


async def _notifications(settings: Settings, store: CallStore, active: ActiveRules, stats: Stats) -> Notifications:
    """The outbox of the store's kind and its delivery to the targets of the rules being served."""
    try:
        notifications = await open_notifications(settings, store, lambda: active.current.targets, stats=stats)
    except OutboxError as exc:
        log.critical("notify_outbox_unusable", error=str(exc))
        raise
    if not notifications.durable and active.current.notify:
        log.warning("notify_not_durable", why="no state.data_dir: pending notifications are lost at exit")
    return notifications


def _pools(store: CallStore) -> PoolKeeper:
    """The pools' state: in Redis for every replica with the Redis store, else in this process."""
    if isinstance(store, RedisCallStore):
        return RedisPools(store)
    return MemoryPools()


def create_app(
    settings: Settings,
    *,
    rules: RuleSet | None = None,
    clock: Clock = utc_now,
    answers: AnswerLog | None = None,
    connections: ConnectionStats | None = None,
) -> Edge:
    """Build the application for settings; nothing runs until the server starts its lifespan.

    rules: the compiled rule set (default: loaded from settings.rules at start-up); clock: the
    server's clock; answers: the per-request log (default: through structlog); connections: the
    server's connection counters, for the metrics.
    """
    logins = LoginGuard(settings.login)  # every role's budgets, KDF pool and failure log

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        source = rules_source(settings.rules)
        lists = ListKeeper(settings.state)
        limits = settings.limits.rules
        active = ActiveRules(rules or load_rules(source, settings.timezone, limits=limits, editable=lists.registry))
        stats = Stats(connections=connections or ConnectionStats())
        store = open_store(settings.state, observe=stats.observe_store)
        reloader = RuleReloader(
            active,
            source,
            settings.timezone,
            clock,
            stats=stats.reloads,
            settle_seconds=settings.reload.settle_ms / 1000,
            limits=settings.limits.rules,
            editable=lists.registry,
        )
        readiness = Readiness(store, settings.health.check_interval_ms / 1000, settings.state.timeout_ms / 1000)
        looked = OpenedLookups(settings.state, settings.lookups.ca_file)
        notifications = await _notifications(settings, store, active, stats)
        parts = (store, active, reloader, readiness, logins, stats, answers or AnswerLog(), clock, lists)
        runtime = Runtime(
            *parts, *_routing_data(settings, store, looked), pools=_pools(store), notifications=notifications
        )
        on_sighup = _SighupReload(reloader)
        stopping = asyncio.Event()
        await readiness.check()  # /ready answers from the first request on
        await _first_sync(lists, active.current)
        background = {
            asyncio.create_task(readiness.run(stopping)),
            asyncio.create_task(logins.run(stopping)),
            asyncio.create_task(sweep_periodically(store, clock, settings.state.sweep_interval_ms / 1000, stopping)),
            asyncio.create_task(collect_periodically(stopping)),
            asyncio.create_task(lists.run(active, stopping)),
            asyncio.create_task(notifications.run(stopping)),
            *(
                (asyncio.create_task(watch(reloader, stopping, settings.reload.debounce_ms)),)
                if settings.reload.watch
                else ()
            ),
        }
        log.info(
            "service_started",
            root_path=settings.root_path or "/",
            timezone=settings.timezone,
            rules=[str(path) for path in active.current.files],
            rules_revision=active.current.revision,
            rule_count=len(active.current.rules),
        )
        try:
            yield {STATE_KEY: runtime}
        finally:
            on_sighup.close()
            stopping.set()
            await asyncio.wait(background, timeout=2)
            for task in background:  # still running after the grace (a store check that hangs): stop it
                task.cancel()
            logins.close()
            await lists.close()
            await asyncio.gather(looked.close(), notifications.close())
            await store.close()
        log.info("service_stopped")

    platform_guard = Guard(PLATFORM, settings.platform_credentials, logins)
    admin_guard = Guard(ADMIN, settings.admin_credentials, logins)
    platform = PlatformAPI(settings)
    operators = admin.AdminAPI()
    fast: list[Route] = []
    routes: list[BaseRoute] = []
    prefixes = tuple(dict.fromkeys((settings.root_path, "")))  # with the prefix, or with it stripped by a proxy
    for prefix in prefixes:
        # Routes by who may call them: a route added to a group is guarded as the group is.
        served = platform_guard.protect_routes(platform.routes(prefix))
        fast += [route for route in served if isinstance(route, Route)]
        routes += served
        routes += admin_guard.protect_routes([*operators.routes(prefix), *openapi.routes(prefix)])
        metrics_routes = metrics.routes(prefix)
        routes += metrics_routes if settings.metrics_public else admin_guard.protect_routes(metrics_routes)
        routes += health.routes(prefix)  # public: load balancers and orchestrators ask without credentials
    starlette = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    starlette.router.redirect_slashes = False  # the edge serves `/base/CallEvent/` as `/base/CallEvent`
    return Edge(
        starlette, fast, call_event_label, max_body_bytes=settings.limits.max_body_bytes, root_path=settings.root_path
    )
