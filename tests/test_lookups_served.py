"""Look-ups through `ascrm serve` over HTTP, against stand-in CRMs on loopback: the CRM's answer routes the
call, is cached and coalesced, and a CRM that fails in any way still gets the platform its answer within
the budget, decided by the next rule. With two replicas on one Redis the CRM is asked once per cache
period, not once per replica."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from tests.support.crm_standins import (
    AMO_TOKEN,
    BITRIX_SECRET,
    AmoStandIn,
    BitrixEntity,
    BitrixStandIn,
    BitrixUser,
    StandIn,
)
from tests.support.metrics import scrape, value
from tests.support.redis import RedisServer, needs_redis
from tests.support.server import Server, ServerFactory, platform_config

BUDGET_MS = 500
TRANSFER_EXT, PLAY_PROMPT = 2, 3
S = TypeVar("S", bound=StandIn)


class OwnerStandIn(StandIn):
    """A CRM answering GET /owner?phone=… with {"extension": …}, or 404 for a number it does not know."""

    def __init__(self, owners: dict[str, str]) -> None:
        super().__init__()
        self.owners = owners

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/owner", self._owner)]

    async def _owner(self, request: web.Request) -> web.Response:
        owner = self.owners.get(request.query.get("phone", ""))
        if owner is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"extension": owner})


@contextmanager
def running(standin: S) -> Iterator[S]:
    """standin served from a thread of its own (the servers under test are other processes)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(standin.__aenter__())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield standin
    finally:
        asyncio.run_coroutine_threadsafe(standin.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def rules_for(folder: Path, source: str) -> Path:
    path = folder / "rules.yaml"
    path.write_text(
        f"""
sources:
  owner:
{source}
rules:
  - id: personal-manager
    on: CallAccepted
    if: {{owner: {{regex: "^\\\\d{{4}}$"}}}}
    do: {{TransferEXT: "{{owner}}"}}
  - id: menu
    on: CallAccepted
    do: {{PlayPrompt: menu}}
"""
    )
    return path


def generic(base: str, timeout: str = "300ms") -> str:
    return f"""    url: "{base}/owner?phone={{AN}}"
    value: extension
    timeout: {timeout}
    cache: {{ttl: 10m, miss_ttl: 1m}}"""


def accepted(call_id: int, an: str) -> dict[str, Any]:
    return {"CallID": call_id, "EventType": 1, "ServiceType": 1, "AN": an, "UN": "74951234567"}


def post(server: Server, call_id: int, an: str) -> tuple[dict[str, Any], float]:
    with server.client() as http:
        started = time.monotonic()
        response = http.post("/CallEvent", json=accepted(call_id, an))
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer, elapsed


def serving(
    serve: ServerFactory,
    folder: Path,
    source: str,
    env: dict[str, str] | None = None,
    budget_ms: int = BUDGET_MS,
    **extra: Any,
) -> Server:
    config = platform_config(rules=str(rules_for(folder, source)), lookups={"budget_ms": budget_ms}, **extra)
    return serve(config, env=env)


def test_the_crm_routes_a_known_caller_and_its_answer_is_cached(serve: ServerFactory, tmp_path: Path) -> None:
    with running(OwnerStandIn({"79161234567": "1021"})) as crm:
        server = serving(serve, tmp_path, generic(crm.base))
        answer, _ = post(server, 1, "79161234567")
        assert (answer["EventType"], answer["Param"]) == (TRANSFER_EXT, "1021")
        again, _ = post(server, 2, "79161234567")
        assert (again["EventType"], again["Param"]) == (TRANSFER_EXT, "1021")
        unknown, _ = post(server, 3, "79030000000")
        assert unknown["EventType"] == PLAY_PROMPT  # 404: nobody, the next rule
        post(server, 4, "79030000000")
        assert crm.requests == 2  # one per number: the hit and the miss were cached
    server.logged("event_answered", call_id=4)  # the decision log's lines are written just after the answers
    lookups = [line.get("lookups") for line in server.logs() if line.get("event") == "event_answered"]
    # a cached answer is a hit, whether it found someone or nobody
    assert lookups == [{"owner": "fetched"}, {"owner": "hit"}, {"owner": "miss"}, {"owner": "hit"}]


@pytest.mark.parametrize("misbehaviour", ["slow", "500", "429", "limit", "hang", "garbage", "huge"])
def test_a_crm_in_trouble_still_gets_an_answer_in_time(serve: ServerFactory, tmp_path: Path, misbehaviour: str) -> None:
    with running(OwnerStandIn({"79161234567": "1021"})) as crm:
        crm.misbehave(misbehaviour, delay=3.0, size=1 << 20)
        server = serving(serve, tmp_path, generic(crm.base))
        answer, elapsed = post(server, 1, "79161234567")
        assert answer["EventType"] == PLAY_PROMPT  # the look-up failed: the next rule decides
        assert elapsed < (BUDGET_MS + 50) / 1000, elapsed
        assert crm.requests == 1


def test_simultaneous_calls_from_one_number_ask_the_crm_once(serve: ServerFactory, tmp_path: Path) -> None:
    with running(OwnerStandIn({"79161234567": "1021"})) as crm:
        crm.misbehave("slow", delay=0.5)  # answers, slowly: the 50 calls arrive while it is asked
        # time enough for a stand-in that shares this process with 50 clients: the test counts requests
        server = serving(serve, tmp_path, generic(crm.base, timeout="5s"), budget_ms=8000)
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda n: post(server, 100 + n, "79161234567")[0], range(50)))
        assert {(answer["EventType"], answer["Param"]) for answer in answers} == {(TRANSFER_EXT, "1021")}
        assert crm.requests == 1


