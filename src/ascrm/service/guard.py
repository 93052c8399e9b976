"""The one auth guard: every protected endpoint, platform and admin alike, is served through it.

A role (the platform's, the admins') has its credentials, its realm and its refusal; `Guard.protect`
puts any ASGI app behind one. The app composes its routes by role (see ascrm.service.app), so a new
route is protected by the group it is added to, never by remembering to call a check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ascrm.service.auth.basic import BasicAuth, Credential
from ascrm.service.auth.login import LoginGuard, LoginRefusedError
from ascrm.service.responses import Answer, error_body, refusal_answer


@dataclass(frozen=True, slots=True)
class Role:
    """Who may call a group of endpoints: the settings' credentials key, the realm, the 401 message."""

    name: str  # also the login budgets' and the failure log's role
    realm: str
    denied: str  # the 401 message when credentials are configured
    closed: str  # the 401 message when none are


PLATFORM: Final = Role(
    "platform",
    realm="ascrm",
    denied="valid Basic credentials are required",
    closed="valid Basic credentials are required",
)
ADMIN: Final = Role(
    "admin",
    realm="ascrm-admin",
    denied="valid admin Basic credentials are required",
    closed="the admin API is closed: no admin credentials are configured (auth.admin)",
)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def client_address(scope: Scope) -> str | None:
    """The client's address: the peer's, or a trusted proxy's X-Forwarded-For (listen.forwarded_allow_ips)."""
    client = scope.get("client")
    return str(client[0]) if client else None


class Guard:
    """One role's Basic-auth check in front of the endpoints it protects; refusals are JSON answers."""

    def __init__(self, role: Role, credentials: Sequence[Credential], logins: LoginGuard) -> None:
        self.role = role
        self._auth = BasicAuth(credentials, guard=logins, role=role.name)
        message = role.denied if self._auth.enabled else role.closed
        challenge = f'Basic realm="{role.realm}", charset="UTF-8"'.encode()
        self._unauthorized = Answer(401, error_body(401, message), ((b"www-authenticate", challenge),))

    def admitted(self, scope: Scope) -> bool:
        """Whether the request carries credentials that passed before (see BasicAuth.known), decided
        without waiting; then the user name is in scope["user"]. False: ask refusal."""
        user = self._auth.known(_header(scope, b"authorization"), client_address(scope))
        if user is None:
            return False
        scope["user"] = user
        return True

    async def refusal(self, scope: Scope) -> Answer | None:
        """The answer refusing this request (401, 429, 503), or None with the user name in scope["user"]."""
        try:
            user = await self._auth.authenticate(_header(scope, b"authorization"), client_address(scope))
        except LoginRefusedError as exc:
            return refusal_answer(exc)
        if user is None:
            return self._unauthorized
        scope["user"] = user  # Starlette's request.user
        return None

    def protect(self, app: ASGIApp) -> Protected:
        """app behind this guard."""
        return Protected(self, app)

    def protect_routes(self, routes: Sequence[BaseRoute]) -> list[BaseRoute]:
        """routes with each endpoint behind this guard (the routes themselves, changed in place)."""
        for route in routes:
            if not isinstance(route, Route):
                raise TypeError(f"only plain routes can be guarded, not {type(route).__name__}")
            route.app = self.protect(route.app)
        return list(routes)


class Protected:
    """An ASGI app served only to requests its guard lets through."""

    def __init__(self, guard: Guard, app: ASGIApp) -> None:
        self.guard = guard
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.guard.admitted(scope):
            refused = await self.guard.refusal(scope)
            if refused is not None:
                await refused.send(send)
                return
        await self.app(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Serve the request; the status sent (0: none), when the app tells it (ascrm.service.edge.Served)."""
        if not self.guard.admitted(scope):
            refused = await self.guard.refusal(scope)
            if refused is not None:
                return await refused.send(send)
        status: int = await self.app.serve(scope, receive, send)  # type: ignore[attr-defined]
        return status
