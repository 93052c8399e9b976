"""The shipped nginx site (deploy/nginx/ascrm.conf) in front of a real `ascrm serve`, over HTTPS.

nginx runs in the foreground as the test's user, on a loopback port, with the shipped site file;
only its ports, certificate paths and log folder are replaced (each replacement must match exactly
once, so a changed site file fails here rather than being silently tested in another shape).
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
import yaml

from ascrm.service.server import UVICORN_OPTIONS
from ascrm.service.settings import Limits
from tests.support.needs import needs
from tests.support.net import free_port
from tests.support.server import PASSWORD, USER, Server, ServerFactory
from tests.support.tls import client_context, handshake_to, handshake_with_permissive_server, write_server_certificate
from tests.support.tools import QUICK_CALL, run_tool
from tests.support.waiting import wait_until

DEPLOY = Path(__file__).parent.parent / "deploy"
SITE = DEPLOY / "nginx" / "ascrm.conf"
EXAMPLE_CONFIG = DEPLOY / "ascrm.example.yaml"
CONTENT_TYPE = "application/json; charset=UTF-8"
RULES = """
rules:
  - id: to-sales
    on: CallAccepted
    do: {TransferEXT: "1234"}
  - id: connected
    on: poll
    do: {TransferPBX: PBX4951234}
