"""CRM presets: how Bitrix24, amoCRM and RetailCRM are asked who is responsible for a phone number.

Each preset renders one request from a rule file's settings and a caller's number, and reads the
answer: the responsible user's internal number (Bitrix24, RetailCRM) or id (amoCRM has no internal
numbers), None when nobody is. One request per look-up for all three.

An answer not in the documented shape raises ValueError (an error, not a miss); an empty answer
(amoCRM's 204 No Content) reaches `extract` as None and is a miss. Secrets (Bitrix24's webhook path,
amoCRM's token, RetailCRM's key) never appear in a message: a bad one is named by its key alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

from ascrm.core.lookups.request import Extract, LookupRequest

_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})  # http is allowed there alone (local stand-ins)
_MAX_SETTING: Final = 2048  # characters: any real URL, token or key is far shorter
_TOKEN: Final = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: what a header value may carry as is
_BITRIX_PATH: Final = re.compile(r"/rest/[0-9]+/[0-9A-Za-z]+/?")  # /rest/<user id>/<secret>/
_BITRIX_METHOD: Final = "telephony.externalCall.searchCrmEntities"
_DIGITS: Final = frozenset("0123456789")  # str.isdigit() takes superscripts and other scripts' digits too


def canonical(number: str) -> str:
    """A phone number's digits; a Russian one (+7…, 8…, 7… or its ten digits alone) as 7 and ten digits."""
    digits = "".join(c for c in number if c in _DIGITS)
    if len(digits) == 11 and digits[0] in "78":
        return "7" + digits[1:]
    if len(digits) == 10:  # a Russian number without its trunk or country code
        return "7" + digits
    return digits


def _international(number: str) -> str:
    """The number as +<digits> when it is a full one (11 digits or more), else its digits."""
    digits = canonical(number)
    return "+" + digits if len(digits) >= 11 else digits


def _national(number: str) -> str:
    """A Russian number's ten national digits (what amoCRM's full-text search matches best), else its digits."""
    digits = canonical(number)
    return digits[1:] if len(digits) == 11 and digits[0] == "7" else digits


def _check_url(kind: str, key: str, value: Any, *, secret: bool) -> str | None:
    """A problem with an http(s) URL setting (a secret one is never echoed), None if fine."""
    shown = "" if secret else f" (got {str(value)[:80]!r})"
    if not isinstance(value, str):
        return f"{kind}: `{key}` must be a string, not {type(value).__name__}"
    if not value or len(value) > _MAX_SETTING or any(c.isspace() or not c.isprintable() for c in value):
        return f"{kind}: `{key}` must be a URL without spaces, at most {_MAX_SETTING} characters{shown}"
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number raises
    except ValueError:
        return f"{kind}: `{key}` is not a URL{shown}"
    if parts.username is not None or parts.password is not None:
        return f"{kind}: `{key}` must not hold a user or password"
    host = parts.hostname or ""
    if parts.scheme != "https" and not (parts.scheme == "http" and host in _LOOPBACK):
        return f"{kind}: `{key}` must be an https:// URL{shown}"
    if not host:
        return f"{kind}: `{key}` has no host{shown}"
    if parts.query or parts.fragment:
        return f"{kind}: `{key}` must have no query or fragment{shown}"
    return None


def _check_token(kind: str, key: str, value: Any) -> str | None:
    """A problem with a secret header value (never echoed), None if fine."""
    if not isinstance(value, str):
        return f"{kind}: `{key}` must be a string, not {type(value).__name__}"
    if not value:
        return f"{kind}: `{key}` is empty"
    if len(value) > _MAX_SETTING or not _TOKEN.fullmatch(value):
        return f"{kind}: `{key}` must be printable ASCII without spaces, at most {_MAX_SETTING} characters"
    return None


def _bitrix_check(config: Mapping[str, Any]) -> str | None:
    problem = _check_url("bitrix24", "webhook", config["webhook"], secret=True)
    if problem is None and not _BITRIX_PATH.fullmatch(urlsplit(config["webhook"]).path):
        return "bitrix24: `webhook` must be an inbound webhook's URL, https://<portal>/rest/<user>/<secret>/"
    return problem


def _base_check(kind: str, secret: str) -> Callable[[Mapping[str, Any]], str | None]:
    def check(config: Mapping[str, Any]) -> str | None:
        problem = _check_url(kind, "url", config["url"], secret=False)
        if problem is None and urlsplit(config["url"]).path not in ("", "/"):
            return f"{kind}: `url` must be the account's address alone, e.g. https://example.{kind}.ru"
        return problem or _check_token(kind, secret, config[secret])

    return check


def _bitrix_request(config: Mapping[str, str], number: str) -> LookupRequest:
    url = config["webhook"].rstrip("/") + f"/{_BITRIX_METHOD}.json"
    body = json.dumps({"PHONE_NUMBER": _international(number)}).encode()
    return LookupRequest("POST", url, (("Accept", "application/json"), ("Content-Type", "application/json")), body)


def _amocrm_request(config: Mapping[str, str], number: str) -> LookupRequest:
    url = config["url"].rstrip("/") + "/api/v4/contacts?query=" + quote(_national(number), safe="")
    return LookupRequest("GET", url, (("Accept", "application/json"), ("Authorization", f"Bearer {config['token']}")))


def _retailcrm_request(config: Mapping[str, str], number: str) -> LookupRequest:
    # ignoreStatus=1: the responsible manager whatever their status in RetailCRM (rules decide what to do
    # with them); details=0: the customer and links are not read
    phone = quote(canonical(number), safe="")
    url = config["url"].rstrip("/") + f"/api/v5/telephony/manager?phone={phone}&details=0&ignoreStatus=1"
    return LookupRequest("GET", url, (("Accept", "application/json"), ("X-API-KEY", config["api_key"])))


