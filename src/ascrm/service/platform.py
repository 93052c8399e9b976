"""The platform's endpoints: the connection test, call events (POST) and polls (GET).

Raw ASGI apps: the hot path builds no Request or Response objects. The edge (ascrm.service.edge) finds
them through `routes()`, the same table the router and the OpenAPI check see; the guard
(ascrm.service.guard) checks the platform's credentials before they run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ascrm.core.answering import Answered, answer_event, answer_poll
from ascrm.core.calls.state import MAX_FIELD_CHARS, CallState
from ascrm.core.jsonbody import NestingError, UnreadableText, load_json
from ascrm.core.protocol import (
    NO_ACTION,
    CallEvent,
    Decision,
    EventType,
    code_name,
    parse_call_event,
    parse_int64,
    render_answer,
)
from ascrm.service.edge import BodyTooLargeError
from ascrm.service.guard import client_address
from ascrm.service.responses import Answer, error_answer, error_body
from ascrm.service.runtime import Runtime, runtime_of
from ascrm.service.settings import Settings
from ascrm.service.stats import ADMIN_COMMAND, Stats, action_label, event_label, field_label

log = structlog.get_logger("ascrm.api")

Handler = Callable[[Scope, Receive], Awaitable[Answer | None]]

_INTERNAL_ERROR = error_answer(500, "internal error")
# HEAD is refused rather than answered as GET: a poll takes a pending command and fires once-only poll
# rules, so no HEAD could tell what a GET would answer without changing the call.
_HEAD_REFUSED = Answer(
    405,
    error_body(405, "HEAD is not served here: the platform's endpoints take GET and POST"),
    ((b"allow", b"GET, POST"),),
)


class Endpoint:
    """A raw ASGI app running handler(scope, receive) and sending its Answer (None: the client left).

    A failure answers a JSON 500; a body past the limit is the edge's to answer."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer the request; the status sent (0: none, the client left)."""
        try:
            answer = await self._handler(scope, receive)
        except BodyTooLargeError:
            raise
        except Exception:
            log.exception("request_failed", path=scope["path"], method=scope["method"])
            answer = _INTERNAL_ERROR
        return 0 if answer is None else await answer.send(send)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (the edge's receive channel bounds it); None if the client left."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: one message
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class PlatformAPI:
    """The endpoints the platform calls, bound to one configuration."""

    def __init__(self, settings: Settings) -> None:
        self._tz = settings.tzinfo
        self._noop = settings.noop
        self._max_call_bytes = settings.state.max_call_bytes

    def routes(self, prefix: str) -> list[Route]:
        """The platform's routes under prefix (unguarded: the app puts them behind the platform's guard)."""
        methods = ["GET", "POST"]
        return [
            Route(f"{prefix}/CallEvent", Endpoint(self.call_event), methods=methods, name="call_event"),
            Route(f"{prefix}/CallEvent/{{call_id}}", Endpoint(self.call_event_by_id), methods=methods),
        ]

    async def call_event(self, scope: Scope, receive: Receive) -> Answer | None:
        """GET `/CallEvent`: the connection test. POST: a call event. HEAD: 405."""
        if scope["method"] == "HEAD":
            return _HEAD_REFUSED
        if scope["method"] == "POST":
            return await self._event(scope, receive, None)
        log.info("connection_test", method="GET", client=client_address(scope))
        return Answer(200, render_answer(0, NO_ACTION, self._noop))

    async def call_event_by_id(self, scope: Scope, receive: Receive) -> Answer | None:
        """GET `/CallEvent/{CallID}`: a poll. POST: a call event (CallID 0: the connection test). HEAD: 405,
        as a poll is not safe to repeat."""
        if scope["method"] == "HEAD":
            return _HEAD_REFUSED
        call_id = parse_int64(scope["path_params"]["call_id"])
        if call_id is None:
            return error_answer(400, "CallID in the path must be an int64")
        if scope["method"] == "POST":
            return await self._event(scope, receive, call_id)
        started = time.perf_counter()
        runtime = runtime_of(scope)
        stats = runtime.stats
        answered = await answer_poll(
            runtime.store,
            runtime.rules.current,
            call_id,
            runtime.clock(),
            errors=stats.store_errors,
            resolver=runtime.lookups,
            budget=runtime.lookup_budget,
            sticky=runtime.sticky,
            pools=runtime.pools,
        )
        if answered.failed:
            stats.decision_failures += 1
        self._log_answer(runtime, "poll_answered", call_id, None, answered, started=started)
        return self._answer(stats, call_id, answered.decision)

    async def _event(self, scope: Scope, receive: Receive, path_call_id: int | None) -> Answer | None:
        started = time.perf_counter()
        body = await _read_body(receive)
        if body is None:
            return None
        if not body.strip() and path_call_id == 0:
            data: Any = {}
        else:
            try:
                data = load_json(body)
            except NestingError as exc:
                return error_answer(400, f"body is refused: JSON {exc}")
            except ValueError as exc:
                return error_answer(400, f"body is not valid JSON: {exc}")
            if not isinstance(data, dict):
                kind = type(data).__name__
                return error_answer(400, f"body must be a JSON object (CRMDData), not {kind}")
        event, warnings = parse_call_event(data, self._tz)
        call_id = event.call_id if event.call_id is not None else path_call_id
        runtime = runtime_of(scope)
        stats = runtime.stats
        for warning in warnings:
            stats.parse_warnings[field_label(warning.field)] += 1
            log.warning(
                "field_unreadable",
                call_id=call_id,
                field=warning.field,
                value=_short(warning.value),
                reason=warning.reason,
            )
        if path_call_id == 0:  # the connection test: always a plain 200, whatever the rules say
            log.info("connection_test", method="POST", un=event.un, client=client_address(scope))
            return Answer(200, render_answer(call_id, NO_ACTION, self._noop))
        if event.call_id is None and call_id is not None:
            event = event._replace(call_id=call_id)
        now = runtime.clock()
        answered = await answer_event(
            runtime.store,
            runtime.rules.current,
            event,
            now,
            errors=stats.store_errors,
            resolver=runtime.lookups,
            budget=runtime.lookup_budget,
            sticky=runtime.sticky,
            pools=runtime.pools,
            notify=None if runtime.notifications is None else runtime.notifications.store,
        )
        call = answered.call
        if answered.failed:
            stats.decision_failures += 1
        elif call is not None:
            if call.last_trim:
                self._count_trim(stats, call)
            if event.event_type == EventType.EndCall:
                log.info("call_ended", **call.summary(now))
        self._log_answer(runtime, "event_answered", call_id, event, answered, started=started)
        return self._answer(stats, call_id, answered.decision)

    def _count_trim(self, stats: Stats, call: CallState) -> None:
        """Count what storing the event cut from the call's history; warn the first time a call is cut."""
        trim = call.last_trim
        if trim.truncated:
            stats.history_trimmed["field_truncated"] += trim.truncated
        if trim.dropped:
            stats.history_trimmed["record_dropped"] += trim.dropped
        if call.trimmed == trim.truncated + trim.dropped:
            log.warning(
                "call_history_trimmed",
                call_id=call.call_id,
                truncated=trim.truncated,
                dropped=trim.dropped,
                max_field_chars=MAX_FIELD_CHARS,
                max_call_bytes=self._max_call_bytes,
            )

    def _answer(self, stats: Stats, call_id: int | None, decision: Decision) -> Answer:
        if decision.not_allowed is not None:
            stats.actions_not_allowed += 1
            log.warning(
                "action_not_allowed",
                call_id=call_id,
                action=decision.not_allowed.name,
                rule=decision.rule_id,
                command=decision.command_id,
                problem=decision.problem,
            )
        elif decision.problem is not None:
            stats.params_rejected += 1
            log.warning("param_rejected", call_id=call_id, rule=decision.rule_id, problem=decision.problem)
        return Answer(200, render_answer(call_id, decision, self._noop))

    @staticmethod
    def _log_answer(
        runtime: Runtime, name: str, call_id: int | None, event: CallEvent | None, answered: Answered, *, started: float
    ) -> None:
        """Count the answer and write its decision log line."""
        elapsed = time.perf_counter() - started
        stats, decision = runtime.stats, answered.decision
        kind = "poll" if event is None else "event"
        event_name = (code_name(event.event_type) or "unknown") if event else "poll"
        action = code_name(decision.action)
        stats.latency[kind].observe(elapsed)
        if event is not None:
            stats.events[event_label(event.event_type)] += 1
        if decision.action is not None:
            source = decision.rule_id or (ADMIN_COMMAND if decision.command_id is not None else "")
            stats.decisions[source, action_label(decision.action)] += 1
        looked_up = {"lookups": dict(answered.lookups)} if answered.lookups else {}  # Used: (source, outcome)
        runtime.answers.write(
            name,
            call_id=call_id,
            event_type=event_name,
            action=action,
            param=decision.param or None,
            rule=decision.rule_id,
            command=decision.command_id,
            revision=answered.revision,
            latency_ms=round(elapsed * 1000, 3),
            **looked_up,
        )


def _short(value: Any) -> Any:
    """A field's value as logged: itself when short and a JSON scalar, else its text cut to 80 characters."""
    if isinstance(value, UnreadableText):
        text = value.shown
        return text if len(text) <= 80 else text[:77] + "..."
    text = repr(value)
    if len(text) > 80:
        return text[:77] + "..."
    return text if isinstance(value, int) and not -(2**63) <= value < 2**64 else value
