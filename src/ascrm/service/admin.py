"""The admin API: list and inspect calls, push commands into live calls, cancel pending ones, edit the
editable lists of the rules.

JSON in and out, under its own Basic-auth role (`auth.admin`); not a hot path, so plain Starlette
request/response endpoints.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ascrm.core.calls.state import CallState, command_json
from ascrm.core.calls.store import (
    CallEndedError,
    StoreError,
    StoreUnavailableError,
    UnknownCallError,
    UnreadableRecordError,
)
from ascrm.core.jsonbody import NestingError, load_json
from ascrm.core.lookups.looked_up import CompiledSource
from ascrm.core.lookups.lookups import Lookups
from ascrm.core.notify.message import STATES as NOTIFY_STATES
from ascrm.core.notify.message import OutboxError
from ascrm.core.notify.outbox import Outbox
from ascrm.core.protocol import (
    OUTGOING_POLL_ACTIONS,
    OUTGOING_POLL_LIMIT,
    Action,
    ServiceType,
    param_error,
    parse_code,
    parse_int64,
    poll_action_error,
)
from ascrm.core.rules.editable import EditableList, EntryError, parse_entry
from ascrm.errors import AscrmError
from ascrm.service.callview import call_summary, call_view
from ascrm.service.editable import ListFullError
from ascrm.service.notifyview import MAX_KEY_CHARS, notification_view, state_of
from ascrm.service.poolview import pools_view
from ascrm.service.responses import JSONAnswer, error_response
from ascrm.service.runtime import Runtime, runtime_of

log = structlog.get_logger("ascrm.admin")

MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 50
STATES: Final = ("live", "connected", "ended")
_QUERY_KEYS: Final = ("an", "un", "state", "offset", "limit")
_BODY_KEYS: Final = ("action", "param")
_LIST_QUERY_KEYS: Final = ("offset", "limit")
_NOTIFY_QUERY_KEYS: Final = ("state", "offset", "limit")
MAX_LIST_LIMIT: Final = 1000  # entries of an editable list per page
DEFAULT_LIST_LIMIT: Final = 100
MAX_BULK: Final = 10_000  # entries per bulk POST (the body limit, limits.max_body_bytes, comes first)
_KNOWN_ACTIONS: Final = ", ".join(member.name for member in Action)

Handler = Callable[[Request, Runtime, str], Awaitable[Response]]  # the request, the runtime, the admin's name


class RefusedError(AscrmError):
    """A request the admin API refuses: the status and the message for the JSON error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def answer(data: Any, status: int = 200) -> JSONAnswer:
    """A JSON answer with the exact content type."""
    return JSONAnswer(orjson.dumps(data), status_code=status)


