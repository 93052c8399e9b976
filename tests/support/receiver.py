"""A stand-in receiver of notifications: an aiohttp app on a free loopback port that records every request
(by Idempotency-Key), counts the requests in flight, answers as told, and can go away and come back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.net import free_port

MODES = ("ok", "fail_first", "status", "hang", "huge", "endless")


@dataclass(frozen=True)
class Seen:
    """One request as it came."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    peer: int  # the client's port: one per connection

    @property
    def key(self) -> str:
        """Its Idempotency-Key."""
        return self.headers.get("Idempotency-Key", "")


@dataclass
class Receiver:
    """Answers by mode: ok (204), fail_first (500 to a key's first `failures` requests, then 204), status
    (`status`, with `retry_after` as Retry-After when set), hang (never, until stopped), huge (a 10 MiB
    answer, chunked), endless (an answer that never ends). delay: seconds before answering (any mode)."""

    port: int = field(default_factory=free_port)
    mode: str = "ok"
    status: int = 500
    retry_after: str | None = None
    failures: int = 1
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    delivered: Counter[str] = field(default_factory=Counter)  # keys answered 2xx, how often
    in_flight: int = 0
    most_in_flight: int = 0
    written: int = 0  # bytes of answers written (huge, endless)
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        """Its URL (a path with a query, as a webhook's often is)."""
        return f"http://127.0.0.1:{self.port}/hooks/secret-token?sig=abc"

    def attempts(self, key: str) -> list[Seen]:
        """The requests that came with key."""
        return [one for one in self.seen if one.key == key]

    async def start(self) -> None:
        """Listen (again) on its port."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._release = asyncio.Event()
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def release(self) -> None:
        """Let the hanging requests go (answered 503, a status worth a retry)."""
        self._release.set()

    async def stop(self) -> None:
        """Go away: the port closed, hanging requests let go."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername")[1] if request.transport is not None else 0
        body = await request.read()
        seen = Seen(request.method, request.path_qs, dict(request.headers), body, time.monotonic(), peer)
        self.seen.append(seen)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            answer = await self._answer(request, seen)
            if 200 <= answer.status < 300:
                self.delivered[seen.key] += 1
            return answer
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        mode = self.mode
        if mode == "ok" or (mode == "fail_first" and len(self.attempts(seen.key)) > self.failures):
            return web.Response(status=204)
        if mode == "fail_first":
            return web.Response(status=500, text="try later")
        if mode == "status":
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return web.Response(status=self.status, headers=headers, text="no")
        if mode == "hang":
            await self._release.wait()
            return web.Response(status=503)
        if mode in ("huge", "endless"):
            response = web.StreamResponse(status=200)
            await response.prepare(request)
            chunk = b"x" * 65536
            while mode == "endless" or self.written < 10 * 1024 * 1024:
                await response.write(chunk)
                self.written += len(chunk)
            await response.write_eof()
            return response
        raise ValueError(f"mode: {mode!r} is none of {MODES}")


@asynccontextmanager
async def receiver(**settings: object) -> AsyncIterator[Receiver]:
    """A running receiver with settings (Receiver's fields), stopped on exit."""
    running = Receiver(**settings)  # type: ignore[arg-type]
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
