"""Native HTTPS: a certificate made by the test, TLS 1.2+ only, the same API over TLS."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import PASSWORD, Server, platform_config, start_server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    config = platform_config(tls={"certfile": "server.pem", "keyfile": "key.pem"})  # relative to the config
    server = start_server(folder, config, env={"TEST_PLATFORM_PASSWORD": PASSWORD})
    server.verify = _client_context(ca)
    yield server
    server.stop()


def _client_context(ca: trustme.CA, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if version is not None:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old versions at all
        context.minimum_version = version
        context.maximum_version = version
    return context


def _handshake(server: Server, context: ssl.SSLContext) -> str:
    host, port = server.base_url.removeprefix("https://").split(":")
    return _handshake_to(host, int(port), context)


def _handshake_to(host: str, port: int, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.version() or ""


def _handshake_with_permissive_server(ca: trustme.CA, client: ssl.SSLContext) -> str:
    """Handshake with a server that accepts TLS 1.0+, to show the client really offers the old version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def accept_one() -> None:
            connection, _ = listener.accept()
            with (
                contextlib.suppress(ssl.SSLError, OSError),
                context.wrap_socket(connection, server_side=True),
            ):
                pass

        thread = threading.Thread(target=accept_one, daemon=True)
        thread.start()
        try:
            return _handshake_to("127.0.0.1", listener.getsockname()[1], client)
        finally:
            thread.join(5)


def test_https_serves_the_connection_test(tls_server: Server) -> None:
    assert tls_server.base_url.startswith("https://")
    with tls_server.client() as http:
        response = http.get("/CallEvent")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json; charset=UTF-8"
        assert http.post("/CallEvent/0", json={"UN": "74951234567"}).json()["CallID"] == 0


def test_https_still_requires_credentials(tls_server: Server) -> None:
    with tls_server.client(auth=None) as http:
        assert http.get("/CallEvent").status_code == 401


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_handshake(tls_server: Server, ca: trustme.CA, version: ssl.TLSVersion) -> None:
    assert _handshake(tls_server, _client_context(ca, version)) == version.name.replace("_", ".")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_10_and_11_are_refused(tls_server: Server, ca: trustme.CA, version: ssl.TLSVersion) -> None:
    client = _client_context(ca, version)
    assert _handshake_with_permissive_server(ca, client) == version.name.replace("_", ".")  # the client can
    with pytest.raises(ssl.SSLError):
        _handshake(tls_server, client)


def test_weak_ciphers_are_refused(tls_server: Server, ca: trustme.CA) -> None:
    context = _client_context(ca, ssl.TLSVersion.TLSv1_2)
    context.set_ciphers("AES128-SHA:DES-CBC3-SHA:@SECLEVEL=0")  # no forward secrecy, CBC
    with pytest.raises(ssl.SSLError):
        _handshake(tls_server, context)


def test_missing_certificate_stops_start_with_a_message(tmp_path: Path) -> None:
    config = platform_config(tls={"certfile": "absent.pem", "keyfile": "absent-key.pem"})
    with pytest.raises(RuntimeError, match=r"exited with 2:\nascrm: error: tls.certfile: cannot read") as failure:
        start_server(tmp_path, config, env={"TEST_PLATFORM_PASSWORD": PASSWORD})
    assert "absent.pem" in str(failure.value)
    assert "Traceback" not in str(failure.value)
