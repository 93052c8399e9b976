"""What the Redis call store guarantees, shown through real `ascrm serve` replicas on one redis-server.

Black-box: only the platform's endpoints and the admin API are used, never the store's code, so the
tests hold for any implementation of the store.

- No event and no decision is lost or doubled when many clients send the events of 1,000 calls to
  two or three replicas at random, events of one call on different replicas, some at the same time.
- A pushed command is delivered by exactly one of 50 concurrent polls spread over the replicas, and
  a once-only poll rule fires once.
- While Redis is hung, killed, or has its scripts and functions flushed, every request is still
  answered 200 in time, and calls are stored again within 2 s of Redis answering, with no restart.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import redis

from tests.support.calls import (
    CallStream,
    LeanClient,
    StreamedCall,
    action_of,
    answer_problem,
    call_view,
    crmd,
    decision_counts,
    event_counts,
    in_threads,
)
from tests.support.redis import RedisServer, needs_redis
from tests.support.server import PASSWORD, USER, Server, ServerFactory, platform_config
from tests.support.waiting import poll_until, wait_until

pytestmark = needs_redis

ADMIN = ("ops", "replicas-pw")
EVENT_UN = "74950000001"  # the calls whose events the rules answer
POLL_UN = "74950000002"  # the calls the poll rule answers
QUIET_UN = "74950000003"  # calls no rule answers
RULES = f"""
rules:
  - {{id: greet, on: CallAccepted, if: {{UN: "{EVENT_UN}"}}, do: {{PlayPrompt: welcome}}}}
  - {{id: menu-1, on: DTMF, if: {{DTMF: "1"}}, do: {{TransferDN: "74951110000"}}}}
  - {{id: poll-once, on: poll, if: {{UN: "{POLL_UN}"}}, do: {{TransferPBX: PBX4951001}}}}
"""
# A call of the load test: each event, its fields, and what the rules answer it (they read the event
# alone, so the answer does not depend on the order the events arrive in): (action, param, rule).
CALL = [
    (1, {"AN": "79161234567", "UN": EVENT_UN}, ("PlayPrompt", "welcome", "greet")),  # CallAccepted
    (4, {"DTMF": "1"}, ("TransferDN", "74951110000", "menu-1")),
    (4, {"DTMF": "2"}, None),
    (8, {"DN1": "74951110000"}, None),  # GoToTransfer
    (15, {"Result": "1"}, None),  # EndCall
]
TRIGGERS = {1: "CallAccepted", 4: "DTMF", 8: "GoToTransfer", 15: "EndCall"}  # as decisions name them
CALL_EVENTS = Counter({"CallAccepted": 1, "DTMF": 2, "GoToTransfer": 1, "EndCall": 1})
CALLS = 1_000
WORKERS = 24
BURST = 10  # every tenth call's events are sent all at once
_call_ids = itertools.count(41_000_001)
_stream_ids = itertools.count(52_000_001, 100_000)  # the first CallID of each stream of calls


def replica_config(rules: Path, redis_server: RedisServer, prefix: str, **state: Any) -> dict[str, Any]:
    """A replica's config: the module's rules (not watched), call state in Redis under prefix."""
    settings = {
        "backend": "redis",
        "redis_url": redis_server.url,
        "key_prefix": prefix,
        "ended_grace_seconds": 600,  # ended calls stay readable until the counting is done
        **state,
    }
    return platform_config(rules=str(rules), reload={"watch": False}, state=settings)


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replica-rules") / "rules.yaml"
    path.write_text(RULES)
    return path


@pytest.fixture(scope="module")
def replicas(serve_module: ServerFactory, redis_server: RedisServer, rules_file: Path) -> list[Server]:
    """Three `ascrm serve` processes sharing their calls through the module's redis-server."""
    config = replica_config(rules_file, redis_server, f"replicas-{uuid.uuid4().hex[:8]}:")
    return [serve_module(config, admin=ADMIN) for _ in range(3)]


def quiet_logs(servers: list[Server]) -> list[dict[str, Any]]:
    """The store and decision trouble the servers logged (none is expected while Redis is fine)."""
    trouble = ("store_unavailable", "decision_failed", "call_record_unreadable")
    return [entry for server in servers for entry in server.logs() if entry.get("event") in trouble]


class Posted(NamedTuple):
    """One event of the load test as sent: to which replica, when (monotonic), and its answer."""

    call_id: int
    step: int  # its index in CALL
    replica: int
    begun: float
    ended: float
    problem: str | None
    answer: dict[str, Any] | None


