"""Native HTTPS: a certificate made by the test, TLS 1.2+ only, the same API over TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from tests.support.server import Server, ServerFactory, platform_config
from tests.support.tls import client_context, handshake_to, handshake_with_permissive_server, write_server_certificate


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA, serve_module: ServerFactory) -> Server:
    folder = tmp_path_factory.mktemp("tls")
    tls = write_server_certificate(ca, folder, "127.0.0.1", "localhost")
    server = serve_module(platform_config(tls=tls), folder=folder)  # the files are relative to the config
    server.verify = client_context(ca)
    return server


def _handshake(server: Server, context: ssl.SSLContext) -> str:
    return handshake_to(*server.address, context)


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
    assert _handshake(tls_server, client_context(ca, version)) == version.name.replace("_", ".")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_10_and_11_are_refused(tls_server: Server, ca: trustme.CA, version: ssl.TLSVersion) -> None:
    client = client_context(ca, version)
    assert handshake_with_permissive_server(ca, client) == version.name.replace("_", ".")  # the client can
    with pytest.raises(ssl.SSLError):
        _handshake(tls_server, client)


def test_weak_ciphers_are_refused(tls_server: Server, ca: trustme.CA) -> None:
    context = client_context(ca, ssl.TLSVersion.TLSv1_2)
    context.set_ciphers("AES128-SHA:DES-CBC3-SHA:@SECLEVEL=0")  # no forward secrecy, CBC
    with pytest.raises(ssl.SSLError):
        _handshake(tls_server, context)


def test_missing_certificate_stops_start_with_a_message(tmp_path: Path, serve: ServerFactory) -> None:
    config = platform_config(tls={"certfile": "absent.pem", "keyfile": "absent-key.pem"})
    with pytest.raises(RuntimeError, match=r"exited with 2:\nascrm: error: tls.certfile: cannot read") as failure:
        serve(config, folder=tmp_path)
    assert "absent.pem" in str(failure.value)
    assert "Traceback" not in str(failure.value)
