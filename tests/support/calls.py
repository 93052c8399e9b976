"""The platform's side of call-state tests on running servers: CRMDData bodies, checking an answer,
sending from many threads at once, a background stream of calls timed request by request, and the
admin API's view of a call."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx

from tests.support.protocol import ACTION_CODES
from tests.support.server import Server

T = TypeVar("T")
R = TypeVar("R")
JSON_TYPE = "application/json; charset=UTF-8"
T0 = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
_CODES = {0, *ACTION_CODES.values()}
_NAMES = {code: name for name, code in ACTION_CODES.items()}


def crmd(call_id: int, event_type: int, seconds: float = 0, **fields: Any) -> dict[str, Any]:
    """A CRMDData body: an event of call_id at T0 + seconds, with extra fields."""
    at = (T0 + timedelta(seconds=seconds)).isoformat()
    return {"CallID": call_id, "EventTime": at, "EventType": event_type, **fields}


def answer_problem(response: httpx.Response, call_id: int) -> str | None:
    """What is wrong with a platform answer; None for a 200 carrying a well-formed ReturnCRMData for call_id."""
    if response.status_code != 200:
        return f"status {response.status_code}: {response.text[:200]!r}"
    if response.headers.get("content-type") != JSON_TYPE:
        return f"content-type {response.headers.get('content-type')!r}"
    try:
        answer = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]!r}"
    if not isinstance(answer, dict) or set(answer) != {"CallID", "EventType", "Param"}:
        return f"not ReturnCRMData: {answer!r}"
    if answer["CallID"] != call_id:
        return f"CallID {answer['CallID']!r} answering call {call_id}"
    if type(answer["EventType"]) is not int or answer["EventType"] not in _CODES:
        return f"EventType {answer['EventType']!r} is no action code"
    if not isinstance(answer["Param"], str):
        return f"Param {answer['Param']!r} is not a string"
    return None


def action_of(answer: dict[str, Any]) -> tuple[str, str] | None:
    """The action an answer carries, by name, and its param; None for "no action"."""
    code = answer["EventType"]
    return None if code == 0 else (_NAMES[code], answer["Param"])


def in_threads(tasks: Sequence[T], workers: int, work: Callable[[int, T], R]) -> list[R]:
    """work(worker, task) for every task, by `workers` threads each taking the next task when free.

    worker is the thread's index (0 … workers - 1), so it can keep clients of its own. The results come
    in the order of tasks; the first exception a thread met is raised once every thread has ended.
    """
    results: list[Any] = [None] * len(tasks)
    indexes = itertools.count()
    taking = threading.Lock()
    failures: list[BaseException] = []

    def run(worker: int) -> None:
        while not failures:
            with taking:
                index = next(indexes)
            if index >= len(tasks):
                return
            try:
                results[index] = work(worker, tasks[index])
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=run, args=(worker,), daemon=True) for worker in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


def call_view(admin: httpx.Client, call_id: int) -> dict[str, Any] | None:
    """`GET /admin/calls/{call_id}`: the call's whole state; None when the call is unknown (404).

    Any other answer fails the test, naming it."""
    response = admin.get(f"/admin/calls/{call_id}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, f"GET /admin/calls/{call_id}: {response.status_code} {response.text}"
    view: dict[str, Any] = response.json()
    return view


def event_counts(view: dict[str, Any]) -> Counter[str]:
    """How many events of each type a call's view holds."""
    return Counter(event["event"] for event in view["events"])


def decision_counts(view: dict[str, Any]) -> Counter[tuple[str, str, str, str | None]]:
    """How many recorded decisions of each (trigger, action, param, rule) a call's view holds."""
    return Counter((d["trigger"], d["action"], d["param"], d["rule"]) for d in view["decisions"])


@dataclass(frozen=True)
class Sent:
    """One request of a stream: what was sent, when (monotonic), how long its answer took, what was wrong."""

    call_id: int
    event_type: int
    started: float
    seconds: float
    problem: str | None
    answer: dict[str, Any] | None


@dataclass
class StreamedCall:
    """A call a stream sent: its id and its requests, in order."""

    call_id: int
    sent: list[Sent] = field(default_factory=list)

    @property
    def started(self) -> float:
        return self.sent[0].started

    @property
    def finished(self) -> float:
        return self.sent[-1].started + self.sent[-1].seconds


class CallStream:
    """A platform sending new calls one after another from a thread, each call's events in turn.

    It has a keep-alive connection pool of its own (one connection), opened before the first call,
    and times each request on the client, from the call of `post` until the answer is read: the
    time the platform waits. steps: each event's type and its extra CRMDData fields, per call.
    """

    def __init__(self, server: Server, steps: Sequence[tuple[int, dict[str, Any]]], first_call_id: int) -> None:
        self._client = server.client(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1), timeout=5)
        self._steps = steps
        self._call_ids = itertools.count(first_call_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()
        self._calls: list[StreamedCall] = []

    def __enter__(self) -> CallStream:
        assert self._client.get("/CallEvent").status_code == 200  # connected before anything is timed
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()

    def calls(self) -> list[StreamedCall]:
        """The calls whose every event has been answered (or given up on), oldest first."""
        with self._lock:
            return list(self._calls)

    def requests(self) -> list[Sent]:
        """Every request sent so far."""
        return [sent for call in self.calls() for sent in call.sent]

    def _run(self) -> None:
        while not self._stop.is_set():
            call = StreamedCall(next(self._call_ids))
            for seconds, (event_type, fields) in enumerate(self._steps):
                body = crmd(call.call_id, event_type, seconds, **fields)
                call.sent.append(self._send(call.call_id, event_type, body))
            with self._lock:
                self._calls.append(call)

    def _send(self, call_id: int, event_type: int, body: dict[str, Any]) -> Sent:
        started = time.monotonic()
        try:
            response = self._client.post("/CallEvent", json=body)
        except httpx.HTTPError as exc:
            return Sent(call_id, event_type, started, time.monotonic() - started, f"{type(exc).__name__}: {exc}", None)
        seconds = time.monotonic() - started
        problem = answer_problem(response, call_id)
        return Sent(call_id, event_type, started, seconds, problem, None if problem else response.json())
