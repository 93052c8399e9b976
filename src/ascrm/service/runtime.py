"""The typed runtime: what lives for as long as the server runs, built once in the app's lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.types import Scope

from ascrm.core.calls.sticky import Sticky
from ascrm.core.calls.store import CallStore
from ascrm.core.lookups.lookups import Lookups
from ascrm.core.pools.keeper import PoolKeeper
from ascrm.service.auth.login import LoginGuard
from ascrm.service.editable import ListKeeper
from ascrm.service.logs import AnswerLog
from ascrm.service.notifications import Notifications
from ascrm.service.readiness import Readiness
from ascrm.service.reload import ActiveRules, RuleReloader
from ascrm.service.stats import Stats

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The server clock, timezone-aware."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Runtime:
    """The call store, the rule set being served and its reloader, the store's readiness, the login
    budgets, the counters, the decision log, the clock and the editable lists: one of each per running app."""

    store: CallStore
    rules: ActiveRules  # `rules.current` is swapped whole by a reload; a request reads it once
    reloader: RuleReloader
    readiness: Readiness  # the store's last background check, for /ready
    logins: LoginGuard
    stats: Stats
    answers: AnswerLog
    clock: Clock
    lists: ListKeeper  # the editable lists and where they are kept
    sticky: Sticky | None = None  # the last operators (None: not kept)
    lookups: Lookups | None = None  # the rule files' sources are looked up here
    lookup_budget: float = 0.5  # lookups.budget_ms, in seconds
    pools: PoolKeeper | None = None  # the pools' state (in Redis with the Redis store)
    notifications: Notifications | None = None  # the outbox and its delivery (None: the tools' runs)


STATE_KEY = "runtime"  # the lifespan state's key: Starlette copies it into every request's scope["state"]


def runtime_of(scope: Scope) -> Runtime:
    """The runtime of the app serving this request."""
    runtime: Runtime = scope["state"][STATE_KEY]
    return runtime
