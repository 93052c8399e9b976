"""JSON responses with the content type the platform requires, and the JSON error body."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response

from ascrm.protocol import CONTENT_TYPE

REALM = "ascrm"
_ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "content_too_large",
    422: "unprocessable",
    500: "internal_error",
}
_CHALLENGE = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}


class JSONAnswer(Response):
    """A response with exactly `application/json; charset=UTF-8`."""

    media_type = CONTENT_TYPE


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONAnswer:
    """A JSON error body: {"error": <name>, "message": <what went wrong>}."""
    body = {"error": _ERROR_NAMES.get(status, "error"), "message": message}
    return JSONAnswer(json.dumps(body, ensure_ascii=False).encode(), status_code=status, headers=headers)


def unauthorized() -> JSONAnswer:
    """401 with the Basic challenge."""
    return error_response(401, "valid Basic credentials are required", _CHALLENGE)
