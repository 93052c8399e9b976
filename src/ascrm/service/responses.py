"""JSON answers with the content type the platform requires, and the JSON error body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import orjson
from starlette.responses import Response
from starlette.types import Send

from ascrm.core.protocol import CONTENT_TYPE
from ascrm.service.auth.login import LoginRefusedError

_ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "content_too_large",
    414: "uri_too_long",
    431: "request_header_fields_too_large",
    409: "conflict",
    422: "unprocessable",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}
_CONTENT_TYPE = (b"content-type", CONTENT_TYPE.encode())


class Answer(NamedTuple):
    """A JSON response to send: status, body, extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()

    async def send(self, send: Send) -> int:
        """Send this answer on a raw ASGI channel; its status."""
        headers = [_CONTENT_TYPE, (b"content-length", b"%d" % len(self.body)), *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})
        return self.status


def error_body(status: int, message: str) -> bytes:
    """The JSON error body: {"error": <name>, "message": <what went wrong>}."""
    return orjson.dumps({"error": _ERROR_NAMES.get(status, "error"), "message": message})


def error_answer(status: int, message: str) -> Answer:
    """An error as an Answer."""
    return Answer(status, error_body(status, message))


class JSONAnswer(Response):
    """A Starlette response with exactly `application/json; charset=UTF-8`."""

    media_type = CONTENT_TYPE


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONAnswer:
    """An error as a Starlette response (for exception handlers)."""
    return JSONAnswer(error_body(status, message), status_code=status, headers=headers)


def refusal_answer(exc: LoginRefusedError) -> Answer:
    """A login refused unchecked (429 over budget, 503 KDF queue full), with Retry-After."""
    return Answer(exc.status, error_body(exc.status, exc.message), ((b"retry-after", b"%d" % exc.retry_after),))


def refusal_response(exc: LoginRefusedError) -> JSONAnswer:
    """refusal_answer as a Starlette response."""
    return error_response(exc.status, exc.message, {"Retry-After": str(exc.retry_after)})