class AdminAPI:
    """The admin endpoints (unguarded: the app puts them behind the admins' guard)."""

    def routes(self, prefix: str) -> list[Route]:
        """The admin routes under prefix."""
        calls = f"{prefix}/admin/calls"
        commands = f"{calls}/{{call_id}}/commands"
        lists = f"{prefix}/admin/lists/{{name}}"
        return [
            Route(calls, self._guarded(self.list_calls), methods=["GET"]),
            Route(f"{calls}/{{call_id}}", self._guarded(self.get_call), methods=["GET"]),
            Route(commands, self._guarded(self.push_command), methods=["POST"]),
            Route(f"{commands}/{{command_id}}", self._guarded(self.cancel_command), methods=["DELETE"]),
            Route(f"{prefix}/admin/rules", self._guarded(self.get_rules), methods=["GET"]),
            Route(f"{prefix}/admin/reload", self._guarded(self.reload_rules), methods=["POST"]),
            Route(f"{prefix}/admin/pools", self._guarded(self.get_pools), methods=["GET"]),
            Route(f"{prefix}/admin/notifications", self._guarded(self.list_notifications), methods=["GET"]),
            Route(
                f"{prefix}/admin/notifications/{{key}}/retry", self._guarded(self.retry_notification), methods=["POST"]
            ),
            Route(lists, self._guarded(self.get_list), methods=["GET"]),
            Route(lists, self._guarded(self.add_entries), methods=["POST"]),
            Route(f"{lists}/{{entry}}", self._guarded(self.put_entry), methods=["PUT"]),
            Route(f"{lists}/{{entry}}", self._guarded(self.delete_entry), methods=["DELETE"]),
        ]

    async def get_rules(self, request: Request, runtime: Runtime, user: str) -> Response:
        """GET `/admin/rules`: the live revision, its files, load time, the last rejected reload, and its
        sources with their circuit breakers (never a URL, header, body or token)."""
        described = runtime.reloader.describe()
        described["sources"] = [
            _source_view(source, runtime.lookups) for source in runtime.rules.current.sources.values()
        ]
        return answer(described)

    async def get_pools(self, request: Request, runtime: Runtime, user: str) -> Response:
        """GET `/admin/pools`: the served rules' pools, each member's state and offered/answered counts."""
        try:
            pools = await pools_view(runtime.rules.current.pools, runtime.pools, runtime.clock())
        except StoreError as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return answer({"revision": runtime.rules.current.revision, "pools": pools})

    async def reload_rules(self, request: Request, runtime: Runtime, user: str) -> Response:
        """POST `/admin/reload[?force=true]`: reload now; 422 with the problems when rejected."""
        force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
        outcome = await runtime.reloader.reload(trigger=f"admin:{user}", force=force)
        body: dict[str, Any] = {"status": outcome.status, "revision": outcome.revision}
        if outcome.problems:
            body["problems"] = [str(problem) for problem in outcome.problems]
        return answer(body, 422 if outcome.status == "rejected" else 200)

    def _guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """handler given the runtime and the admin's name, with refusals, store outages and unreadable call
        records answered as JSON."""

        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, runtime_of(request.scope), request.scope["user"])
            except RefusedError as exc:
                return error_response(exc.status, exc.message)
            except StoreUnavailableError as exc:
                log.warning("store_unavailable", path=request.url.path, error=str(exc))
                return error_response(503, f"the call store is unavailable: {exc}")
            except UnreadableRecordError as exc:  # logged by the store (call_record_unreadable)
                return error_response(500, str(exc))
            except ListFullError as exc:
                return error_response(422, str(exc))
            except OutboxError as exc:
                log.warning("notify_outbox_unavailable", path=request.url.path, error=str(exc))
                return error_response(503, f"the notification outbox is unavailable: {exc}")

        return endpoint

    async def list_notifications(self, request: Request, runtime: Runtime, user: str) -> Response:
        """GET `/admin/notifications?state=pending|failed`: the outbox's notifications, oldest first, paged."""
        query = _query(request.query_params.multi_items(), _NOTIFY_QUERY_KEYS)
        state = state_of(query.get("state"))
        if state is None:
            raise RefusedError(400, f"state: must be one of {', '.join(NOTIFY_STATES)} (got {query['state']!r})")
        offset = _count(query, "offset", 0)
        limit = min(_count(query, "limit", DEFAULT_LIMIT), MAX_LIMIT)
        outbox = _outbox(runtime)
        listed = await outbox.listing(state, limit, offset)  # type: ignore[arg-type]
        pending = await outbox.pending_counts()
        views = [notification_view(item) for item in listed]
        return answer({"state": state, "notifications": views, "offset": offset, "limit": limit, "pending": pending})

    async def retry_notification(self, request: Request, runtime: Runtime, user: str) -> Response:
        """POST `/admin/notifications/{key}/retry`: a failed notification pending again, due now."""
        key = request.path_params["key"]
        if len(key) > MAX_KEY_CHARS:
            raise RefusedError(404, f"no failed notification with key {key[:40]!r}…")
        if not await _outbox(runtime).retry(key, time.time()):
            raise RefusedError(404, f"no failed notification with key {key!r}")
        log.info("notification_retried", key=key, user=user)
        if runtime.notifications is not None:
            runtime.notifications.wake()
        return answer({"key": key, "state": "pending"})

    async def list_calls(self, request: Request, runtime: Runtime, user: str) -> Response:
        """GET `/admin/calls`: calls, most recently updated first, filtered and paginated."""
        query = _query(request.query_params.multi_items())
        state = query.get("state")
        if state is not None and state not in STATES:
            raise RefusedError(400, f"state: must be one of {', '.join(STATES)} (got {state!r})")
        offset = _count(query, "offset", 0)
        limit = min(_count(query, "limit", DEFAULT_LIMIT), MAX_LIMIT)
        calls, total = await runtime.store.calls(
            an=query.get("an"), un=query.get("un"), state=state, offset=offset, limit=limit
        )
        summaries = [call_summary(call) for call in calls]
        return answer({"calls": summaries, "total": total, "offset": offset, "limit": limit})

    async def get_call(self, request: Request, runtime: Runtime, user: str) -> Response:
        """GET `/admin/calls/{id}`: the call's whole state, with its events, decisions and commands."""
        call = await _call(request, runtime)
        return answer(call_view(call))

    async def push_command(self, request: Request, runtime: Runtime, user: str) -> Response:
        """POST `/admin/calls/{id}/commands`: queue an action for the call's next poll."""
        action, param = _command(await request.body())
        call = await _call(request, runtime)
        if poll_action_error(action, call.service_type) is not None:
            message = f"action: {action.name} cannot answer a poll of call {call.call_id}, an outgoing call"
            raise RefusedError(422, f"{message}: {OUTGOING_POLL_LIMIT}")
        problem = param_error(action, param, outgoing_poll=call.service_type == ServiceType.MTSPBX)
        if problem is not None:
            raise RefusedError(422, f"param {param!r} for {action.name}: {problem}")
        try:
            command, position = await runtime.store.push(call.call_id, action, param, runtime.clock())
        except UnknownCallError:
            raise RefusedError(404, _unknown(call.call_id)) from None
        except CallEndedError:
            raise RefusedError(409, f"call {call.call_id} has ended: it takes no more commands") from None
        fields = {"call_id": call.call_id, "command": command.id, "action": action.name, "param": param or None}
        log.info("command_pushed", user=user, position=position, **fields)
        body: dict[str, Any] = {"command": command_json(command), "position": position}
        if call.service_type is None and action not in OUTGOING_POLL_ACTIONS:
            body["warning"] = (
                f"the call's service is not known yet: should it be an outgoing call, {action.name} will not be"
                f" sent ({OUTGOING_POLL_LIMIT})"
            )
        return answer(body, 201)

    async def cancel_command(self, request: Request, runtime: Runtime, user: str) -> Response:
        """DELETE `/admin/calls/{id}/commands/{command_id}`: drop a command that is still pending."""
        call_id = _path_int(request, "call_id")
        command_id = _path_int(request, "command_id")
        try:
            cancelled = await runtime.store.cancel(call_id, command_id)
        except UnknownCallError:
            raise RefusedError(404, _unknown(call_id)) from None
        if not cancelled:
            raise RefusedError(404, await _not_pending(runtime, call_id, command_id))
        log.info("command_cancelled", user=user, call_id=call_id, command=command_id)
        return answer({"cancelled": True})

    async def get_list(self, request: Request, runtime: Runtime, user: str) -> Response:
        """GET `/admin/lists/{name}[?offset=&limit=]`: an editable list's entries, sorted, a page at a time."""
        holder = _editable(request, runtime)
        query = _query(request.query_params.multi_items(), _LIST_QUERY_KEYS)
        offset = _count(query, "offset", 0)
        limit = min(_count(query, "limit", DEFAULT_LIST_LIMIT), MAX_LIST_LIMIT)
        if not holder.attached:
            await runtime.lists.backend.attach(holder)
        entries, total = holder.page(offset, limit)
        return answer({"list": holder.name, "entries": entries, "total": total, "offset": offset, "limit": limit})

    async def put_entry(self, request: Request, runtime: Runtime, user: str) -> Response:
        """PUT `/admin/lists/{name}/{entry}`: add a number or a prefix (`7916*`)."""
        return await _change_one(request, runtime, user, add=True)

    async def delete_entry(self, request: Request, runtime: Runtime, user: str) -> Response:
        """DELETE `/admin/lists/{name}/{entry}`: remove a number or a prefix; removing one not there is no error."""
        return await _change_one(request, runtime, user, add=False)

    async def add_entries(self, request: Request, runtime: Runtime, user: str) -> Response:
        """POST `/admin/lists/{name}` `{"entries": [...]}`: add many entries at once, all or none."""
        holder = _editable(request, runtime)
        entries = _bulk(await request.body(), holder)
        added = await runtime.lists.change(holder, entries, add=True)
        _changed(user, holder, "bulk", len(entries), added)
        return answer({"list": holder.name, "added": added, "total": len(holder)})


