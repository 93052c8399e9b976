"""The OpenAPI 3.1 description of ascrm's HTTP API (package data), served at `GET /openapi.json` to admins."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ascrm.service.responses import JSONAnswer


def document() -> dict[str, Any]:
    """The OpenAPI document as shipped in the package."""
    data: dict[str, Any] = orjson.loads(resources.files("ascrm.service").joinpath("openapi.json").read_bytes())
    return data


def routes(prefix: str) -> list[Route]:
    """The document's route under prefix (unguarded: the app puts it behind the admins' guard); the
    served copy's `servers` names that prefix."""
    body = orjson.dumps({**document(), "servers": [{"url": prefix or "/"}]})

    async def openapi(request: Request) -> Response:
        return JSONAnswer(body)

    return [Route(f"{prefix}/openapi.json", openapi, methods=["GET"])]
