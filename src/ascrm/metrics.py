"""Prometheus metrics at `GET /metrics`, behind the admin credentials."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ascrm.auth import BasicAuth
from ascrm.calls.store import CallStore
from ascrm.responses import error_response
from ascrm.settings import Settings

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="ascrm-admin", charset="UTF-8"'}


class StoreCollector(Collector):
    """The call store's counters, read when Prometheus scrapes."""

    def __init__(self, store: CallStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        """The metrics, as of now."""
        yield CounterMetricFamily(
            "ascrm_calls_evicted",
            "Calls dropped by this process because state.max_calls was reached.",
            value=self._store.evicted,
        )


def routes(prefix: str, settings: Settings) -> list[Route]:
    """The metrics route under prefix."""
    auth = BasicAuth(settings.admin_credentials)

    async def metrics(request: Request) -> Response:
        if await auth.authenticate(request.headers.get("authorization")) is None:
            return error_response(401, "valid admin Basic credentials are required", _CHALLENGE)
        registry = CollectorRegistry(auto_describe=False)  # per scrape: nothing global
        registry.register(StoreCollector(request.state.runtime.store))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [Route(f"{prefix}/metrics", metrics, methods=["GET"])]
