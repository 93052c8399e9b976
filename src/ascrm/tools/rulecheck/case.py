"""A rule test's call: when it starts, the fields its events carry, the lists and maps it replaces, its steps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from ascrm.core.rules.compile import Overrides
from ascrm.core.rules.load import Location
from ascrm.tools.timeline import Step, Value

CALL_ID: Final = 1  # every replayed call is alone in its own store


@dataclass(frozen=True, slots=True)
class Case:
    """One call: its name, start, the fields every event carries, list and map replacements, its steps, and
    the values its look-ups give (a rule test never calls a CRM)."""

    name: str
    at: datetime
    steps: tuple[Step, ...]
    fields: Mapping[str, Value] = field(default_factory=lambda: {"ServiceType": 1})
    lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    location: Location | None = None
    sources: Mapping[str, str | None] = field(default_factory=dict)  # look-ups' values (None: failed)
    resting: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # pool -> members resting all along

    def overrides(self) -> Overrides | None:
        """The lists and maps this call replaces in the rules, or None."""
        return Overrides(self.lists, self.maps) if self.lists or self.maps else None

    def request(self, step: Step, at: datetime) -> dict[str, Any]:
        """The CRMDData the platform would POST for step at the instant at."""
        code = int(step.event) if isinstance(step.event, int) else step.event
        data: dict[str, Any] = {"CallID": CALL_ID, "EventTime": at.isoformat(), "EventType": code}
        data.update(self.fields)
        data.update(step.fields)
        return data