def test_a_bitrix24_portal_names_the_responsible_employee(serve: ServerFactory, tmp_path: Path) -> None:
    client = BitrixEntity("CONTACT", 651, "Ivan Petrov", ("+7 (912) 345-67-89",), BitrixUser(17, "1017"))
    with running(BitrixStandIn(entities=(client,))) as crm:
        source = "    kind: bitrix24\n    webhook: ${TEST_WEBHOOK}"
        server = serving(serve, tmp_path, source, env={"TEST_WEBHOOK": crm.webhook})
        answer, _ = post(server, 1, "79123456789")  # written +7 (912) 345-67-89 in the CRM
        assert (answer["EventType"], answer["Param"]) == (TRANSFER_EXT, "1017")
        assert crm.requests == 1
    assert BITRIX_SECRET not in server.log_text()  # the webhook's secret is never logged


@pytest.mark.parametrize(
    ("caller", "answer"),
    [
        ("79123456789", (TRANSFER_EXT, "1501")),  # Ivan Petrov's: responsible user 5001, mapped to 1501
        ("79161234567", (PLAY_PROMPT, "menu")),  # only full-text hits (a note, a name): nobody
        ("79990000000", (PLAY_PROMPT, "menu")),  # unknown: amoCRM answers 204
    ],
    ids=["contact", "full-text-only", "unknown"],
)
def test_an_amocrm_account_names_the_responsible_user(
    serve: ServerFactory, tmp_path: Path, caller: str, answer: tuple[int, str]
) -> None:
    with running(AmoStandIn()) as crm:
        source = f"    kind: amocrm\n    url: {crm.base}\n    token: ${{TEST_TOKEN}}"
        path = rules_for(tmp_path, source)
        text = path.read_text().replace('"{owner}"', '"{extensions[owner]}"').replace("{4}", "+")
        path.write_text('maps:\n  extensions: {"5001": "1501"}\n' + text)
        config = platform_config(rules=str(path), lookups={"budget_ms": BUDGET_MS})
        server = serve(config, env={"TEST_TOKEN": AMO_TOKEN})
        got, _ = post(server, 1, caller)
        assert (got["EventType"], got["Param"]) == answer
        assert crm.requests == 1


@needs_redis
def test_two_replicas_on_one_redis_ask_the_crm_once(
    serve: ServerFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    with running(OwnerStandIn({"79161234567": "1021"})) as crm:
        state = {"backend": "redis", "redis_url": redis_server.url, "key_prefix": f"lookups-{tmp_path.name}:"}
        first = serving(serve, tmp_path, generic(crm.base), state=state)
        second = serve(platform_config(rules=str(tmp_path / "rules.yaml"), state=state))
        assert post(first, 1, "79161234567")[0]["Param"] == "1021"
        assert post(second, 2, "79161234567")[0]["Param"] == "1021"
        assert crm.requests == 1


def test_a_failing_crm_opens_its_circuit_breaker_shown_in_metrics_and_the_admin_api(
    serve: ServerFactory, tmp_path: Path
) -> None:
    admin = ("ops", "lookups-admin-pw")
    with running(OwnerStandIn({})) as crm:
        crm.misbehave("500")
        config = platform_config(rules=str(rules_for(tmp_path, generic(crm.base))), lookups={"budget_ms": BUDGET_MS})
        server = serve(config, admin=admin)
        for call_id in range(1, 8):  # distinct callers: nothing cached
            assert post(server, call_id, f"7916000000{call_id}")[0]["EventType"] == PLAY_PROMPT
        assert crm.requests == 5  # the breaker's default: five failures in a row, then it is skipped
        with server.client(auth=admin) as http:
            rules = http.get("/admin/rules").json()
            samples = scrape(http)
    [source] = rules["sources"]
    assert source == {
        "name": "owner",
        "kind": "http",
        "timeout_ms": 300.0,
        "ttl_s": 600.0,
        "miss_ttl_s": 60.0,
        "stale_s": 0.0,
        "rate_per_s": None,
        "burst": 1,
        "breaker": "open",
    }
    assert crm.base not in str(rules)  # no URL
    assert value(samples, "ascrm_lookup_total", source="owner", outcome="error") == 5
    assert value(samples, "ascrm_lookup_total", source="owner", outcome="circuit_open") == 2
    assert value(samples, "ascrm_lookup_circuit_open", source="owner") == 1
    assert value(samples, "ascrm_lookup_seconds_count", source="owner") == 7
