"""Defaults the domain and every command share, importable without loading anything else."""

from __future__ import annotations

from typing import Final

# The zone of EventTime values without an offset, and of rule files that name none, unless configured.
DEFAULT_TIMEZONE: Final = "Europe/Moscow"
