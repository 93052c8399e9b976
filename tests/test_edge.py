"""The HTTP edge of a running `ascrm serve` under hostile clients: header limits, slowloris, slow bodies,
the connection cap and the open-file limit, over plain HTTP and native TLS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import resource
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.support import metrics
from tests.support.metrics import Samples
from tests.support.server import PASSWORD, USER, Server, ServerFactory, platform_config
from tests.support.tls import client_context, write_server_certificate
from tests.support.waiting import wait_until

ADMIN = ("ops", "edge-pw")
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
CONNECTION_TEST = f"GET /CallEvent HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n\r\n".encode()
TIMEOUTS = {"header_timeout_seconds": 1, "body_timeout_seconds": 1}


def serving(serve: ServerFactory, tmp: Path, limits: dict[str, object], **extra: object) -> Server:
    config = platform_config(limits=limits, reload={"watch": False}, **extra)
    config["auth"]["admin"] = [{"user": ADMIN[0], "password": ADMIN[1]}]
    config["auth"]["limits"] = {"per_client": 100_000}  # these tests send wrong credentials from one address
    return serve(config, folder=tmp)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory) -> Server:
    return serving(serve_module, tmp_path_factory.mktemp("edge"), TIMEOUTS)


def address(server: Server) -> tuple[str, int]:
    return server.address


def exchange(server: Server, data: bytes, deadline: float = 5) -> bytes:
    """Send data on a new connection; everything the server sends until it closes (or the deadline)."""
    with socket.create_connection(address(server), timeout=deadline) as sock:
        sock.sendall(data)
        return read_until_closed(sock, deadline)


def read_response(sock: socket.socket) -> bytes:
    """One whole answer (headers and a Content-Length body)."""
    [answer] = read_responses(sock, 1)
    return answer


def read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """count whole answers, however the server's writes were split or joined on the way."""
    received = b""
    answers: list[bytes] = []
    while len(answers) < count:
        if b"\r\n\r\n" in received:
            head, _, rest = received.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                answers.append(head + b"\r\n\r\n" + rest[:length])
                received = rest[length:]
                continue
        received += _receive(sock)
    return answers


def _receive(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection before a whole answer")
    return chunk


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """What arrives until the peer closes; raises TimeoutError if it is still open at the deadline."""
    received = b""
    stop_at = time.monotonic() + deadline
    while True:
        sock.settimeout(max(0.01, stop_at - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # after an answer, the rest of what the client sent was unread
            return received
        if not chunk:
            return received
        received += chunk


def status_and_error(answer: bytes) -> tuple[int, str, dict[str, str]]:
    """The status, the content type and the JSON body of a raw answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers["content-type"], json.loads(body)


def cpu_seconds(server: Server) -> float:
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def scrape(server: Server) -> Samples:
    """Every sample of one scrape with the admin's credentials."""
    with httpx.Client(base_url=server.base_url, auth=ADMIN, verify=server.verify, timeout=10) as admin:
        return metrics.scrape(admin)


def still_answers(server: Server) -> None:
    with server.client() as http:
        assert http.get("/CallEvent").status_code == 200


@pytest.mark.parametrize(
    ("request_head", "status", "message"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "the request target is longer than 8192 bytes"),
        (
            b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
            431,
            "request headers are larger than 16384 bytes",
        ),
        (b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 65 + b"\r\n", 431, "more than 64 request headers"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400, "invalid HTTP request"),
    ],
)
def test_header_limits_answer_json_and_close(server: Server, request_head: bytes, status: int, message: str) -> None:
    answer = exchange(server, request_head)
    code, content_type, body = status_and_error(answer)
    assert (code, body["message"]) == (status, message)
    assert content_type == "application/json; charset=UTF-8"
    assert b"\r\nconnection: close\r\n" in answer
    still_answers(server)


def test_headers_up_to_the_limits_are_served(server: Server) -> None:
    filler = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 100) for i in range(60))  # 60 headers, ~6.6 KiB
    head = b"GET /CallEvent?" + b"q" * 7000 + b" HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH.encode() + b"\r\n"
    with socket.create_connection(address(server), timeout=5) as sock:
        sock.sendall(head + filler + b"\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")