"""


def _nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


NGINX = _nginx()
needs_nginx = needs(NGINX, "nginx is not installed (apt-get install nginx)")


def directive(name: str) -> list[str]:
    """The values of a directive in the shipped site file (comments stripped)."""
    text = re.sub(r"#.*", "", SITE.read_text())
    return [value.strip() for value in re.findall(rf"^[ \t]*{name}[ \t]+([^;{{]+);", text, re.MULTILINE)]


def platform_check(
    base_url: str, auth: tuple[str, str], verify: ssl.SSLContext, call_id: int
) -> list[dict[str, object]]:
    """What the platform does: the connection test (GET and POST /CallEvent/0), an event, a poll.

    Each answer must be 200 with exactly the platform's content type; the ReturnCRMData bodies are returned.
    """
    event = {"CallID": call_id, "EventType": 1, "ServiceType": 1, "AN": "79991234567", "UN": "74951234567"}
    empty = dict.fromkeys(("CallID", "EventTime", "AN", "DN1", "DN2", "EXT1", "EXT2", "DTMF", "Generic"), "")
    requests = [
        ("GET", "/CallEvent", None),
        ("POST", "/CallEvent/0", {**empty, "UN": "74951234567", "EventType": "", "ServiceType": ""}),
        ("POST", "/CallEvent", event),
        ("GET", f"/CallEvent/{call_id}", None),
    ]
    bodies = []
    with httpx.Client(base_url=base_url, auth=auth, verify=verify, timeout=10) as http:
        for method, path, body in requests:
            response = http.request(method, path, json=body)
            assert (response.status_code, response.headers["content-type"]) == (200, CONTENT_TYPE), (method, path)
            bodies.append(response.json())
    return bodies


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{SITE.name}: expected {old!r} exactly once"
    return text.replace(old, new)


@dataclass
class Proxy:
    """nginx running the shipped site in front of ascrm."""

    base_url: str
    port: int
    ascrm: Server
    verify: ssl.SSLContext
    ca: trustme.CA
    access_log: Path


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory, ca: trustme.CA) -> Iterator[Proxy]:
    assert NGINX is not None
    folder = tmp_path_factory.mktemp("nginx")
    (folder / "rules.yaml").write_text(RULES)
    secrets = {"ASCRM_PLATFORM_PASSWORD": PASSWORD, "ASCRM_ADMIN_PASSWORD": "ops-pass"}
    ascrm = serve_module(
        folder=folder / "ascrm",
        args=("--config", str(EXAMPLE_CONFIG), "--rules", str(folder / "rules.yaml")),
        env=secrets,
        prefix="/autosecretary",
    )
    write_server_certificate(ca, folder, "127.0.0.1", "localhost", certfile="fullchain.pem", keyfile="privkey.pem")
    port = free_port()
    site = SITE.read_text()
    site = _replace_once(site, "listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    site = _replace_once(site, "listen [::]:443 ssl;", "")
    site = _replace_once(site, "server 127.0.0.1:8080;", f"server {ascrm.base_url.split('/')[2]};")
    site = _replace_once(site, "/etc/ssl/ascrm/fullchain.pem", str(folder / "fullchain.pem"))
    site = _replace_once(site, "/etc/ssl/ascrm/privkey.pem", str(folder / "privkey.pem"))
    site = _replace_once(site, "/var/log/nginx/ascrm.access.log", str(folder / "access.log"))
    site = _replace_once(site, "/var/log/nginx/ascrm.error.log", str(folder / "error.log"))
    (folder / "ascrm.conf").write_text(site)
    (folder / "nginx.conf").write_text(
        f"worker_processes 1;\nevents {{ worker_connections 64; }}\nhttp {{\n"
        f"    access_log off;\n    include {folder / 'ascrm.conf'};\n}}\n"
    )
    command = [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "main-error.log")]
    command += ["-g", f"daemon off; pid {folder / 'nginx.pid'};"]
    nginx = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def listening() -> bool:
        if nginx.poll() is not None:
            raise RuntimeError(f"nginx exited with {nginx.returncode}: {(folder / 'main-error.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_until(listening, "nginx to listen", timeout=10)
        verify = ssl.create_default_context()
        ca.configure_trust(verify)
        yield Proxy(f"https://127.0.0.1:{port}/autosecretary", port, ascrm, verify, ca, folder / "access.log")
    finally:
        nginx.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()
        ascrm.stop()


@needs_nginx
def test_the_platform_reaches_ascrm_through_nginx(proxy: Proxy) -> None:
    test_get, test_post, event, poll = platform_check(proxy.base_url, (USER, PASSWORD), proxy.verify, 4242)
    assert test_get == test_post == {"CallID": 0, "EventType": 0, "Param": ""}
    assert event == {"CallID": 4242, "EventType": 2, "Param": "1234"}  # TransferEXT
    assert poll == {"CallID": 4242, "EventType": 5, "Param": "PBX4951234"}  # TransferPBX
    assert proxy.ascrm.logged("event_answered", call_id=4242, rule="to-sales")


@needs_nginx
def test_wrong_credentials_still_get_ascrms_401(proxy: Proxy) -> None:
    with httpx.Client(base_url=proxy.base_url, verify=proxy.verify, auth=(USER, "wrong")) as http:
        response = http.get("/CallEvent")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="ascrm", charset="UTF-8"'
    assert response.headers["content-type"] == CONTENT_TYPE


OPERATOR_PATHS = ("/health", "/ready", "/metrics", "/openapi.json", "/admin/calls", "/admin/rules")


@needs_nginx
@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_operator_endpoints_are_not_served_to_the_internet(proxy: Proxy, path: str) -> None:
    with httpx.Client(verify=proxy.verify, auth=("ops", "ops-pass")) as http:
        for url in (proxy.base_url + path, proxy.base_url.removesuffix("/autosecretary") + path):
            response = http.get(url)
            assert response.status_code == 404, url
            assert response.headers["content-type"] == CONTENT_TYPE
            assert response.json()["error"] == "not_found"
        assert http.get(proxy.ascrm.base_url + path).status_code != 404  # ascrm's own address serves it


@needs_nginx
def test_the_opt_in_block_for_operator_endpoints_is_valid_nginx(tmp_path: Path) -> None:
    assert NGINX is not None
    lines = SITE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("# location ~"))
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "# }")
    block = [line.replace("# ", "", 1) for line in lines[start : end + 1]]
    site = "\n".join(lines[:start] + block + lines[end + 1 :])
    assert "allow 10.0.0.0/8;" in site
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "fullchain.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "privkey.pem"))
    site = _replace_once(site, "/etc/ssl/ascrm/fullchain.pem", str(tmp_path / "fullchain.pem"))
    site = _replace_once(site, "/etc/ssl/ascrm/privkey.pem", str(tmp_path / "privkey.pem"))
    site = site.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "ascrm.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(f"events {{}}\nhttp {{\n    include {tmp_path / 'ascrm.conf'};\n}}\n")
    command = [NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "e.log")]
    command += ["-g", f"pid {tmp_path / 'nginx.pid'};"]
    checked = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    assert checked.returncode == 0, checked.stderr


def _connection_test_client(proxy: Proxy, url: str, source: str, forged: str | None, tag: str) -> str:
    headers = {"X-Forwarded-For": forged} if forged else {}
    transport = httpx.HTTPTransport(local_address=source, verify=proxy.verify)
    with httpx.Client(base_url=url, auth=(USER, PASSWORD), transport=transport) as http:
        assert http.post("/CallEvent/0", json={"UN": tag}, headers=headers).status_code == 200
    (entry,) = proxy.ascrm.logged("connection_test", un=tag)
    return str(entry["client"])


@needs_nginx
@pytest.mark.parametrize(
    ("through_nginx", "source", "forged", "seen"),
    [
        (True, "127.0.0.2", None, "127.0.0.2"),  # nginx's X-Forwarded-For names the real client
        (True, "127.0.0.2", "203.0.113.7", "127.0.0.2"),  # a client's own X-Forwarded-For is replaced
        (False, "127.0.0.3", "203.0.113.7", "127.0.0.3"),  # straight to ascrm from elsewhere: not believed
    ],
)
def test_forwarded_for_is_believed_from_nginx_only(
    proxy: Proxy, through_nginx: bool, source: str, forged: str | None, seen: str
) -> None:
    url = proxy.base_url if through_nginx else proxy.ascrm.base_url
    tag = f"xff-{through_nginx}-{forged}"
    assert _connection_test_client(proxy, url, source, forged, tag) == seen


@needs_nginx
def test_body_limit_matches_ascrms_and_answers_json(proxy: Proxy) -> None:
    limit = Limits().max_body_bytes
    head = b'{"CallID": 77, "EventType": 13, "Generic": "'
    at_limit = head + b"x" * (limit - len(head) - 2) + b'"}'
    with httpx.Client(base_url=proxy.base_url, auth=(USER, PASSWORD), verify=proxy.verify) as http:
        accepted = http.post("/CallEvent", content=at_limit, headers={"Content-Type": "application/json"})
        refused = http.post("/CallEvent", content=at_limit + b" ", headers={"Content-Type": "application/json"})
    assert len(at_limit) == limit
    assert accepted.status_code == 200
    assert refused.status_code == 413
    assert refused.headers["content-type"] == CONTENT_TYPE
    assert refused.json() == {"error": "content_too_large", "message": f"request body is larger than {limit} bytes"}


@needs_nginx
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_handshake(proxy: Proxy, version: ssl.TLSVersion) -> None:
    assert handshake_to("127.0.0.1", proxy.port, client_context(proxy.ca, version)) == version.name.replace("_", ".")


@needs_nginx
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_10_and_11_are_refused(proxy: Proxy, version: ssl.TLSVersion) -> None:
    client = client_context(proxy.ca, version)
    assert handshake_with_permissive_server(proxy.ca, client) == version.name.replace("_", ".")  # the client can
    with pytest.raises(ssl.SSLError):
        handshake_to("127.0.0.1", proxy.port, client)


def test_site_limits_agree_with_ascrms() -> None:
    """The site's numbers that must match ascrm's: body limit, upstream address, pool idle time."""
    assert directive("client_max_body_size") == ["64k"]
    assert Limits().max_body_bytes == 64 * 1024
    assert directive("client_body_buffer_size") == ["64k"]  # bodies never spill to a temp file
    (pool_idle,) = directive("keepalive_timeout")[:1]
    assert int(pool_idle.removesuffix("s")) < UVICORN_OPTIONS["timeout_keep_alive"]
    listen = yaml.safe_load(EXAMPLE_CONFIG.read_text())["listen"]
    assert directive("server") == [f"{listen['host']}:{listen['port']}"]
    assert listen["forwarded_allow_ips"] == ["127.0.0.1"]
    assert directive("ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert directive("proxy_set_header")[2] == "X-Forwarded-For $remote_addr"  # never the client's own
    for timeout in ("client_header_timeout", "client_body_timeout", "send_timeout", "proxy_read_timeout"):
        assert directive(timeout) == ["10s"], timeout


@needs_nginx
def test_ascrm_probe_passes_through_nginx(proxy: Proxy, tmp_path: Path) -> None:
    """`ascrm probe` plays the platform's connection test and a whole call through nginx over HTTPS."""
    ca_file = tmp_path / "ca.pem"
    proxy.ca.cert_pem.write_to_path(str(ca_file))
    done = run_tool("probe", proxy.base_url, "--cacert", str(ca_file), *QUICK_CALL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("probe: passed: ")
    untrusted = run_tool("probe", proxy.base_url)  # nginx's certificate is not in the system's store
    assert untrusted.returncode == 3, untrusted.stdout + untrusted.stderr
    assert "certificate verify failed" in untrusted.stderr
