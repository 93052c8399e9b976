"""Notifications through real `ascrm serve` processes: missed, answered and dropped calls reaching a
stand-in receiver with the right bodies and a signature that verifies; a receiver that goes away; a
service killed with SIGKILL in the middle of a burst (the SQLite outbox, and two replicas on Redis, one
killed); the dead letters in the admin API and their retry."""

from __future__ import annotations

import hashlib
import hmac
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.calls import LeanClient, crmd
from tests.support.receiver_thread import ThreadedReceiver as Receiver
from tests.support.redis import RedisServer, needs_redis
from tests.support.server import Server, ServerFactory, platform_config
from tests.support.waiting import poll_until

ADMIN = ("ops", "notify-pw")
SECRET = "a-shared-secret-of-the-crm"
AN, UN = "79161234567", "74951234567"
FAST = {"backoff_initial_ms": 50, "backoff_max_ms": 300, "attempt_timeout_ms": 1000}


def rules_text(url: str) -> str:
    return f"""
targets:
  crm:
    url: "{url}"
    secret: "${{TEST_NOTIFY_SECRET}}"
notify:
  - id: missed
    on: missed
    target: crm
    body: {{phone: "{{caller}}", line: "{{called}}", waited: "{{wait_seconds}}", by: "{{ended_by}}"}}
  - id: log
    on: [connected, ended]
    target: crm
rules:
  - id: menu
    on: CallAccepted
    do: {{TransferEXT: "1001"}}
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    stand_in = Receiver()
    yield stand_in
    stand_in.close()


def start(serve: ServerFactory, folder: Path, receiver: Receiver, **settings: Any) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(rules_text(receiver.url))
    state = settings.pop("state", {"data_dir": str(folder / "data")})
    config = platform_config(
        rules=str(folder / "rules.yaml"), reload={"watch": False}, state=state, notify={**FAST, **settings}
    )
    return serve(config, folder=folder, admin=ADMIN, env={"TEST_NOTIFY_SECRET": SECRET})


def post(server: Server, call_id: int, code: int, seconds: float = 0, **fields: Any) -> None:
    with LeanClient(server) as client:
        reply = client.post("/CallEvent", crmd(call_id, code, seconds, AN=AN, UN=UN, **fields))
        assert reply.status_code == 200, reply.text


def missed_call(server: Server, call_id: int) -> None:
    post(server, call_id, 1)
    post(server, call_id, 15, 20, Result="1")


def delivered_keys(receiver: Receiver, count: int, timeout: float = 20) -> Counter[str]:
    """The keys delivered (answered 2xx) and how often, once count distinct ones have been (or at the timeout)."""
    poll_until(lambda: len(receiver.delivered()) >= count or None, timeout=timeout)
    return receiver.delivered()


def verify(headers: dict[str, str], body: bytes) -> bool:
    signed = headers["X-Ascrm-Timestamp"].encode() + b"." + body
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Ascrm-Signature"])


def test_calls_reach_the_receiver_with_their_bodies_signed(
    serve: ServerFactory, tmp_path: Path, receiver: Receiver
) -> None:
    server = start(serve, tmp_path / "one", receiver)
    missed_call(server, 101)  # hung up in the menu
    post(server, 102, 1)  # answered by 1001 after 12 s, talked 65 s
    post(server, 102, 11, 12, EXT1="1001", Result="1280")
    post(server, 102, 15, 77, Result="2")
    post(server, 103, 1)  # dropped while the operator's phone rang
    post(server, 103, 15, 6, Result="3")
    keys = delivered_keys(receiver, 6)
    assert keys == Counter({
        "101:missed:missed": 1, "101:ended:log": 1, "102:connected:log": 1, "102:ended:log": 1,
        "103:missed:missed": 1, "103:ended:log": 1,
    })  # fmt: skip
    sent = {item.key: item for item in receiver.seen()}
    assert all(verify(item.headers, item.body) for item in sent.values())
    assert all(item.headers["Content-Type"].startswith("application/json") for item in sent.values())
    assert orjson.loads(sent["101:missed:missed"].body) == {"phone": AN, "line": UN, "waited": 20, "by": "caller"}
    assert orjson.loads(sent["103:missed:missed"].body)["by"] == "caller_ringing"
    answered = orjson.loads(sent["102:ended:log"].body)
    assert (answered["answered_by"], answered["talk_seconds"], answered["wait_seconds"]) == ("1001", 65, 12)
    assert (answered["missed"], answered["ended_by"], answered["rules"]) == (False, "called", ["menu"])
    tampered = sent["102:ended:log"].body.replace(b'"talk_seconds":65', b'"talk_seconds":5')
    assert not verify(sent["102:ended:log"].headers, tampered)


def test_a_repeated_end_makes_one_notification(serve: ServerFactory, tmp_path: Path, receiver: Receiver) -> None:
    server = start(serve, tmp_path / "one", receiver)
    missed_call(server, 201)
    post(server, 201, 15, 21, Result="1")  # the platform sent EndCall again
    delivered_keys(receiver, 2)
    time.sleep(0.5)  # a second delivery would come within the backoff's first steps
    assert receiver.delivered() == {"201:missed:missed": 1, "201:ended:log": 1}


def test_a_receiver_that_goes_away_gets_everything_once_it_is_back(
    serve: ServerFactory, tmp_path: Path, receiver: Receiver
) -> None:
    server = start(serve, tmp_path / "one", receiver)
    receiver.go_away()
    for call_id in range(300, 320):
        missed_call(server, call_id)
    time.sleep(1.0)  # several attempts refused
    assert receiver.delivered() == {}
    receiver.come_back()
    keys = delivered_keys(receiver, 40)
    assert len(keys) == 40
    assert set(keys.values()) == {1}


def test_a_refused_notification_is_a_dead_letter_the_admin_retries(
    serve: ServerFactory, tmp_path: Path, receiver: Receiver
) -> None:
    server = start(serve, tmp_path / "one", receiver)
    receiver.set(mode="status", status=404)
    missed_call(server, 401)
    with server.client(auth=ADMIN) as admin:

        def failed() -> list[dict[str, Any]] | None:
            listed = admin.get("/admin/notifications", params={"state": "failed"}).json()["notifications"]
            return listed if len(listed) == 2 else None

        letters = poll_until(failed, timeout=10)
        assert letters is not None
        assert {(item["key"], item["last_error"]) for item in letters} == {
            ("401:missed:missed", "HTTP 404"),
            ("401:ended:log", "HTTP 404"),
        }
        assert admin.get("/admin/notifications", params={"state": "stuck"}).status_code == 400
        assert admin.post("/admin/notifications/nosuch:key/retry").status_code == 404
        receiver.set(mode="ok")
        reply = admin.post("/admin/notifications/401:missed:missed/retry")
        assert reply.status_code == 200, reply.text
        assert delivered_keys(receiver, 1) == {"401:missed:missed": 1}
        remaining = admin.get("/admin/notifications", params={"state": "failed"}).json()["notifications"]
        assert [item["key"] for item in remaining] == ["401:ended:log"]


def test_sigkill_in_a_burst_loses_nothing_stored(serve: ServerFactory, tmp_path: Path, receiver: Receiver) -> None:
    folder = tmp_path / "one"
    server = start(serve, folder, receiver)
    receiver.set(mode="hang")  # every delivery in flight when the service dies: none answered 2xx
    for call_id in range(500, 540):
        missed_call(server, call_id)  # each EndCall answered 200: its notifications were stored first
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    receiver.set(mode="ok")
    start(serve, folder, receiver)  # the same data_dir: the same outbox file
    keys = delivered_keys(receiver, 80)
    assert len(keys) == 80
    assert set(keys.values()) == {1}


@needs_redis
def test_a_killed_replicas_notifications_are_delivered_by_the_other(
    serve: ServerFactory, tmp_path: Path, receiver: Receiver, redis_server: RedisServer
) -> None:
    state = {"backend": "redis", "redis_url": redis_server.url, "key_prefix": f"n{uuid.uuid4().hex[:8]}:"}
    doomed = start(serve, tmp_path / "a", receiver, state=state, claim_after_ms=1000)
    survivor = start(serve, tmp_path / "b", receiver, state=state, claim_after_ms=1000)
    receiver.set(mode="hang")
    for call_id in range(600, 640):
        missed_call(doomed if call_id % 2 else survivor, call_id)
    poll_until(lambda: len(receiver.seen()) > 0 or None, timeout=10)  # deliveries under way, hung
    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait(10)
    receiver.set(mode="ok")
    keys = delivered_keys(receiver, 80, timeout=30)
    assert len(keys) == 80
    assert set(keys.values()) == {1}


def test_notification_metrics(serve: ServerFactory, tmp_path: Path, receiver: Receiver) -> None:
    server = start(serve, tmp_path / "one", receiver)
    missed_call(server, 701)
    delivered_keys(receiver, 2)
    with server.client(auth=ADMIN) as admin:

        def counted() -> str | None:
            text = admin.get("/metrics").text
            return text if 'ascrm_notifications_total{outcome="delivered",target="crm"} 2.0' in text else None

        text = poll_until(counted, timeout=10)
    assert text is not None
    assert 'ascrm_notifications_total{outcome="queued",target="crm"} 2.0' in text
    assert 'ascrm_notification_delivery_seconds_count{target="crm"} 2.0' in text