def _send_until_refused(server: Server, chunks: Iterator[bytes], budget: int, deadline: float) -> tuple[int, bytes]:
    """Send chunks until the server stops taking them (or budget bytes, or the deadline); bytes sent, answer."""
    sent = 0
    with socket.create_connection(address(server), timeout=deadline) as sock:
        stop_at = time.monotonic() + deadline
        try:
            for chunk in chunks:
                if sent >= budget or time.monotonic() > stop_at:
                    break
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        try:
            return sent, read_until_closed(sock, 5)
        except (TimeoutError, OSError):
            return sent, b""


def test_a_64_mib_header_value_is_refused_after_the_limit_not_buffered(server: Server) -> None:
    cpu, rss = cpu_seconds(server), server.rss_bytes()
    first = b"GET /CallEvent HTTP/1.1\r\nHost: x\r\nX-Huge: "
    chunks = iter([first, *([b"a" * 65536] * 1024)])  # 64 MiB
    sent, answer = _send_until_refused(server, chunks, budget=64 << 20, deadline=20)
    assert sent < 16 << 20, f"the server took {sent} bytes of one header"  # the rest: socket buffers
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    assert server.rss_bytes() - rss < 20 << 20
    assert cpu_seconds(server) - cpu < 2  # generous: the point is it does not grow with the header
    still_answers(server)


def test_16_mib_of_tiny_headers_cost_no_memory(server: Server) -> None:
    rss = server.rss_bytes()
    chunks = iter([b"GET /CallEvent HTTP/1.1\r\n", *([b"a: b\r\n" * 10_000] * 280)])  # ~16 MiB
    sent, answer = _send_until_refused(server, chunks, budget=16 << 20, deadline=20)
    assert sent < 8 << 20
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    assert server.rss_bytes() - rss < 20 << 20
    still_answers(server)


