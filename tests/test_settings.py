"""Reading the config file and the environment into Settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from ascrm.core.protocol import NoopAnswer
from ascrm.errors import ConfigError
from ascrm.service.settings import DEFAULT_CIPHERS, Limits, Listen, Settings, load_settings

FULL = """
listen: {host: 0.0.0.0, port: 8443}
root_path: /autosecretary/
rules: rules/
timezone: Asia/Yekaterinburg
auth:
  platform:
    - user: autosecretary
      password: ${PLATFORM_PASSWORD}
    - user: autosecretary-next
      password_hash: "scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhcw=="
  admin:
    - user: ops
      password: "${ADMIN_PASSWORD}"
tls: {certfile: /etc/ascrm/cert.pem, keyfile: key.pem}
limits: {max_body_bytes: 1024}
protocol: {noop: {event_type: null, param: null}}
log: {format: json, level: warning}
"""


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, env={})
    assert settings.listen == Listen("127.0.0.1", 8080)
    assert settings.rules is None  # ./rules or the shipped examples, decided when serving
    assert settings.root_path == ""
    assert settings.timezone == "Europe/Moscow"
    assert settings.platform_credentials == ()
    assert settings.tls is None
    assert settings.limits.max_body_bytes == 65536
    assert settings.noop == NoopAnswer(0, "")
    assert settings.log.format == "auto"


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "ascrm.yaml"
    path.write_text(FULL)
    settings = load_settings(path, env={"PLATFORM_PASSWORD": "p1", "ADMIN_PASSWORD": "a1"})
    assert settings.listen == Listen("0.0.0.0", 8443)
    assert settings.root_path == "/autosecretary"
    assert settings.rules == tmp_path / "rules"  # relative to the config file
    assert settings.tzinfo.key == "Asia/Yekaterinburg"
    platform = settings.platform_credentials
    assert [c.user for c in platform] == ["autosecretary", "autosecretary-next"]
    assert platform[0].password == "p1"
    assert platform[1].password_hash is not None
    assert settings.admin_credentials[0].password == "a1"
    assert settings.tls is not None
    assert settings.tls.certfile == Path("/etc/ascrm/cert.pem")
    assert settings.tls.keyfile == tmp_path / "key.pem"
    assert settings.tls.ciphers == DEFAULT_CIPHERS
    assert settings.limits.max_body_bytes == 1024
    assert settings.noop == NoopAnswer(None, None)
    assert (settings.log.format, settings.log.level) == ("json", "warning")
    assert "p1" not in repr(settings)


def test_environment_credentials_only_when_the_file_has_none(tmp_path: Path) -> None:
    env = {"ASCRM_PLATFORM_PASSWORD": "e1", "ASCRM_ADMIN_USER": "boss", "ASCRM_ADMIN_PASSWORD": "e2"}
    settings = load_settings(None, env=env)
    assert [(c.user, c.password) for c in settings.platform_credentials] == [("autosecretary", "e1")]
    assert [(c.user, c.password) for c in settings.admin_credentials] == [("boss", "e2")]
    path = tmp_path / "ascrm.yaml"
    path.write_text("auth: {platform: [{user: file, password: f1}]}\n")
    settings = load_settings(path, env=env)
    assert [c.user for c in settings.platform_credentials] == ["file"]


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("listen: {port: '80'}", "listen.port", "80"),
        ("listen: {host: ''}", "listen.host", ""),
        ("rules: 5", "rules", 5),
        ("timezone: UTC+3", "timezone", "UTC+3"),
        ("nope: true", "nope", True),
        ("limits: {max_body: 1}", "limits.max_body", 1),
        ("auth: {platform: {user: a}}", "auth.platform", None),
        ("auth: {operators: []}", "auth.operators", None),
        ("auth: {platform: [{user: a, password: b, role: x}]}", "auth.platform[0].role", "x"),
        ("tls: {certfile: a, keyfile: b, ciphers: ''}", "tls.ciphers", ""),
        ("log: {level: verbose}", "log.level", "verbose"),
        ("log: {decisions: {max_bytes: 5000}}", "log.decisions.file", None),
        ("log: {decisions: {file: d.log, max_bytes: 10}}", "log.decisions.max_bytes", 10),
        ("log: {decisions: {file: d.log, backups: -1}}", "log.decisions.backups", -1),
        ("metrics: {public: 'yes'}", "metrics.public", "yes"),
        ("reload: {settle_ms: -5}", "reload.settle_ms", -5),
        ("health: {check_interval_ms: 10}", "health.check_interval_ms", 10),
        ("auth: {limits: {per_client: 0}}", "auth.limits.per_client", 0),
        ("auth: {limits: {kdf_workers: 100}}", "auth.limits.kdf_workers", 100),
        ("auth: {limits: {window_seconds: 'a'}}", "auth.limits.window_seconds", "a"),
        ("auth: {limits: {tracked_keys: 0}}", "auth.limits.tracked_keys", 0),
        ("auth: {limits: {bogus: 1}}", "auth.limits.bogus", 1),
        ("state: {sweep_interval_ms: 5}", "state.sweep_interval_ms", 5),
        ("state: {max_call_bytes: 100}", "state.max_call_bytes", 100),
        ("state: {max_call_bytes: '64k'}", "state.max_call_bytes", "64k"),
        ("limits: {max_headers: 0}", "limits.max_headers", 0),
        ("limits: {max_header_bytes: 100}", "limits.max_header_bytes", 100),
        ("limits: {max_url_bytes: many}", "limits.max_url_bytes", "many"),
        ("limits: {header_timeout_seconds: 0}", "limits.header_timeout_seconds", 0),
        ("limits: {body_timeout_seconds: soon}", "limits.body_timeout_seconds", "soon"),
        ("limits: {keep_alive_seconds: -1}", "limits.keep_alive_seconds", -1),
        ("limits: {tls_handshake_timeout_seconds: 0}", "limits.tls_handshake_timeout_seconds", 0),
        ("limits: {max_connections: 0}", "limits.max_connections", 0),
        ("limits: {max_connections_per_client: 0}", "limits.max_connections_per_client", 0),
        ("limits: {shutdown_idle_grace_seconds: 100}", "limits.shutdown_idle_grace_seconds", 100),
    ],
)
def test_errors_name_the_key_and_the_value(tmp_path: Path, text: str, key: str, value: object) -> None:
    path = tmp_path / "ascrm.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert caught.value.key == key
    assert caught.value.value == value
    assert str(caught.value).startswith(f"{path}: {key}: ")


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "ascrm.yaml"
    path.write_text("auth: {platform: [{user: a, password: hunter2, password_hash: x}]}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert "hunter2" not in str(caught.value)
    assert "password" in caught.value.key


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ascrm.yaml"
    path.write_text("auth: {platform: [{user: a, password: '${NOT_SET_ANYWHERE}'}]}\n")
    with pytest.raises(ConfigError, match=r"auth\.platform\[0\]\.password: environment variable NOT_SET_ANYWHERE"):
        load_settings(path, env={})


def test_with_overrides_keeps_the_rest() -> None:
    settings = Settings(timezone="UTC").with_overrides(listen=Listen("127.0.0.1", 9000))
    assert (settings.listen.port, settings.timezone) == (9000, "UTC")


def test_the_shipped_example_config_loads(tmp_path: Path) -> None:
    path = Path(__file__).parent.parent / "deploy" / "ascrm.example.yaml"
    settings = load_settings(path, env={"ASCRM_PLATFORM_PASSWORD": "p", "ASCRM_ADMIN_PASSWORD": "a"})
    assert settings.root_path == "/autosecretary"
    assert settings.listen == Listen("127.0.0.1", 8080, ("127.0.0.1",))  # behind nginx on this host
    assert settings.tls is None
    assert [c.user for c in settings.platform_credentials] == ["autosecretary"]
    native = path.read_text().replace("# tls:", "tls:").replace("#   ", "  ")
    (tmp_path / "native.yaml").write_text(native)
    settings = load_settings(
        tmp_path / "native.yaml", env={"ASCRM_PLATFORM_PASSWORD": "p", "ASCRM_ADMIN_PASSWORD": "a"}
    )
    assert settings.tls is not None  # the commented-out native HTTPS block is valid once uncommented
    assert settings.tls.certfile == Path("/etc/ascrm/tls/fullchain.pem")


def test_trusted_proxies_default_to_loopback_and_are_normalised(tmp_path: Path) -> None:
    assert Settings().listen.forwarded_allow_ips == ("127.0.0.1", "::1")
    path = tmp_path / "ascrm.yaml"
    path.write_text("listen: {forwarded_allow_ips: [10.0.0.0/8, 192.0.2.5/32, '::1', 'fd00::/8']}\n")
    assert load_settings(path, env={}).listen.forwarded_allow_ips == ("10.0.0.0/8", "192.0.2.5", "::1", "fd00::/8")
    path.write_text("listen: {forwarded_allow_ips: []}\n")
    assert load_settings(path, env={}).listen.forwarded_allow_ips == ()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("['*']", "'*' lets any client forge its address: name the proxies' addresses or networks (CIDR) (got '*')"),
        ("[127.0.0.1, nginx]", "not an IP address or network: 'nginx' does not appear to be an IPv4 or IPv6 network"),
        ("[10.1.2.3/8]", "10.1.2.3/8 has host bits set (got '10.1.2.3/8')"),
        ("127.0.0.1", "must be of list type"),
    ],
)
def test_bad_trusted_proxies_are_named(tmp_path: Path, entries: str, message: str) -> None:
    path = tmp_path / "ascrm.yaml"
    path.write_text(f"listen: {{forwarded_allow_ips: {entries}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert caught.value.key == "listen.forwarded_allow_ips"
    assert message in str(caught.value)


def test_decision_log_file_and_public_metrics(tmp_path: Path) -> None:
    path = tmp_path / "ascrm.yaml"
    path.write_text(
        "log: {decisions: {file: logs/d.jsonl, backups: 3}}\nmetrics: {public: true}\nreload: {settle_ms: 0}\n"
    )
    settings = load_settings(path, env={})
    assert settings.log.decisions is not None
    assert settings.log.decisions.path == tmp_path / "logs" / "d.jsonl"  # against the config's folder
    assert (settings.log.decisions.max_bytes, settings.log.decisions.backups) == (100 * 1024 * 1024, 3)
    assert settings.metrics_public is True
    assert settings.reload.settle_ms == 0
    defaults = load_settings(None, env={})
    assert defaults.log.decisions is None
    assert defaults.metrics_public is False


def test_login_limits_and_health_are_read(tmp_path: Path) -> None:
    path = tmp_path / "ascrm.yaml"
    path.write_text("auth: {limits: {per_client: 3, kdf_queue: 0}}\nhealth: {check_interval_ms: 250}\n")
    settings = load_settings(path, env={})
    assert (settings.login.per_client, settings.login.kdf_queue, settings.login.per_user) == (3, 0, 100)
    assert settings.health.check_interval_ms == 250


def test_scrypt_hashes_past_the_cost_caps_are_refused(tmp_path: Path) -> None:
    salt, digest = "c2FsdHNhbHRzYWx0c2FsdA==", "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g="
    path = tmp_path / "ascrm.yaml"
    for params, problem in (("131072$8$1", "128 MiB"), ("16384$8$16", "N·r·p"), ("524288$1$1", "below 2^(16·r)")):
        path.write_text(f"auth: {{platform: [{{user: a, password_hash: 'scrypt${params}${salt}${digest}'}}]}}\n")
        with pytest.raises(ConfigError) as caught:
            load_settings(path, env={})
        assert caught.value.key == "auth.platform[0].password_hash"
        assert problem in str(caught.value)


def test_call_budget_and_sweep_settings(tmp_path: Path) -> None:
    assert (Settings().state.max_call_bytes, Settings().state.sweep_interval_ms) == (65536, 1000)
    path = tmp_path / "ascrm.yaml"
    path.write_text("state: {max_call_bytes: 4096, sweep_interval_ms: 250}\n")
    state = load_settings(path, env={}).state
    assert (state.max_call_bytes, state.sweep_interval_ms) == (4096, 250)


def test_edge_limits_have_defaults_and_are_read(tmp_path: Path) -> None:
    assert load_settings(None, env={}).limits == Limits()
    path = tmp_path / "ascrm.yaml"
    path.write_text(
        "limits: {max_url_bytes: 4096, max_header_bytes: 8192, max_headers: 32, header_timeout_seconds: 2.5,"
        " body_timeout_seconds: 3, keep_alive_seconds: 4, tls_handshake_timeout_seconds: 5, max_connections: 100,"
        " shutdown_idle_grace_seconds: 0}\n"
    )
    limits = load_settings(path, env={}).limits
    assert limits == Limits(
        max_url_bytes=4096,
        max_header_bytes=8192,
        max_headers=32,
        header_timeout_seconds=2.5,
        body_timeout_seconds=3.0,
        keep_alive_seconds=4.0,
        tls_handshake_timeout_seconds=5.0,
        max_connections=100,
        shutdown_idle_grace_seconds=0.0,
    )
    assert isinstance(limits.body_timeout_seconds, float)


# ----------------------------------------------------------------------------------------------------
# How ascrm connects to Redis: TLS files, Sentinel, the connection bound

RUNS = "redis_url: 'rediss://redis.example:6380/0'"


def test_redis_connection_settings_are_read_with_files_against_the_config(tmp_path: Path, ca: trustme.CA) -> None:
    assert (Settings().state.max_connections, Settings().state.sentinels) == (64, ())
    (tmp_path / "tls").mkdir()
    ca.cert_pem.write_to_path(str(tmp_path / "tls" / "ca.pem"))
    client = ca.issue_cert("ascrm-client")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "tls" / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "tls" / "client-key.pem"))
    path = tmp_path / "ascrm.yaml"
    path.write_text(
        f"state: {{{RUNS}, max_connections: 16, tls_ca_file: tls/ca.pem, tls_cert_file: tls/client.pem,"
        " tls_key_file: tls/client-key.pem, sentinels: ['10.0.0.5:26379', '[fd00::7]:26379'],"
        " sentinel_master: ascrm, sentinel_password: '${SENTINEL_PASSWORD}'}\n"
    )
    state = load_settings(path, env={"SENTINEL_PASSWORD": "s3nt"}).state
    assert state.max_connections == 16
    assert state.tls_ca_file == tmp_path / "tls" / "ca.pem"
    assert (state.tls_cert_file, state.tls_key_file) == (
        tmp_path / "tls" / "client.pem",
        tmp_path / "tls" / "client-key.pem",
    )
    assert state.sentinels == ("10.0.0.5:26379", "[fd00::7]:26379")
    assert (state.sentinel_master, state.sentinel_password) == ("ascrm", "s3nt")
    assert "s3nt" not in repr(state)


@pytest.mark.parametrize(
    ("state", "key", "value"),
    [
        ("max_connections: 0", "state.max_connections", 0),
        ("max_connections: 100000", "state.max_connections", 100000),
        ("sentinels: ['127.0.0.1:26379']", "state.sentinel_master", None),
        ("sentinel_master: ascrm", "state.sentinels", None),
        ("sentinels: [], sentinel_master: ascrm", "state.sentinels", None),
        ("sentinels: '127.0.0.1:26379', sentinel_master: ascrm", "state.sentinels", "127.0.0.1:26379"),
        ("sentinels: [sentinel-1], sentinel_master: ascrm", "state.sentinels[0]", "sentinel-1"),
        ("sentinels: ['h:1', 'h:0'], sentinel_master: ascrm", "state.sentinels[1]", "h:0"),
        ("sentinels: ['h:65536'], sentinel_master: ascrm", "state.sentinels[0]", "h:65536"),
        ("sentinels: ['h:port'], sentinel_master: ascrm", "state.sentinels[0]", "h:port"),
        ("sentinels: [':26379'], sentinel_master: ascrm", "state.sentinels[0]", ":26379"),
        ("sentinels: ['h:26379'], sentinel_master: ''", "state.sentinel_master", ""),
        ("sentinel_password: x", "state.sentinel_password", None),
        (
            "sentinels: ['h:26379'], sentinel_master: ascrm, redis_url: 'unix:///run/redis.sock'",
            "state.redis_url",
            "unix:///run/redis.sock",
        ),
        ("tls_ca_file: ca.pem", "state.tls_ca_file", "ca.pem"),  # redis:// would not use it
        ("redis_url: 'redis://h:6379/0', tls_ca_file: ca.pem", "state.tls_ca_file", "ca.pem"),
        (f"{RUNS}, tls_ca_file: missing.pem", "state.tls_ca_file", "missing.pem"),
        (f"{RUNS}, tls_ca_file: ''", "state.tls_ca_file", ""),
        (f"{RUNS}, tls_cert_file: client.pem", "state.tls_key_file", None),
        (f"{RUNS}, tls_key_file: client-key.pem", "state.tls_cert_file", None),
    ],
)
def test_redis_connection_errors_name_the_key_and_the_value(
    tmp_path: Path, state: str, key: str, value: object
) -> None:
    path = tmp_path / "ascrm.yaml"
    path.write_text(f"state: {{{state}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert caught.value.key == key
    assert caught.value.value == value
    assert str(caught.value).startswith(f"{path}: {key}: ")


def test_tls_files_that_are_no_certificates_are_refused_at_load(tmp_path: Path, ca: trustme.CA) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("one").cert_chain_pems[0].write_to_path(str(tmp_path / "one.pem"))
    ca.issue_cert("two").private_key_pem.write_to_path(str(tmp_path / "two-key.pem"))
    path = tmp_path / "ascrm.yaml"
    for state, key, problem in (
        ("tls_ca_file: garbage.pem", "state.tls_ca_file", "holds no CA certificate"),
        ("tls_ca_file: ca.pem, tls_cert_file: one.pem, tls_key_file: two-key.pem", "state.tls_cert_file", "its key"),
        ("tls_cert_file: garbage.pem, tls_key_file: two-key.pem", "state.tls_cert_file", "its key"),
    ):
        path.write_text(f"state: {{{RUNS}, {state}}}\n")
        with pytest.raises(ConfigError) as caught:
            load_settings(path, env={})
        assert caught.value.key == key
        assert problem in caught.value.message


def test_redis_passwords_are_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "ascrm.yaml"
    for state, key in (
        ("redis_url: 'http://:hunter2@redis.example/0'", "state.redis_url"),
        ("redis_url: 'unix://:hunter2@/run/redis.sock', sentinels: ['h:1'], sentinel_master: m", "state.redis_url"),
        ("sentinel_password: 7, sentinels: ['h:1'], sentinel_master: m", "state.sentinel_password"),
    ):
        path.write_text(f"state: {{{state}}}\n")
        with pytest.raises(ConfigError) as caught:
            load_settings(path, env={})
        assert caught.value.key == key
        assert "hunter2" not in str(caught.value)
        assert "got 7" not in str(caught.value)