async def _change_one(request: Request, runtime: Runtime, user: str, *, add: bool) -> Response:
    """Add (PUT) or remove (DELETE) the entry of the path; the answer says whether it changed the list."""
    holder = _editable(request, runtime)
    entry = _entry(request.path_params["entry"], holder)
    changed = await runtime.lists.change(holder, [entry], add=add)
    _changed(user, holder, "put" if add else "delete", 1, changed)
    done = "added" if add else "removed"
    return answer({"list": holder.name, "entry": entry, done: bool(changed), "total": len(holder)})


def _editable(request: Request, runtime: Runtime) -> EditableList:
    """The editable list the path names: 404 when the rules define no such list, 409 when it is not editable."""
    name: str = request.path_params["name"]
    rules = runtime.rules.current
    holders = {holder.name: holder for holder in runtime.lists.holders(rules)}
    if name not in rules.lists:
        known = ", ".join(holders) or "none"
        raise RefusedError(404, f"no list {name!r} in the rules (their editable lists: {known})")
    holder = holders.get(name)
    if holder is None:
        raise RefusedError(409, f"list {name!r} is not editable: its rule file declares it without `editable: true`")
    return holder


def _entry(value: object, holder: EditableList) -> str:
    """An entry in its stored form; 422 naming it when it is not a number or a prefix."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise RefusedError(422, f"entry {value!r}: must be a string (a number, or a prefix ending in '*')")
    try:
        return parse_entry(value, holder.normalize)
    except EntryError as exc:
        raise RefusedError(422, str(exc)) from None


def _json_object(body: bytes, shape: str, known: Sequence[str]) -> dict[str, Any]:
    """A request body that must be a JSON object of the keys known (shape: how one looks, for the error);
    400 for a body that is not one, 422 naming the first unknown key."""
    try:
        data = load_json(body)
    except NestingError as exc:
        raise RefusedError(400, f"body is refused: JSON {exc}") from None
    except ValueError as exc:
        raise RefusedError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RefusedError(400, f"body must be a JSON object {shape}, not {type(data).__name__}")
    unknown = [key for key in data if key not in known]
    if unknown:
        raise RefusedError(422, f"{unknown[0]}: unknown key (known: {', '.join(known)})")
    return data


def _bulk(body: bytes, holder: EditableList) -> list[str]:
    """The distinct entries of a bulk body `{"entries": [...]}`, checked, in their stored form."""
    data = _json_object(body, '{"entries": [...]}', ("entries",))
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise RefusedError(422, "entries: is required, a list of numbers and prefixes ('7916*')")
    if len(entries) > MAX_BULK:
        raise RefusedError(422, f"entries: {len(entries)} given, at most {MAX_BULK} per request")
    found: dict[str, None] = {}
    for index, item in enumerate(entries):
        try:
            found[_entry(item, holder)] = None
        except RefusedError as exc:
            raise RefusedError(422, f"entries[{index}]: {exc.message}") from None
    return list(found)


def _changed(user: str, holder: EditableList, action: str, given: int, changed: int) -> None:
    fields = {"list": holder.name, "action": action, "entries": given, "changed": changed, "total": len(holder)}
    log.info("list_changed", user=user, **fields)


def _outbox(runtime: Runtime) -> Outbox:
    if runtime.notifications is None:
        raise RefusedError(404, "this service keeps no notifications")
    return runtime.notifications.outbox


def _query(items: list[tuple[str, str]], known: tuple[str, ...] = _QUERY_KEYS) -> dict[str, str]:
    """The query's known parameters, each at most once; an empty value counts as absent."""
    query: dict[str, str] = {}
    for key, value in items:
        if key not in known:
            raise RefusedError(400, f"{key}: unknown query parameter (known: {', '.join(known)})")
        if key in query:
            raise RefusedError(400, f"{key}: given more than once")
        if value != "":
            query[key] = value
    return query


