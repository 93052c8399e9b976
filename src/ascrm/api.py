"""The platform's endpoints: the connection test, call events (POST) and polls (GET)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response

from ascrm import engine
from ascrm.auth import BasicAuth
from ascrm.calls.memory import MemoryCallStore
from ascrm.protocol import (
    INT64_MAX,
    INT64_MIN,
    NO_ACTION,
    CallEvent,
    Decision,
    code_name,
    load_json,
    parse_call_event,
    render_answer,
)
from ascrm.responses import JSONAnswer, error_response, unauthorized
from ascrm.settings import Settings

log = structlog.get_logger("ascrm.api")


def utc_now() -> datetime:
    """The server clock, timezone-aware."""
    return datetime.now(UTC)


@dataclass(slots=True)
class Runtime:
    """What lives for as long as the server runs: the call store and the active rule set."""

    store: MemoryCallStore
    rules: engine.RuleSet


class PlatformAPI:
    """The endpoints the platform calls, bound to one configuration and clock."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utc_now) -> None:
        self._auth = BasicAuth(settings.platform_credentials)
        self._tz = settings.tzinfo
        self._noop = settings.noop
        self._clock = clock

    async def call_event(self, request: Request) -> Response:
        """GET `/CallEvent`: the connection test. POST: a call event."""
        if await self._auth.authenticate(request.headers.get("authorization")) is None:
            return unauthorized()
        if request.method == "POST":
            return await self._event(request, None)
        log.info("connection_test", method="GET")
        return self._answer(0, NO_ACTION)

    async def call_event_by_id(self, request: Request) -> Response:
        """GET `/CallEvent/{CallID}`: a poll. POST: a call event (CallID 0: the connection test)."""
        if await self._auth.authenticate(request.headers.get("authorization")) is None:
            return unauthorized()
        call_id = _path_call_id(request.path_params["call_id"])
        if call_id is None:
            return error_response(400, "CallID in the path must be an int64")
        if request.method == "POST":
            return await self._event(request, call_id)
        started = time.perf_counter()
        decision = await self._decide_poll(request.state.runtime, call_id)
        _log_answer("poll_answered", call_id, None, decision, started)
        return self._answer(call_id, decision)

    async def _event(self, request: Request, path_call_id: int | None) -> Response:
        started = time.perf_counter()
        body = await request.body()
        if not body.strip() and path_call_id == 0:
            data: Any = {}
        else:
            try:
                data = load_json(body)
            except ValueError as exc:
                return error_response(400, f"body is not valid JSON: {exc}")
            if not isinstance(data, dict):
                kind = type(data).__name__
                return error_response(400, f"body must be a JSON object (CRMDData), not {kind}")
        event, warnings = parse_call_event(data, self._tz)
        call_id = event.call_id if event.call_id is not None else path_call_id
        for warning in warnings:
            log.warning(
                "field_unreadable",
                call_id=call_id,
                field=warning.field,
                value=_short(warning.value),
                reason=warning.reason,
            )
        if path_call_id == 0:  # the connection test: always a plain 200, whatever the rules say
            log.info("connection_test", method="POST", un=event.un)
            return self._answer(call_id, NO_ACTION)
        if event.call_id is None and call_id is not None:
            event = replace(event, call_id=call_id)
        decision = await self._decide_event(request.state.runtime, event)
        _log_answer("event_answered", call_id, event, decision, started)
        return self._answer(call_id, decision)

    async def _decide_event(self, runtime: Runtime, event: CallEvent) -> Decision:
        try:
            now = self._clock()
            call = await runtime.store.update(event, now)
            return engine.decide(runtime.rules, event, call, now)
        except Exception:  # a failure of ours still answers 200, or the platform drops the call
            log.exception("decision_failed", call_id=event.call_id)
            return NO_ACTION

    async def _decide_poll(self, runtime: Runtime, call_id: int) -> Decision:
        try:
            call = await runtime.store.get(call_id)
            if call is None:
                return NO_ACTION
            return engine.decide(runtime.rules, None, call, self._clock())
        except Exception:
            log.exception("decision_failed", call_id=call_id)
            return NO_ACTION

    def _answer(self, call_id: int | None, decision: Decision) -> JSONAnswer:
        return JSONAnswer(render_answer(call_id, decision, self._noop))


def _path_call_id(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if INT64_MIN <= value <= INT64_MAX else None


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 80 else text[:77] + "..."


def _log_answer(
    name: str, call_id: int | None, event: CallEvent | None, decision: Decision, started: float
) -> None:
    log.info(
        name,
        call_id=call_id,
        event_type=code_name(event.event_type) if event else "poll",
        action=decision.action.name if decision.action else None,
        param=decision.param or None,
        rule=decision.rule_id,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )
