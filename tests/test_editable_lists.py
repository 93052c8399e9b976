"""Editable lists on running `ascrm serve` processes: edits over the admin API, seen by the rules at once,
by another replica on the same Redis within 1 s, and kept across reloads and restarts."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.redis import RedisServer, needs_redis
from tests.support.server import Server, ServerFactory, platform_config
from tests.support.waiting import wait_until

ADMIN = ("ops", "lists-pw")
RULES = """
normalize: ru
lists:
  blocked: {editable: true, file: blocked.txt}
  fixed: ["79990000000"]
rules:
  - id: block
    on: CallAccepted
    if: {AN: {in: blocked}}
    do: {TransferEXT: "6666"}
"""
SEED = "79160000001\n"
_call_ids = itertools.count(77_000_001)


def rules_folder(folder: Path) -> Path:
    rules = folder / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "rules.yaml").write_text(RULES)
    (rules / "blocked.txt").write_text(SEED)
    return rules


def config(rules: Path, **state: Any) -> dict[str, Any]:
    return platform_config(rules=str(rules), reload={"watch": False}, state=state)


def blocked(server: Server, number: str) -> bool:
    """Whether the rules answer a call from number as a blocked one."""
    event = {"CallID": next(_call_ids), "EventType": 1, "ServiceType": 1, "AN": number, "UN": "74950000001"}
    with server.client() as platform:
        response = platform.post("/CallEvent", json=event)
    assert response.status_code == 200, response.text
    return bool(response.json()["Param"] == "6666")


def admin(server: Server) -> httpx.Client:
    return server.client(auth=ADMIN)


@pytest.fixture
def memory_server(serve: ServerFactory, tmp_path: Path) -> tuple[Server, Path]:
    rules = rules_folder(tmp_path)
    data = tmp_path / "data"
    return serve(config(rules, data_dir=str(data)), admin=ADMIN), data


def test_put_is_served_at_once_and_logged(memory_server: tuple[Server, Path]) -> None:
    server, data = memory_server
    assert blocked(server, "79160000001")  # the seed
    assert not blocked(server, "79161112233")
    response = admin(server).put("/admin/lists/blocked/+7 (916) 111-22-33")
    assert response.status_code == 200, response.text
    assert response.json() == {"list": "blocked", "entry": "79161112233", "added": True, "total": 2}
    assert blocked(server, "89161112233")
    assert "79161112233\n" in (data / "lists" / "blocked.txt").read_text()
    [line] = server.logged("list_changed", user="ops", action="put")
    assert line["list"] == "blocked"
    assert line["entries"] == 1
    assert "79161112233" not in str(line)
    assert admin(server).delete("/admin/lists/blocked/79161112233").json()["removed"] is True
    assert not blocked(server, "79161112233")


def test_prefix_paging_and_bulk(memory_server: tuple[Server, Path]) -> None:
    server, _ = memory_server
    client = admin(server)
    assert client.put("/admin/lists/blocked/7495*").json()["entry"] == "7495*"
    assert blocked(server, "74951234567")
    body = {"entries": [f"7900000{n:04d}" for n in range(300)] + ["7900000-0000"]}
    answer = client.post("/admin/lists/blocked", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"list": "blocked", "added": 300, "total": 302}
    page = client.get("/admin/lists/blocked", params={"offset": 1, "limit": 2}).json()
    assert page == {"list": "blocked", "entries": ["79000000000", "79000000001"], "total": 302, "offset": 1, "limit": 2}


def test_restart_and_reload_keep_edits(serve: ServerFactory, tmp_path: Path) -> None:
    rules = rules_folder(tmp_path)
    settings = config(rules, data_dir=str(tmp_path / "data"))
    first = serve(settings, admin=ADMIN)
    assert admin(first).put("/admin/lists/blocked/79165550000").status_code == 200
    assert admin(first).delete("/admin/lists/blocked/79160000001").status_code == 200
    (rules / "rules.yaml").write_text(RULES + "# reworded\n")  # a new revision, same list
    assert admin(first).post("/admin/reload").json()["status"] == "reloaded"
    assert blocked(first, "79165550000")
    assert not blocked(first, "79160000001")
    first.stop()
    second = serve(settings, admin=ADMIN)
    assert blocked(second, "79165550000")
    assert not blocked(second, "79160000001")  # the seed seeds a new list only


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("PUT", "/admin/lists/nosuch/79161234567", None, 404, "no list 'nosuch'"),
        ("GET", "/admin/lists/nosuch", None, 404, "no list"),
        ("PUT", "/admin/lists/fixed/79161234567", None, 409, "not editable"),
        ("POST", "/admin/lists/fixed", {"entries": ["1"]}, 409, "not editable"),
        ("PUT", "/admin/lists/blocked/79a61234567", None, 422, "'79a61234567': not a number"),
        ("PUT", "/admin/lists/blocked/79*1", None, 422, "'*' inside"),
        ("PUT", "/admin/lists/blocked/*", None, 422, "every number"),
        ("PUT", "/admin/lists/blocked/" + "7" * 33, None, 422, "longer than 32"),
        ("POST", "/admin/lists/blocked", {"entries": ["79161234567", "x"]}, 422, "entries[1]: entry 'x'"),
        ("POST", "/admin/lists/blocked", {"entries": "79161234567"}, 422, "entries:"),
        ("POST", "/admin/lists/blocked", {"more": []}, 422, "unknown key"),
        ("POST", "/admin/lists/blocked", {"entries": ["7"] * 10_001}, 422, "at most 10000"),
        ("POST", "/admin/lists/blocked", b"{nope", 400, "not valid JSON"),
        ("GET", "/admin/lists/blocked?limit=-1", None, 400, "limit"),
    ],
)
def test_refusals(
    memory_server: tuple[Server, Path], *, method: str, path: str, body: Any, status: int, says: str
) -> None:
    server, _ = memory_server
    content = body if isinstance(body, bytes) else None
    json_body = body if not isinstance(body, bytes) else None
    response = admin(server).request(method, path, json=json_body, content=content)
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert says in response.json()["message"]
    assert admin(server).get("/admin/lists/blocked").json()["total"] == 1  # nothing changed


def test_bounds(serve: ServerFactory, tmp_path: Path) -> None:
    """A list at state.max_list_entries takes no more; a body past limits.max_body_bytes is refused whole."""
    rules = rules_folder(tmp_path)
    settings = config(rules, max_list_entries=3)
    settings["limits"] = {"max_body_bytes": 4096}
    server = serve(settings, admin=ADMIN)
    client = admin(server)
    assert client.post("/admin/lists/blocked", json={"entries": ["79160000002", "79160000003"]}).status_code == 200
    full = client.put("/admin/lists/blocked/79160000004")
    assert full.status_code == 422
    assert "state.max_list_entries" in full.json()["message"]
    assert client.post("/admin/lists/blocked", json={"entries": ["79160000005", "79160000006"]}).status_code == 422
    huge = client.post("/admin/lists/blocked", json={"entries": ["79160000007"] * 2000})
    assert huge.status_code == 413
    assert client.get("/admin/lists/blocked").json()["total"] == 3
    assert client.put("/admin/lists/blocked/79160000001").json()["added"] is False  # already there: not refused


@needs_redis
def test_two_replicas_on_one_redis(serve: ServerFactory, redis_server: RedisServer, tmp_path: Path) -> None:
    rules = rules_folder(tmp_path)
    settings = config(rules, backend="redis", redis_url=redis_server.url, key_prefix=f"lists-{uuid.uuid4().hex[:8]}:")
    one, two = serve(settings, admin=ADMIN), serve(settings, admin=ADMIN)
    assert blocked(two, "79160000001")  # seeded once, by whichever came first
    started = time.monotonic()
    assert admin(one).put("/admin/lists/blocked/79167770000").status_code == 200
    wait_until(lambda: blocked(two, "79167770000"), "the other replica to serve the PUT", timeout=1)
    seen_after = time.monotonic() - started
    assert seen_after < 1
    assert admin(two).delete("/admin/lists/blocked/79160000001").status_code == 200
    wait_until(lambda: not blocked(one, "79160000001"), "the other replica to serve the DELETE", timeout=1)
    one.stop()
    two.stop()
    three = serve(settings, admin=ADMIN)  # a restart: the edits are in Redis, the seed is not used again
    assert blocked(three, "79167770000")
    assert not blocked(three, "79160000001")
    assert admin(three).get("/admin/lists/blocked").json()["entries"] == ["79167770000"]


@needs_redis
def test_redis_away_keeps_the_last_contents(serve: ServerFactory, own_redis: RedisServer, tmp_path: Path) -> None:
    """While Redis is down the replica serves what it read last and refuses edits 503; then it catches up."""
    rules = rules_folder(tmp_path)
    settings = config(rules, backend="redis", redis_url=own_redis.url, key_prefix="away:", timeout_ms=200)
    server = serve(settings, admin=ADMIN)
    assert admin(server).put("/admin/lists/blocked/79168880000").status_code == 200
    own_redis.stop()
    assert blocked(server, "79168880000")
    refused = admin(server).put("/admin/lists/blocked/79168880001")
    assert refused.status_code == 503
    assert refused.json()["error"]
    server.logged("lists_sync_failed")
    own_redis.start()
    with redis.Redis.from_url(own_redis.url) as direct:  # an edit made elsewhere while this one looked away
        direct.sadd("away:list:{blocked}", "79168880002")
        direct.incr("away:list:{blocked}:version")
    wait_until(lambda: blocked(server, "79168880002"), "the replica to read the list again", timeout=3)
    assert len(server.logged("lists_sync_failed")) == 1
