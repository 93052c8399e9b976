"""What the platform accepts as an answer: the checks of status, content type and ReturnCRMData, per PROTOCOL.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ascrm.core.protocol import (
    ANSWER_FIELDS,
    CONTENT_TYPE,
    INT64_MAX,
    INT64_MIN,
    OUTGOING_POLL_ACTIONS,
    OUTGOING_POLL_LIMIT,
    Action,
    param_error,
    parse_code,
)

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Deviation:
    """One way an answer differs from the protocol: a short check name, what is wrong, and how bad it is."""

    check: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one answer: what it asks the platform to do, and every deviation."""

    deviations: tuple[Deviation, ...] = ()
    action: Action | None = None
    param: str = ""

    @property
    def failed(self) -> bool:
        """Whether any deviation is an error."""
        return any(d.severity == "error" for d in self.deviations)

    def describe(self) -> str:
        """The answer in words: 'no action' or 'TransferDN 74951112233'."""
        if self.action is None:
            return "no action"
        return f"{self.action.name} {self.param}".rstrip()


def check_answer(
    status: int,
    content_type: str | None,
    body: bytes,
    *,
    call_id: int,
    outgoing_poll: bool = False,
    connection_test: bool = False,
) -> Verdict:
    """Check one answer to a platform request; the connection test needs only 200, the type and JSON.

    call_id is the CallID the answer must echo (0 for the connection test); outgoing_poll selects
    TransferPBX's outgoing poll format (a poll of a ServiceType 2 call).
    """
    found: list[Deviation] = []
    if status != 200:
        found.append(Deviation("status", f"status {status}, expected 200{_excerpt(body)}"))
    problem = content_type_problem(content_type)
    if problem is not None:
        found.append(Deviation("content_type", problem))
    if status != 200:
        return Verdict(tuple(found))
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        found.append(Deviation("json", f"the body is not JSON ({exc}){_excerpt(body)}"))
        return Verdict(tuple(found))
    if not isinstance(data, dict):
        found.append(Deviation("json", f"the body is JSON {type(data).__name__}, not an object (ReturnCRMData)"))
        return Verdict(tuple(found))
    shape = _Shape(data, call_id, outgoing_poll)
    action, param = shape.check()
    severity: Severity = "warning" if connection_test else "error"
    for deviation in shape.found:
        if connection_test and deviation.severity == "error":
            message = f"{deviation.message} (tolerated in the connection test)"
            found.append(Deviation(deviation.check, message, severity))
        else:
            found.append(deviation)
    return Verdict(tuple(found), action, param)


def content_type_problem(content_type: str | None) -> str | None:
    """Why a Content-Type is not exactly `application/json; charset=UTF-8`, or None when it is."""
    if content_type == CONTENT_TYPE:
        return None
    if content_type is None:
        return f"no Content-Type header; expected exactly {CONTENT_TYPE!r}"
    media, _, rest = content_type.partition(";")
    if media.strip().lower() != "application/json":
        return f"Content-Type {content_type!r} is not JSON; expected exactly {CONTENT_TYPE!r}"
    if "charset" not in rest.lower():
        return f"Content-Type {content_type!r} lacks the charset; expected exactly {CONTENT_TYPE!r}"
    return f"Content-Type {content_type!r} is not exactly {CONTENT_TYPE!r}"