def at_once_on_two_replicas(sent: list[Posted]) -> set[int]:
    """The calls two of whose events were in flight at the same time, at two different replicas."""
    by_call: dict[int, list[Posted]] = {}
    for one in sent:
        by_call.setdefault(one.call_id, []).append(one)
    return {
        call_id
        for call_id, events in by_call.items()
        if any(
            a.replica != b.replica and a.begun < b.ended and b.begun < a.ended
            for a, b in itertools.combinations(events, 2)
        )
    }


def spread(call_ids: list[int], replicas: int, chooser: random.Random) -> list[tuple[int, int, int]]:
    """Every event of every call as (call, index in CALL, replica), in the order the senders take them.

    Each event goes to a replica chosen at random, in a random order across calls, so one call's events
    reach different replicas, out of order, some at once; and every BURST-th call's events come one
    after another, so the senders take them together: the same call changed on every replica at once.
    """
    loose = [call_id for n, call_id in enumerate(call_ids) if n % BURST]
    tasks = [(call_id, index, chooser.randrange(replicas)) for call_id in loose for index in range(len(CALL))]
    chooser.shuffle(tasks)
    for call_id in call_ids[::BURST]:
        at = chooser.randrange(len(tasks) + 1)
        tasks[at:at] = [(call_id, index, chooser.randrange(replicas)) for index in range(len(CALL))]
    return tasks


# ----------------------------------------------------------------------------------------------------
# 1,000 calls over two or three replicas: every event and every decision, once


@pytest.mark.parametrize("count", [2, 3])
def test_no_event_or_decision_is_lost_or_doubled_across_replicas(replicas: list[Server], count: int) -> None:
    servers = replicas[:count]
    call_ids = [next(_call_ids) for _ in range(CALLS)]
    tasks = spread(call_ids, count, random.Random(count))
    local = threading.local()
    opened: list[LeanClient] = []

    def clients(auth: tuple[str, str] = (USER, PASSWORD)) -> list[LeanClient]:
        """This thread's clients of the servers, one per server, with these credentials."""
        key = f"clients-{auth[0]}"
        if not hasattr(local, key):
            setattr(local, key, [LeanClient(server, auth) for server in servers])
            opened.extend(getattr(local, key))
        made: list[LeanClient] = getattr(local, key)
        return made

    def send(worker: int, task: tuple[int, int, int]) -> Posted:
        call_id, index, replica = task
        event_type, fields, _ = CALL[index]
        body = crmd(call_id, event_type, index, **fields)
        begun = time.monotonic()
        response = clients()[replica].post("/CallEvent", json=body)
        ended = time.monotonic()
        problem = answer_problem(response, call_id)
        return Posted(call_id, index, replica, begun, ended, problem, None if problem else response.json())

    def read(worker: int, call_id: int) -> tuple[int, dict[str, Any] | None]:
        return call_id, call_view(clients(ADMIN)[call_id % count], call_id)

    try:
        started = time.monotonic()
        sent = in_threads(tasks, WORKERS, send)
        sending = time.monotonic() - started
        # then counted through the admin API, the calls' views read from every replica in turn
        views = dict(in_threads(call_ids, WORKERS, read))
    finally:
        for client in opened:
            client.close()

    wrong = [(one.call_id, CALL[one.step][0], one.problem) for one in sent if one.problem]
    assert wrong == [], f"{len(wrong)} of {len(sent)} answers are not well-formed 200s, e.g. {wrong[:5]}"
    overlapping = at_once_on_two_replicas(sent)
    assert len(overlapping) >= CALLS // BURST // 2, f"only {len(overlapping)} calls had events at two replicas at once"
    answered: dict[int, Counter[tuple[str, str, str, str | None]]] = {call_id: Counter() for call_id in call_ids}
    unexpected = []
    for one in sent:
        assert one.answer is not None
        action, expected = action_of(one.answer), CALL[one.step][2]
        if action != (None if expected is None else expected[:2]):
            unexpected.append((one.call_id, CALL[one.step][0], one.answer))
        elif action is not None and expected is not None:
            answered[one.call_id][(TRIGGERS[CALL[one.step][0]], *action, expected[2])] += 1
    assert unexpected == [], f"{len(unexpected)} answers differ from the rules', e.g. {unexpected[:5]}"

    missing = [call_id for call_id, view in views.items() if view is None]
    events_off = {
        call_id: {"doubled": dict(event_counts(view) - CALL_EVENTS), "lost": dict(CALL_EVENTS - event_counts(view))}
        for call_id, view in views.items()
        if view is not None and event_counts(view) != CALL_EVENTS
    }
    decisions_off = {
        call_id: (dict(decision_counts(view)), dict(answered[call_id]))
        for call_id, view in views.items()
        if view is not None and decision_counts(view) != answered[call_id]
    }
    report = (
        f"{count} replicas, {len(tasks)} events sent in {sending:.1f} s ({len(overlapping)} calls had events "
        f"at two replicas at once): {len(missing)} calls missing "
        f"(e.g. {missing[:3]}), {len(events_off)} with lost or doubled events (e.g. {list(events_off.items())[:3]}), "
        f"{len(decisions_off)} whose decisions differ from the answers (recorded, answered: "
        f"{list(decisions_off.items())[:3]}); logged trouble: {quiet_logs(servers)[:3]}"
    )
    assert (missing, events_off, decisions_off) == ([], {}, {}), report
    assert sum(sum(c.values()) for c in answered.values()) == 2 * CALLS  # two answered actions per call


