"""The stored form of a call in Redis (layout version 2): one hash per call, changed by scripts in Redis.

A call is the hash at `{prefix}call:{<CallID>}` (the braces are a hash tag: everything of one call is
one key, in one slot). Redis appends to it and Python folds it back into a CallState, so each
request is one script call that reads and writes the call atomically, and no field is rewritten whole:

    v       "2", the layout version (anything else is refused as unreadable)
    n       the number of the last entry appended
    1, 2 …  the entries since the snapshot, in the order Redis received them, each a JSON array:
              ["E", server time, event time | null, event type | null, service type | null,
               AN, UN, DN1, DN2, EXT1, EXT2, DTMF, Generic, Result,   (strings or null, clipped)
               how many of them were clipped]
              ["P", server time]                       the call's first poll
              ["C", server time, revision | null, [command id, action, param, pushed at]]
                                                       a pushed command a poll took
              ["D", at, trigger, action, param, rule | null, command | null, revision | null]
                                                       an answer that carried an action
    s, k    a snapshot: the call as of entry k, a version-1 record of codec.py (absent until the
            first one); the entries up to k are dropped when it is written
    u       the time of the last event or poll (the call's updated_at)
    an, un  the first AN and UN seen; cx "1" once a transfer connected; p "1" once polled;
            x "1" once EndCall arrived: what the listing's filters and the expiry read without a fold
    cn, ch  the next command id; the oldest command id that may still be pending
    c:<id>  a pending command: [id, action, param, pushed at]
    f:<rule> "1" for a poll rule that has answered: claimed atomically, so it answers once
    i       the incarnation: a token written when the hash is made (redis_cache.py tells a call that
            expired and came back under its CallID from the one it folded)

fold() rebuilds the state: the snapshot (or a new state at the first event), then every entry in
order, through the same CallState methods the memory store calls, so both stores keep one history.
Python writes a new snapshot every SNAPSHOT_EVERY entries (off the answer's path), which keeps the
fold short; Redis drops the oldest entries past MAX_ENTRIES if no snapshot came.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, NamedTuple

import orjson

from ascrm.core.calls import codec
from ascrm.core.calls.state import MAX_FIELD_CHARS, CallState, Command, DecisionRecord, Trim, clip
from ascrm.core.calls.store import UnreadableRecordError
from ascrm.core.protocol import (
    RESULT_CONNECTED,
    Action,
    CallEvent,
    Decision,
    EventType,
    ServiceType,
    not_allowed,
    poll_action_error,
)

LAYOUT: Final = 2  # the layout version of the hash, in its `v` (redis_scripts.py writes and checks it)
_LAYOUT_FIELD: Final = str(LAYOUT).encode()
SNAPSHOT_EVERY: Final = 16  # entries past the snapshot before a new one is written
_QUIET_MOST: Final = 12  # items of a reply of only the small fields: +, v, n, k, cn and u, with their values
MAX_ENTRIES: Final = 1024  # entries past the snapshot Redis keeps at most (the oldest go)

_EVENT_TYPES: Final[dict[int, EventType]] = {member.value: member for member in EventType}
_SERVICES: Final[dict[int, ServiceType]] = {member.value: member for member in ServiceType}
_ACTIONS: Final[dict[str, Action]] = dict(Action.__members__)
_TRANSFER_RESULTS: Final = (EventType.Transfer, EventType.ShortTransfer)
_REASON: Final = 200


class Folded(NamedTuple):
    """A call rebuilt from its hash: the state, the last entry's number, the snapshot's, the poll
    decision of the entry `taken` (a command a poll took) when asked for, and the hash's incarnation
    (its `i`: b"" when it has none)."""

    call: CallState
    last: int
    snapshot: int
    taken: Decision | None
    incarnation: bytes


class Own(NamedTuple):
    """What an event entry holds, as update() stored it: the fold of the reply that ends with it takes
    it from here instead of reading it back."""

    now: datetime  # the server time it was received at
    event: CallEvent  # its fields clipped as stored
    clipped: int  # how many fields were clipped


def event_entry(event: CallEvent, now: datetime) -> tuple[bytes, Own]:
    """The entry of a platform event received at server time now (its fields clipped as a state keeps
    them), and what it holds."""
    clipped = sum(1 for text in event[4:] if text is not None and len(text) > MAX_FIELD_CHARS)
    if clipped:
        event = CallEvent(*event[:4], *map(clip, event[4:]))
    entry = orjson.dumps(
        [
            "E",
            now.isoformat(),
            None if event.event_time is None else event.event_time.isoformat(),
            event.event_type,
            event.service_type,
            *event[4:],  # AN, UN, DN1, DN2, EXT1, EXT2, DTMF, Generic, Result
            clipped,
        ]
    )
    return entry, Own(now, event, clipped)


def connects(event: CallEvent) -> bool:
    """Whether event tells that a transfer connected (the call is then `connected`)."""
    return event.event_type in _TRANSFER_RESULTS and event.result == RESULT_CONNECTED


def decision_entry(record: DecisionRecord) -> bytes:
    """The entry of an answer that carried an action."""
    return orjson.dumps(
        [
            "D",
            record.at.isoformat(),
            record.trigger,
            record.action.name,
            record.param,
            record.rule_id,
            record.command_id,
            record.revision,
        ]
    )


def command_value(action: Action, param: str, now: datetime) -> bytes:
    """A pending command's value after its id (the script that pushes it writes `[id,` before it)."""
    return orjson.dumps([action.name, param, now.isoformat()])[1:]


