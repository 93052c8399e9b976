"""Pools through real `ascrm serve` processes over HTTP: round robin exact on one process and over three
replicas on one redis-server (calls spread at random), a busy result resting a member for every call on
every replica, and GET /admin/pools showing it."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from tests.support.calls import LeanClient, action_of, crmd, in_threads
from tests.support.redis import RedisServer, needs_redis
from tests.support.server import Server, ServerFactory, platform_config

ADMIN = ("ops", "pools-pw")
CALLS = 3000
RULES = """
pools:
  sales: {strategy: round_robin, members: ["1001", "1002", "1003"], rest_after_busy: 30s}
rules:
  - id: sales
    on: CallAccepted
    do: {TransferEXT: "{pool.sales}"}
  - id: sales-next
    on: ShortTransfer
    if: {last_transfer_result: [busy, no_answer]}
    do: {TransferEXT: "{pool.sales}"}
  - id: duty
    on: [CallAccepted, ShortTransfer]
    do: {TransferDN: "74950000000"}
"""


def rules_file(folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(RULES)
    return path


def offer_calls(servers: list[Server], call_ids: list[int], seed: int) -> list[tuple[str, str] | None]:
    """CallAccepted for each call, at a replica chosen at random, from 12 threads: what each was answered."""
    chooser = random.Random(seed)
    tasks = [(call_id, chooser.randrange(len(servers))) for call_id in call_ids]
    local = threading.local()

    def send(worker: int, task: tuple[int, int]) -> tuple[str, str] | None:
        if not hasattr(local, "clients"):
            local.clients = [LeanClient(server) for server in servers]
        call_id, replica = task
        reply = local.clients[replica].post("/CallEvent", crmd(call_id, 1, UN="74951234567", AN="79161234567"))
        assert reply.status_code == 200, reply.text
        return action_of(orjson.loads(reply.content))

    return in_threads(tasks, 12, send)


def transfer_result(server: Server, call_id: int, ext: str, result: str) -> tuple[str, str] | None:
    with LeanClient(server) as client:
        reply = client.post("/CallEvent", crmd(call_id, 11, 5, EXT1=ext, Result=result))
        assert reply.status_code == 200, reply.text
        return action_of(orjson.loads(reply.content))


def admin_pools(server: Server) -> dict[str, Any]:
    with server.client(auth=ADMIN) as client:
        reply = client.get("/admin/pools")
        assert reply.status_code == 200, reply.text
        pools: dict[str, Any] = reply.json()
        return {member["to"]: member for member in pools["pools"][0]["members"]}


def test_round_robin_is_exact_on_one_process(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(platform_config(rules=str(rules_file(tmp_path)), reload={"watch": False}), admin=ADMIN)
    answers = offer_calls([server], list(range(1, CALLS + 1)), seed=1)
    assert Counter(answers) == {("TransferEXT", member): 1000 for member in ("1001", "1002", "1003")}
    members = admin_pools(server)
    assert {to: member["offered"] for to, member in members.items()} == {"1001": 1000, "1002": 1000, "1003": 1000}
    assert {member["state"] for member in members.values()} == {"available"}
    with server.client(auth=("nobody", "wrong")) as client:
        assert client.get("/admin/pools").status_code == 401


@needs_redis
def test_round_robin_is_exact_and_rests_are_shared_over_three_replicas(
    serve: ServerFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    state = {"backend": "redis", "redis_url": redis_server.url, "key_prefix": f"pools-{uuid.uuid4().hex[:8]}:"}
    config = platform_config(rules=str(rules_file(tmp_path)), reload={"watch": False}, state=state)
    servers = [serve(config, admin=ADMIN) for _ in range(3)]
    answers = offer_calls(servers, list(range(1, CALLS + 1)), seed=2)
    assert Counter(answers) == {("TransferEXT", member): 1000 for member in ("1001", "1002", "1003")}
    for server in servers:
        offered = {to: member["offered"] for to, member in admin_pools(server).items()}
        assert offered == {"1001": 1000, "1002": 1000, "1003": 1000}
    assert not [entry for server in servers for entry in server.logs() if entry.get("event") == "pool_pick_local"]

    # a call offered 1001 (the next in turn) meets it busy on replica 0: it is offered 1002
    first = offer_calls([servers[0]], [10_001], seed=3)[0]
    assert first == ("TransferEXT", "1001")
    assert transfer_result(servers[0], 10_001, "1001", "1289") == ("TransferEXT", "1002")
    # every replica now skips 1001 for every call, and shows it resting
    later = offer_calls(servers, list(range(10_002, 10_032)), seed=4)
    assert ("TransferEXT", "1001") not in later
    assert Counter(later) == {("TransferEXT", "1002"): 15, ("TransferEXT", "1003"): 15}
    for server in servers:
        assert admin_pools(server)["1001"]["state"] == "resting"
    # 1002 does not answer either: the call is offered the third, then the next rule decides
    assert transfer_result(servers[1], 10_001, "1002", "1284") == ("TransferEXT", "1003")
    assert transfer_result(servers[2], 10_001, "1003", "1289") == ("TransferDN", "74950000000")
    decisions = servers[2].logged("event_answered", rule="duty")
    assert decisions
    assert decisions[-1].get("lookups") == {"pool.sales": "none left"}
