"""The storage codec of call state: the record a store keeps per call (the Redis store), versioned.

A record is one JSON object. Its `"v"` is the version of its layout; a record without `"v"` is
version 0, the layout written before records carried a version. The layout belongs to this module
alone: the admin API's view of a call (service/callview.py) changes freely, and a change here is a
new version whose reader joins the readers of the versions before it.

Version 1, written now:

    {"v": 1, "call_id": 7001, "an": "79161234567" | null, "un": … | null, "service_type": 1 | null,
     "state": "live" | "connected" | "ended",
     "started_at": "2026-11-27T10:00:00+03:00", "updated_at": …, "connected_at": … | null,
     "ended_at": … | null, "ended_by": "1" | null, "digits": "12", "transfer_results": ["1280"],
     "events": [{"code": 4, "at": …, "fields": {"DTMF": "1"}}, …],
     "fired_polls": ["escalate"],
     "decisions": [{"at": …, "trigger": "poll", "action": "TransferPBX", "param": "PBX4951001",
                    "rule": "escalate" | null, "command": 1 | null, "revision": … | null}, …],
     "commands": [{"id": 2, "action": "Hangup", "param": "", "pushed_at": …}, …],
     "next_command_id": 3, "trimmed": 0}

Times are ISO 8601 with their UTC offset (exactly as `datetime.isoformat()` writes them); `state` is
derived (the listing's filters read it without decoding the call). Version 0 is the same layout
without `"v"`, with each event's name beside its code, and `trimmed` possibly absent (then 0). The
reader of version 0 (the releases before this codec) ignores keys it does not know and never reads an
event's name: it reads version 1 records too, so replicas of both releases share one Redis during a
rolling upgrade or a rollback.

decode() reads versions 0 and 1 and refuses anything else with UnreadableRecordError, naming the
record's key and the reason: not JSON, not an object, a version it does not know (a newer release's),
over the size limit, a missing key, a value of the wrong type. It checks every value it keeps, so a
state it returns is as sound as one built by events.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from itertools import repeat
from typing import Any, Final, TypeVar

import orjson

from ascrm.core.calls.state import (
    CallState,
    Command,
    DecisionRecord,
    EventRecord,
    Trim,
    _blocks,
    text_bytes,
)
from ascrm.core.calls.store import UnreadableRecordError
from ascrm.core.protocol import Action, EventType, ServiceType

VERSION: Final = 1  # the version encode() writes
VERSIONS: Final = (0, 1)  # the versions decode() reads
# A record's size limit: a call's history text is bounded by state.max_call_bytes (counted at up to
# four bytes a character), which JSON may write in up to six bytes a character (escapes), plus the
# keys, up to 256 events, 64 decisions and the pending commands; see record_limit().
MAX_RECORD_BYTES: Final = 4 * 1024 * 1024
_SHOWN: Final = 40  # characters of a bad value shown in a reason
_REASON: Final = 200  # characters of a reason at most (orjson's messages included)

_EVENT_TYPES: Final[dict[int, EventType]] = {member.value: member for member in EventType}
_SERVICES: Final[dict[int, ServiceType]] = {member.value: member for member in ServiceType}
_ACTIONS: Final[dict[str, Action]] = dict(Action.__members__)
T = TypeVar("T")


class _BadValueError(Exception):
    """A value of a record that cannot be read (turned into UnreadableRecordError by decode)."""


def record_limit(max_call_bytes: int) -> int:
    """The size limit of a record for a store whose calls keep max_call_bytes of history."""
    return max(MAX_RECORD_BYTES, 8 * max_call_bytes)


def encode(call: CallState) -> bytes:
    """The call as a record of the current version."""
    return orjson.dumps(
        {
            "v": VERSION,
            "call_id": call.call_id,
            "an": call.an,
            "un": call.un,
            "service_type": call.service_type,
            "state": call.status,
            "started_at": call.started_at.isoformat(),
            "updated_at": call.updated_at.isoformat(),
            "connected_at": None if call.connected_at is None else call.connected_at.isoformat(),
            "ended_at": None if call.ended_at is None else call.ended_at.isoformat(),
            "ended_by": call.ended_by,
            "digits": call.digits,
            "transfer_results": call.transfer_results,
            "events": [
                {
                    "code": code,
                    "at": at.isoformat(),
                    "fields": dict(zip(news[::2], news[1::2], strict=True)) if news else {},
                }
                for code, at, news in call.events
            ],
            "fired_polls": sorted(call.fired_polls),
            "decisions": [
                {
                    "at": record.at.isoformat(),
                    "trigger": record.trigger,
                    "action": record.action.name,
                    "param": record.param,
                    "rule": record.rule_id,
                    "command": record.command_id,
                    "revision": record.revision,
                }
                for record in call.decisions
            ],
            "commands": [
                {
                    "id": command.id,
                    "action": command.action.name,
                    "param": command.param,
                    "pushed_at": command.pushed_at.isoformat(),
                }
                for command in call.commands
            ],
            "next_command_id": call.next_command_id,
            "trimmed": call.trimmed,
        }
    )


def decode(raw: bytes, *, key: str = "", limit: int = MAX_RECORD_BYTES) -> CallState:
    """The call a record holds; UnreadableRecordError (naming key) when it cannot be read."""
    if len(raw) > limit:
        raise UnreadableRecordError(key, f"{len(raw)} bytes, over the limit of {limit}")
    data = _object(raw, key)
    version = _version(data, key)
    try:
        return _read(data, version)
    except (_BadValueError, TypeError, ValueError) as exc:
        raise UnreadableRecordError(key, str(exc)[:_REASON]) from None


def facts(raw: bytes, *, key: str = "", limit: int = MAX_RECORD_BYTES) -> tuple[object, object, object]:
    """A record's an, un and state, read without decoding the call (the listing's filters); each as
    stored, None when absent. UnreadableRecordError for a record decode() would refuse outright (not
    JSON, not an object, an unknown version, too big)."""
    if len(raw) > limit:
        raise UnreadableRecordError(key, f"{len(raw)} bytes, over the limit of {limit}")
    data = _object(raw, key)
    _version(data, key)
    return data.get("an"), data.get("un"), data.get("state")


def _object(raw: bytes, key: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UnreadableRecordError(key, f"not JSON: {exc}"[:_REASON]) from None
    if type(data) is not dict:
        raise UnreadableRecordError(key, f"not a JSON object but {_shown(data)}")
    return data


def _version(data: dict[str, Any], key: str) -> int:
    version = data.get("v", 0)
    if type(version) is not int:
        raise UnreadableRecordError(key, f"v: not a version number but {_shown(version)}")
    if version not in VERSIONS:
        newer = " (written by a newer release?)" if version > VERSION else ""
        raise UnreadableRecordError(key, f"version {version} is not one this release reads (0 to {VERSION}){newer}")
    return version


def _read(data: dict[str, Any], version: int) -> CallState:
    """The call of a record of version 0 or 1 (one layout: see the module's docstring)."""
    try:
        call = CallState(
            call_id=_integer(data["call_id"], "call_id"),
            started_at=_time(data["started_at"], "started_at"),
            updated_at=_time(data["updated_at"], "updated_at"),
            an=_optional_text(data["an"], "an"),
            un=_optional_text(data["un"], "un"),
            service_type=_service(data["service_type"]),
            digits=_text(data["digits"], "digits"),
            transfer_results=_texts(data["transfer_results"], "transfer_results"),
            connected_at=_optional_time(data["connected_at"], "connected_at"),
            ended_at=_optional_time(data["ended_at"], "ended_at"),
            ended_by=_optional_text(data["ended_by"], "ended_by"),
            fired_polls=frozenset(_texts(data["fired_polls"], "fired_polls")),
            decisions=_section(data["decisions"], "decisions", _decision),
            commands=tuple(_section(data["commands"], "commands", _command)),
            next_command_id=_integer(data["next_command_id"], "next_command_id", 1),
            trim=_trim(data["trimmed"] if version or "trimmed" in data else 0),
        )
        call.events, blocks = _events(data["events"])
    except KeyError as exc:
        raise _BadValueError(f"no {exc.args[0]!r}") from None
    call.history_blocks = blocks + sum(_blocks(text_bytes(result)) for result in call.transfer_results)
    return call


def _section(value: object, name: str, reader: Callable[[Any], T]) -> list[T]:
    """Each item of a list read by reader; a failure names the item."""
    items = _list(value, name)
    try:
        return [reader(item) for item in items]
    except (_BadValueError, KeyError, TypeError, ValueError):  # TypeError: a list where an object belongs, say
        for index, item in enumerate(items):  # which one: read them again, one by one
            try:
                reader(item)
            except KeyError as exc:
                raise _BadValueError(f"{name}[{index}]: no {exc.args[0]!r}") from None
            except (_BadValueError, TypeError, ValueError) as exc:
                raise _BadValueError(f"{name}[{index}]: {exc}") from None
        raise


def _events(value: object) -> tuple[list[EventRecord], int]:
    """The events of a record, and what they cost in history blocks (as apply() counts them).

    The hot part of decode(): one loop whose checks also do the work (joining the values of an
    event's fields checks they are strings and measures them); _event_problem() explains a failure."""
    events: list[EventRecord] = []
    append, blocks = events.append, 0
    for index, item in enumerate(_list(value, "events")):
        try:
            code, at, fields = item["code"], item["at"], item["fields"]
            joined = "".join(fields.values()) if type(code) is int and isinstance(fields, dict) else None
        except (KeyError, TypeError):  # not an object, a key missing, a value not a string
            joined = None
        moment = None if joined is None else _moment(at)
        if moment is None:
            raise _BadValueError(f"events[{index}]: {_event_problem(item)}")
        if joined:
            blocks += _blocks(len(joined) if joined.isascii() else sum(map(text_bytes, fields.values())))
            append((_EVENT_TYPES.get(code, code), moment, sum(fields.items(), ())))
        else:
            blocks += 1
            append((_EVENT_TYPES.get(code, code), moment, None))
    return events, blocks


def _event_problem(item: object) -> str:
    """Why item is not an event of a record (the slow path of _events)."""
    if not isinstance(item, dict):
        return f"not an object but {_shown(item)}"
    missing = [name for name in ("code", "at", "fields") if name not in item]
    if missing:
        return f"no {missing[0]!r}"
    code, fields = item["code"], item["fields"]
    if type(code) is not int:
        return f"code: not an event code but {_shown(code)}"
    if not isinstance(fields, dict) or not all(isinstance(part, str) for part in fields.values()):
        return f"fields: not an object of strings but {_shown(fields)}"
    return f"at: not an ISO 8601 time with its UTC offset but {_shown(item['at'])}"


def _moment(value: object) -> datetime | None:
    """value as a time with its UTC offset, else None."""
    try:
        moment = datetime.fromisoformat(value)  # type: ignore[arg-type]  # TypeError unless a string
    except (TypeError, ValueError):
        return None
    return None if moment.tzinfo is None else moment


def _trim(value: object) -> Trim | None:
    trimmed = _integer(value, "trimmed")
    return Trim(trimmed) if trimmed else None


def _decision(item: dict[str, Any]) -> DecisionRecord:
    command = item["command"]
    return DecisionRecord(
        _time(item["at"], "at"),
        _text(item["trigger"], "trigger"),
        _action(item["action"]),
        _text(item["param"], "param"),
        _optional_text(item["rule"], "rule"),
        None if command is None else _integer(command, "command", 1),
        _optional_text(item["revision"], "revision"),
    )


def _command(item: dict[str, Any]) -> Command:
    identity = _integer(item["id"], "id", 1)
    action, param = _action(item["action"]), _text(item["param"], "param")
    return Command(identity, action, param, _time(item["pushed_at"], "pushed_at"))


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= _SHOWN else text[: _SHOWN - 1] + '…'}"


