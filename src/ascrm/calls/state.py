"""The CallState record and how one platform event updates it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ascrm.protocol import RESULT_CONNECTED, CallEvent, EventType, ServiceType

_TRANSFER_RESULTS = (EventType.Transfer, EventType.ShortTransfer)
MAX_EVENTS = 256  # a real call has a few dozen events; past this only the newest are kept
MAX_DIGITS = 128  # accumulated DTMF keeps its newest digits


@dataclass(slots=True)
class CallState:
    """What is known of one call from the events seen so far."""

    call_id: int
    started_at: datetime
    updated_at: datetime
    an: str | None = None
    un: str | None = None
    service_type: ServiceType | int | None = None
    events: list[tuple[EventType | int, datetime]] = field(default_factory=list)
    digits: str = ""
    transfer_results: list[str] = field(default_factory=list)
    connected_at: datetime | None = None
    ended_at: datetime | None = None
    fired_polls: set[str] = field(default_factory=set)  # poll rules that already answered this call

    @classmethod
    def begin(cls, call_id: int, event: CallEvent, now: datetime) -> CallState:
        """A fresh state for a call first seen with event at server time now."""
        return cls(
            call_id=call_id,
            started_at=event.event_time or now,
            updated_at=now,
            an=event.an,
            un=event.un,
            service_type=event.service_type,
        )

    def apply(self, event: CallEvent, now: datetime) -> None:
        """Record event (received at server time now) in this call's history."""
        moment = event.event_time or now
        self.updated_at = now
        if self.an is None or self.un is None or self.service_type is None:  # a call first seen mid-way
            self.an = self.an or event.an
            self.un = self.un or event.un
            self.service_type = self.service_type if self.service_type is not None else event.service_type
        if event.event_type is None:
            return
        self.events.append((event.event_type, moment))
        if len(self.events) > MAX_EVENTS:
            del self.events[: len(self.events) - MAX_EVENTS]
        if event.event_type == EventType.DTMF and event.dtmf:
            self.digits = (self.digits + event.dtmf)[-MAX_DIGITS:]
        elif event.event_type in _TRANSFER_RESULTS and event.result:
            self.transfer_results.append(event.result)
            if len(self.transfer_results) > MAX_EVENTS:
                del self.transfer_results[0]
            if event.result == RESULT_CONNECTED and self.connected_at is None:
                self.connected_at = moment
        elif event.event_type == EventType.EndCall:
            self.ended_at = moment

    def polled(self, now: datetime) -> None:
        """A GET poll arrived: the caller talks to an operator since now, unless a transfer said so."""
        self.updated_at = now
        if self.connected_at is None:
            self.connected_at = now

    @property
    def ended(self) -> bool:
        """Whether EndCall has been seen."""
        return self.ended_at is not None