def snapshot(call: CallState) -> bytes:
    """The snapshot of a folded call (its commands live in their own fields, not in it)."""
    commands, call.commands = call.commands, ()
    try:
        return codec.encode(call)
    finally:
        call.commands = commands


def fold(
    call_id: int,
    flat: list[bytes],
    key: str,
    *,
    max_call_bytes: int,
    limit: int,
    taken: int = 0,
    own: Own | None = None,
    start: CallState | None = None,
) -> Folded:
    """The call a hash holds (flat: HGETALL's field, value, field, value …); UnreadableRecordError
    (naming key) when it cannot be read. taken: the entry whose poll decision to return. own: what the
    hash's last entry holds (update() has just appended it), taken as it is rather than read back.
    start: the call as folded up to the entry a script was told of (redis_cache.py), changed in place
    when flat is a script's reply of only what came since (its first field `+`, the incarnation)."""
    try:
        return _fold(call_id, flat, key, max_call_bytes=max_call_bytes, limit=limit, taken=taken, own=own, start=start)
    except UnreadableRecordError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise UnreadableRecordError(key, f"{type(exc).__name__}: {exc}"[:_REASON]) from None


class Quiet(NamedTuple):
    """What a script's reply of what came since a fold says when nothing came: the small fields alone."""

    snapshot: int
    updated_at: datetime | None
    next_command_id: int


def quiet(flat: list[bytes], last: int) -> Quiet | None:
    """The small fields of a script's reply of what came since entry last when it holds no entry and no
    pending command (a poll of a call that is only talking: the fold held stands, nothing is read into
    it); None for any other reply, which fold() reads (and refuses, when it cannot)."""
    if len(flat) > _QUIET_MOST or flat[:1] != [b"+"]:
        return None
    try:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        if fields.get(b"v") != _LAYOUT_FIELD or int(fields[b"n"]) != last or len(fields) != 5 + (b"u" in fields):
            return None
        updated = fields.get(b"u")
        return Quiet(int(fields[b"k"]), None if updated is None else _time(updated.decode()), int(fields[b"cn"]))
    except (KeyError, TypeError, ValueError):
        return None


def _fold(
    call_id: int,
    flat: list[bytes],
    key: str,
    *,
    max_call_bytes: int,
    limit: int,
    taken: int,
    own: Own | None,
    start: CallState | None,
) -> Folded:
    fields: dict[bytes, bytes] = dict(zip(flat[::2], flat[1::2], strict=True))
    version = fields.get(b"v")
    if version != _LAYOUT_FIELD:
        shown = "none" if version is None else repr(version[:20].decode(errors="replace"))
        raise UnreadableRecordError(key, f"layout version {shown} is not one this release reads ({LAYOUT})")
    entries: list[tuple[int, bytes]] = []
    commands: list[Command] = []
    for name, value in fields.items():
        if name[:1].isdigit():
            entries.append((int(name), value))
        elif name[:2] == b"c:":
            commands.append(_command(orjson.loads(value)))
    entries.sort()
    call, incarnation = _beginning(call_id, fields, key, limit, start)
    decision: Decision | None = None
    last = int(fields.get(b"n", b"0"))
    for number, value in entries:
        if own is not None and number == last and value[:5] == b'["E",':  # update()'s own: not read back
            call = _applied(call, call_id, own, max_call_bytes)
            continue
        entry = orjson.loads(value)
        kind = entry[0]
        if kind == "E":
            call = _applied(call, call_id, Own(*_event(call_id, entry)), max_call_bytes)
        elif call is None:
            raise UnreadableRecordError(key, f"entry {number} ({kind!r}) comes before any event")
        elif kind == "P":
            call.polled(_time(entry[1]))
        elif kind == "C":
            delivered = _delivered(call, entry)
            if number == taken:
                decision = delivered
        elif kind == "D":
            command = entry[6]
            action = _ACTIONS[entry[3]]
            record = DecisionRecord(_time(entry[1]), entry[2], action, entry[4], entry[5], command, entry[7])
            call.decided(record)
        else:
            raise UnreadableRecordError(key, f"entry {number} is of no kind this release reads: {kind!r}"[:_REASON])
    if call is None:
        raise UnreadableRecordError(key, "no snapshot and no event")
    updated = fields.get(b"u")
    if updated is not None:
        call.updated_at = _time(updated.decode())
    commands.sort(key=lambda command: command.id)
    call.commands = tuple(commands)
    call.next_command_id = int(fields.get(b"cn", b"1"))
    return Folded(call, last, int(fields.get(b"k", b"0")), decision, incarnation)


