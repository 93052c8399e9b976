"""The Autosecretary CRM API v2 on the wire: code tables, the CRMDData reader, the ReturnCRMData writer."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Final, NamedTuple, TypeVar

import orjson

from ascrm.core.jsonbody import UNREADABLE_REASON, UnreadableText

CONTENT_TYPE: Final = "application/json; charset=UTF-8"
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


class EventType(enum.IntEnum):
    """Events the platform reports in CRMDData.EventType."""

    CallAccepted = 1
    CallAnswered = 2
    HelloMessage = 3
    DTMF = 4
    T38 = 5
    FaxTone = 6
    RunIVR = 7
    GoToTransfer = 8
    Transfer = 9
    GoToShortTransfer = 10
    ShortTransfer = 11
    OperatorTransfer = 12
    RecStart = 13
    RecStop = 14
    EndCall = 15
    PrepareToConnect = 16
    BDropped = 17
    SubscriberFreeReceived = 18


class ServiceType(enum.IntEnum):
    """The platform's service a call belongs to (CRMDData.ServiceType)."""

    MTSSecretary = 1
    MTSPBX = 2
    MTSQuality = 3
    MTSSubCLID = 4


class Action(enum.IntEnum):
    """Routing instructions we answer with (ReturnCRMData.EventType)."""

    TransferDN = 1
    TransferEXT = 2
    PlayPrompt = 3
    Hangup = 4
    TransferPBX = 5
    PlayMenuBlock = 6
    PlayPromptAndBack = 7
    PlayPromptToOperator = 8
    TransferDNRec = 9
    TransferPBXRec = 10
    IgnorePromptToOperator = 11
    BackFromConsultCall = 12


# Events whose POST answer the platform reads (routing on request, before connection).
READ_ON_POST: Final = frozenset(
    {
        EventType.CallAccepted,
        EventType.CallAnswered,
        EventType.HelloMessage,
        EventType.DTMF,
        EventType.PrepareToConnect,
    }
)
# The only answers the platform takes for the outgoing service (ServiceType 2); inbound polls have no such limit.
OUTGOING_POST_ACTIONS: Final = frozenset({Action.TransferDN})
OUTGOING_POLL_ACTIONS: Final = frozenset({Action.TransferPBX, Action.BackFromConsultCall})
OUTGOING_POLL_LIMIT: Final = "an outgoing call's (MTSPBX) polls take only TransferPBX or BackFromConsultCall"
# Answers that make sense only to PrepareToConnect.
OPERATOR_PROMPT_ACTIONS: Final = frozenset({Action.PlayPromptToOperator, Action.IgnorePromptToOperator})
# Honoured only in answers to polls (returning from a consult call), never to a POST event.
POLL_ONLY_ACTIONS: Final = frozenset({Action.BackFromConsultCall})

# Transfer results (CRMDData.Result on Transfer / ShortTransfer).
RESULT_CONNECTED: Final = "1280"
RESULT_NO_ANSWER: Final = "1284"
RESULT_BUSY: Final = "1289"

E = TypeVar("E", bound=enum.IntEnum)


