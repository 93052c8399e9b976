"""The last operator (`last_ext`, `last_dn`): remembered from a connected transfer, read by the next call
of the same caller, bounded in count and time, missing when there was none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ascrm.core.answering import answer_event
from ascrm.core.calls import MemoryCallStore
from ascrm.core.calls.state import CallState
from ascrm.core.calls.sticky import MemorySticky, StickySettings, caller_key, connected_to
from ascrm.core.protocol import Action, CallEvent, EventType, ServiceType
from ascrm.core.rules import RulesError, load_rules
from tests.support.redis import RedisServer, needs_redis
from tests.support.server import Server, ServerFactory, platform_config
from tests.support.waiting import poll_until

NOW = datetime(2027, 3, 16, 7, 30, tzinfo=UTC)
AN = "79161234567"
RULES = """
rules:
  - id: my-operator
    on: CallAccepted
    do: {TransferEXT: "{last_ext[AN]}"}
  - id: known-number
    on: CallAccepted
    if: {AN: {in: last_dn}}
    do: {TransferDN: "{last_dn[AN]}"}
  - id: menu
    on: CallAccepted
    do: {PlayPrompt: menu}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(call_id: int, kind: EventType, seconds: int = 0, **fields: Any) -> CallEvent:
    at = NOW + timedelta(seconds=seconds)
    return CallEvent(call_id, at, kind, ServiceType.MTSSecretary, fields.pop("an", AN), "74951234567", **fields)


async def call(store: MemoryCallStore, rules: Any, sticky: MemorySticky, *events: CallEvent) -> list[Any]:
    return [await answer_event(store, rules, item, NOW, sticky=sticky) for item in events]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("transfer", "rule", "answer"),
    [
        (
            [
                event(1, EventType.GoToShortTransfer, 5, ext1="1021"),
                event(1, EventType.ShortTransfer, 9, result="1280"),
            ],
            "my-operator",
            (Action.TransferEXT, "1021"),
        ),
        (
            [event(1, EventType.OperatorTransfer, 5, ext2="1033"), event(1, EventType.ShortTransfer, 9, result="1280")],
            "my-operator",
            (Action.TransferEXT, "1033"),
        ),
        (
            [event(1, EventType.GoToTransfer, 5, dn1="74957654321"), event(1, EventType.Transfer, 9, result="1280")],
            "known-number",
            (Action.TransferDN, "74957654321"),
        ),
        (
            [event(1, EventType.GoToTransfer, 5, dn1="74957654321"), event(1, EventType.Transfer, 9, result="1289")],
            "menu",  # busy: nobody answered, nothing remembered
            (Action.PlayPrompt, "menu"),
        ),
    ],
    ids=["extension", "operator-transfer", "full-number", "busy"],
)
async def test_the_next_call_goes_to_the_last_operator(
    tmp_path: Path, transfer: list[CallEvent], rule: str, answer: tuple[Action, str]
) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    rules = load_rules(tmp_path / "rules.yaml", "Europe/Moscow")
    assert rules.sticky
    store, sticky = MemoryCallStore(max_calls=10), MemorySticky(StickySettings())
    first = await call(store, rules, sticky, event(1, EventType.CallAccepted), *transfer)
    assert first[0].decision.rule_id == "menu"  # no last operator yet: both maps miss
    assert [used.outcome for used in first[0].lookups] == ["miss", "miss"]
    [again] = await call(store, rules, sticky, event(2, EventType.CallAccepted, 60))
    assert again.decision.rule_id == rule
    assert (again.decision.action, again.decision.param) == answer
    [other] = await call(store, rules, sticky, event(3, EventType.CallAccepted, 90, an="79030000000"))
    assert other.decision.rule_id == "menu"


