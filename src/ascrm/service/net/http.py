"""uvicorn's httptools protocol with the edge's limits: the request target, the header count and
bytes (counted before httptools parses, so an oversized header is refused, never buffered), the time
to send the headers and the body, the connection cap, and a drain that still answers a request
already on its way when the server stops."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from ascrm.core.protocol import CONTENT_TYPE
from ascrm.service.net.connections import ConnectionGuard
from ascrm.service.responses import error_body

# What the connection is waiting for; its deadline (if any) belongs to this phase.
_HEADERS: Final = 0  # the request line and headers (from the connection, or the request's first byte)
_BODY: Final = 1  # the body, after the last header
_APP: Final = 2  # the app's answer, then the next request (uvicorn's keep-alive timer)
_DRAIN: Final = 3  # stopping: a last request may still arrive on this idle connection


class _RefusalError(Exception):
    """Raised in a parser callback: the request breaks a limit (httptools re-raises it wrapped)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


_INVALID = _RefusalError(400, "invalid_request", "invalid HTTP request")


class _OneWrite:
    """The transport as one response's cycle sees it: its first write (the status line and headers) is
    held back and written with the next (the body), so an answer leaves in one send system call instead
    of uvicorn's two (on loopback a send costs about as much as a fifth of a whole answer). Closing
    writes what is held first. It holds no reference to the cycle: no cycle of objects to collect."""

    __slots__ = ("_held", "_holding", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held = b""
        self._holding = True  # until the first write

    def write(self, data: bytes) -> None:
        """Write data, or hold it when it is the response's first write."""
        if self._holding:
            self._holding = False
            self._held = data
            return
        if self._held:
            data, self._held = self._held + data, b""
        self._transport.write(data)

    def close(self) -> None:
        """Write what is held, then close the connection."""
        if self._held:
            self._transport.write(self._held)
            self._held = b""
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing."""
        return self._transport.is_closing()


class GuardedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol bounded by a ConnectionGuard (use bind_guard for a class with one)."""

    guard: ClassVar[ConnectionGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self.guard.limits
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._max_url = limits.max_url_bytes
        self._header_timeout = limits.header_timeout_seconds
        self._body_timeout = limits.body_timeout_seconds
        self._room = self._max_header_bytes  # header bytes the current request may still send
        self._phase = _HEADERS
        self._begun = False  # a byte of the current request has been parsed
        self._admitted = False
        self._peer_host: str | None = None  # the client's address, for its per-address connection count
        self._refusal: _RefusalError | None = None
        self.deadline = 0.0  # loop time when the current phase expires; 0: none

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection, or close it at once when the cap is reached or the server is stopping."""
        guard = self.guard
        if guard.draining or len(self.connections) >= guard.max_connections:
            if not guard.draining:
                guard.refuse()
            transport.abort()
            return
        peer = transport.get_extra_info("peername")
        self._peer_host = peer[0] if isinstance(peer, tuple) and peer else None
        if not guard.admit_client(self._peer_host):
            transport.abort()
            return
        self._admitted = True
        guard.stats.open += 1
        super().connection_made(transport)
        self.deadline = self.loop.time() + self._header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (a refused one was never counted)."""
        if not self._admitted:
            return
        self._admitted = False
        self.guard.stats.open -= 1
        self.guard.release_client(self._peer_host)
        self.deadline = 0.0
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed httptools, but never more header bytes than limits.max_header_bytes."""
        if self._phase != _BODY:
            if len(data) > self._room:
                self._feed_bounded(data)
                return
            self._room -= len(data)
        self._feed(data)

    def _feed_bounded(self, data: bytes) -> None:
        """Feed data in slices that end where the header budget does; refuse what goes past it."""
        while data and not self.transport.is_closing():
            if self._phase == _BODY:
                size = self._max_header_bytes  # the next request's headers may start in this slice
            else:
                if self._room <= 0:
                    self._refuse(
                        _RefusalError(
                            431, "header_too_large", f"request headers are larger than {self._max_header_bytes} bytes"
                        )
                    )
                    return
                size = self._room
            chunk, data = data[:size], data[size:]
            if self._phase != _BODY:
                self._room -= len(chunk)
            self._feed(chunk)

    def _feed(self, data: bytes) -> None:
        # As HttpToolsProtocol.data_received, with a broken limit answered by its own status.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            self._refuse(self._refusal or _INVALID)

    def send_400_response(self, msg: str) -> None:
        """A request httptools cannot parse: a JSON 400, then close."""
        self._refuse(_INVALID)

    def _refuse(self, refusal: _RefusalError) -> None:
        """Answer refusal (unless another answer is under way on this connection) and close."""
        self.deadline = 0.0
        if self.transport.is_closing():
            return
        self.guard.stats.closed[refusal.reason] += 1
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not (cycle.response_started or self.pipeline):
            if cycle is not None and not cycle.response_complete:  # the app waits for a body: tell it it is gone
                cycle.disconnected = True
                cycle.message_event.set()
            body = error_body(refusal.status, refusal.message)
            head = [STATUS_LINE[refusal.status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head.append(b"content-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (_CT, len(body)))
            self.transport.write(b"".join(head) + body)
        self.transport.close()

    def expire(self) -> None:
        """The current phase's deadline has passed: 408 if a request is partly read, else close."""
        self.deadline = 0.0
        if self.transport.is_closing():
            return
        if self._phase == _BODY and self.cycle is not None and self.cycle.response_complete:
            self.guard.stats.closed["body_timeout"] += 1  # answered already (say 401): a 408 now would be unasked for
            self.transport.close()
        elif self._phase == _BODY:
            self._refuse(
                _RefusalError(408, "body_timeout", f"the request body did not arrive within {self._body_timeout:g} s")
            )
        elif self._phase == _HEADERS and self._begun:
            message = f"the request headers did not arrive within {self._header_timeout:g} s"
            self._refuse(_RefusalError(408, "header_timeout", message))
        else:  # nothing of a request sent (or stopping): no one to answer
            if self._phase == _HEADERS:
                self.guard.stats.closed["header_timeout"] += 1
            self.transport.close()

    # Parser callbacks

    def on_message_begin(self) -> None:
        """A request's first byte: its headers have limits.header_timeout_seconds from now (or the connection)."""
        super().on_message_begin()
        self._begun = True
        if self._phase != _HEADERS:
            self._phase = _HEADERS
            self.deadline = self.loop.time() + self._header_timeout

    def on_url(self, url: bytes) -> None:
        """Collect the request target, up to limits.max_url_bytes."""
        self.url += url
        if len(self.url) > self._max_url:
            self._refusal = _RefusalError(
                414, "url_too_long", f"the request target is longer than {self._max_url} bytes"
            )
            raise self._refusal

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect a header, up to limits.max_headers of them."""
        if len(self.headers) >= self._max_headers:
            self._refusal = _RefusalError(431, "too_many_headers", f"more than {self._max_headers} request headers")
            raise self._refusal
        # As HttpToolsProtocol.on_header (inlined: it runs for every header of every request).
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        """The headers are in: the body has limits.body_timeout_seconds; when stopping, answer and close."""
        self._phase = _BODY
        self.deadline = self.loop.time() + self._body_timeout
        super().on_headers_complete()
        if self.guard.draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """As uvicorn's, with the answer written in one send. Not for a HEAD answer (no body write follows
        its headers) nor a request expecting 100 Continue (written before the response, at once)."""
        if cycle.scope["method"] != "HEAD" and not cycle.waiting_for_100_continue:
            cycle.transport = _OneWrite(self.transport)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)

    def on_message_complete(self) -> None:
        """The request is in: no deadline while the app answers; the next request gets a fresh budget."""
        super().on_message_complete()
        self._phase = _APP
        self._begun = False
        self._room = self._max_header_bytes
        self.deadline = 0.0

    def shutdown(self) -> None:
        """Stopping: a request under way is answered with `Connection: close`; an idle connection gets
        limits.shutdown_idle_grace_seconds for a request already sent; a request partly sent, its deadline."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            (self.pipeline[0][0] if self.pipeline else cycle).keep_alive = False
        elif self._phase == _HEADERS and self._begun:
            pass  # the request arrives (answered with `Connection: close`) or its header deadline closes it
        else:
            self._phase = _DRAIN
            self.deadline = self.loop.time() + self.guard.limits.shutdown_idle_grace_seconds
            if self.deadline <= self.loop.time():
                self.transport.close()


_CT: Final = CONTENT_TYPE.encode()


def bind_guard(guard: ConnectionGuard) -> type[GuardedHttpProtocol]:
    """The protocol class to give uvicorn as `http=` for a server bounded by guard."""

    class Bound(GuardedHttpProtocol):
        """HttpToolsProtocol bounded by this server's guard."""

    Bound.guard = guard
    return Bound