def _read_int64(value: Any) -> int | str | None:
    """An int64 from an int, an integral float or a decimal string; other strings come back stripped."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            return text
    if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
        return value
    return None


def parse_int64(text: str) -> int | None:
    """An int64 written in plain ASCII digits (a CallID in a URL path), or None; int() alone would also
    take '1_000', ' 12' and non-ASCII digits."""
    if not _INT64_TEXT.fullmatch(text):
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


_INT64_TEXT = re.compile(r"-?[0-9]{1,20}")


def parse_code(value: Any, table: type[E]) -> E | int | None:
    """Read a code given as an int, its decimal string or its name; unknown numbers stay raw ints."""
    number = _read_int64(value)
    if isinstance(number, str):
        return _NAMES[table].get(number.lower())
    if number is None:
        return None
    member: E | None = _VALUES[table].get(number)
    return number if member is None else member


_TABLES: Final = (EventType, ServiceType, Action)
_NAMES: dict[type[Any], dict[str, Any]] = {table: {m.name.lower(): m for m in table} for table in _TABLES}
_VALUES: dict[type[Any], dict[int, Any]] = {table: {m.value: m for m in table} for table in _TABLES}


def code_name(code: int | None) -> str | None:
    """The symbolic name of a code from one of the tables, or the number as text when it is unknown."""
    if code is None:
        return None
    return code._name_ if isinstance(code, enum.IntEnum) else str(code)  # _name_: no property call


@dataclass(frozen=True, slots=True)
class FieldWarning:
    """A CRMDData field that could not be read and was treated as missing."""

    field: str
    value: Any
    reason: str


class CallEvent(NamedTuple):
    """One CRMDData as the platform sent it, read tolerantly: anything unreadable is None.

    An immutable value; a NamedTuple because one is built per request and builds fastest.
    """

    call_id: int | None = None
    event_time: datetime | None = None
    event_type: EventType | int | None = None
    service_type: ServiceType | int | None = None
    an: str | None = None
    un: str | None = None
    dn1: str | None = None
    dn2: str | None = None
    ext1: str | None = None
    ext2: str | None = None
    dtmf: str | None = None
    generic: str | None = None
    result: str | None = None


def _read_string(value: Any, tz: tzinfo) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise ValueError("expected a string")


def _read_call_id(value: Any, tz: tzinfo) -> int:
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return value
    number = _read_int64(value)
    if not isinstance(number, int):
        raise ValueError("expected an int64")
    return number


def _read_time(value: Any, tz: tzinfo) -> datetime:
    if not isinstance(value, str) or len(value) < 16 or value[10] not in "Tt ":
        raise ValueError("expected an ISO 8601 date and time")
    moment = datetime.fromisoformat(value.strip())
    zone = moment.tzinfo
    if zone is None:
        return moment.replace(tzinfo=tz)
    shared = _ZONES.get(zone)  # one "+03:00" object for every stored time, not one each
    if shared is None:
        if len(_ZONES) >= 256:  # odd offsets in bulk: stop sharing rather than grow
            return moment
        shared = _ZONES[zone] = zone
    return moment if shared is zone else moment.replace(tzinfo=shared)


_ZONES: dict[tzinfo, tzinfo] = {}  # the fixed offsets seen in EventTime, shared


def _read_event_type(value: Any, tz: tzinfo) -> EventType | int:
    return _required_code(value, EventType)


def _read_service_type(value: Any, tz: tzinfo) -> ServiceType | int:
    return _required_code(value, ServiceType)


# CRMDData JSON key -> (CallEvent attribute, reader).
_FIELDS: Final[dict[str, tuple[str, Callable[[Any, tzinfo], Any]]]] = {
    "CallID": ("call_id", _read_call_id),
    "EventTime": ("event_time", _read_time),
    "EventType": ("event_type", _read_event_type),
    "ServiceType": ("service_type", _read_service_type),
    "AN": ("an", _read_string),
    "UN": ("un", _read_string),
    "DN1": ("dn1", _read_string),
    "DN2": ("dn2", _read_string),
    "EXT1": ("ext1", _read_string),
    "EXT2": ("ext2", _read_string),
    "DTMF": ("dtmf", _read_string),
    "Generic": ("generic", _read_string),
    "Result": ("result", _read_string),
}
_CANONICAL: Final = {name.lower(): name for name in _FIELDS}
CRMDDATA_FIELDS: Final = tuple(_FIELDS)  # the CRMDData keys, in the original's order
# The CRMDData fields that are free strings (numbers, digits, results), in that order; the others
# (CallID, EventTime, EventType, ServiceType) the platform sets as an id, a time and codes.
CRMDDATA_STRING_FIELDS: Final = tuple(key for key, (_, reader) in _FIELDS.items() if reader is _read_string)


def field_name(key: str) -> str | None:
    """The CRMDData field a key names, matched case-insensitively as the reader does ('dtmf' -> 'DTMF')."""
    return _CANONICAL.get(key.lower())


def parse_call_event(data: Mapping[str, Any], tz: tzinfo) -> tuple[CallEvent, list[FieldWarning]]:
    """Read a CRMDData object; fields that fail to parse become None and are reported as warnings."""
    event = _read_well_formed(data, tz)
    if event is not None:
        return event, []
    return _read_tolerantly(data, tz)


_KEYS: Final = frozenset(_FIELDS)
_EVENT_TYPES: Final = {m.value: m for m in EventType}
_SERVICE_TYPES: Final = {m.value: m for m in ServiceType}


def _read_well_formed(data: Mapping[str, Any], tz: tzinfo) -> CallEvent | None:
    """The common case, read fast: exact keys, strings as strings, known codes as ints; else None."""
    if not data.keys() <= _KEYS:
        return None
    get = data.get
    call_id = get("CallID")
    if call_id is not None and (type(call_id) is not int or not INT64_MIN <= call_id <= INT64_MAX):
        return None
    event_type = get("EventType")
    if event_type is not None and (type(event_type) is not int or event_type not in _EVENT_TYPES):
        return None
    service_type = get("ServiceType")
    if service_type is not None and (type(service_type) is not int or service_type not in _SERVICE_TYPES):
        return None
    moment = get("EventTime")
    if moment is not None:
        try:
            moment = _read_time(moment, tz) if moment != "" else None
        except ValueError:
            return None
    strings: list[str | None] = []
    for key in CRMDDATA_STRING_FIELDS:
        text = get(key)
        if text is None or text == "":
            strings.append(None)
        elif type(text) is str:
            strings.append(text.strip() or None)
        else:
            return None
    return CallEvent(
        call_id,
        moment,
        None if event_type is None else _EVENT_TYPES[event_type],
        None if service_type is None else _SERVICE_TYPES[service_type],
        *strings,
    )


def _read_tolerantly(data: Mapping[str, Any], tz: tzinfo) -> tuple[CallEvent, list[FieldWarning]]:
    values: dict[str, Any] = {}
    warnings: list[FieldWarning] = []
    exact = 0
    for key in _FIELDS:
        raw = data.get(key, _ABSENT)
        if raw is _ABSENT:
            continue
        exact += 1
        if raw is not None and raw != "":
            _read_field(values, warnings, key, raw, tz)
    if exact < len(data):  # other keys: the same fields spelt in another case, or unknown ones
        for given, raw in data.items():
            key = _CANONICAL.get(given.lower(), given) if isinstance(given, str) else given
            if key == given or key not in _FIELDS or raw is None or raw == "":
                continue
            if _FIELDS[key][0] not in values:
                _read_field(values, warnings, key, raw, tz)
    return CallEvent(**values), warnings


def _read_field(values: dict[str, Any], warnings: list[FieldWarning], key: str, raw: Any, tz: tzinfo) -> None:
    """Read the field key into values, or add why it cannot be read to warnings."""
    attribute, reader = _FIELDS[key]
    if isinstance(raw, UnreadableText):  # a lone surrogate: nothing may store, log or answer it
        warnings.append(FieldWarning(key, raw, UNREADABLE_REASON))
        return
    try:
        values[attribute] = reader(raw, tz)
    except (ValueError, TypeError, OverflowError) as exc:
        warnings.append(FieldWarning(key, raw, str(exc)))


_ABSENT: Final = object()


def _required_code(raw: Any, table: type[E]) -> E | int:
    code = parse_code(raw, table)
    if code is None:
        raise ValueError(f"expected a {table.__name__} code or name")
    return code


@dataclass(frozen=True, slots=True)
class Decision:
    """What to answer: an action and its param, or no action; and the rule that decided, if any."""

    action: Action | None = None
    param: str = ""
    rule_id: str | None = None
    problem: str | None = None  # why a matching rule's (or command's) answer was not sent
    command_id: int | None = None  # a command pushed through the admin API, answered at a poll
    not_allowed: Action | None = None  # the action not sent because this request may not take it at all


def poll_action_error(action: Action, service_type: int | None) -> str | None:
    """Why action may not answer a poll of a call of this service (only outgoing calls limit them), or None."""
    if service_type == ServiceType.MTSPBX and action not in OUTGOING_POLL_ACTIONS:
        return f"{action.name} is not sent: {OUTGOING_POLL_LIMIT}"
    return None


def not_allowed(decision: Decision, problem: str) -> Decision:
    """decision's answer withheld, because its action may not answer this request: no action, saying why."""
    return Decision(None, "", decision.rule_id, problem, decision.command_id, decision.action)


