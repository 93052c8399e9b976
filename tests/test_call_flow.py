"""A whole call, as the platform plays it, against the memory store and against a real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis import RedisServer
from tests.support.server import Server, ServerFactory, platform_config

ADMIN_PASSWORD = "ops-pässword"
RULES = """
rules:
  - id: welcome
    on: CallAccepted
    do: {PlayPrompt: welcome}
  - id: extension
    on: DTMF
    if: {digits: {regex: '^\\d{4}$'}}
    do: {TransferEXT: "{digits}"}
  - id: failover
    on: PrepareToConnect
    if: {last_transfer_result: busy}
    do: {TransferDN: "74959990000"}
  - id: supervisor
    on: poll
    if: {talk_seconds: {ge: 0}}
    do: {TransferPBX: PBX4951001}
  - id: rating
    on: BDropped
    do: {PlayMenuBlock: rating}
"""


@pytest.fixture(params=["memory", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path, serve: ServerFactory) -> Server:
    state: dict[str, Any] = {"backend": "memory"}
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("own_redis")
        state = {"backend": "redis", "redis_url": redis.url}
    (tmp_path / "rules.yaml").write_text(RULES)
    config = platform_config(rules=str(tmp_path / "rules.yaml"), state=state)
    return serve(config, folder=tmp_path / "ascrm", admin=("ops", ADMIN_PASSWORD))


START = datetime.now(UTC) - timedelta(minutes=2)  # the platform's clock is the server's, give or take


def event(call_id: int, event_type: int, second: int, **fields: Any) -> dict[str, Any]:
    moment = (START + timedelta(seconds=second)).isoformat()
    body = {"CallID": call_id, "EventTime": moment, "AN": "79161234567"}
    return {**body, "UN": "74951234567", "EventType": event_type, "ServiceType": 1, **fields}


def answer(call_id: int, action: int = 0, param: str = "") -> dict[str, Any]:
    return {"CallID": call_id, "EventType": action, "Param": param}


def test_a_whole_call(server: Server) -> None:
    call_id = 5550001
    with server.client() as http, server.client(auth=("ops", ADMIN_PASSWORD)) as admin:

        def post(event_type: int, second: int, **fields: Any) -> dict[str, Any]:
            response = http.post("/CallEvent", json=event(call_id, event_type, second, **fields))
            assert response.status_code == 200
            result: dict[str, Any] = response.json()
            return result

        def poll() -> dict[str, Any]:
            result: dict[str, Any] = http.get(f"/CallEvent/{call_id}").json()
            return result

        assert post(1, 0) == answer(call_id, 3, "welcome")  # CallAccepted
        assert post(2, 1) == answer(call_id)  # CallAnswered
        assert [post(4, 2 + i, DTMF=d) for i, d in enumerate("2007")][-1] == answer(call_id, 2, "2007")
        assert post(10, 6, EXT1="2007") == answer(call_id)  # GoToShortTransfer
        assert post(11, 20, EXT1="2007", Result="1289") == answer(call_id)  # ShortTransfer: busy
        assert post(16, 21) == answer(call_id, 1, "74959990000")  # PrepareToConnect: failover
        assert post(9, 30, DN1="74959990000", Result="1280") == answer(call_id)  # Transfer: connected
        assert poll() == answer(call_id, 5, "PBX4951001")  # the poll rule, once
        assert poll() == answer(call_id)
        pushed = admin.post(f"/admin/calls/{call_id}/commands", json={"action": "BackFromConsultCall"})
        assert pushed.status_code == 201
        assert poll() == answer(call_id, 12)  # the pushed command, once
        assert poll() == answer(call_id)
        assert post(17, 50) == answer(call_id, 6, "rating")  # BDropped
        assert post(15, 59, Result="2") == answer(call_id)  # EndCall
        assert admin.post(f"/admin/calls/{call_id}/commands", json={"action": "Hangup"}).status_code == 409

        detail = admin.get(f"/admin/calls/{call_id}").json()
        assert detail["state"] == "ended"
        assert [d["rule"] or f"command {d['command']}" for d in detail["decisions"]] == [
            "welcome",
            "extension",
            "failover",
            "supervisor",
            "command 1",
            "rating",
        ]
    [ended] = server.logged("call_ended", call_id=call_id)
    assert ended["duration_seconds"] == 59.0
    assert ended["talk_seconds"] == 29.0
    assert ended["ended_by"] == "2"
    assert [t.get("Result") for t in ended["transfers"]] == [None, "1289", "1280"]