# ----------------------------------------------------------------------------------------------------
# 50 concurrent polls of one call: a command delivered once, a once-only poll rule fired once

POLLS = 50
NO_ACTION = (0, "")


def connected_call(server: Server, un: str) -> int:
    """A new inbound call, answered by an operator (Transfer connected); its CallID."""
    call_id = next(_call_ids)
    with server.client() as http:
        for event_type, seconds, fields in ((1, 0, {"AN": "79160000000", "UN": un}), (9, 10, {"Result": "1280"})):
            response = http.post("/CallEvent", json=crmd(call_id, event_type, seconds, **fields))
            assert answer_problem(response, call_id) is None, response.text
            assert (response.json()["EventType"], response.json()["Param"]) == NO_ACTION
    return call_id


def concurrent_polls(servers: list[Server], call_id: int) -> list[tuple[int, str]]:
    """POLLS polls of call_id at once, spread over the servers, each on a connection opened beforehand;
    every answer's (EventType, Param)."""
    clients = [servers[index % len(servers)].client(verify=False) for index in range(POLLS)]
    for http in clients:  # open every connection first (the connection test touches no call)
        assert http.get("/CallEvent").status_code == 200
    gate = threading.Barrier(POLLS)

    def poll(worker: int, http: httpx.Client) -> tuple[int, str]:
        gate.wait(10)
        response = http.get(f"/CallEvent/{call_id}")
        problem = answer_problem(response, call_id)
        assert problem is None, problem
        return response.json()["EventType"], response.json()["Param"]

    try:
        return in_threads(clients, POLLS, poll)
    finally:
        for http in clients:
            http.close()


def test_a_pushed_command_is_delivered_by_one_of_many_concurrent_polls(replicas: list[Server]) -> None:
    call_id = connected_call(replicas[0], QUIET_UN)
    with replicas[1].client(auth=ADMIN) as admin:
        pushed = admin.post(f"/admin/calls/{call_id}/commands", json={"action": "TransferPBX", "param": "PBX4955555"})
        assert pushed.status_code == 201, pushed.text
        command = pushed.json()["command"]["id"]

        answers = concurrent_polls(replicas, call_id)

        assert Counter(answers) == {(5, "PBX4955555"): 1, NO_ACTION: POLLS - 1}
        view = call_view(admin, call_id)
        assert view is not None
        assert view["commands"] == []  # delivered: no longer pending
        assert [(d["trigger"], d["action"], d["param"], d["command"]) for d in view["decisions"]] == [
            ("poll", "TransferPBX", "PBX4955555", command)
        ]
        again = admin.delete(f"/admin/calls/{call_id}/commands/{command}")
        assert again.status_code == 404, again.text  # not pending any more: nothing to cancel
    assert quiet_logs(replicas) == []


def test_a_once_only_poll_rule_fires_once_for_many_concurrent_polls(replicas: list[Server]) -> None:
    call_id = connected_call(replicas[2], POLL_UN)

    answers = concurrent_polls(replicas, call_id)

    assert Counter(answers) == {(5, "PBX4951001"): 1, NO_ACTION: POLLS - 1}
    with replicas[0].client(auth=ADMIN) as admin:
        view = call_view(admin, call_id)
    assert view is not None
    assert view["fired_polls"] == ["poll-once"]
    assert decision_counts(view) == {("poll", "TransferPBX", "PBX4951001", "poll-once"): 1}
    assert quiet_logs(replicas) == []


# ----------------------------------------------------------------------------------------------------
# Redis hung, killed, or its scripts flushed, during a stream of calls

BUDGET_MS = 300  # state.timeout_ms of the server under faults
# What a request may take beyond the store's budget, measured on the client: the server's own work
# (parsing, deciding, writing the answer) and the client's. No more is allowed for the client, whose
# share is small: one thread sending one request at a time on one kept-alive loopback connection.
MARGIN_MS = 50
RECOVERY_S = 2.0  # a new call's events are stored again within this long of Redis answering
STREAM_CALL = [(1, {"AN": "79165550000", "UN": EVENT_UN}), (4, {"DTMF": "1"}), (15, {"Result": "1"})]
STREAM_EVENTS = Counter({"CallAccepted": 1, "DTMF": 1, "EndCall": 1})


