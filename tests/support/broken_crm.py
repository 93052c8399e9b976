"""Small CRM endpoints that each break the protocol one way, served by uvicorn on a loopback port.

Each is a Starlette app mounted under its own prefix (`/<name>`), so one server hosts them all and a tool
given `http://127.0.0.1:<port>/<name>` meets exactly one deviation.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from tests.support.waiting import poll_until

GOOD_TYPE = "application/json; charset=UTF-8"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="crm"'}
Answer = tuple[int, dict[str, str], bytes]
Behaviour = Callable[[Request, int, bool], Awaitable[Answer]]  # (request, CallID, is a poll) -> answer


def _json(body: Any, status: int = 200, content_type: str = GOOD_TYPE) -> Answer:
    return status, {"Content-Type": content_type}, json.dumps(body).encode()


async def good(request: Request, call_id: int, poll: bool) -> Answer:
    """A well-behaved endpoint: "no action" to everything, TransferDN to DTMF 1."""
    action = await _dtmf_one(request)
    body = {"CallID": call_id, "EventType": 1 if action else 0, "Param": "74951112233" if action else ""}
    return _json(body)


async def _dtmf_one(request: Request) -> bool:
    if request.method != "POST":
        return False
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return False
    return bool(data.get("EventType") == 4 and data.get("DTMF") == "1")


def _changed(**fields: Any) -> Behaviour:
    """Like good, with some ReturnCRMData fields replaced (a callable value gets the CallID)."""

    async def behaviour(request: Request, call_id: int, poll: bool) -> Answer:
        body = {"CallID": call_id, "EventType": 0, "Param": ""}
        body.update({k: v(call_id) if callable(v) else v for k, v in fields.items()})
        return _json({k: v for k, v in body.items() if v is not _DROP})

    return behaviour


_DROP = object()


async def plain_json(request: Request, call_id: int, poll: bool) -> Answer:
    return _json({"CallID": call_id, "EventType": 0, "Param": ""}, content_type="application/json")


async def lower_charset(request: Request, call_id: int, poll: bool) -> Answer:
    return _json({"CallID": call_id, "EventType": 0, "Param": ""}, content_type="application/json; charset=utf-8")


async def text_plain(request: Request, call_id: int, poll: bool) -> Answer:
    return 200, {"Content-Type": "text/plain; charset=UTF-8"}, b"OK"


async def not_json(request: Request, call_id: int, poll: bool) -> Answer:
    return 200, {"Content-Type": GOOD_TYPE}, b"<html>OK</html>"


async def case_fields(request: Request, call_id: int, poll: bool) -> Answer:
    return _json({"callId": call_id, "eventType": 0, "param": ""})


async def unknown_action(request: Request, call_id: int, poll: bool) -> Answer:
    return _json({"CallID": call_id, "EventType": 13 if await _dtmf_one(request) else 0, "Param": ""})


async def bad_param(request: Request, call_id: int, poll: bool) -> Answer:
    dtmf = await _dtmf_one(request)
    return _json({"CallID": call_id, "EventType": 2 if dtmf else 0, "Param": "12345" if dtmf else ""})


async def error_500(request: Request, call_id: int, poll: bool) -> Answer:
    if call_id == 0:
        return await good(request, call_id, poll)
    return _json({"error": "internal"}, status=500)


async def slow_poll(request: Request, call_id: int, poll: bool) -> Answer:
    if poll:
        await asyncio.sleep(1.0)
    return await good(request, call_id, poll)


BEHAVIOURS: dict[str, Behaviour] = {
    "good": good,
    "plain-json": plain_json,
    "lower-charset": lower_charset,
    "text-plain": text_plain,
    "not-json": not_json,
    "case-fields": case_fields,
    "missing-param": _changed(Param=_DROP),
    "extra-field": _changed(Comment="from the CRM"),
    "string-call-id": _changed(CallID=str),
    "wrong-call-id": _changed(CallID=lambda call_id: call_id + 1 if call_id else 0),
    "float-event-type": _changed(EventType=0.0),
    "unknown-action": unknown_action,
    "bad-param": bad_param,
    "error-500": error_500,
    "slow-poll": slow_poll,
}
OPEN = "open"  # answers without credentials
NO_CHALLENGE = "no-challenge"  # refuses everyone with a bare 401


def _app(name: str, behaviour: Behaviour) -> Starlette:
    async def endpoint(request: Request) -> Response:
        if name == NO_CHALLENGE:
            return Response(b'{"error":"unauthorized"}', 401, media_type=GOOD_TYPE)
        if "authorization" not in request.headers and name != OPEN:
            return Response(b'{"error":"unauthorized"}', 401, CHALLENGE, media_type=GOOD_TYPE)
        raw = request.path_params.get("call_id")
        poll = request.method == "GET" and raw is not None
        call_id = int(raw) if raw is not None else await _body_call_id(request)
        status, headers, body = await behaviour(request, call_id, poll)
        return Response(body, status, headers)

    methods = ["GET", "POST"]
    return Starlette(
        routes=[
            Route("/CallEvent", endpoint, methods=methods),
            Route("/CallEvent/{call_id:int}", endpoint, methods=methods),
        ]
    )


async def _body_call_id(request: Request) -> int:
    if request.method != "POST":
        return 0
    try:
        value = json.loads(await request.body() or b"{}").get("CallID")
    except ValueError:
        return 0
    return value if isinstance(value, int) else 0


def app() -> Starlette:
    """Every broken endpoint, each under /<name>."""
    mounts = [Mount(f"/{name}", _app(name, behaviour)) for name, behaviour in BEHAVIOURS.items()]
    mounts += [Mount(f"/{OPEN}", _app(OPEN, good)), Mount(f"/{NO_CHALLENGE}", _app(NO_CHALLENGE, good))]
    return Starlette(routes=mounts)


@contextmanager
def serving() -> Iterator[str]:
    """Serve app() on 127.0.0.1 on an ephemeral port in a thread; yields http://127.0.0.1:<port>."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        if not poll_until(lambda: server.started, timeout=10):
            raise RuntimeError("the broken CRM endpoints did not start in 10 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
