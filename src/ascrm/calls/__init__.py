"""Call state: what happened in each live call, and where it is kept."""

from ascrm.calls.memory import MemoryCallStore
from ascrm.calls.state import CallState

__all__ = ["CallState", "MemoryCallStore"]