def _count(query: Mapping[str, str], key: str, default: int) -> int:
    """A non-negative integer query parameter."""
    text = query.get(key)
    if text is None:
        return default
    value = parse_int64(text)
    if value is None or value < 0:
        raise RefusedError(400, f"{key}: must be a non-negative integer (got {text!r})")
    return value


def _path_int(request: Request, key: str) -> int:
    """An integer path parameter (the call or command id)."""
    text: str = request.path_params[key]
    value = parse_int64(text)
    if value is None:
        raise RefusedError(400, f"{key}: must be an int64 (got {text!r})")
    return value


async def _call(request: Request, runtime: Runtime) -> CallState:
    """The call the path names; 404 when it is unknown."""
    call_id = _path_int(request, "call_id")
    call = await runtime.store.get(call_id)
    if call is None:
        raise RefusedError(404, _unknown(call_id))
    return call


def _unknown(call_id: int) -> str:
    return f"no call {call_id}: unknown, or expired"


async def _not_pending(runtime: Runtime, call_id: int, command_id: int) -> str:
    """Why a command could not be cancelled: delivered, or never pushed."""
    call = await runtime.store.get(call_id)
    if call is None:
        return _unknown(call_id)
    for record in call.decisions:
        if record.command_id == command_id:
            return f"command {command_id} of call {call_id} is not pending: delivered at {record.at.isoformat()}"
    if 0 < command_id < call.next_command_id:
        return f"command {command_id} of call {call_id} is not pending: already delivered or cancelled"
    return f"call {call_id} has no command {command_id}"


