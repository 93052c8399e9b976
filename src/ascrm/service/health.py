"""Liveness and readiness for load balancers and orchestrators: unauthenticated, JSON."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ascrm.service.responses import JSONAnswer
from ascrm.service.runtime import runtime_of


async def health(request: Request) -> Response:
    """GET `/health`: the process is up and answering (a rejected rule reload never changes this)."""
    return JSONAnswer(orjson.dumps({"status": "ok"}))


async def ready(request: Request) -> Response:
    """GET `/ready`: rules are loaded and the call store answered its last background check; else 503.

    No store round trip here: the answer comes from the check the lifespan runs every
    `health.check_interval_ms` (see ascrm.service.readiness).
    """
    runtime = runtime_of(request.scope)
    rules = runtime.rules.current
    store_ok, store = runtime.readiness.current()
    body = {
        "status": "ready" if store_ok else "not_ready",
        "rules_revision": rules.revision,
        "rules": len(rules.rules),
        "store": store,
    }
    return JSONAnswer(orjson.dumps(body), status_code=200 if store_ok else 503)


def routes(prefix: str) -> list[Route]:
    """The health routes under prefix."""
    return [Route(f"{prefix}/health", health, methods=["GET"]), Route(f"{prefix}/ready", ready, methods=["GET"])]