def _beginning(
    call_id: int, fields: dict[bytes, bytes], key: str, limit: int, start: CallState | None
) -> tuple[CallState | None, bytes]:
    """What a fold starts from (start, the snapshot, or nothing before the first event) and the
    incarnation of the hash."""
    incarnation = fields.get(b"+")
    if incarnation is not None:  # a reply of only what came since the fold of start
        if start is None:
            raise UnreadableRecordError(key, "a reply of what came since a fold that was not given")
        return start, incarnation
    raw = fields.get(b"s")
    call = None if raw is None else codec.decode(raw, key=key, limit=limit)
    if call is not None and call.call_id != call_id:
        raise UnreadableRecordError(key, f"its snapshot holds call {call.call_id}")
    return call, fields.get(b"i", b"")


FACTS: Final = ("an", "un", "x", "cx", "p")  # the fields facts() reads, in its order


def facts(flat: list[bytes | None]) -> tuple[str | None, str | None, str]:
    """A call's AN, UN and status from HMGET of FACTS (the listing's filters, without a fold)."""
    an, un, ended, connected, polled = flat
    status = "ended" if ended else "connected" if connected or polled else "live"
    return (None if an is None else an.decode()), (None if un is None else un.decode()), status


def _applied(call: CallState | None, call_id: int, own: Own, max_call_bytes: int) -> CallState:
    """call (a new one at the first event) with the event of an entry applied."""
    if call is None:
        call = CallState.begin(call_id, own.event, own.now)
    call.apply(own.event, own.now, max_call_bytes)
    if own.clipped:  # cut before it was stored: counted as apply() counts what it cuts
        trim = call.last_trim
        call.trim = Trim(call.trimmed + own.clipped, trim.truncated + own.clipped, trim.dropped)
    return call


def _event(call_id: int, entry: list[Any]) -> tuple[datetime, CallEvent, int]:
    _, now, at, code, service, *texts, clipped = entry
    event = CallEvent(
        call_id,
        None if at is None else _time(at),
        None if code is None else _EVENT_TYPES.get(code, code),
        None if service is None else _SERVICES.get(service, service),
        *texts,
    )
    if not all(text is None or isinstance(text, str) for text in texts):
        raise ValueError("an event entry of the wrong shape")
    return _time(now), event, int(clipped)


def _delivered(call: CallState, entry: list[Any]) -> Decision:
    """A command a poll took, recorded as settle_poll records it; the poll's decision."""
    now, revision = _time(entry[1]), entry[2]
    command = _command(entry[3])
    decision = Decision(command.action, command.param, command_id=command.id)
    problem = poll_action_error(command.action, call.service_type)
    if problem is not None:  # pushed before the call was known to be outgoing: taken, not sent
        return not_allowed(decision, problem)
    call.decided(DecisionRecord(now, "poll", command.action, command.param, None, command.id, revision))
    return decision


def _command(item: list[Any]) -> Command:
    identity, action, param, pushed = item
    if type(identity) is not int or not isinstance(param, str):
        raise ValueError(f"a command of the wrong shape: {item!r}"[:_REASON])
    return Command(identity, _ACTIONS[action], param, _time(pushed))


def _time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"a time without its UTC offset: {value!r}"[:_REASON])
    return moment
