"""One HTTP request of a look-up and what its answer means: a value, a miss, an error or a timeout.

Nothing here names the request's URL, headers or body in what it returns: webhook URLs and headers
carry tokens. A failure is told by the HTTP status and the exception's class only.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import orjson

from ascrm.core.lookups.request import Extract, LookupRequest

MAX_BODY: Final = 64 * 1024  # bytes of an answer read at most; a longer one is an error
MAX_VALUE_CHARS: Final = 1024  # a found value is kept to this many characters
_CHUNK: Final = 16 * 1024
_POOL: Final = 100  # connections of the process's look-ups, all sources
_POOL_PER_HOST: Final = 20


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one request gave: outcome "fetched", "miss", "error" or "timeout", the value, the HTTP
    status (None: no answer) and the failure's exception class (None: none)."""

    outcome: str
    value: str | None = None
    status: int | None = None
    error: str | None = None


class BodyTooLargeError(Exception):
    """An answer longer than MAX_BODY bytes."""


class NotAValueError(Exception):
    """An extract that gave something other than a string or None."""


def client_session(ca_file: Path | None) -> aiohttp.ClientSession:
    """The session of every look-up: pooled, bounded connections; TLS checked against ca_file, else the system's CAs."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    connector = aiohttp.TCPConnector(limit=_POOL, limit_per_host=_POOL_PER_HOST, ssl=context)
    # no cookies: one CRM's session cookie must never reach another's look-up
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False)


async def fetch(session: aiohttp.ClientSession, request: LookupRequest, extract: Extract, timeout: float) -> Fetched:
    """Send request and find the value in its answer within timeout seconds (at most)."""
    if timeout <= 0:
        return Fetched("timeout", error="TimeoutError")
    status: int | None = None
    try:
        async with asyncio.timeout(timeout):
            async with session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                status = response.status
                if status == 404:
                    return Fetched("miss", status=status)
                if not 200 <= status < 300:
                    return Fetched("error", status=status)
                body = await _read_capped(response)
        # 204 No Content (amoCRM's "nothing found"): the extract reads None, which is no value
        return _found(extract(None if status == 204 and not body else orjson.loads(body)), status)
    except TimeoutError as error:  # asyncio's and aiohttp's (ServerTimeoutError is one)
        return Fetched("timeout", status=status, error=type(error).__name__)
    except Exception as error:  # refused, reset, garbage, too long, the extract failing: never its message
        return Fetched("error", status=status, error=type(error).__name__)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    if response.content_length is not None and response.content_length > MAX_BODY:
        raise BodyTooLargeError
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > MAX_BODY:
            raise BodyTooLargeError
    return bytes(body)


def _found(value: object, status: int) -> Fetched:
    if value is None or value == "":
        return Fetched("miss", status=status)
    if not isinstance(value, str):
        raise NotAValueError
    return Fetched("fetched", value[:MAX_VALUE_CHARS], status=status)