def _text(value: Any) -> str | None:
    """A user's number or id as text (None when absent or empty)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _bitrix_extract(number: str) -> Extract:
    def extract(answer: Any) -> str | None:
        if not isinstance(answer, dict):
            raise ValueError(f"bitrix24: the answer is {type(answer).__name__}, not an object")
        if "error" in answer:
            raise ValueError(f"bitrix24: the answer is the error {str(answer['error'])[:64]!r}")
        entities = answer.get("result")
        if not isinstance(entities, list):
            raise ValueError("bitrix24: the answer has no `result` list")
        # in the order Bitrix24 ranks them (it advises the first); a responsible user without an internal
        # number cannot be called, so the next entity's is taken
        for entity in entities:
            assigned = entity.get("ASSIGNED_BY") if isinstance(entity, dict) else None
            if isinstance(assigned, dict) and (inner := _text(assigned.get("USER_PHONE_INNER"))) is not None:
                return inner
        return None

    return extract


def _amocrm_extract(number: str) -> Extract:
    wanted = canonical(number)

    def extract(answer: Any) -> str | None:
        if answer is None or answer in ("", b""):
            return None  # 204 No Content: no contact matched
        if not isinstance(answer, dict):
            raise ValueError(f"amocrm: the answer is {type(answer).__name__}, not an object")
        embedded = answer.get("_embedded")
        contacts = embedded.get("contacts") if isinstance(embedded, dict) else None
        if not isinstance(contacts, list):
            raise ValueError("amocrm: the answer has no `_embedded.contacts` list")
        # the search is full-text: a contact is taken only when one of its phones is the number itself
        for contact in contacts:
            if isinstance(contact, dict) and wanted in _amocrm_phones(contact):
                return _text(contact.get("responsible_user_id"))
        return None

    return extract


def _amocrm_phones(contact: Mapping[str, Any]) -> set[str]:
    """The canonical forms of a contact's phone field values."""
    phones: set[str] = set()
    for custom in contact.get("custom_fields_values") or ():
        if isinstance(custom, dict) and custom.get("field_code") == "PHONE":
            for value in custom.get("values") or ():
                if isinstance(value, dict) and isinstance(value.get("value"), str | int):
                    phones.add(canonical(str(value["value"])))
    return phones


def _retailcrm_extract(number: str) -> Extract:
    def extract(answer: Any) -> str | None:
        if not isinstance(answer, dict):
            raise ValueError(f"retailcrm: the answer is {type(answer).__name__}, not an object")
        if answer.get("success") is not True:
            raise ValueError(f"retailcrm: the answer is an error {str(answer.get('errorMsg'))[:64]!r}")
        manager = answer.get("manager")
        if manager is None:
            return None
        if not isinstance(manager, dict):
            raise ValueError(f"retailcrm: `manager` is {type(manager).__name__}, not an object")
        return _text(manager.get("code"))

    return extract


@dataclass(frozen=True, slots=True)
class Preset:
    """A CRM asked who is responsible for a phone number: its settings, its default rate and its one request."""

    kind: str
    settings: tuple[str, ...]  # the keys its rule-file entry takes, all required
    rate: float  # default requests per second
    burst: int  # default requests sent at once before the rate applies
    doc: str  # where the request and the answer are documented
    _check: Callable[[Mapping[str, Any]], str | None] = field(repr=False)
    _request: Callable[[Mapping[str, str], str], LookupRequest] = field(repr=False)
    _extract: Callable[[str], Extract] = field(repr=False)

    def check(self, config: Mapping[str, Any]) -> str | None:
        """A problem with a rule file's settings for this CRM (naming the key, never a secret's value), None if fine."""
        given: object = config  # a rule file may hold anything there
        if not isinstance(given, Mapping):
            return f"{self.kind}: the settings must be a mapping, not {type(given).__name__}"
        for key in self.settings:
            if key not in config:
                return f"{self.kind}: `{key}` is required"
        return self._check(config)

    def request(self, config: Mapping[str, str], number: str) -> LookupRequest:
        """The request asking who is responsible for number (config: settings check() found fine)."""
        problem = self.check(config)
        if problem is not None:
            raise ValueError(problem)
        return self._request(config, number)

    def extract(self, number: str) -> Extract:
        """Reads the answer to request(config, number): the responsible user's internal number or id, None: nobody."""
        return self._extract(number)


PRESETS: Final[Mapping[str, Preset]] = {
    preset.kind: preset
    for preset in (
        # a leaky bucket of 50 requests refilled at 2 a second per portal; over it, 503 QUERY_LIMIT_EXCEEDED
        Preset(
            "bitrix24",
            ("webhook",),
            2.0,
            50,
            "https://apidocs.bitrix24.ru/api-reference/telephony/telephony-external-call-search-crm-entities.html",
            _bitrix_check,
            _bitrix_request,
            _bitrix_extract,
        ),
        # at most 7 requests a second per account (429 over it, and repeated excess blocks the address):
        # a bucket of 1, so that any second sees 8 at most and a whole one 7
        Preset(
            "amocrm",
            ("url", "token"),
            7.0,
            1,
            "https://www.amocrm.ru/developers/content/crm_platform/contacts-api",
            _base_check("amocrm", "token"),
            _amocrm_request,
            _amocrm_extract,
        ),
        # telephony methods: at most 40 requests a second from one address (503 over it)
        Preset(
            "retailcrm",
            ("url", "api_key"),
            40.0,
            1,
            "https://docs.retailcrm.ru/Developers/API/APIVersions/APIv5#get--api-v5-telephony-manager",
            _base_check("retailcrm", "api_key"),
            _retailcrm_request,
            _retailcrm_extract,
        ),
    )
}
"""The presets by kind."""
