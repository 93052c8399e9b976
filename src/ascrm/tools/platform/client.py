"""Speaking to a CRM endpoint as the platform does: Basic auth, keep-alive, the four requests of the protocol."""

from __future__ import annotations

import base64
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import orjson

from ascrm.core.protocol import CRMDDATA_FIELDS
from ascrm.errors import AscrmError

FailureKind = Literal["unreachable", "tls", "timeout", "broken"]


class UsageError(AscrmError):
    """A tool was given something it cannot use (a URL, a CA file, a missing password variable)."""


class TransportError(AscrmError):
    """No HTTP answer: the endpoint is unreachable, TLS failed, it did not answer in time, or not in HTTP."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to reach a CRM endpoint: base URL (the tools append /CallEvent), credentials, TLS."""

    base_url: str
    user: str | None = None
    password: str | None = None
    cacert: Path | None = None
    insecure: bool = False
    timeout: float = 5.0
    connections: int = 64

    @property
    def host(self) -> str:
        """host:port of the base URL, for messages."""
        return urlsplit(self.base_url).netloc


class Reply(NamedTuple):
    """One HTTP answer: status, the headers the protocol cares about, the body, and how long it took."""

    status: int
    content_type: str | None
    www_authenticate: str | None
    body: bytes
    seconds: float


def check_url(url: str) -> str:
    """The base URL without a trailing slash; UsageError unless it is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"URL {url!r}: give the endpoint's base URL, e.g. https://crm.example.com/autosecretary")
    if parts.query or parts.fragment:
        raise UsageError(f"URL {url!r}: the base URL takes no query or fragment")
    return url.rstrip("/")


def _verify(target: Target) -> ssl.SSLContext | bool:
    if target.insecure:
        return False
    context = ssl.create_default_context()
    if target.cacert is not None:
        try:
            context.load_verify_locations(cafile=str(target.cacert))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise UsageError(f"--cacert {target.cacert}: cannot use it as CA certificates: {reason}") from None
    return context


def empty_crmddata(un: str) -> bytes:
    """The connection test's CRMDData: every field an empty string but UN, the number configured."""
    return orjson.dumps({name: (un if name == "UN" else "") for name in CRMDDATA_FIELDS})


class PlatformClient:
    """An async client of one CRM endpoint with a keep-alive pool (aiohttp); use it with `async with`."""

    def __init__(self, target: Target, *, authenticate: bool = True) -> None:
        headers = {"Accept": "application/json"}
        if authenticate and target.user is not None:
            pair = f"{target.user}:{target.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self.target = target
        self._base = check_url(target.base_url)
        connector = aiohttp.TCPConnector(limit=target.connections, ssl=_verify(target))
        self._http = aiohttp.ClientSession(
            headers=headers,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=target.timeout),
            trust_env=False,
        )

    async def __aenter__(self) -> PlatformClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the pooled connections."""
        await self._http.close()

    async def connection_test_get(self) -> Reply:
        """GET <base>/CallEvent: the first request of the connection test."""
        return await self.request("GET", "/CallEvent")

    async def connection_test_post(self, un: str) -> Reply:
        """POST <base>/CallEvent/0 with empty values and UN: the second request of the connection test."""
        return await self.request("POST", "/CallEvent/0", empty_crmddata(un))

    async def post_event(self, body: bytes) -> Reply:
        """POST <base>/CallEvent with a CRMDData body."""
        return await self.request("POST", "/CallEvent", body)

    async def poll(self, call_id: int) -> Reply:
        """GET <base>/CallEvent/{CallID}: the poll of a connected call."""
        return await self.request("GET", f"/CallEvent/{call_id}")

    async def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        """One request; TransportError (with its kind) when no HTTP answer came."""
        headers = _JSON_BODY if body is not None else None
        started = time.perf_counter()
        try:
            async with self._http.request(method, self._base + path, data=body, headers=headers) as response:
                content = await response.read()
        except aiohttp.ClientSSLError as exc:
            raise self._tls_failure(exc) from None
        except aiohttp.ClientConnectorError as exc:
            reason = _connect_reason(str(exc.os_error) or str(exc))
            raise TransportError("unreachable", f"cannot connect to {self.target.host}: {reason}") from None
        except aiohttp.ConnectionTimeoutError:
            message = f"{method} {path}: no connection within {self.target.timeout:g} s (--timeout)"
            raise TransportError("unreachable", message) from None
        except TimeoutError:
            message = f"{method} {path}: no answer within {self.target.timeout:g} s (--timeout)"
            raise TransportError("timeout", message) from None
        except aiohttp.ClientError as exc:
            message = f"{method} {path}: no valid HTTP answer: {exc or type(exc).__name__}"
            raise TransportError("broken", message) from None
        seconds = time.perf_counter() - started
        headers_in = response.headers
        return Reply(
            response.status,
            headers_in.get("Content-Type"),
            headers_in.get("WWW-Authenticate"),
            content,
            seconds,
        )

    def _tls_failure(self, exc: aiohttp.ClientSSLError) -> TransportError:
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            error = exc.certificate_error
            reason = f"certificate verify failed: {getattr(error, 'verify_message', None) or error}"
        else:
            reason = _ssl_reason(str(getattr(exc, "os_error", None) or exc))
        hint = "" if self.target.insecure else " (--cacert FILE trusts the CA that signed it; --insecure skips checks)"
        return TransportError("tls", f"TLS with {self.target.host} failed: {reason}{hint}")


_JSON_BODY: Final = {"Content-Type": "application/json; charset=UTF-8"}


def _ssl_reason(text: str) -> str:
    """'[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed … (_ssl.c:1000)' → the words."""
    text = text.split("] ", 1)[-1]
    return text.split(" (_ssl.c", 1)[0]


def _connect_reason(text: str) -> str:
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused (nothing listens there)"
    if "Name or service not known" in text or "getaddrinfo" in text or "Errno -2" in text:
        return "the host name does not resolve"
    return text
