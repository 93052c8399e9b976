"""A bare Starlette POST /CallEvent under ascrm's uvicorn settings: the baseline for bench/throughput.py.

Run: python bench/bare_app.py --port 8001   (listens on 127.0.0.1 only; no auth, no logging)
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ascrm.service.server import UVICORN_OPTIONS


async def call_event(request: Request) -> JSONResponse:
    """Echo the CallID with a no-action answer."""
    data = await request.json()
    return JSONResponse({"CallID": data.get("CallID", 0), "EventType": 0, "Param": ""})


app = Starlette(routes=[Route("/CallEvent", call_event, methods=["POST"])])


def main() -> None:
    """Serve app on 127.0.0.1 with the uvicorn settings of ascrm.service.server.uvicorn_config."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, **UVICORN_OPTIONS)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
