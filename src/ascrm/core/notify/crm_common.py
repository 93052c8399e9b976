"""What the CRM presets share: their compile errors, the call they read from a summary, one bounded
request, and how a CRM's answer becomes an attempt's outcome."""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import aiohttp
import orjson
import structlog

from ascrm.core.lookups.presets import PRESETS, canonical
from ascrm.core.notify.target import Sent, TargetError
from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.sources import SourceError, expand

MAX_ANSWER: Final = 64 * 1024  # bytes of a CRM's answer read; the rest is left unread
MAX_RETRY_AFTER: Final = 24 * 3600.0  # seconds: a longer Retry-After is taken as this
_CODE: Final = re.compile(r"[A-Za-z_]{1,64}")  # a vendor's error code, safe to keep (Bitrix24's "error")
_NAMED_KEY: Final = re.compile(r"`([A-Za-z_]+)`")

log = structlog.get_logger("ascrm.notify")


@dataclass(frozen=True, slots=True)
class Call:
    """The fields of a call summary (core/notify/summary.py) a CRM preset sends."""

    key: str
    caller: str
    called: str | None
    started_at: datetime
    talk_seconds: int
    answered_by: str | None
    missed: bool

    @property
    def answerer(self) -> str | None:
        """Who answered (an extension or a number), None for a missed call."""
        return None if self.missed else self.answered_by


def read_call(body: bytes) -> Call | Sent:
    """The call a summary tells of, or the rejection of a body that is not one (a retry would not change it)."""
    try:
        summary = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Sent("rejected", error="the summary is not JSON")
    if not isinstance(summary, dict):
        return Sent("rejected", error="the summary is not an object")
    key, caller, called = summary.get("key"), summary.get("caller"), summary.get("called")
    talk, answered_by, missed = summary.get("talk_seconds"), summary.get("answered_by"), summary.get("missed")
    if not isinstance(key, str) or not key:
        return Sent("rejected", error="the summary has no key")
    if not isinstance(caller, str) or not canonical(caller):
        return Sent("rejected", error="the call has no caller's number")
    if summary.get("ended_at") is None:
        return Sent("rejected", error="the call has not ended (a CRM target takes missed and ended calls)")
    try:
        started = datetime.fromisoformat(str(summary.get("started_at")))
    except ValueError:
        return Sent("rejected", error="the summary's started_at is not an ISO 8601 time")
    if isinstance(talk, bool) or not isinstance(talk, int) or talk < 0 or not isinstance(missed, bool):
        return Sent("rejected", error="the summary's talk_seconds or missed is not what it should be")
    return Call(
        key,
        caller,
        called if isinstance(called, str) and called else None,
        started,
        talk,
        answered_by if isinstance(answered_by, str) and answered_by.strip() else None,
        missed,
    )


def international(number: str) -> str:
    """The number as +<digits> when it is a full one (11 digits or more), else its digits (as look-ups send it)."""
    digits = canonical(number)
    return "+" + digits if len(digits) >= 11 else digits


@dataclass(frozen=True, slots=True)
class Answer:
    """A CRM's answer: its status, the first MAX_ANSWER bytes of its body, its Retry-After in seconds."""

    status: int
    body: bytes
    retry_after: float | None

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON, None when it is not (or was cut at MAX_ANSWER)."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


async def fetch(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    json: Any = None,
    form: Mapping[str, str] | None = None,
) -> Answer:
    """One request (a JSON body or a form), its answer read to MAX_ANSWER bytes; redirects not followed."""
    data: Any = form
    sent_headers = dict(headers)
    if json is not None:
        data = orjson.dumps(json)
        sent_headers["Content-Type"] = "application/json"
    async with session.request(method, url, headers=sent_headers, data=data, allow_redirects=False) as response:
        body = b""
        while len(body) < MAX_ANSWER:
            chunk = await response.content.read(MAX_ANSWER - len(body))
            if not chunk:
                break
            body += chunk
        return Answer(response.status, body, retry_after(response.headers.get("Retry-After")))


