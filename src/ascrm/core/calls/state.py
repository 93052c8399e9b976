"""The CallState record, how one platform event updates it, and the JSON of its parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple

from ascrm.core import protocol
from ascrm.core.protocol import RESULT_CONNECTED, Action, CallEvent, EventType, ServiceType, code_name

_TRANSFER_RESULTS = (EventType.Transfer, EventType.ShortTransfer)
MAX_EVENTS = 256  # a real call has a few dozen events; past this only the newest are kept
MAX_DIGITS = 128  # accumulated DTMF keeps its newest digits
MAX_DECISIONS = 64
MAX_FIELD_CHARS = 1024  # a field value is kept to this many characters (a number has 15; Generic a few dozen)
DEFAULT_HISTORY_BYTES = 64 * 1024  # state.max_call_bytes: a call's event history, past which it is trimmed
_BLOCK = 64  # history is counted in blocks: a record costs one, its text one per 64 bytes or part of them
_NAMES = {name.lower(): name for name in protocol.CRMDDATA_STRING_FIELDS}  # CallEvent attribute -> CRMDData field
_CARRIED = tuple(_NAMES)
_FACTS = frozenset({"an", "un"})  # kept in the call itself: in an event's news only when they differ

# One event of the call: its code, when, and the fields it carried that say something new, as
# (name, value, name, value, …): a flat tuple costs a third of a dict, and there are 100,000 calls.
News = tuple[str, ...]
EventRecord = tuple[EventType | int, datetime, News | None]


def text_bytes(text: str) -> int:
    """What text costs, at most: a byte a character for ASCII, else four (its widest form in memory)."""
    return len(text) if text.isascii() else 4 * len(text)


def _blocks(size: int) -> int:
    """The blocks a record of size bytes of text costs (the record itself included)."""
    return 1 + (size + _BLOCK - 1) // _BLOCK


def news_blocks(news: News | None) -> int:
    """What an event record with these fields costs, in blocks."""
    return 1 if news is None else _blocks(sum(text_bytes(part) for part in news[1::2]))


def clip(text: str | None) -> str | None:
    """text cut to MAX_FIELD_CHARS characters."""
    return text if text is None or len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS]


@dataclass(frozen=True, slots=True)
class Trim:
    """What the per-call budgets cut from a call: in all, and (truncated, dropped) storing its latest event."""

    total: int = 0
    truncated: int = 0  # field values cut to MAX_FIELD_CHARS
    dropped: int = 0  # history records emptied or dropped past the byte budget

    def __bool__(self) -> bool:
        """Whether storing the latest event cut anything."""
        return bool(self.truncated or self.dropped)


NO_TRIM: Final = Trim()


@dataclass(frozen=True, slots=True)
class Command:
    """An instruction pushed into a live call, answered at its next poll."""

    id: int
    action: Action
    param: str
    pushed_at: datetime


class DecisionRecord(NamedTuple):
    """An answer that carried an action: to which event (or poll), from which rule or command.

    An immutable value; a NamedTuple because one is built per answered request and builds fastest.
    """

    at: datetime
    trigger: str  # the event's name, or "poll"
    action: Action
    param: str
    rule_id: str | None = None
    command_id: int | None = None
    revision: str | None = None


@dataclass(slots=True)
class CallState:
    """What is known of one call: its fixed facts, its events, and what ascrm answered."""

    call_id: int
    started_at: datetime
    updated_at: datetime
    an: str | None = None
    un: str | None = None
    service_type: ServiceType | int | None = None
    events: list[EventRecord] = field(default_factory=list)
    digits: str = ""
    transfer_results: list[str] = field(default_factory=list)
    connected_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None  # EndCall's Result: 1 caller, 2 called party, 3 caller while ringing, …
    fired_polls: frozenset[str] = frozenset()  # poll rules that already answered (shared while empty)
    decisions: list[DecisionRecord] = field(default_factory=list)
    commands: tuple[Command, ...] = ()  # pending, oldest first (shared while empty)
    next_command_id: int = 1
    trim: Trim | None = None  # None until the budgets first cut something (most calls: one shared None)
    history_blocks: int = 0  # what events and transfer results cost (news_blocks); not stored, recomputed

    @classmethod
    def begin(cls, call_id: int, event: CallEvent, now: datetime) -> CallState:
        """A fresh state for a call first seen with event at server time now."""
        return cls(
            call_id=call_id,
            started_at=event.event_time or now,
            updated_at=now,
            an=clip(event.an),
            un=clip(event.un),
            service_type=event.service_type,
        )

    def apply(self, event: CallEvent, now: datetime, max_bytes: int = DEFAULT_HISTORY_BYTES) -> None:
        """Record event (received at server time now) in this call's history.

        Field values are kept to MAX_FIELD_CHARS; past max_bytes of history the oldest records lose
        their fields, then go (see _trim). What was cut is in last_trim and counted in trimmed.
        """
        moment = event.event_time or now
        self.updated_at = now
        if self.trim:  # cut by the previous event: not by this one, yet
            self.trim = Trim(self.trim.total)
        if self.an is None or self.un is None or self.service_type is None:  # a call first seen mid-way
            self.an = self.an or clip(event.an)
            self.un = self.un or clip(event.un)
            self.service_type = self.service_type if self.service_type is not None else event.service_type
        if event.event_type is None:
            return
        news, truncated, size = self._news(event)
        self.events.append((event.event_type, moment, news))
        self.history_blocks += _blocks(size) if news else 1
        if len(self.events) > MAX_EVENTS:  # the oldest go, but the first event stays
            excess = len(self.events) - MAX_EVENTS
            for _, _, old in self.events[1 : 1 + excess]:
                self.history_blocks -= news_blocks(old)
            del self.events[1 : 1 + excess]
        if event.event_type == EventType.DTMF and event.dtmf:
            self.digits = (self.digits + event.dtmf)[-MAX_DIGITS:]
        elif event.event_type in _TRANSFER_RESULTS and event.result:
            result = clip(event.result) or ""
            self.transfer_results.append(result)
            self.history_blocks += _blocks(text_bytes(result))
            if len(self.transfer_results) > MAX_EVENTS:
                self.history_blocks -= _blocks(text_bytes(self.transfer_results.pop(0)))
            if event.result == RESULT_CONNECTED and self.connected_at is None:
                self.connected_at = moment
        elif event.event_type == EventType.EndCall:
            self.ended_at = moment
            self.ended_by = clip(event.result)
        budget = max_bytes // _BLOCK
        dropped = self._trim(budget) if self.history_blocks > budget else 0
        if truncated or dropped:
            self.trim = Trim(self.trimmed + truncated + dropped, truncated, dropped)

    @property
    def trimmed(self) -> int:
        """Field values truncated and history records emptied or dropped in this call, in all."""
        return 0 if self.trim is None else self.trim.total

    @property
    def last_trim(self) -> Trim:
        """What storing the latest event cut (false when nothing)."""
        return NO_TRIM if self.trim is None else self.trim

    @property
    def history_bytes(self) -> int:
        """What the call's event history costs, as counted against state.max_call_bytes."""
        return self.history_blocks * _BLOCK

    def _news(self, event: CallEvent) -> tuple[News | None, int, int]:
        """The fields of event worth keeping, each kept to MAX_FIELD_CHARS; how many were truncated; and
        the bytes of their text (text_bytes, computed on the way)."""
        news: list[str] = []
        truncated, cost = 0, 0
        for attribute in _CARRIED:
            value = getattr(event, attribute)
            if value is None:
                continue
            size = len(value)
            cut = size > MAX_FIELD_CHARS
            if cut:
                value, size = value[:MAX_FIELD_CHARS], MAX_FIELD_CHARS
            if not (attribute in _FACTS and value == getattr(self, attribute)):
                news += (_NAMES[attribute], value)
                cost += size if value.isascii() else 4 * size
                truncated += cut
        return (tuple(news) if news else None), truncated, cost

    def _trim(self, budget: int) -> int:
        """Bring the history within budget blocks, keeping what routing reads; how many records were cut.

        In order, until it fits: the fields of the oldest events (not the first event's, not the
        newest's: admin detail only); the oldest transfer results but the latest (rules read the
        latest); the oldest events whose type happens again later (rules ask only whether a type
        happened). The first event, the newest, and one event of each type always stay.
        """
        events, cut = self.events, 0
        for index in range(1, len(events) - 1):
            if self.history_blocks <= budget:
                return cut
            code, at, news = events[index]
            if news is not None:
                events[index] = (code, at, None)
                self.history_blocks -= news_blocks(news) - 1
                cut += 1
        while self.history_blocks > budget and len(self.transfer_results) > 1:
            self.history_blocks -= _blocks(text_bytes(self.transfer_results.pop(0)))
            cut += 1
        if self.history_blocks > budget:
            later: set[EventType | int] = {events[-1][0]}
            kept: list[EventRecord] = []
            for record in reversed(events[1:-1]):  # newest first: an older one of a type seen later may go
                if record[0] in later and self.history_blocks > budget:
                    self.history_blocks -= news_blocks(record[2])
                    cut += 1
                else:
                    kept.append(record)
                    later.add(record[0])
            if len(kept) < len(events) - 2:
                events[1:-1] = reversed(kept)
        return cut

    def copy(self) -> CallState:
        """A copy that changes apart from this state (its lists are its own; their items are immutable)."""
        return CallState(
            self.call_id,
            self.started_at,
            self.updated_at,
            self.an,
            self.un,
            self.service_type,
            self.events.copy(),
            self.digits,
            self.transfer_results.copy(),
            self.connected_at,
            self.ended_at,
            self.ended_by,
            self.fired_polls,
            self.decisions.copy(),
            self.commands,
            self.next_command_id,
            self.trim,
            self.history_blocks,
        )

    def polled(self, now: datetime) -> None:
        """A GET poll arrived: the caller talks to an operator since now, unless a transfer said so."""
        self.updated_at = now
        if self.connected_at is None:
            self.connected_at = now

    def decided(self, record: DecisionRecord) -> None:
        """Remember an answer that carried an action (and that a poll rule has answered)."""
        self.decisions.append(record)
        if len(self.decisions) > MAX_DECISIONS:
            del self.decisions[0]
        if record.trigger == "poll" and record.rule_id is not None:
            self.fired_polls = self.fired_polls | {record.rule_id}

    def push(self, action: Action, param: str, now: datetime) -> tuple[Command, int]:
        """Queue a command; it and its 1-based position in the queue."""
        command = Command(self.next_command_id, action, param, now)
        self.next_command_id += 1
        self.commands = (*self.commands, command)
        return command, len(self.commands)

    def take_command(self) -> Command | None:
        """The oldest pending command, taken off the queue (None when there is none)."""
        if not self.commands:
            return None
        command, self.commands = self.commands[0], self.commands[1:]
        return command

    def cancel_command(self, command_id: int) -> bool:
        """Drop a pending command; whether it was pending."""
        kept = tuple(command for command in self.commands if command.id != command_id)
        dropped = len(kept) != len(self.commands)
        self.commands = kept
        return dropped

    @property
    def ended(self) -> bool:
        """Whether EndCall has been seen."""
        return self.ended_at is not None

    @property
    def status(self) -> str:
        """`live`, `connected` (talking to an operator) or `ended`."""
        return "ended" if self.ended else "connected" if self.connected_at else "live"

    def summary(self, now: datetime) -> dict[str, Any]:
        """The end-of-call record: duration, talk time, who ended it, transfers, decisions."""
        end = self.ended_at or now
        return {
            "call_id": self.call_id,
            "an": self.an,
            "un": self.un,
            "service": code_name(self.service_type),
            "started_at": self.started_at.isoformat(),
            "ended_at": end.isoformat(),
            "duration_seconds": round((end - self.started_at).total_seconds(), 3),
            "talk_seconds": round((end - self.connected_at).total_seconds(), 3) if self.connected_at else 0.0,
            "ended_by": self.ended_by,
            "transfers": [
                {"event": code_name(code), "at": at.isoformat(), **news_dict(news)}
                for code, at, news in self.events
                if code in (EventType.GoToTransfer, EventType.Transfer, EventType.GoToShortTransfer)
                or code in (EventType.ShortTransfer, EventType.OperatorTransfer)
            ],
            "decisions": [decision_json(record) for record in self.decisions],
        }


def news_dict(news: News | None) -> dict[str, str]:
    """An event's news as a mapping of field names to values."""
    return dict(zip(news[::2], news[1::2], strict=True)) if news else {}


def decision_json(record: DecisionRecord) -> dict[str, Any]:
    """One decision as JSON-ready values."""
    return {
        "at": record.at.isoformat(),
        "trigger": record.trigger,
        "action": record.action.name,
        "param": record.param,
        "rule": record.rule_id,
        "command": record.command_id,
        "revision": record.revision,
    }


def command_json(command: Command) -> dict[str, Any]:
    """One pending command as JSON-ready values."""
    return {
        "id": command.id,
        "action": command.action.name,
        "param": command.param,
        "pushed_at": command.pushed_at.isoformat(),
    }
