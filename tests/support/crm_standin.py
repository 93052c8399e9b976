"""A stand-in CRM for look-ups: an aiohttp app on a free loopback port that counts requests and answers as told."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from tests.support.net import free_port

MODES = ("value", "slow", "404", "500", "429", "503", "hang", "garbage", "huge", "redirect", "null")


@dataclass
class CrmStandIn:
    """Answers every request by mode: value ({"value": value}), slow (that after delay seconds), 404, 500,
    429, 503 (Bitrix24's QUERY_LIMIT_EXCEEDED), hang (never), garbage (not JSON), huge (a 1 MiB JSON
    body), redirect (302 to itself), null ({"value": null})."""

    port: int = field(default_factory=free_port)
    tls: bool = False
    mode: str = "value"
    value: str = "ivanov"
    delay: float = 0.0
    requests: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.headers.append(dict(request.headers))
        mode = self.mode
        if mode == "slow":
            await asyncio.sleep(self.delay)
        if mode == "hang":
            await self._release.wait()
        if mode in ("value", "slow"):
            return web.Response(body=orjson.dumps({"value": self.value}), content_type="application/json")
        if mode == "null":
            return web.Response(body=b'{"value": null}', content_type="application/json")
        if mode == "503":
            return web.Response(status=503, body=b'{"error": "QUERY_LIMIT_EXCEEDED"}', content_type="application/json")
        if mode in ("404", "500", "429"):
            return web.Response(status=int(mode), body=b"{}", content_type="application/json")
        if mode == "garbage":
            return web.Response(body=b"\x00<html>not json", content_type="application/json")
        if mode == "huge":
            return web.Response(body=b'{"value": "' + b"x" * (1 << 20) + b'"}', content_type="application/json")
        if mode == "redirect":
            raise web.HTTPFound(location="/elsewhere")
        raise ValueError(f"mode: {mode!r} is none of {MODES}")


@asynccontextmanager
async def crm_standin(tls: ssl.SSLContext | None = None) -> AsyncIterator[CrmStandIn]:
    """A running stand-in (HTTPS with tls), stopped (hanging requests released) on exit."""
    standin = CrmStandIn(tls=tls is not None)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", standin._handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", standin.port, ssl_context=tls)
    await site.start()
    try:
        yield standin
    finally:
        standin._release.set()
        await runner.cleanup()
