"""Which notifications a call's events make, with which bodies: missed, answered and dropped calls run
through the answering step as the server runs them, with the notifications stored handed to a list."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from ascrm.core.answering import answer_event
from ascrm.core.calls import MemoryCallStore
from ascrm.core.calls.state import CallState
from ascrm.core.calls.store import StoreUnavailableError
from ascrm.core.notify.message import Notification
from ascrm.core.notify.summary import KEYS
from ascrm.core.notify.triggers import MAX_BODY_BYTES, kinds_of
from ascrm.core.protocol import Action, CallEvent, EventType, ServiceType
from ascrm.core.rules import load_rules

START = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
AN, UN = "79161234567", "74951234567"
RULES = """\
targets:
  crm: {url: "https://crm.example.com/hooks/ascrm"}
  summary: {url: "https://crm.example.com/hooks/summary"}
notify:
  - id: missed
    on: missed
    target: crm
    body: {phone: "{caller}", line: "{called}", waited: "{wait_seconds}", by: "{ended_by}", dtmf: "{DTMF}"}
  - id: outcome
    on: [ended, connected]
    target: summary
  - id: sales-line-only
    on: ended
    if: {UN: "74950000000"}
    target: crm
rules:
  - id: menu
    on: CallAccepted
    do: {TransferEXT: "1001"}