NO_ACTION: Final = Decision()


@dataclass(frozen=True, slots=True)
class NoopAnswer:
    """The ReturnCRMData fields sent when there is nothing to do (None sends JSON null)."""

    event_type: int | None = 0
    param: str | None = ""


ANSWER_FIELDS: Final = ("CallID", "EventType", "Param")  # ReturnCRMData: exactly these keys


def render_answer(call_id: int | None, decision: Decision, noop: NoopAnswer) -> bytes:
    """Serialize a ReturnCRMData answer for a call."""
    if decision.action is None:
        body: dict[str, Any] = {"CallID": call_id or 0, "EventType": noop.event_type, "Param": noop.param}
    else:
        body = {"CallID": call_id or 0, "EventType": int(decision.action), "Param": decision.param}
    return orjson.dumps(body)


# Param formats (the protocol's action table).
_FULL_NUMBER = re.compile(r"[1-9]\d{10,14}")  # 10 digits: a national form (national_number)
_EXTENSION = re.compile(r"\d{4}")
_PBX_NUMBER = re.compile(r"PBX[A-Za-z0-9_.\-]+")
_OUTGOING_POLL_PBX = re.compile(r"8000\d{10}[A-Za-z0-9_.\-]+|\d{10}U[A-Za-z0-9]{4}")
_FILE_NAME = re.compile(r"\w[\w\-. ]{0,254}")
_AUDIO_EXTENSION = re.compile(r"\.(wav|mp3|ogg|gsm|alaw|ulaw|pcm|raw)$", re.IGNORECASE)

