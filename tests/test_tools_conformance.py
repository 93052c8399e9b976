"""The answer checks shared by probe and emulate, case by case; and what ascrm itself renders passes them."""

from __future__ import annotations

import random

import orjson
import pytest

from ascrm.core.protocol import Action, Decision, NoopAnswer, render_answer
from ascrm.tools.platform.conformance import check_answer
from ascrm.tools.platform.scenarios import load_scenarios, pick

GOOD = "application/json; charset=UTF-8"
ID = 2**40 + 7


def verdict_of(body: object, *, status: int = 200, content_type: str | None = GOOD, **kwargs: object) -> list[str]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    verdict = check_answer(status, content_type, raw, call_id=kwargs.pop("call_id", ID), **kwargs)  # type: ignore[arg-type]
    return [f"{d.severity}:{d.check}" for d in verdict.deviations]


CASES = [
    ({"CallID": ID, "EventType": 0, "Param": ""}, {}, []),
    ({"CallID": ID, "EventType": 1, "Param": "74951234567"}, {}, []),
    ({"CallID": ID, "EventType": 4, "Param": ""}, {}, []),
    ({"CallID": ID, "EventType": 5, "Param": "74951234567U1a2b"[4:]}, {"outgoing_poll": True}, ["error:param_format"]),
    ({"CallID": ID, "EventType": 5, "Param": "800049512345671234"}, {"outgoing_poll": True}, []),
    ({"CallID": ID, "EventType": 5, "Param": "PBX4951234"}, {}, []),
    ({"CallID": ID, "EventType": 1, "Param": "74951234567"}, {"outgoing_poll": True}, ["error:action_not_allowed"]),
    ({"CallID": ID, "EventType": 12, "Param": ""}, {"outgoing_poll": True}, []),
    ({"CallID": ID, "EventType": 3, "Param": "greeting.wav"}, {}, ["error:param_format"]),
    ({"CallID": ID, "EventType": 4, "Param": "now"}, {}, ["error:param_format"]),
    ({"CallID": ID, "EventType": 99, "Param": ""}, {}, ["error:action_code"]),
    ({"CallID": ID, "EventType": -1, "Param": ""}, {}, ["error:action_code"]),
    ({"CallID": ID, "EventType": True, "Param": ""}, {}, ["error:event_type"]),
    ({"CallID": ID, "EventType": "1", "Param": "74951234567"}, {}, ["warning:event_type"]),
    ({"CallID": ID, "EventType": "TransferDN", "Param": "74951234567"}, {}, ["warning:event_type"]),
    ({"CallID": ID, "EventType": "Teleport", "Param": ""}, {}, ["error:action_code"]),
    ({"CallID": ID, "EventType": None, "Param": None}, {}, ["warning:event_type", "warning:param"]),
    ({"CallID": ID, "EventType": 0, "Param": "x"}, {}, ["warning:param"]),
    ({"CallID": ID, "EventType": 2, "Param": 1234}, {}, ["error:param"]),
    ({"CallID": str(ID), "EventType": 0, "Param": ""}, {}, ["error:call_id"]),
    ({"CallID": 2**63, "EventType": 0, "Param": ""}, {}, ["error:call_id"]),
    ({"CallID": ID - 1, "EventType": 0, "Param": ""}, {}, ["error:call_id"]),
    ({"EventType": 0, "Param": ""}, {}, ["error:missing_field"]),
    ({"CallID": ID, "EventType": 0, "Param": "", "Extra": 1}, {}, ["warning:extra_field"]),
    ({"CallID": ID, "eventtype": 0, "Param": ""}, {}, ["error:missing_field"]),
    ([ID, 0, ""], {}, ["error:json"]),
    (b"{", {}, ["error:json"]),
    ({"CallID": ID, "EventType": 0, "Param": ""}, {"content_type": "application/json"}, ["error:content_type"]),
    ({"CallID": ID, "EventType": 0, "Param": ""}, {"content_type": None}, ["error:content_type"]),
    ({"error": "x"}, {"status": 500}, ["error:status"]),
    ({"CallID": 0}, {"call_id": 0, "connection_test": True}, ["warning:missing_field", "warning:missing_field"]),
]


@pytest.mark.parametrize(("body", "options", "expected"), CASES)
def test_check_answer(body: object, options: dict[str, object], expected: list[str]) -> None:
    assert verdict_of(body, **options) == expected


@pytest.mark.parametrize("action", list(Action))
def test_what_ascrm_renders_passes(action: Action) -> None:
    params = {Action.TransferDN: "74951234567", Action.TransferDNRec: "74951234567", Action.TransferEXT: "1234"}
    params |= {Action.TransferPBX: "PBX4951234", Action.TransferPBXRec: "PBX4951234"}
    no_param = {Action.Hangup, Action.IgnorePromptToOperator, Action.BackFromConsultCall}
    param = params.get(action, "" if action in no_param else "rating")
    body = render_answer(ID, Decision(action, param), NoopAnswer())
    verdict = check_answer(200, GOOD, body, call_id=ID)
    assert (verdict.deviations, verdict.action, verdict.param) == ((), action, param)


def test_a_scenario_draws_each_number_once_per_call() -> None:
    scenario = pick(load_scenarios(), "outgoing-call")
    call = scenario.render(random.Random(3))
    dialled = {step.fields["DN1"] for step in call.steps if "DN1" in step.fields}
    assert len(dialled) == 1
    assert next(iter(dialled)).startswith("8800")
    assert "#" not in next(iter(dialled))