def test_the_destination_comes_from_the_event_or_the_transfer_it_ends() -> None:
    opening = event(1, EventType.CallAccepted)
    state = CallState.begin(1, opening, NOW)
    for item in (opening, event(1, EventType.GoToTransfer, 3, dn1="74950000001")):
        state.apply(item, NOW)
    assert connected_to(event(1, EventType.Transfer, 5, result="1280"), state) == ("last_dn", "74950000001")
    assert connected_to(event(1, EventType.Transfer, 5, result="1280", dn1="74950000002"), state) == (
        "last_dn",
        "74950000002",
    )
    assert connected_to(event(1, EventType.ShortTransfer, 5, result="1280"), state) is None  # no extension
    assert connected_to(event(1, EventType.DTMF, 5, result="1280"), state) is None
    assert caller_key("+79161234567") == "79161234567"
    assert caller_key("") is None
    assert caller_key("7" * 65) is None  # a hostile number is not remembered


@pytest.mark.anyio
async def test_entries_are_bounded_in_count_and_time() -> None:
    clock = [0.0]
    sticky = MemorySticky(StickySettings(days=1, max_entries=3), clock=lambda: clock[0])
    for number in range(5):
        sticky.put("last_ext", f"7916000000{number}", "1021")
    assert len(sticky) == 3
    assert await sticky.get("last_ext", "79160000000") is None  # the oldest went
    assert await sticky.get("last_ext", "79160000004") == "1021"
    clock[0] = 86400.0
    assert await sticky.get("last_ext", "79160000004") is None  # older than a day
    off = MemorySticky(StickySettings(days=0))
    off.put("last_ext", AN, "1021")
    assert len(off) == 0


def test_a_list_or_map_cannot_take_a_built_in_name(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text('maps:\n  last_ext: {"1": "2"}\nrules: []\n')
    with pytest.raises(RulesError, match="a built-in map has this name"):
        load_rules(tmp_path / "rules.yaml", "Europe/Moscow")


def test_rules_that_do_not_read_them_do_not_pay_for_them(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("rules:\n  - {id: r, on: CallAccepted, do: {PlayPrompt: last_ext}}\n")
    assert not load_rules(tmp_path / "rules.yaml", "Europe/Moscow").sticky


# ----------------------------------------------------------------------------------------------------
# Through real servers: two replicas on one Redis, and a restart


SERVED_RULES = """
rules:
  - id: my-operator
    on: CallAccepted
    do: {TransferEXT: "{last_ext[AN]}"}
  - id: menu
    on: CallAccepted
    do: {PlayPrompt: menu}
"""


def _crmd(call_id: int, event_type: int, **fields: str) -> dict[str, Any]:
    return {"CallID": call_id, "EventType": event_type, "ServiceType": 1, "AN": AN, "UN": "74951234567", **fields}


@needs_redis
def test_replicas_on_one_redis_share_the_last_operator_and_keep_it_across_a_restart(
    serve: ServerFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SERVED_RULES)
    state = {"backend": "redis", "redis_url": redis_server.url, "key_prefix": f"sticky-{tmp_path.name}:"}
    config = platform_config(rules=str(rules), state=state)
    first, second = serve(config), serve(config)
    with first.client() as http:
        assert http.post("/CallEvent", json=_crmd(501, 1)).json()["EventType"] == Action.PlayPrompt
        http.post("/CallEvent", json=_crmd(501, 10, EXT1="1021"))
        http.post("/CallEvent", json=_crmd(501, 11, Result="1280"))

    def routed(server: Server, call_id: int) -> Any:
        with server.client() as http:
            answer = http.post("/CallEvent", json=_crmd(call_id, 1)).json()
        return answer if answer["EventType"] == Action.TransferEXT else None

    answer = poll_until(lambda: routed(second, 502), timeout=2)  # the write is not waited for
    assert answer == {"CallID": 502, "EventType": Action.TransferEXT, "Param": "1021"}
    second.stop()
    again = serve(config)
    assert routed(again, 503) == {"CallID": 503, "EventType": Action.TransferEXT, "Param": "1021"}