def stored(admin: LeanClient, call: StreamedCall) -> bool:
    """Whether the admin API shows every event of a streamed call (any answer but a 200, such as a 503
    while Redis is out of reach, counts as not yet)."""
    response = admin.get(f"/admin/calls/{call.call_id}")
    return response.status_code == 200 and event_counts(response.json()) == STREAM_EVENTS


def calls_after(stream: CallStream, moment: float) -> list[StreamedCall]:
    """The stream's finished calls whose first event was sent after moment (monotonic)."""
    return [call for call in stream.calls() if call.started > moment]


def more_calls(stream: CallStream, count: int, what: str) -> None:
    """Wait until the stream has finished count more calls than now."""
    done = len(stream.calls())
    wait_until(lambda: len(stream.calls()) >= done + count, f"{count} more calls of the stream ({what})", timeout=10)


def hang(redis_server: RedisServer, stream: CallStream) -> None:
    redis_server.pause()
    try:
        time.sleep(5)  # the fault itself: Redis hung for 5 s
    finally:
        redis_server.resume()


def crash(redis_server: RedisServer, stream: CallStream) -> None:
    redis_server.kill()
    more_calls(stream, 5, "while Redis is down")
    redis_server.start()  # on the same port, empty (no persistence); returns once it answers PING


def flush(redis_server: RedisServer, stream: CallStream) -> None:
    with redis.Redis.from_url(redis_server.url) as client:
        for _ in range(3):  # between the stream's calls, three times
            client.script_flush()
            client.function_flush()
            more_calls(stream, 3, "after SCRIPT FLUSH and FUNCTION FLUSH")


FAULTS: dict[str, Callable[[RedisServer, CallStream], None]] = {"hang": hang, "crash": crash, "flush": flush}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_answers_stay_in_time_and_calls_are_stored_again_after_a_redis_fault(
    serve: ServerFactory, own_redis: RedisServer, rules_file: Path, fault: str
) -> None:
    config = replica_config(rules_file, own_redis, "faults:", timeout_ms=BUDGET_MS)
    server = serve(config, admin=ADMIN)
    with LeanClient(server, ADMIN) as admin:
        with CallStream(server, STREAM_CALL, next(_stream_ids)) as stream:
            more_calls(stream, 3, "before the fault")
            fault_started = time.monotonic()
            FAULTS[fault](own_redis, stream)
            answering = time.monotonic()  # Redis answers again (or never stopped answering)

            # within RECOVERY_S of that, a call begun afterwards has all its events stored
            def recovered() -> StreamedCall | None:
                return next((call for call in calls_after(stream, answering) if stored(admin, call)), None)

            first = poll_until(recovered, timeout=RECOVERY_S - (time.monotonic() - answering), interval=0.02)
            recovered_in = time.monotonic() - answering
            # and from then on every call is stored, not only some
            if first is not None:
                more_calls(stream, 10, "after recovery")
        requests = stream.requests()
        late = [sent for sent in requests if sent.seconds > (BUDGET_MS + MARGIN_MS) / 1000]
        wrong = [sent for sent in requests if sent.problem is not None]
        during = [sent for sent in requests if fault_started <= sent.started < answering]
        logged = len(server.logged("store_unavailable", timeout=0))

        assert wrong == [], f"{len(wrong)} of {len(requests)} requests not answered 200 well-formed, e.g. {wrong[:3]}"
        slowest = max(sent.seconds for sent in requests)
        assert late == [], (
            f"{len(late)} of {len(requests)} requests took over {BUDGET_MS + MARGIN_MS} ms "
            f"(slowest {slowest * 1000:.0f} ms), e.g. {late[:3]}"
        )
        assert len(during) >= 5, f"only {len(during)} requests were sent during the fault"
        assert first is not None, (
            f"no call begun after Redis answered again was stored within {RECOVERY_S} s "
            f"({len(calls_after(stream, answering))} were sent; store_unavailable logged {logged} times)"
        )
        later = [call for call in calls_after(stream, first.started) if not stored(admin, call)]
        assert later == [], f"{len(later)} calls after the recovery ({recovered_in:.2f} s) lost events: {later[:3]}"
        if fault in ("hang", "crash"):  # the outage reached the server, which answered from the events alone
            assert logged >= 5
        if fault == "flush":  # Redis answered all along: nothing may be lost
            lost = [call.call_id for call in stream.calls() if not stored(admin, call)]
            assert lost == [], f"{len(lost)} calls lost events though Redis answered throughout: {lost[:5]}"
            assert logged == 0