async def _slowloris(host: str, port: int, connections: int, give_up: float) -> list[tuple[float, bytes]]:
    """Connections sending a request's headers a byte at a time; per connection, when it was closed and what it got."""

    async def one() -> tuple[float, bytes]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        received = b""
        try:
            for byte in b"GET /CallEvent HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"z" * 10_000:
                writer.write(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    received += await asyncio.wait_for(reader.read(65536), 0.1)
                if reader.at_eof() or time.monotonic() - started > give_up:
                    break
            else:
                raise AssertionError("sent 10 kB of headers without being closed")
        except ConnectionError:
            pass
        finally:
            writer.close()
        return time.monotonic() - started, received

    return await asyncio.gather(*(one() for _ in range(connections)))


def test_slowloris_connections_are_closed_with_408(server: Server) -> None:
    results = asyncio.run(_slowloris(*address(server), connections=200, give_up=8))
    assert max(seconds for seconds, _ in results) < 4  # header_timeout_seconds: 1 (and the 0.25 s sweep)
    for _, received in results:
        code, content_type, body = status_and_error(received)
        assert (code, body["error"]) == (408, "request_timeout")
        assert content_type == "application/json; charset=UTF-8"
    still_answers(server)


def test_a_slow_body_is_cut_off_with_408(server: Server) -> None:
    head = f"POST /CallEvent HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nContent-Length: 100\r\n\r\n"
    with socket.create_connection(address(server), timeout=5) as sock:
        sock.sendall(head.encode() + b'{"CallID": 1')
        started = time.monotonic()
        answer = read_until_closed(sock, 6)
    assert time.monotonic() - started < 4
    code, _, body = status_and_error(answer)
    assert (code, body["message"]) == (408, "the request body did not arrive within 1 s")


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with socket.create_connection(address(server), timeout=5) as sock:
        started = time.monotonic()
        assert read_until_closed(sock, 6) == b""
    assert time.monotonic() - started < 4


def test_keep_alive_is_configurable(serve: ServerFactory, tmp_path: Path) -> None:
    running = serving(serve, tmp_path, {"keep_alive_seconds": 0.5})
    try:
        with socket.create_connection(address(running), timeout=5) as sock:
            sock.sendall(CONNECTION_TEST)
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()
            assert read_until_closed(sock, 5) == b""
            assert time.monotonic() - started < 2
    finally:
        running.stop()


def test_connections_over_the_cap_are_closed_logged_once_and_counted(serve: ServerFactory, tmp_path: Path) -> None:
    running = serving(serve, tmp_path, {"max_connections": 20, "header_timeout_seconds": 30})
    idle: list[socket.socket] = []
    try:
        sockets = running.open_sockets()
        for _ in range(20):
            idle.append(socket.create_connection(address(running), timeout=5))
        wait_until(lambda: running.open_sockets() >= sockets + 20, "the server to accept 20 connections")
        for _ in range(30):
            with socket.create_connection(address(running), timeout=5) as extra:
                try:
                    extra.sendall(CONNECTION_TEST)
                    assert read_until_closed(extra, 3) == b""
                except (ConnectionResetError, BrokenPipeError):
                    pass
        [line] = running.logged("connections_refused")
        assert line["level"] == "warning"
        assert line["limit"] == 20
        assert line["setting"] == "limits.max_connections"
        for sock in idle:
            sock.close()
        idle.clear()
        samples = wait_until(
            lambda: (s := scrape(running))[("ascrm_connections_open", ())] == 1 and s,
            "one open connection (the scrape)",
        )
        assert samples[("ascrm_connections_refused_total", ())] == 30
        assert samples[("ascrm_connections_limit", ())] == 20
        assert running.logged("connections_refused", timeout=15, refused=29)  # the rest: one line, 10 s later
        assert len(running.logged("connections_refused")) == 2
    finally:
        for sock in idle:
            sock.close()
        running.stop()


def connect_from(running: Server, source: str) -> socket.socket:
    """A connection to running from the loopback address source (127.0.0.0/8 reaches this machine)."""
    return socket.create_connection(address(running), timeout=5, source_address=(source, 0))


def test_one_address_may_hold_only_its_share_of_connections_unless_it_is_a_trusted_proxy(
    serve: ServerFactory, tmp_path: Path
) -> None:
    running = serving(serve, tmp_path, {"max_connections_per_client": 5, "header_timeout_seconds": 30})
    idle: list[socket.socket] = []
    try:
        sockets = running.open_sockets()
        idle += [connect_from(running, "127.0.0.2") for _ in range(5)]
        wait_until(lambda: running.open_sockets() >= sockets + 5, "the server to accept 5 connections")
        for _ in range(3):  # a sixth connection from that address is closed without an answer
            with connect_from(running, "127.0.0.2") as extra:
                try:
                    extra.sendall(CONNECTION_TEST)
                    assert read_until_closed(extra, 3) == b""
                except (ConnectionResetError, BrokenPipeError):
                    pass
        with connect_from(running, "127.0.0.3") as other:  # another address is not affected
            other.sendall(CONNECTION_TEST)
            assert read_response(other).startswith(b"HTTP/1.1 200 ")
        trusted = [connect_from(running, "127.0.0.1") for _ in range(8)]  # a proxy (forwarded_allow_ips)
        idle += trusted
        for sock in trusted:
            sock.sendall(CONNECTION_TEST)
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        [line] = running.logged("connections_refused")
        assert (line["limit"], line["setting"]) == (5, "limits.max_connections_per_client")
        assert scrape(running)[("ascrm_client_connections_refused_total", ())] == 3
        idle[0].close()  # a closed connection frees its place

        def served_again() -> bytes:
            with connect_from(running, "127.0.0.2") as again:
                try:
                    again.sendall(CONNECTION_TEST)
                    return read_response(again)
                except OSError:  # still refused: closed without an answer
                    return b""

        answer = wait_until(served_again, "a sixth connection from 127.0.0.2 to be served")
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in idle:
            sock.close()
        running.stop()


def test_timeouts_are_counted_in_the_metrics(server: Server) -> None:
    before = scrape(server)
    exchange(server, b"GET /CallEvent HTTP/1.1\r\nHost: x\r\n", deadline=5)
    after = scrape(server)
    key = ("ascrm_connections_closed_total", (("reason", "header_timeout"),))
    assert after[key] == before.get(key, 0) + 1


def test_the_open_file_limit_is_raised_to_the_hard_limit(serve: ServerFactory, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard open-file limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the server inherits it
    try:
        running = serving(serve, tmp_path, {})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        [line] = running.logged("open_files_limit")
        assert line["before"] == 256
        assert line["soft"] == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
        limit = Path(f"/proc/{running.process.pid}/limits").read_text()
        assert any(row.startswith("Max open files") and f" {line['soft']} " in row for row in limit.splitlines())
    finally:
        running.stop()


def test_the_cap_is_lowered_to_fit_the_open_file_limit() -> None:
    from ascrm.service.net.openfiles import RESERVED_FILES, OpenFilesLimit

    assert OpenFilesLimit(before=1024, soft=1024, hard=1024).connections(4096) == 1024 - RESERVED_FILES
    assert OpenFilesLimit(before=1024, soft=65536, hard=65536).connections(4096) == 4096


# Native TLS: the same limits hold when ascrm terminates TLS itself.


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory, ca: trustme.CA
) -> tuple[Server, ssl.SSLContext]:
    folder = tmp_path_factory.mktemp("edge-tls")
    limits = {**TIMEOUTS, "tls_handshake_timeout_seconds": 1}
    running = serving(serve_module, folder, limits, tls=write_server_certificate(ca, folder))
    context = client_context(ca)
    running.verify = context
    return running, context


def tls_exchange(server: Server, context: ssl.SSLContext, data: bytes, pause: float = 0) -> tuple[float, bytes]:
    """Send data over TLS (a byte per pause, if any, until the server answers or closes); seconds taken, answer."""
    started = time.monotonic()
    received = b""
    with (
        socket.create_connection(address(server), timeout=6) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        pieces = [data[i : i + 1] for i in range(len(data))] if pause else [data]
        try:
            for piece in pieces:
                tls.sendall(piece)
                if pause:
                    tls.settimeout(pause)
                    with contextlib.suppress(TimeoutError):
                        received = tls.recv(65536)
                        break
                if time.monotonic() - started > 5:
                    break
            tls.settimeout(6)
            while chunk := tls.recv(65536):
                received += chunk
        except (ssl.SSLError, OSError):
            pass
    return time.monotonic() - started, received


def test_tls_header_limit_and_slowloris(tls_server: tuple[Server, ssl.SSLContext]) -> None:
    server, context = tls_server
    _, answer = tls_exchange(server, context, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert status_and_error(answer)[0] == 431
    seconds, answer = tls_exchange(server, context, b"GET /CallEvent HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 50, 0.05)
    assert seconds < 4
    assert status_and_error(answer)[0] == 408
    with server.client() as http:
        assert http.get("/CallEvent").status_code == 200


def test_tls_handshake_that_never_comes_is_closed(tls_server: tuple[Server, ssl.SSLContext]) -> None:
    server, _ = tls_server
    with socket.create_connection(address(server), timeout=6) as raw:
        raw.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        started = time.monotonic()
        assert read_until_closed(raw, 6) == b""
    assert time.monotonic() - started < 4


def test_a_body_left_unsent_after_an_early_answer_closes_without_a_second_answer(server: Server) -> None:
    head = "POST /CallEvent HTTP/1.1\r\nHost: x\r\nAuthorization: Basic d3Jvbmc6d3Jvbmc=\r\nContent-Length: 100\r\n\r\n"
    with socket.create_connection(address(server), timeout=5) as sock:
        sock.sendall(head.encode() + b'{"CallID": 1')
        assert read_response(sock).startswith(b"HTTP/1.1 401 ")
        assert read_until_closed(sock, 6) == b""  # no 408 after the 401


def test_a_full_size_body_and_pipelined_requests_in_one_write_are_served(server: Server) -> None:
    body = b'{"CallID": 5, "EventType": 1, "Generic": "' + b"x" * (65536 - 44) + b'"}'
    assert len(body) == 65536
    post = (
        f"POST /CallEvent HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(address(server), timeout=5) as sock:
        sock.sendall(post + CONNECTION_TEST + post)  # one write: the header budget must follow each request
        answers = read_responses(sock, 3)
    assert [answer.split(b" ", 2)[1] for answer in answers] == [b"200", b"200", b"200"]
    assert answers[0].endswith(b'{"CallID":5,"EventType":0,"Param":""}')
