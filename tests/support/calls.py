"""The platform's side of call-state tests on running servers: CRMDData bodies, a lean keep-alive
client, checking an answer, sending from many threads at once, a background stream of calls timed
request by request, and the admin API's view of a call."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

from tests.support.protocol import ACTION_CODES
from tests.support.server import PASSWORD, USER, Server

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


class Reply(NamedTuple):
    """An HTTP answer as LeanClient reads it: what answer_problem and call_view look at, as httpx names it."""

    status_code: int
    headers: dict[str, str]  # content-type only
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class LeanClient:
    """HTTP/1.1 on one kept-alive connection (http.client), with Basic credentials.

    It costs the client about a third of a millisecond of CPU per request where an httpx.Client costs
    one to one and a half (measured on loopback, one to 24 threads), so many of them sending from
    threads leave the shared cores to the servers, and the time a request takes is the server's.
    A connection the server closed is opened again for the next request; a request is never resent.
    """

    def __init__(self, server: Server, auth: tuple[str, str] = (USER, PASSWORD), timeout: float = 10) -> None:
        url = urlsplit(server.base_url)
        if url.scheme != "http" or url.hostname is None or url.port is None:
            raise ValueError(f"LeanClient speaks plain HTTP to a host and port, not to {server.base_url}")
        self._prefix = url.path.rstrip("/")
        self._connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def get(self, path: str) -> Reply:
        return self._request("GET", path, None)

    def post(self, path: str, json: Any) -> Reply:
        return self._request("POST", path, _dumps(json))

    def delete(self, path: str) -> Reply:
        return self._request("DELETE", path, None)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> LeanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: bytes | None) -> Reply:
        try:
            self._connection.request(method, self._prefix + path, body, self._headers)
            response = self._connection.getresponse()
            content = response.read()
        except BaseException:
            self._connection.close()  # opened afresh by the next request
            raise
        if response.will_close:
            self._connection.close()
        return Reply(response.status, {"content-type": response.getheader("content-type", "")}, content)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class Answer(Protocol):
    """An HTTP answer: an httpx.Response or a Reply."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def headers(self) -> Any: ...
    def json(self) -> Any: ...


class Getter(Protocol):
    """A client that can GET: an httpx.Client or a LeanClient."""

    def get(self, path: str) -> Answer: ...


def answer_problem(response: Answer, call_id: int) -> str | None:
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


def call_view(admin: Getter, call_id: int) -> dict[str, Any] | None:
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

    It has a keep-alive connection of its own (a LeanClient), opened before the first call, and times
    each request on the client, from sending it until its answer is read: the time the platform waits.
    steps: each event's type and its extra CRMDData fields, per call.
    """

    def __init__(self, server: Server, steps: Sequence[tuple[int, dict[str, Any]]], first_call_id: int) -> None:
        self._client = LeanClient(server, timeout=5)
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
        """Every request of the finished calls."""
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
        except (OSError, http.client.HTTPException) as exc:  # a timeout included
            return Sent(call_id, event_type, started, time.monotonic() - started, f"{type(exc).__name__}: {exc}", None)
        seconds = time.monotonic() - started
        problem = answer_problem(response, call_id)
        return Sent(call_id, event_type, started, seconds, problem, None if problem else response.json())