"""


class Kept:
    """The notify callable of answer_event: keeps what it is given."""

    def __init__(self) -> None:
        self.notes: list[Notification] = []

    async def __call__(self, notes: Sequence[Notification]) -> None:
        self.notes += notes

    def bodies(self) -> dict[str, dict[str, Any]]:
        return {note.key: orjson.loads(note.body) for note in self.notes}


@pytest.fixture
def rules(tmp_path: Path) -> Any:
    (tmp_path / "rules.yaml").write_text(RULES)
    return load_rules(tmp_path / "rules.yaml", "Europe/Moscow")


def event(code: EventType, seconds: float, **fields: Any) -> CallEvent:
    at = START + timedelta(seconds=seconds)
    return CallEvent(7, at, code, ServiceType.MTSSecretary, AN, UN, **fields)


def run(rules: Any, events: list[CallEvent], kept: Kept, store: Any = None) -> list[Any]:
    store = MemoryCallStore(max_calls=10) if store is None else store

    async def go() -> list[Any]:
        answers = []
        for item in events:
            now = item.event_time or START
            answers.append(await answer_event(store, rules, item, now, notify=kept))
        return answers

    return asyncio.run(go())


def test_a_missed_call_makes_missed_and_ended(rules: Any) -> None:
    kept = Kept()
    run(
        rules,
        [
            event(EventType.CallAccepted, 0),
            event(EventType.DTMF, 3, dtmf="2"),
            event(EventType.ShortTransfer, 25, ext1="1001", result="1284"),
            event(EventType.EndCall, 30, result="1"),
        ],
        kept,
    )
    assert [(note.key, note.target, note.kind) for note in kept.notes] == [
        ("7:missed:missed", "crm", "missed"),
        ("7:ended:outcome", "summary", "ended"),
    ]
    bodies = kept.bodies()
    assert bodies["7:missed:missed"] == {"phone": AN, "line": UN, "waited": 30, "by": "caller", "dtmf": None}
    summary = bodies["7:ended:outcome"]
    assert list(summary) == list(KEYS)
    assert summary | {"revision": None} == {
        "kind": "ended",
        "notify": "outcome",
        "key": "7:ended:outcome",
        "call_id": 7,
        "caller": AN,
        "called": UN,
        "service": "MTSSecretary",
        "started_at": "2026-12-04T10:00:00+00:00",
        "connected_at": None,
        "ended_at": "2026-12-04T10:00:30+00:00",
        "wait_seconds": 30,
        "talk_seconds": 0,
        "answered_by": None,
        "ended_by": "caller",
        "missed": True,
        "dtmf": "2",
        "rules": ["menu"],
        "revision": None,
    }
    assert summary["revision"] == rules.revision
    assert all(note.call_id == 7 for note in kept.notes)


def test_an_answered_call_makes_connected_then_ended_with_its_talk(rules: Any) -> None:
    kept = Kept()
    run(
        rules,
        [
            event(EventType.CallAccepted, 0),
            event(EventType.ShortTransfer, 12, ext1="1001", result="1280"),
            event(EventType.EndCall, 77, result="2"),
        ],
        kept,
    )
    assert [note.key for note in kept.notes] == ["7:connected:outcome", "7:ended:outcome"]
    connected, ended = (orjson.loads(note.body) for note in kept.notes)
    assert (connected["connected_at"], connected["ended_at"], connected["answered_by"]) == (
        "2026-12-04T10:00:12+00:00",
        None,
        "1001",
    )
    assert (ended["wait_seconds"], ended["talk_seconds"], ended["answered_by"], ended["missed"]) == (
        12,
        65,
        "1001",
        False,
    )
    assert ended["ended_by"] == "called"


def test_the_operator_is_the_transfer_answered_when_the_result_names_none(rules: Any) -> None:
    kept = Kept()
    run(rules, [event(EventType.CallAccepted, 0), event(EventType.ShortTransfer, 5, result="1280")], kept)
    assert orjson.loads(kept.notes[0].body)["answered_by"] == "1001"  # the rule `menu` answered TransferEXT 1001


def test_a_caller_hanging_up_while_ringing_is_missed(rules: Any) -> None:
    kept = Kept()
    run(rules, [event(EventType.CallAccepted, 0), event(EventType.EndCall, 4, result="3")], kept)
    missed = kept.bodies()["7:missed:missed"]
    assert (missed["by"], missed["waited"]) == ("caller_ringing", 4)


def test_conditions_choose_the_calls(rules: Any) -> None:
    kept = Kept()
    line = "74950000000"
    events = [
        CallEvent(8, START, EventType.CallAccepted, ServiceType.MTSSecretary, AN, line),
        CallEvent(8, START + timedelta(seconds=5), EventType.EndCall, ServiceType.MTSSecretary, AN, line, result="1"),
    ]
    run(rules, events, kept)
    assert [note.key for note in kept.notes] == ["8:missed:missed", "8:ended:outcome", "8:ended:sales-line-only"]


@pytest.mark.parametrize(
    ("code", "result", "connected", "kinds"),
    [
        (EventType.EndCall, "1", False, {"EndCall", "ended", "missed"}),
        (EventType.EndCall, "2", True, {"EndCall", "ended"}),
        (EventType.ShortTransfer, "1280", False, {"ShortTransfer", "connected"}),
        (EventType.Transfer, "1280", False, {"Transfer", "connected"}),
        (EventType.Transfer, "1289", False, {"Transfer"}),
        (EventType.DTMF, None, False, {"DTMF"}),
        (99, None, False, set()),
    ],
)
def test_kinds_of_an_event(code: int, result: str | None, connected: bool, kinds: set[str]) -> None:
    item = CallEvent(1, START, code, ServiceType.MTSSecretary, AN, UN, result=result)
    call = CallState.begin(1, item, START)
    call.apply(item, START)
    if connected:
        call.connected_at = START
    assert kinds_of(item, call) == kinds


def test_a_failing_outbox_changes_nothing_of_the_answer(rules: Any) -> None:
    async def broken(notes: Sequence[Notification]) -> None:
        raise RuntimeError("boom")

    async def go() -> Any:
        store = MemoryCallStore(max_calls=10)
        await answer_event(store, rules, event(EventType.CallAccepted, 0), START)
        return await answer_event(store, rules, event(EventType.EndCall, 5, result="1"), START, notify=broken)

    with capture_logs() as logs:
        answered = asyncio.run(go())
    assert not answered.failed
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["notify_failed"]


def test_an_answer_that_would_be_a_rule_still_comes(rules: Any) -> None:
    kept = Kept()
    [answered] = run(rules, [event(EventType.CallAccepted, 0)], kept)
    assert (answered.decision.action, answered.decision.param) == (Action.TransferEXT, "1001")
    assert kept.notes == []


class Unreachable(MemoryCallStore):
    async def update(self, event: CallEvent, now: datetime) -> CallState:
        raise StoreUnavailableError("down")


def test_a_call_out_of_reach_makes_no_notification(rules: Any) -> None:
    kept = Kept()
    with capture_logs() as logs:
        run(rules, [event(EventType.EndCall, 5, result="1")], kept, store=Unreachable(max_calls=10))
    assert kept.notes == []
    assert any(entry["event"] == "notify_skipped" for entry in logs)


def test_a_body_too_large_is_not_stored(tmp_path: Path) -> None:
    big = "x" * (MAX_BODY_BYTES // 4)
    text = RULES.replace(
        'dtmf: "{DTMF}"}', f'dtmf: "{{DTMF}}", a: "{big}", b: "{big}", c: "{big}", d: "{big}", e: "{big}"}}'
    )
    (tmp_path / "rules.yaml").write_text(text)
    rules = load_rules(tmp_path / "rules.yaml", "Europe/Moscow")
    kept = Kept()
    with capture_logs() as logs:
        run(rules, [event(EventType.CallAccepted, 0), event(EventType.EndCall, 5, result="1")], kept)
    assert [note.key for note in kept.notes] == ["7:ended:outcome"]  # the others go out
    [warning] = [entry for entry in logs if entry["event"] == "notification_too_large"]
    assert (warning["notify"], warning["size"] > MAX_BODY_BYTES) == ("missed", True)
