"""The platform's endpoints: the connection test, call events (POST) and polls (GET).

They are raw ASGI apps behind Starlette's router and middleware (body limit, error handlers): the
hot path builds no Request or Response objects.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ascrm.core import engine
from ascrm.core.answering import answer_event, answer_poll
from ascrm.core.calls.state import MAX_FIELD_CHARS, CallState
from ascrm.core.calls.store import CallStore, StoreUnavailableError
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
from ascrm.service.auth.basic import BasicAuth
from ascrm.service.auth.login import LoginGuard, LoginRefusedError
from ascrm.service.logs import AnswerLog
from ascrm.service.readiness import Readiness
from ascrm.service.reload import RuleReloader
from ascrm.service.responses import UNAUTHORIZED, Answer, error_answer, error_body, refusal_answer
from ascrm.service.settings import Settings
from ascrm.service.stats import ADMIN_COMMAND, Stats, action_label, call_event_label, event_label, field_label

log = structlog.get_logger("ascrm.api")

Handler = Callable[[Scope, Receive], Awaitable[Answer | None]]


def utc_now() -> datetime:
    """The server clock, timezone-aware."""
    return datetime.now(UTC)


@dataclass(slots=True)
class Runtime:
    """What lives for as long as the server runs: the call store and the active rule set."""

    store: CallStore
    rules: engine.RuleSet  # swapped whole by a reload; a request reads it once
    readiness: Readiness  # the store's last background check, for /ready
    reloader: RuleReloader | None = None
    logins: LoginGuard | None = None  # the login budgets and their refusals, for the metrics
    stats: Stats = field(default_factory=Stats)


class BodyTooLargeError(Exception):
    """The request body grew past limits.max_body_bytes while being read."""


_INTERNAL_ERROR = error_answer(500, "internal error")
# HEAD is refused rather than answered as GET: a poll takes a pending command and fires once-only poll
# rules, so no HEAD could tell what a GET would answer without changing the call.
_HEAD_REFUSED = Answer(
    405,
    error_body(405, "HEAD is not served here: the platform's endpoints take GET and POST"),
    ((b"allow", b"GET, POST"),),
)


class Endpoint:
    """A raw ASGI app running handler(scope, receive) and sending its Answer (None: client gone)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer the request; the status sent (0: none, the client left). A failure answers a JSON 500."""
        try:
            answer = await self._handler(scope, receive)
        except Exception:
            log.exception("request_failed", path=scope["path"], method=scope["method"])
            answer = _INTERNAL_ERROR
        if answer is None:
            return 0
        await answer.send(send)
        return answer.status


class PlatformRoutes:
    """Finds the platform endpoint of a request without Starlette's router and middleware: the hot path.

    GET, POST and HEAD (which the endpoints refuse) on `<prefix>/CallEvent` and
    `<prefix>/CallEvent/{CallID}`; anything else (other methods: 405) goes through the router as usual.
    """

    def __init__(self, api: PlatformAPI, prefixes: tuple[str, ...]) -> None:
        self._exact = {f"{prefix}/CallEvent": Endpoint(api.call_event) for prefix in prefixes}
        self._by_id = tuple(f"{prefix}/CallEvent/" for prefix in prefixes)
        self._by_id_endpoint = Endpoint(api.call_event_by_id)

    def match(self, scope: Scope) -> tuple[Endpoint, str] | None:
        """The endpoint and its metrics label, or None when the router should decide."""
        method = scope["method"]
        if method not in ("GET", "POST", "HEAD"):
            return None
        path: str = scope["path"]
        endpoint = self._exact.get(path)
        if endpoint is not None:
            return endpoint, call_event_label(None, method)
        for prefix in self._by_id:
            if path.startswith(prefix):
                call_id = path[len(prefix) :]
                if not call_id or "/" in call_id:
                    return None
                scope["path_params"] = {"call_id": call_id}
                return self._by_id_endpoint, call_event_label(call_id, method)
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _client(scope: Scope) -> str | None:
    """The client's address: the peer's, or a trusted proxy's X-Forwarded-For (listen.forwarded_allow_ips)."""
    client = scope.get("client")
    return str(client[0]) if client else None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body; None if the client left; BodyTooLargeError once it passes limit bytes."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: one message
        if len(body) > limit:
            raise BodyTooLargeError
        return body
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class PlatformAPI:
    """The endpoints the platform calls, bound to one configuration and clock."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
        answers: AnswerLog | None = None,
        guard: LoginGuard | None = None,
    ) -> None:
        self._answers = answers or AnswerLog()
        self._auth = BasicAuth(settings.platform_credentials, guard=guard, role="platform")
        self._tz = settings.tzinfo
        self._noop = settings.noop
        self._clock = clock
        self._limit = settings.limits.max_body_bytes
        self._max_call_bytes = settings.state.max_call_bytes

    def routes(self, prefix: str) -> list[Route]:
        """The platform's routes under prefix."""
        methods = ["GET", "POST"]
        return [
            Route(f"{prefix}/CallEvent", Endpoint(self.call_event), methods=methods, name="call_event"),
            Route(f"{prefix}/CallEvent/{{call_id}}", Endpoint(self.call_event_by_id), methods=methods),
        ]

    async def call_event(self, scope: Scope, receive: Receive) -> Answer | None:
        """GET `/CallEvent`: the connection test. POST: a call event. HEAD: 405."""
        if scope["method"] == "HEAD":
            return _HEAD_REFUSED
        refused = await self._refused(scope)
        if refused is not None:
            return refused
        if scope["method"] == "POST":
            return await self._event(scope, receive, None)
        log.info("connection_test", method="GET", client=_client(scope))
        return Answer(200, render_answer(0, NO_ACTION, self._noop))

    async def call_event_by_id(self, scope: Scope, receive: Receive) -> Answer | None:
        """GET `/CallEvent/{CallID}`: a poll. POST: a call event (CallID 0: the connection test). HEAD: 405,
        as a poll is not safe to repeat."""
        if scope["method"] == "HEAD":
            return _HEAD_REFUSED
        refused = await self._refused(scope)
        if refused is not None:
            return refused
        call_id = parse_int64(scope["path_params"]["call_id"])
        if call_id is None:
            return error_answer(400, "CallID in the path must be an int64")
        if scope["method"] == "POST":
            return await self._event(scope, receive, call_id)
        started = time.perf_counter()
        runtime: Runtime = scope["state"]["runtime"]
        decision, revision = await self._decide_poll(runtime, call_id)
        self._log_answer(runtime.stats, "poll_answered", call_id, None, decision, revision=revision, started=started)
        return self._answer(runtime.stats, call_id, decision)

    async def _refused(self, scope: Scope) -> Answer | None:
        """The answer to a request without valid platform credentials (401, 429, 503); None if authenticated."""
        try:
            user = await self._auth.authenticate(_header(scope, b"authorization"), _client(scope))
        except LoginRefusedError as exc:
            return refusal_answer(exc)
        return UNAUTHORIZED if user is None else None

    async def _event(self, scope: Scope, receive: Receive, path_call_id: int | None) -> Answer | None:
        started = time.perf_counter()
        try:
            body = await _read_body(receive, self._limit)
        except BodyTooLargeError:
            return error_answer(413, f"request body is larger than {self._limit} bytes")
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
        runtime: Runtime = scope["state"]["runtime"]
        for warning in warnings:
            runtime.stats.parse_warnings[field_label(warning.field)] += 1
            log.warning(
                "field_unreadable",
                call_id=call_id,
                field=warning.field,
                value=_short(warning.value),
                reason=warning.reason,
            )
        if path_call_id == 0:  # the connection test: always a plain 200, whatever the rules say
            log.info("connection_test", method="POST", un=event.un, client=_client(scope))
            return Answer(200, render_answer(call_id, NO_ACTION, self._noop))
        if event.call_id is None and call_id is not None:
            event = event._replace(call_id=call_id)
        decision, revision = await self._decide_event(runtime, event)
        self._log_answer(runtime.stats, "event_answered", call_id, event, decision, revision=revision, started=started)
        return self._answer(runtime.stats, call_id, decision)

    async def _decide_event(self, runtime: Runtime, event: CallEvent) -> tuple[Decision, str]:
        """The decision for event, and the revision of the rules that made it."""
        rules = runtime.rules  # read once: this request is decided wholly by one rule set
        try:
            now = self._clock()
            call, decision = await answer_event(runtime.store, rules, event, now, errors=runtime.stats.store_errors)
            if call.last_trim:
                self._count_trim(runtime.stats, call)
            if event.event_type == EventType.EndCall:
                log.info("call_ended", **call.summary(now))
            return decision, rules.revision
        except Exception:  # a failure of ours still answers 200, or the platform drops the call
            runtime.stats.decision_failures += 1
            log.exception("decision_failed", call_id=event.call_id)
            return NO_ACTION, rules.revision

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

    async def _decide_poll(self, runtime: Runtime, call_id: int) -> tuple[Decision, str]:
        """The decision for a poll of call_id, and the revision of the rules that made it."""
        rules = runtime.rules
        try:
            _, decision = await answer_poll(runtime.store, rules, call_id, self._clock())
            return decision, rules.revision
        except StoreUnavailableError as exc:
            runtime.stats.store_errors["poll"] += 1
            log.warning("store_unavailable", call_id=call_id, error=str(exc))
            return NO_ACTION, rules.revision
        except Exception:
            runtime.stats.decision_failures += 1
            log.exception("decision_failed", call_id=call_id)
            return NO_ACTION, rules.revision

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

    def _log_answer(
        self,
        stats: Stats,
        name: str,
        call_id: int | None,
        event: CallEvent | None,
        decision: Decision,
        *,
        revision: str,
        started: float,
    ) -> None:
        """Count the answer and write its decision log line."""
        elapsed = time.perf_counter() - started
        kind = "poll" if event is None else "event"
        event_name = (code_name(event.event_type) or "unknown") if event else "poll"
        action = code_name(decision.action)
        stats.latency[kind].observe(elapsed)
        if event is not None:
            stats.events[event_label(event.event_type)] += 1
        if decision.action is not None:
            source = decision.rule_id or (ADMIN_COMMAND if decision.command_id is not None else "")
            stats.decisions[source, action_label(decision.action)] += 1
        self._answers.write(
            name,
            call_id=call_id,
            event_type=event_name,
            action=action,
            param=decision.param or None,
            rule=decision.rule_id,
            command=decision.command_id,
            revision=revision,
            latency_ms=round(elapsed * 1000, 3),
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
