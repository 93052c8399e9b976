"""The OpenAPI 3.1 description of ascrm's HTTP API (package data), served at `GET /openapi.json` to admins."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ascrm.service.admin import REALM
from ascrm.service.auth.basic import BasicAuth
from ascrm.service.auth.login import LoginGuard, LoginRefusedError, client_of
from ascrm.service.responses import JSONAnswer, error_response, refusal_response
from ascrm.service.settings import Settings


def document() -> dict[str, Any]:
    """The OpenAPI document as shipped in the package."""
    data: dict[str, Any] = orjson.loads(resources.files("ascrm.service").joinpath("openapi.json").read_bytes())
    return data


def routes(prefix: str, settings: Settings, guard: LoginGuard | None = None) -> list[Route]:
    """The document's route under prefix; the served copy's `servers` names that prefix."""
    auth = BasicAuth(settings.admin_credentials, guard=guard, role="admin")
    challenge = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
    body = orjson.dumps({**document(), "servers": [{"url": prefix or "/"}]})

    async def openapi(request: Request) -> Response:
        try:
            user = await auth.authenticate(request.headers.get("authorization"), client_of(request))
        except LoginRefusedError as exc:
            return refusal_response(exc)
        if user is None:
            return error_response(401, "valid admin Basic credentials are required", challenge)
        return JSONAnswer(body)

    return [Route(f"{prefix}/openapi.json", openapi, methods=["GET"])]
