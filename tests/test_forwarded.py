"""X-Forwarded-For is believed only from the proxies in listen.forwarded_allow_ips (seen in the connection_test log)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, ServerFactory, platform_config

FORGED = "203.0.113.7"


def client_seen(server: Server, source: str, forwarded: str | None, tag: str) -> str | None:
    """The client address ascrm logs for a connection test sent from source (a loopback address)."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with server.client(transport=httpx.HTTPTransport(local_address=source)) as http:
        assert http.post("/CallEvent/0", json={"UN": tag}, headers=headers).status_code == 200
    (entry,) = server.logged("connection_test", un=tag)
    client: str | None = entry["client"]
    return client


@pytest.fixture(scope="module")
def default_server(serve_module: ServerFactory) -> Iterator[Server]:
    running = serve_module(platform_config())
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("source", "forwarded", "seen"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", FORGED, FORGED),  # a proxy on this host (the default) is believed
        ("127.0.0.3", None, "127.0.0.3"),
        ("127.0.0.3", FORGED, "127.0.0.3"),  # anyone else is not
        ("127.0.0.3", f"{FORGED}, 127.0.0.1", "127.0.0.3"),
    ],
)
def test_default_trusts_only_loopback_proxies(
    default_server: Server, source: str, forwarded: str | None, seen: str
) -> None:
    assert client_seen(default_server, source, forwarded, f"default-{source}-{forwarded}") == seen


@pytest.mark.parametrize(
    ("flag", "source", "seen"),
    [
        ("", "127.0.0.1", "127.0.0.1"),  # none trusted: not even loopback
        ("127.0.0.0/29", "127.0.0.3", FORGED),
        ("127.0.0.1,127.0.0.2", "127.0.0.3", "127.0.0.3"),
    ],
)
def test_flag_sets_the_trusted_proxies(serve: ServerFactory, flag: str, source: str, seen: str) -> None:
    server = serve(
        platform_config(listen={"forwarded_allow_ips": ["127.0.0.3"]}),  # the flag overrides the file
        args=("--forwarded-allow-ips", flag),
    )
    assert client_seen(server, source, FORGED, f"flag-{flag}") == seen


def test_config_key_sets_the_trusted_proxies(serve: ServerFactory) -> None:
    server = serve(platform_config(listen={"forwarded_allow_ips": ["127.0.0.3"]}))
    assert client_seen(server, "127.0.0.3", FORGED, "key-3") == FORGED
    assert client_seen(server, "127.0.0.1", FORGED, "key-1") == "127.0.0.1"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("*", "--forwarded-allow-ips[0]: '*' lets any client forge its address"),
        ("127.0.0.1,proxy.local", "--forwarded-allow-ips[1]: not an IP address or network"),
        ("10.0.0.1/8", "--forwarded-allow-ips[0]: not an IP address or network: 10.0.0.1/8 has host bits set"),
    ],
)
def test_bad_flag_is_refused_with_the_entry(tmp_path: Path, flag: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ascrm", "serve", "--port", "0", "--forwarded-allow-ips", flag],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
