"""The baselines of bench/throughput.py, under ascrm's uvicorn settings: a bare Starlette app and a raw ASGI app.

Both answer `POST /CallEvent` by parsing the JSON body and echoing its CallID with a no-action answer,
and `GET /CallEvent/{CallID}` (a poll) with the same answer for the path's CallID. `--app starlette`
(the default) does it with Starlette's routing, `Request.json()` and `JSONResponse`; `--app raw` with
no framework at all: one ASGI callable, `json.loads` and `json.dumps`, and two `send` calls.
No auth, no logging, no call state.

Run: python bench/bare_app.py --port 8001 [--app starlette|raw]   (listens on 127.0.0.1 only)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ascrm.service.server import UVICORN_OPTIONS


async def call_event(request: Request) -> JSONResponse:
    """Echo the CallID with a no-action answer."""
    data = await request.json()
    return JSONResponse({"CallID": data.get("CallID", 0), "EventType": 0, "Param": ""})


async def poll(request: Request) -> JSONResponse:
    """A no-action answer for the path's CallID."""
    return JSONResponse({"CallID": int(request.path_params["call_id"]), "EventType": 0, "Param": ""})


app = Starlette(
    routes=[
        Route("/CallEvent", call_event, methods=["POST"]),
        Route("/CallEvent/{call_id:int}", poll, methods=["GET"]),
    ]
)

_JSON_HEADERS = [(b"content-type", b"application/json")]


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The same two answers as `app`, without a framework (lifespan messages are acknowledged)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path, method = scope["path"], scope["method"]
    status, answer = 404, b'{"error":"not_found"}'
    if path == "/CallEvent" and method == "POST":
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        data: dict[str, Any] = json.loads(body)
        status, answer = 200, _no_action(data.get("CallID", 0))
    elif path.startswith("/CallEvent/") and method == "GET" and path[11:].isdigit():
        status, answer = 200, _no_action(int(path[11:]))
    headers = [*_JSON_HEADERS, (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def _no_action(call_id: object) -> bytes:
    return json.dumps({"CallID": call_id, "EventType": 0, "Param": ""}, separators=(",", ":")).encode()


APPS = {"starlette": app, "raw": raw_app}


def main() -> None:
    """Serve one app on 127.0.0.1 with the uvicorn settings of ascrm.service.server.uvicorn_config."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", choices=sorted(APPS), default="starlette", help="which baseline (default starlette)")
    args = parser.parse_args()
    config = uvicorn.Config(APPS[args.app], host="127.0.0.1", port=args.port, **UVICORN_OPTIONS)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
