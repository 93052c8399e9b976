"""Compiling one target of `targets:`: where notifications go (an `http` webhook, or a CRM preset).

```yaml
targets:
  crm:
    kind: http                                   # the default
    url: "https://crm.example.com/hooks/ascrm"
    method: POST                                 # or PUT
    headers: {Authorization: "Bearer ${CRM_TOKEN}"}
    secret: "${ASCRM_NOTIFY_SECRET}"             # signs each body: X-Ascrm-Signature (HMAC-SHA256)
    signature_header: X-Ascrm-Signature
  sales:
    kind: bitrix24                               # or amocrm, retailcrm: the CRM's own requests
    webhook: "https://example.bitrix24.ru/rest/1/${B24_SECRET}/"
```
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final

from ascrm.core.notify.crm_targets import CRM_KINDS, compile_crm_target
from ascrm.core.notify.target import Target, TargetError
from ascrm.core.notify.webhook import WebhookTarget
from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.sources import SourceError, check_url, expand

KINDS: Final = ("http", *CRM_KINDS)
MAX_TARGETS: Final = 50
_HTTP_KEYS: Final = frozenset({"kind", "url", "method", "headers", "secret", "signature_header", "description"})
_TOKEN: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")  # an HTTP header name
_MAX_HEADERS: Final = 50
_MAX_TEXT: Final = 4096


def compile_target(name: str, spec: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Target:
    """A target's mapping, compiled; TargetError names the key at fault (never a secret's value)."""
    env = os.environ if env is None else env
    kind = spec.get("kind", "http")
    if kind not in KINDS:
        raise TargetError(("kind",), f"unknown kind {excerpt(kind)} (known: {', '.join(KINDS)})")
    if kind != "http":
        return compile_crm_target(name, kind, spec, env)
    unknown = sorted(str(key) for key in spec if key not in _HTTP_KEYS)
    if unknown:
        raise TargetError(
            (unknown[0],), f"unknown key {excerpt(unknown[0])} (an http target takes: {', '.join(sorted(_HTTP_KEYS))})"
        )
    if "url" not in spec:
        raise TargetError((), "an http target needs url: where the notifications are sent")
    url = _text(spec, "url", env)
    try:
        check_url(url, ("url",))
    except SourceError as exc:
        raise TargetError(exc.path, exc.message) from None
    method = spec.get("method", "POST")
    if method not in ("POST", "PUT"):
        raise TargetError(("method",), f"method {excerpt(method)}: POST or PUT")
    headers = spec.get("headers") or {}
    if not isinstance(headers, Mapping) or len(headers) > _MAX_HEADERS:
        raise TargetError(("headers",), f"headers: a mapping of at most {_MAX_HEADERS} names to values")
    pairs = tuple((_header_name(key), _header_value(key, value, env)) for key, value in headers.items())
    secret = _text(spec, "secret", env) if "secret" in spec else None
    if secret is not None and len(secret) < 16:
        raise TargetError(("secret",), "secret: at least 16 characters (a signature with a short key is guessable)")
    signature_header = _header_name(spec.get("signature_header", "X-Ascrm-Signature"), ("signature_header",))
    return WebhookTarget(name, url, method, pairs, secret, signature_header)


def _text(spec: Mapping[str, Any], key: str, env: Mapping[str, str]) -> str:
    value = spec[key]
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise TargetError((key,), f"{key}: a text of 1 to {_MAX_TEXT} characters")
    try:
        return expand(value, (key,), env)
    except SourceError as exc:
        raise TargetError(exc.path, exc.message) from None


def _header_name(key: Any, where: tuple[Any, ...] | None = None) -> str:
    if not isinstance(key, str) or not _TOKEN.fullmatch(key):
        raise TargetError(where or ("headers",), f"{excerpt(key)} is not a header name")
    return key


def _header_value(key: str, value: Any, env: Mapping[str, str]) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool) or len(str(value)) > _MAX_TEXT:
        raise TargetError(("headers", key), f"header {excerpt(key)}: a text of at most {_MAX_TEXT} characters")
    try:
        text = expand(str(value), ("headers", key), env)
    except SourceError as exc:
        raise TargetError(exc.path, exc.message) from None
    if any(char in text for char in "\r\n\0"):
        raise TargetError(("headers", key), f"header {excerpt(key)}: a value cannot hold a line break")
    return text