class _Shape:
    """The ReturnCRMData checks of one decoded JSON object."""

    def __init__(self, data: dict[str, Any], call_id: int, outgoing_poll: bool) -> None:
        self.data = data
        self.call_id = call_id
        self.outgoing_poll = outgoing_poll
        self.found: list[Deviation] = []

    def add(self, check: str, message: str, severity: Severity = "error") -> None:
        self.found.append(Deviation(check, message, severity))

    def check(self) -> tuple[Action | None, str]:
        present = [name for name in ANSWER_FIELDS if self._field_present(name)]
        extra = sorted(set(self.data) - set(ANSWER_FIELDS) - {k for k in self.data if _spelt_as(k) is not None})
        if extra:
            names = ", ".join(repr(k) for k in extra)
            self.add("extra_field", f"field(s) {names} are not in ReturnCRMData (CallID, EventType, Param)", "warning")
        if "CallID" in present:
            self._call_id(self.data["CallID"])
        if "EventType" not in present:
            return None, ""
        action, is_noop = self._event_type(self.data["EventType"])
        if "Param" not in present:
            return action, ""
        return action, self._param(self.data["Param"], action, is_noop)

    def _field_present(self, name: str) -> bool:
        if name in self.data:
            return True
        spelt = [key for key in self.data if _spelt_as(key) == name]
        if spelt:
            self.add("missing_field", f"field {spelt[0]!r} must be spelt {name!r}: field names are case-sensitive")
        else:
            self.add("missing_field", f"field {name!r} is missing")
        return False

    def _call_id(self, value: Any) -> None:
        if type(value) is not int:
            self.add("call_id", f"CallID must be a JSON integer (int64), got {_typed(value)}")
        elif not INT64_MIN <= value <= INT64_MAX:
            self.add("call_id", f"CallID {value} is outside int64")
        elif value != self.call_id:
            self.add("call_id", f"CallID {value} does not echo the request's CallID {self.call_id}")

    def _event_type(self, value: Any) -> tuple[Action | None, bool]:
        """The action asked for (None: no action), and whether the answer means 'no action'."""
        if value is None:
            self.add("event_type", "EventType null for 'no action': a .NET client may fail on it; 0 is safe", "warning")
            return None, True
        if type(value) is int:
            if value == 0:
                return None, True
            code = parse_code(value, Action)
            if isinstance(code, Action):
                return code, False
            self.add("action_code", f"EventType {value} is not an action code (0 for no action, 1-12)")
            return None, False
        if isinstance(value, str):
            code = parse_code(value, Action)
            if isinstance(code, Action) or code == 0:
                number = int(code)
                self.add("event_type", f"EventType given as the string {value!r}: send the integer {number}", "warning")
                return (code, False) if isinstance(code, Action) else (None, True)
            self.add("action_code", f"EventType {value!r} is not an action code or name")
            return None, False
        self.add("event_type", f"EventType must be an integer action code, got {_typed(value)}")
        return None, False

    def _param(self, value: Any, action: Action | None, is_noop: bool) -> str:
        if value is None and is_noop:
            self.add("param", "Param null for 'no action': a string (\"\") is safe", "warning")
            return ""
        if not isinstance(value, str):
            self.add("param", f"Param must be a string, got {_typed(value)}")
            return ""
        if action is not None and self.outgoing_poll and action not in OUTGOING_POLL_ACTIONS:
            self.add("action_not_allowed", f"{action.name} answers a poll of an outgoing call: {OUTGOING_POLL_LIMIT}")
        elif action is not None:
            problem = param_error(action, value, outgoing_poll=self.outgoing_poll)
            if problem is not None:
                self.add("param_format", f"Param {value!r} for {action.name}: {problem}")
        elif is_noop and value:
            self.add("param", f"Param {value!r} with no action: the platform ignores it", "warning")
        return value


def _spelt_as(key: Any) -> str | None:
    """The ReturnCRMData field a key names in another case ('callId' → 'CallID'), else None."""
    if not isinstance(key, str) or key in ANSWER_FIELDS:
        return None
    for name in ANSWER_FIELDS:
        if key.lower() == name.lower():
            return name
    return None


def _typed(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    name = "null" if value is None else kind.get(type(value), type(value).__name__)
    return f"{name} {orjson.dumps(value).decode()[:40]}"


def _excerpt(body: bytes) -> str:
    if not body:
        return ""
    text = body[:80].decode("utf-8", "replace").replace("\n", " ")
    return f": {text!r}{'…' if len(body) > 80 else ''}"
