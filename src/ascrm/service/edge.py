"""The service edge: the ASGI app in front of the router, one job per step.

For every HTTP request, in order: the path is normalised; the body limit is applied (a declared length
over it is answered at once, a streamed body is cut where it passes it); the platform's endpoints are
found in their own route table by a dict look-up and a prefix test (the hot path: no router, no
middleware), anything else goes to Starlette; and the answer is counted by endpoint and status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from ascrm.service.responses import error_answer
from ascrm.service.runtime import STATE_KEY, Runtime
from ascrm.service.stats import endpoint_of, status_label


def plain_path(path: str) -> str:
    """path without a trailing slash and with doubled slashes collapsed (`/base//CallEvent/` -> `/base/CallEvent`)."""
    if (path.endswith("/") and path != "/") or "//" in path:
        return "/" + "/".join(part for part in path.split("/") if part)
    return path


class BodyTooLargeError(HTTPException):
    """The request body passed limits.max_body_bytes: answered 413 (by the app's HTTPException handler
    on the router's side, by the edge on the platform's)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class LimitedReceive:
    """An ASGI receive channel that raises BodyTooLargeError once the body passes limit bytes."""

    __slots__ = ("_limit", "_receive", "_size")

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._size = 0

    async def __call__(self) -> Message:
        message = await self._receive()
        body = message.get("body")
        if body:
            self._size += len(body)
            if self._size > self._limit:
                raise BodyTooLargeError(self._limit)
        return message


class _Counted:
    """A send channel that remembers the status it sent (0: none, the client left)."""

    __slots__ = ("_send", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


@runtime_checkable
class Served(Protocol):
    """An ASGI app that also serves a request telling the status it sent (0: none, the client left):
    what a fast route's app is, so that the hot path needs no send wrapper to count it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> int: ...


Label = Callable[[str | None, str], str]  # (the path parameter's value or None, method) -> `endpoint` label


class FastRoutes:
    """Finds the app of a request among routes by a dict look-up (fixed paths) and a prefix test (paths
    ending in one `{parameter}`), with the path parameter set as the router sets it, and the request's
    `endpoint` label (the same as stats.endpoint_of's, found without parsing the path again)."""

    def __init__(self, routes: Sequence[Route], label: Label) -> None:
        self._exact: dict[tuple[str, str], tuple[Served, str]] = {}
        self._by_prefix: list[tuple[str, str, frozenset[str], Served]] = []
        self._label = label
        for route in routes:
            methods = frozenset(route.methods or ())
            app = route.app
            if not isinstance(app, Served):
                raise TypeError(f"route {route.path!r}: a fast route's app must tell its status (serve)")
            head, brace, tail = route.path.partition("{")
            if not brace:
                self._exact.update({(route.path, method): (app, label(None, method)) for method in methods})
            elif head.endswith("/") and tail.endswith("}") and "{" not in tail and "/" not in tail:
                self._by_prefix.append((head, tail[:-1].partition(":")[0], methods, app))
            else:
                raise ValueError(f"route {route.path!r}: a fast route is a fixed path or ends in one parameter")

    def match(self, scope: Scope) -> tuple[Served, str] | None:
        """The app for this request and its label, or None when the router should decide."""
        path: str = scope["path"]
        method: str = scope["method"]
        found = self._exact.get((path, method))
        if found is not None:
            return found
        for prefix, name, methods, prefixed in self._by_prefix:
            if path.startswith(prefix) and method in methods:
                value = path[len(prefix) :]
                if value and "/" not in value:
                    scope["path_params"] = {name: value}
                    return prefixed, self._label(value, method)
        return None


class Edge:
    """The whole app as the server sees it: the edge's steps in front of a Starlette app."""

    def __init__(
        self, app: Starlette, fast: Sequence[Route], label: Label, *, max_body_bytes: int, root_path: str
    ) -> None:
        self.app = app
        self._fast = FastRoutes(fast, label)
        self._limit = max_body_bytes
        self._too_large = error_answer(413, BodyTooLargeError(max_body_bytes).detail)
        self._root_path = root_path

    @property
    def routes(self) -> list[BaseRoute]:
        """Every route the app serves (the fast ones included: the router serves their other methods)."""
        return self.app.routes

    @property
    def state(self) -> State:
        """The Starlette app's state."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["path"] = plain_path(scope["path"])
        declared = _declared_length(scope)
        if declared is None:  # a streamed body: cut where it passes the limit
            receive = LimitedReceive(receive, self._limit)
        elif declared > self._limit:  # the server reads no more than a declared length: nothing to cut
            self._count(scope, self._label_of(scope), await self._too_large.send(send))
            return
        found = self._fast.match(scope)
        if found is None:
            counted = _Counted(send)
            try:
                await self.app(scope, receive, counted)
            finally:
                self._count(scope, self._label_of(scope), counted.status)
            return
        app, label = found
        status = 0
        try:
            status = await app.serve(scope, receive, send)
        except BodyTooLargeError:
            status = await self._too_large.send(send)
        finally:
            self._count(scope, label, status)

    def _label_of(self, scope: Scope) -> str:
        return endpoint_of(scope["path"], scope["method"], self._root_path)

    @staticmethod
    def _count(scope: Scope, endpoint: str, status: int) -> None:
        runtime: Runtime | None = scope["state"].get(STATE_KEY) if "state" in scope else None
        if status and runtime is not None:
            runtime.stats.requests[endpoint, status_label(status)] += 1


def _declared_length(scope: Scope) -> int | None:
    """The body's declared length (0 for a request that has no body: neither a Content-Length nor a
    Transfer-Encoding header), or None for a streamed one (or an unreadable length)."""
    for name, value in scope["headers"]:  # a loop, not a generator: the hot path
        if name == b"content-length":
            return int(value) if value.isdigit() else None
        if name == b"transfer-encoding":
            return None
    return 0