def _command(body: bytes) -> tuple[Action, str]:
    """The action and param of a push body, checked as rule actions are (except the param's format)."""
    data = _json_object(body, '{"action": …, "param": …}', _BODY_KEYS)
    name = data.get("action")
    if name is None:
        raise RefusedError(422, "action: is required (an action name such as TransferPBX, or its code)")
    action = parse_code(name, Action) if isinstance(name, (str, int)) and not isinstance(name, bool) else None
    if not isinstance(action, Action):
        raise RefusedError(422, f"action: unknown action {name!r} (known: {_KNOWN_ACTIONS})")
    param = data.get("param")
    if param is None:
        param = ""
    if not isinstance(param, str):
        raise RefusedError(422, f"param: must be a string (got {param!r})")
    return action, param


def _source_view(source: CompiledSource, lookups: Lookups | None) -> dict[str, Any]:
    """A source as GET /admin/rules shows it: how it is asked, and its breaker's state."""
    settings = source.settings
    return {
        "name": source.name,
        "kind": source.kind,
        "timeout_ms": round(settings.timeout * 1000, 3),
        "ttl_s": settings.ttl,
        "miss_ttl_s": settings.miss_ttl,
        "stale_s": settings.stale,
        "rate_per_s": settings.rate,
        "burst": settings.burst,
        "breaker": "closed" if lookups is None else lookups.breaker(source.name),
    }
