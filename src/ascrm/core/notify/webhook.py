"""The `http` target: a notification's body POSTed (or PUT) to a URL, signed with HMAC-SHA256.

The request carries, besides the target's own headers:

- `Content-Type: application/json`;
- `Idempotency-Key: <notification key>`: the same for every attempt, so a receiver drops a repeat;
- `X-Ascrm-Timestamp: <Unix seconds, an integer>`: when this attempt was made;
- with a secret, `X-Ascrm-Signature: sha256=<hex>` (the header's name is configurable): the hex HMAC-SHA256,
  keyed by the secret's UTF-8 bytes, of the bytes `<timestamp>.` (the timestamp header's value, in
  ASCII digits, then a full stop) followed by the body exactly as sent. A receiver recomputes it with
  signature(), compares in constant time and refuses a timestamp too far from its clock: a captured
  request cannot be replayed later.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Final, Literal

import aiohttp
from multidict import CIMultiDict

from ascrm.core.notify.message import Notification
from ascrm.core.notify.target import Sent

MAX_ANSWER: Final = 64 * 1024  # bytes of an answer read at most (then the connection is dropped)
MAX_RETRY_AFTER: Final = 86400.0  # seconds: a longer Retry-After is taken as this
RETRY_STATUSES: Final = frozenset({408, 425, 429})  # and every 5xx
_CHUNK: Final = 16 * 1024
_DELTA: Final = re.compile(r"[0-9]{1,32}")
_RETRY_AFTER_CHARS: Final = 64


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 by secret of `<timestamp>.` + body."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After in seconds from now (delta-seconds or an HTTP-date), within 0..MAX_RETRY_AFTER; None when
    missing or not either form."""
    if value is None or len(value) > _RETRY_AFTER_CHARS:
        return None
    value = value.strip()
    if _DELTA.fullmatch(value):
        return min(float(int(value)), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, of unknown origin
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def outcome(status: int, retry_after: float | None = None) -> Sent:
    """What an answer of status means: 2xx delivered; 408, 425, 429, 5xx retry; anything else rejected."""
    if 200 <= status < 300:
        return Sent("delivered", status=status)
    if status in RETRY_STATUSES or 500 <= status < 600:
        return Sent("retry", status=status, retry_after=retry_after, error=f"HTTP {status}")
    return Sent("rejected", status=status, error=f"HTTP {status}")


@dataclass(frozen=True, slots=True, repr=False)
class WebhookTarget:
    """A receiver of notifications over HTTP: url, method, its own headers and an optional HMAC secret."""

    name: str
    url: str
    method: Literal["POST", "PUT"] = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    secret: str | None = None
    signature_header: str = "X-Ascrm-Signature"

    @property
    def kind(self) -> str:
        """Always http."""
        return "http"

    def __repr__(self) -> str:
        """Its name, method and header names: the URL's path and every header value may hold a token."""
        names = tuple(name for name, _ in self.headers)
        secret = "set" if self.secret else "none"
        return f"WebhookTarget(name={self.name!r}, method={self.method!r}, headers={names!r}, secret={secret})"

    def request_headers(self, notification: Notification, timestamp: int) -> CIMultiDict[str]:
        """The headers of one attempt made at timestamp: the target's own, then ascrm's (which win)."""
        headers: CIMultiDict[str] = CIMultiDict(self.headers)
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = notification.key
        headers["X-Ascrm-Timestamp"] = str(timestamp)
        if self.secret:
            headers[self.signature_header] = signature(self.secret, timestamp, notification.body)
        return headers

    async def send(self, session: aiohttp.ClientSession, notification: Notification, timeout: float) -> Sent:
        """One request within timeout seconds; never raises."""
        if timeout <= 0:
            return Sent("retry", error="TimeoutError")
        status: int | None = None
        retry_after: float | None = None
        try:
            headers = self.request_headers(notification, int(time.time()))
            async with asyncio.timeout(timeout):
                async with session.request(
                    self.method,
                    self.url,
                    data=notification.body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    status = response.status
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
                    await _drain(response)
        except Exception as error:  # TimeoutError, refused, reset, a bad header: never its message
            if status is None:
                return Sent("retry", error=type(error).__name__)
        return outcome(status, retry_after)


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read the answer and drop it, MAX_ANSWER bytes at most: past that the connection is closed, not read."""
    if response.content_length is not None and response.content_length > MAX_ANSWER:
        return
    read = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        read += len(chunk)
        if read >= MAX_ANSWER:
            return