_NO_PARAM: Final = frozenset({Action.Hangup, Action.IgnorePromptToOperator, Action.BackFromConsultCall})
_PROMPTS: Final = frozenset({Action.PlayPrompt, Action.PlayPromptAndBack, Action.PlayPromptToOperator})
# Actions whose param is a PSTN number "in the full format": with the country code.
FULL_NUMBER_ACTIONS: Final = frozenset({Action.TransferDN, Action.TransferDNRec})


def national_number(param: str) -> bool:
    """True for a Russian number written without the country code: 10 digits, or 11 starting with 8."""
    return param.isascii() and param.isdigit() and (len(param) == 10 or (len(param) == 11 and param[0] == "8"))


def param_error(action: Action, param: str, *, outgoing_poll: bool = False) -> str | None:
    """Why param is not acceptable for action, or None when it is."""
    if action in _NO_PARAM:
        return None if param == "" else "takes no param"
    if param == "":
        return "needs a param"
    if action in FULL_NUMBER_ACTIONS:
        if national_number(param):
            return "is a national-form number: the full format starts with the country code (74951234567)"
        if not _FULL_NUMBER.fullmatch(param):
            return "must be a full-format number: 11 to 15 digits with the country code, no '+' (74951234567)"
    elif action == Action.TransferEXT:
        if not _EXTENSION.fullmatch(param):
            return "must be a 4-digit short number (1234)"
    elif action == Action.TransferPBX and outgoing_poll:
        if not _OUTGOING_POLL_PBX.fullmatch(param):
            return (
                "outgoing-service poll answers take 8000 + 10-digit area code + internal number,"
                " or 10-digit area code + 'U' + 4 characters for a login"
            )
    elif action in (Action.TransferPBX, Action.TransferPBXRec):
        if not _PBX_NUMBER.fullmatch(param):
            return "must be a softswitch number: 'PBX' then Latin letters, digits, '_', '-', '.' (PBX4951234)"
    elif not _FILE_NAME.fullmatch(param):
        return "must be a file or menu name: letters, digits, '_', '-', '.', spaces, at most 255 characters"
    elif action in _PROMPTS and _AUDIO_EXTENSION.search(param):
        return "must be the prompt's name without the file extension"
    return None
