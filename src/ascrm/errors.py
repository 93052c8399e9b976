"""The exceptions ascrm raises: one base, a few subclasses that say where and what."""

from __future__ import annotations

from typing import Any


class AscrmError(Exception):
    """Base of every error ascrm raises on purpose."""


class ConfigError(AscrmError):
    """A configuration key has a bad value (or is unknown); names the key and the value."""

    def __init__(self, key: str, message: str, value: Any = None, *, source: str | None = None) -> None:
        self.key = key
        self.value = value
        self.source = source
        self.message = message
        where = f"{source}: " if source else ""
        shown = "" if value is None else f" (got {value!r})"
        super().__init__(f"{where}{key}: {message}{shown}")


class ListenError(AscrmError):
    """The address to listen on cannot be bound (in use, not permitted, unknown)."""