def _integer(value: object, name: str, least: int = 0) -> int:
    if type(value) is int and value >= least:  # not a bool
        return value
    raise _BadValueError(f"{name}: not an integer of at least {least} but {_shown(value)}")


def _text(value: object, name: str) -> str:
    if isinstance(value, str):
        return value
    raise _BadValueError(f"{name}: not a string but {_shown(value)}")


def _optional_text(value: object, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _BadValueError(f"{name}: not a string or null but {_shown(value)}")


def _list(value: object, name: str) -> list[Any]:
    if isinstance(value, list):
        return value
    raise _BadValueError(f"{name}: not a list but {_shown(value)}")


def _texts(value: object, name: str) -> list[str]:
    items = _list(value, name)
    if not all(map(isinstance, items, repeat(str))):
        raise _BadValueError(f"{name}: not all strings: {_shown(items)}")
    return items


def _time(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise _BadValueError(f"{name}: not a time but {_shown(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _BadValueError(f"{name}: not an ISO 8601 time but {_shown(value)}") from None
    if moment.tzinfo is None:
        raise _BadValueError(f"{name}: a time without its UTC offset: {_shown(value)}")
    return moment


def _optional_time(value: object, name: str) -> datetime | None:
    return None if value is None else _time(value, name)


def _service(value: object) -> ServiceType | int | None:
    if value is None:
        return None
    if type(value) is not int or not isinstance(value, int):  # an int, not a bool (and narrowed)
        raise _BadValueError(f"service_type: not a service code but {_shown(value)}")
    return _SERVICES.get(value, value)


def _action(value: object) -> Action:
    action = _ACTIONS.get(value) if isinstance(value, str) else None
    if action is None:
        raise _BadValueError(f"action: not an action name but {_shown(value)}")
    return action