def retry_after(value: str | None) -> float | None:
    """A Retry-After header's wait in seconds (delay-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, min(when.timestamp() - time.time(), MAX_RETRY_AFTER))


def refused(answer: Answer, step: str, code: Any = None) -> Sent:
    """The outcome of an answer that is not the success step wanted: retry for 408, 429 and 5xx (a CRM's
    over-the-limit answers are these), rejected for the rest. code: the vendor's error code, when safe."""
    shown = f" {code}" if isinstance(code, str) and _CODE.fullmatch(code) else ""
    error = f"HTTP {answer.status}{shown} ({step})"
    if answer.status in (408, 429) or answer.status >= 500:
        return Sent("retry", answer.status, answer.retry_after, error)
    return Sent("rejected", answer.status, None, error)


def unexpected(answer: Answer, step: str) -> Sent:
    """A 2xx answer not in the documented shape: tried again (the CRM may have been mid-change)."""
    return Sent("retry", answer.status, answer.retry_after, f"HTTP {answer.status}, not the documented answer ({step})")


async def guarded(kind: str, name: str, timeout: float, attempt: Callable[[], Awaitable[Sent]]) -> Sent:
    """attempt's outcome within timeout seconds in all; a timeout, a connection's error or anything else
    raised is a retry (named by its class alone: messages may hold a URL)."""
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            return await attempt()
    except TimeoutError:
        return Sent("retry", error="TimeoutError")
    except aiohttp.ClientError as exc:
        return Sent("retry", error=type(exc).__name__)
    except Exception as exc:  # never raise: the delivery loop counts on it
        log.warning("crm_target_error", target=name, kind=kind, error=type(exc).__name__)
        return Sent("retry", error=type(exc).__name__)


# --- compiling a target's settings -------------------------------------------------------------------


def check_keys(kind: str, spec: Any, known: tuple[str, ...]) -> Mapping[str, Any]:
    """spec as a mapping holding only known keys (and `kind`)."""
    if not isinstance(spec, Mapping):
        raise TargetError((), f"{kind}: a target's settings must be a mapping, not {type(spec).__name__}")
    for key in spec:
        if key != "kind" and key not in known:
            raise TargetError((key,), f"{kind}: unknown key {excerpt(key)} (known: {', '.join(known)})")
    return spec


def text(spec: Mapping[str, Any], key: str, env: Mapping[str, str]) -> str:
    """A string setting with ${VAR} taken from env (an unset variable is named, never a value)."""
    try:
        return expand(str(spec[key]), (key,), env)
    except SourceError as exc:
        raise TargetError((key,), f"{key}: {exc.message}") from None


def credentials(kind: str, spec: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """The settings the look-up preset of kind takes (webhook; url and token; url and api_key), expanded and
    checked as a look-up checks them: the same entry configures a CRM for both."""
    preset = PRESETS[kind]
    config = {key: text(spec, key, env) for key in preset.settings if key in spec}
    problem = preset.check(config)
    if problem is not None:
        named = _NAMED_KEY.search(problem)
        raise TargetError((named.group(1),) if named else (), problem)
    return config


def positive_int(kind: str, spec: Mapping[str, Any], key: str, default: int | None) -> int | None:
    """An optional whole-number setting, at least 1."""
    value = spec.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise TargetError((key,), f"{kind}: `{key}` must be a whole number from 1, not {excerpt(value)}")
    return value


def flag(kind: str, spec: Mapping[str, Any], key: str, default: bool) -> bool:
    """An optional true/false setting."""
    value = spec.get(key, default)
    if not isinstance(value, bool):
        raise TargetError((key,), f"{kind}: `{key}` must be true or false, not {excerpt(value)}")
    return value


def label(kind: str, spec: Mapping[str, Any], key: str, default: str, env: Mapping[str, str]) -> str:
    """An optional short printable string setting (at most 64 characters)."""
    if key not in spec:
        return default
    value = text(spec, key, env)
    if not value or len(value) > 64 or not value.isprintable():
        raise TargetError((key,), f"{kind}: `{key}` must be 1-64 printable characters, not {excerpt(value)}")
    return value
