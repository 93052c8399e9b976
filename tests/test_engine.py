"""engine.decide: the first matching rule decides; none gives NO_ACTION."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ascrm.core.calls import CallState
from ascrm.core.engine import RuleSet, decide
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, Decision, EventType

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


@dataclass(frozen=True)
class OnEvent:
    """A rule for tests: matches one event type (None: polls)."""

    id: str
    event_type: EventType | None
    decision: Decision

    def evaluate(self, event: CallEvent | None, call: CallState, now: datetime) -> Decision | None:
        kind = event.event_type if event else None
        return self.decision if kind == self.event_type else None


def test_first_matching_rule_decides() -> None:
    rules = RuleSet(
        rules=(
            OnEvent("dtmf", EventType.DTMF, Decision(Action.TransferEXT, "1001", "dtmf")),
            OnEvent("accept", EventType.CallAccepted, Decision(Action.PlayPrompt, "hello", "accept")),
            OnEvent("accept-2", EventType.CallAccepted, Decision(Action.Hangup, "", "accept-2")),
            OnEvent("poll", None, Decision(Action.TransferPBX, "PBX123", "poll")),
        )
    )
    event = CallEvent(call_id=1, event_type=EventType.CallAccepted)
    call = CallState.begin(1, event, NOW)
    assert decide(rules, event, call, NOW).rule_id == "accept"
    assert decide(rules, None, call, NOW).rule_id == "poll"
    assert decide(rules, CallEvent(call_id=1, event_type=EventType.EndCall), call, NOW) is NO_ACTION


def test_empty_rule_set_is_no_action() -> None:
    event = CallEvent(call_id=1, event_type=EventType.CallAccepted)
    assert decide(RuleSet(), event, CallState.begin(1, event, NOW), NOW) is NO_ACTION


@dataclass(frozen=True)
class SeesNow:
    """A rule for tests: answers with the moment it is asked at."""

    id: str = "now"

    def evaluate(self, event: CallEvent | None, call: CallState, now: datetime) -> Decision | None:
        return Decision(Action.PlayPrompt, now.isoformat(), self.id)


def test_rules_are_asked_at_the_moment_given() -> None:
    event = CallEvent(call_id=1, event_type=EventType.CallAccepted)
    decided = decide(RuleSet(rules=(SeesNow(),)), event, CallState.begin(1, event, NOW), NOW)
    assert decided.param == "2026-11-27T07:00:00+00:00"
