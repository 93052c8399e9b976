"""SIGTERM on a running `ascrm serve` with keep-alive clients: every request sent before it stops is answered."""

from __future__ import annotations

import base64
import json
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.support.net import unread_by_peer
from tests.support.server import PASSWORD, USER, Server, ServerFactory, platform_config
from tests.support.silent import silent_source_rules
from tests.support.waiting import wait_until

AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
CONNECTION_TEST = f"GET /CallEvent HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n\r\n".encode()


def address(server: Server) -> tuple[str, int]:
    return server.address


def refuses_connections(server: Server) -> bool:
    """Whether a new connection to the server is refused (its listening socket is closed)."""
    try:
        socket.create_connection(address(server), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole answer: status, headers (lower-case names), body; ConnectionError if the server closed first."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without an answer (got {received!r})")
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of an answer")
        body += chunk
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def server(tmp_path: Path, serve: ServerFactory) -> Server:
    return serve(platform_config(reload={"watch": False}), folder=tmp_path)


def test_requests_sent_as_sigterm_arrives_are_answered(server: Server) -> None:
    connections = [socket.create_connection(address(server), timeout=10) for _ in range(40)]
    try:
        for sock in connections:  # each becomes an idle keep-alive connection
            sock.sendall(CONNECTION_TEST)
            assert read_response(sock)[0] == 200
        server.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        for index, sock in enumerate(connections):  # spread over the first 0.4 s of the drain
            time.sleep(max(0.0, started + index * 0.01 - time.monotonic()))
            sock.sendall(CONNECTION_TEST)
        answers = []
        for sock in connections:
            try:
                answers.append(read_response(sock))
            except ConnectionError as exc:
                answers.append((0, {}, str(exc).encode()))
        unanswered = [index for index, (status, _, _) in enumerate(answers) if status != 200]
        assert not unanswered, f"{len(unanswered)} of 40 requests got no answer: {answers[unanswered[0]]}"
        assert answers[-1][1]["connection"] == "close"  # answered while draining: the client must not reuse it
        assert json.loads(answers[-1][2]) == {"CallID": 0, "EventType": 0, "Param": ""}
    finally:
        for sock in connections:
            sock.close()
    assert server.process.wait(15) in (0, -signal.SIGTERM)


def test_a_request_in_flight_is_answered_and_new_connections_are_refused(server: Server) -> None:
    body = json.dumps({"CallID": 7, "EventType": 1, "AN": "79161234567", "UN": "74951234567"}).encode()
    head = f"POST /CallEvent HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(address(server), timeout=10) as slow:
        slow.sendall(head.encode() + body[:10])
        wait_until(lambda: unread_by_peer(slow) == 0, "the server to read the start of the request")
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses_connections(server), "the drain to close the listening socket")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address(server), timeout=5).close()
        slow.sendall(body[10:])
        status, headers, answer = read_response(slow)
    assert status == 200
    assert headers["connection"] == "close"
    assert json.loads(answer)["CallID"] == 7
    assert server.process.wait(15) in (0, -signal.SIGTERM)
    assert [event.get("event") for event in server.logs()].count("service_stopped") == 1


def test_an_answer_being_decided_when_sigterm_arrives_is_sent(tmp_path: Path, serve: ServerFactory) -> None:
    """The drain waits for a request the app is still deciding (here: a CRM that takes a second)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connections are accepted (by the kernel), never answered
        rules = tmp_path / "rules.yaml"
        rules.write_text(silent_source_rules(silent.getsockname()[1], "1s"))
        config = platform_config(rules=str(rules), reload={"watch": False}, lookups={"budget_ms": 3000})
        server = serve(config, folder=tmp_path)
        body = json.dumps({"CallID": 8, "EventType": 1, "AN": "79161234567", "UN": "74951234567"}).encode()
        head = f"POST /CallEvent HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nContent-Length: {len(body)}\r\n\r\n"
        held: list[socket.socket] = []
        with socket.create_connection(address(server), timeout=10) as waiting:
            sent = time.monotonic()
            waiting.sendall(head.encode() + body)
            wait_until(lambda: silent_was_asked(silent, held), "the server to ask the CRM")
            server.process.send_signal(signal.SIGTERM)
            status, headers, answer = read_response(waiting)
            took = time.monotonic() - sent
        for connection in held:
            connection.close()
    assert status == 200
    assert json.loads(answer) == {"CallID": 8, "EventType": 2, "Param": "1000"}  # the CRM timed out: the next rule
    assert took >= 1.0  # decided to the end, not cut short by the signal
    assert headers["connection"] == "close"
    assert server.process.wait(15) in (0, -signal.SIGTERM)


def silent_was_asked(listening: socket.socket, held: list[socket.socket]) -> bool:
    """Whether a connection waits on listening (the server's look-up has connected); it is held, never answered."""
    listening.settimeout(0)
    try:
        held.append(listening.accept()[0])
    except BlockingIOError:
        return False
    return True
