"""What a look-up asks a CRM, and how the value is found in its answer."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

Extract = Callable[[Any], "str | None"]
"""The value in a parsed JSON answer (None: the answer holds none, a miss)."""


class LookupRequest(NamedTuple):
    """One HTTP request of a look-up, rendered for a call: what is sent, and what the cache keys on.

    A named tuple rather than a frozen dataclass: one is made, hashed and compared per look-up, on the
    answer's path, and a tuple's hash and equality are the interpreter's own (a dataclass's are Python)."""

    method: str  # GET or POST
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None  # POST: JSON

    def __repr__(self) -> str:
        """The method, scheme, host and header names alone: a URL's path and query and the headers' values may
        be secrets (a Bitrix24 webhook, a token, a key)."""
        parts = urlsplit(self.url)
        names = ", ".join(name for name, _ in self.headers)
        return f"LookupRequest({self.method} {parts.scheme}://{parts.netloc}/…, headers: {names or 'none'})"

    def key(self) -> str:
        """A digest of everything sent: the shared store's key (secrets never appear in it)."""
        digest = hashlib.sha256()
        for part in (self.method, self.url, *(f"{name}\0{value}" for name, value in self.headers)):
            digest.update(part.encode())
            digest.update(b"\1")
        digest.update(self.body or b"")
        return digest.hexdigest()[:32]
