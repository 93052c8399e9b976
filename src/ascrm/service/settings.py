"""The service configuration: one YAML file plus the environment, read into one frozen Settings."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cerberus
import yaml

from ascrm.core.calls.config import StateSettings, sentinel_address
from ascrm.core.calls.sticky import StickySettings
from ascrm.core.defaults import DEFAULT_TIMEZONE
from ascrm.core.notify.message import NotifySettings
from ascrm.core.protocol import NoopAnswer
from ascrm.core.rules.durations import duration_seconds
from ascrm.core.rules.limits import RuleLimits
from ascrm.errors import ConfigError
from ascrm.service.auth.basic import Credential, PasswordHash
from ascrm.service.auth.login import LoginLimits

# Mozilla "intermediate" ciphers for TLS 1.2 (TLS 1.3 suites are always on and not configurable here).
DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Addresses whose X-Forwarded-For / X-Forwarded-Proto are believed: a proxy on this host.
LOOPBACK_PROXIES = ("127.0.0.1", "::1")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the server listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    forwarded_allow_ips: tuple[str, ...] = LOOPBACK_PROXIES  # () trusts no proxy headers at all


@dataclass(frozen=True, slots=True)
class TLS:
    """Certificate and key for native HTTPS."""

    certfile: Path
    keyfile: Path
    ciphers: str = DEFAULT_CIPHERS


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a request or a connection may cost, how long each phase may take, and on the rule
    files ascrm reads (`limits.rules`)."""

    max_body_bytes: int = 64 * 1024
    max_url_bytes: int = 8 * 1024  # the request target; longer: 414
    max_header_bytes: int = 16 * 1024  # request line and headers together; more: 431
    max_headers: int = 64  # header fields; more: 431
    header_timeout_seconds: float = 10.0  # from the connection (or the request's first byte) to its last header
    body_timeout_seconds: float = 10.0  # from the last header to the body's last byte
    keep_alive_seconds: float = 5.0  # an idle connection stays open this long; a proxy's upstream pool must idle less
    tls_handshake_timeout_seconds: float = 10.0
    max_connections: int = 4096  # open at once; more are closed at accept (lowered to fit the open-file limit)
    max_connections_per_client: int = 256  # open at once from one address (trusted proxies exempt)
    shutdown_idle_grace_seconds: float = 1.0  # on SIGTERM, an idle connection may still deliver a request this long
    rules: RuleLimits = field(default_factory=RuleLimits)


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """The background check behind `/ready`."""

    check_interval_ms: int = 1000  # one store check per interval, however often /ready is asked


@dataclass(frozen=True, slots=True)
class LookupSettings:
    """The look-ups of rule files' `sources:`."""

    budget_ms: int = 500  # one decision's look-ups in all; past it a pending one counts as failed
    ca_file: Path | None = None  # the CAs a CRM's certificate is checked against (else the system's)


@dataclass(frozen=True, slots=True)
class ReloadSettings:
    """Reloading the rules when their files change."""

    watch: bool = True
    debounce_ms: int = 300  # an editor's save is several events: wait this long for quiet
    settle_ms: int = 1000  # a watched change is loaded once the files have stayed unchanged this long


@dataclass(frozen=True, slots=True)
class DecisionLogFile:
    """The decision log in its own file, rotated by size: `path`, `path.1` … `path.<backups>`."""

    path: Path
    max_bytes: int = 100 * 1024 * 1024
    backups: int = 10


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Log rendering and level; `auto` is console on a terminal, JSON lines otherwise.

    decisions: the file of the decision log (one line per answered request); None: the main log.
    """

    format: Literal["auto", "json", "console"] = "auto"
    level: str = "info"
    decisions: DecisionLogFile | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service is configured with; every field has a default."""

    listen: Listen = field(default_factory=Listen)
    root_path: str = ""
    rules: Path | None = None  # None: ./rules when present, else the shipped example rules
    timezone: str = DEFAULT_TIMEZONE
    platform_credentials: tuple[Credential, ...] = ()
    admin_credentials: tuple[Credential, ...] = ()
    login: LoginLimits = field(default_factory=LoginLimits)  # `auth.limits`
    tls: TLS | None = None
    limits: Limits = field(default_factory=Limits)
    noop: NoopAnswer = field(default_factory=NoopAnswer)
    log: LogSettings = field(default_factory=LogSettings)
    state: StateSettings = field(default_factory=StateSettings)
    reload: ReloadSettings = field(default_factory=ReloadSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    lookups: LookupSettings = field(default_factory=LookupSettings)
    sticky: StickySettings = field(default_factory=StickySettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    metrics_public: bool = False  # `metrics.public`: /metrics without credentials (a scraper on a private network)
    source: Path | None = None

    @property
    def tzinfo(self) -> ZoneInfo:
        """The configured time zone."""
        return ZoneInfo(self.timezone)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (command-line flags)."""
        return replace(self, **changes)


def _check_timezone(field_name: str, value: str, error: Any) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        error(field_name, "unknown time zone (use an IANA name such as Europe/Moscow)")


def trusted_proxies(values: list[str], key: str = "listen.forwarded_allow_ips") -> tuple[str, ...]:
    """The proxy addresses and networks to trust, each checked; ConfigError names the bad entry."""
    trusted = []
    for index, value in enumerate(values):
        where = f"{key}[{index}]"
        if value.strip() == "*":
            message = "'*' lets any client forge its address: name the proxies' addresses or networks (CIDR)"
            raise ConfigError(where, message, value)
        try:
            network = ipaddress.ip_network(value.strip())
        except ValueError as exc:
            raise ConfigError(where, f"not an IP address or network: {exc}", value) from None
        trusted.append(str(network.network_address) if network.num_addresses == 1 else str(network))
    return tuple(trusted)


def _check_proxies(field_name: str, value: list[str], error: Any) -> None:
    try:
        trusted_proxies(value, field_name)
    except ConfigError as exc:
        error(field_name, f"{exc.message} (got {exc.value!r})")


def _check_hash(field_name: str, value: str, error: Any) -> None:
    try:
        PasswordHash.parse(value)
    except ValueError as exc:
        error(field_name, str(exc))


def _check_sentinel(field_name: str, value: str, error: Any) -> None:
    try:
        sentinel_address(value)
    except ValueError as exc:
        error(field_name, str(exc))


_CREDENTIALS = {
    "type": "list",
    "schema": {
        "type": "dict",
        "schema": {
            "user": {"type": "string", "required": True, "empty": False, "regex": r"[^:]+"},
            "password": {"type": "string", "required": True, "empty": False, "excludes": "password_hash"},
            "password_hash": {
                "type": "string",
                "required": True,
                "excludes": "password",
                "check_with": _check_hash,
            },
        },
    },
}
SCHEMA: dict[str, Any] = {
    "listen": {
        "type": "dict",
        "schema": {
            "host": {"type": "string", "empty": False},
            "port": {"type": "integer", "min": 0, "max": 65535},
            "forwarded_allow_ips": {
                "type": "list",
                "schema": {"type": "string", "empty": False},
                "check_with": _check_proxies,
            },
        },
    },
    "root_path": {"type": "string", "regex": r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*/?"},
    "rules": {"type": "string", "empty": False},
    "timezone": {"type": "string", "check_with": _check_timezone},
    "auth": {
        "type": "dict",
        "schema": {
            "platform": _CREDENTIALS,
            "admin": _CREDENTIALS,
            "limits": {
                "type": "dict",
                "schema": {
                    "window_seconds": {"type": "integer", "min": 1, "max": 86400},
                    "per_client": {"type": "integer", "min": 1},
                    "per_user": {"type": "integer", "min": 1},
                    "tracked_keys": {"type": "integer", "min": 1, "max": 10_000_000},
                    "kdf_workers": {"type": "integer", "min": 1, "max": 64},
                    "kdf_queue": {"type": "integer", "min": 0, "max": 10_000},
                    "log_interval_seconds": {"type": "integer", "min": 1, "max": 86400},
                    "log_max_keys": {"type": "integer", "min": 1, "max": 1_000_000},
                },
            },
        },
    },
    "tls": {
        "type": "dict",
        "nullable": True,
        "schema": {
            "certfile": {"type": "string", "required": True, "empty": False},
            "keyfile": {"type": "string", "required": True, "empty": False},
            "ciphers": {"type": "string", "empty": False},
        },
    },
    "limits": {
        "type": "dict",
        "schema": {
            "max_body_bytes": {"type": "integer", "min": 1},
            "max_url_bytes": {"type": "integer", "min": 64},
            "max_header_bytes": {"type": "integer", "min": 1024},
            "max_headers": {"type": "integer", "min": 8},
            "header_timeout_seconds": {"type": "number", "min": 0.1, "max": 3600},
            "body_timeout_seconds": {"type": "number", "min": 0.1, "max": 3600},
            "keep_alive_seconds": {"type": "number", "min": 0.1, "max": 3600},
            "tls_handshake_timeout_seconds": {"type": "number", "min": 0.1, "max": 3600},
            "max_connections": {"type": "integer", "min": 1},
            "max_connections_per_client": {"type": "integer", "min": 1},
            "shutdown_idle_grace_seconds": {"type": "number", "min": 0, "max": 60},
            "rules": {
                "type": "dict",
                "schema": {
                    "file_bytes": {"type": "integer", "min": 1024},
                    "nodes": {"type": "integer", "min": 100},
                    "depth": {"type": "integer", "min": 8, "max": 500},
                    "data_file_bytes": {"type": "integer", "min": 1024},
                    "data_file_lines": {"type": "integer", "min": 1},
                },
            },
        },
    },
    "protocol": {
        "type": "dict",
        "schema": {
            "noop": {
                "type": "dict",
                "schema": {
                    "event_type": {"type": "integer", "nullable": True},
                    "param": {"type": "string", "nullable": True},
                },
            }
        },
    },
    "state": {
        "type": "dict",
        "schema": {
            "backend": {"type": "string", "allowed": ["memory", "redis"]},
            "redis_url": {"type": "string", "regex": r"(redis|rediss|unix)://.*"},
            "key_prefix": {"type": "string"},
            "ttl_seconds": {"type": "integer", "min": 1},
            "ended_grace_seconds": {"type": "integer", "min": 0},
            "max_calls": {"type": "integer", "min": 1},
            "timeout_ms": {"type": "integer", "min": 1},
            "sweep_interval_ms": {"type": "integer", "min": 10, "max": 3_600_000},
            "max_call_bytes": {"type": "integer", "min": 4096},
            "max_connections": {"type": "integer", "min": 1, "max": 10_000},
            "cache_mb": {"type": "integer", "min": 0, "max": 65_536},
            "tls_ca_file": {"type": "string", "empty": False},
            "tls_cert_file": {"type": "string", "empty": False},
            "tls_key_file": {"type": "string", "empty": False},
            "sentinels": {
                "type": "list",
                "empty": False,
                "schema": {"type": "string", "check_with": _check_sentinel},
            },
            "sentinel_master": {"type": "string", "empty": False},
            "sentinel_password": {"type": "string"},
            "data_dir": {"type": "string", "empty": False},
            "max_list_entries": {"type": "integer", "min": 1, "max": 100_000_000},
        },
    },
    "reload": {
        "type": "dict",
        "schema": {
            "watch": {"type": "boolean"},
            "debounce_ms": {"type": "integer", "min": 0, "max": 60000},
            "settle_ms": {"type": "integer", "min": 0, "max": 60000},
        },
    },
    "health": {
        "type": "dict",
        "schema": {"check_interval_ms": {"type": "integer", "min": 50, "max": 60000}},
    },
    "sticky": {
        "type": "dict",
        "schema": {
            "days": {"type": "integer", "min": 0, "max": 3650},
            "max_entries": {"type": "integer", "min": 1, "max": 100_000_000},
        },
    },
    "lookups": {
        "type": "dict",
        "schema": {
            "budget_ms": {"type": "integer", "min": 1, "max": 10_000},
            "ca_file": {"type": "string", "empty": False},
        },
    },
    "log": {
        "type": "dict",
        "schema": {
            "format": {"type": "string", "allowed": ["auto", "json", "console"]},
            "level": {"type": "string", "allowed": list(LOG_LEVELS)},
            "decisions": {
                "type": "dict",
                "nullable": True,
                "schema": {
                    "file": {"type": "string", "required": True, "empty": False},
                    "max_bytes": {"type": "integer", "min": 1024},
                    "backups": {"type": "integer", "min": 0, "max": 1000},
                },
            },
        },
    },
    "metrics": {"type": "dict", "schema": {"public": {"type": "boolean"}}},
    "notify": {
        "type": "dict",
        "schema": {
            "give_up_after": {"type": ["string", "integer"]},  # 24h, 30m, or seconds
            "max_pending": {"type": "integer", "min": 1, "max": 10_000_000},
            "concurrency": {"type": "integer", "min": 1, "max": 100},
            "attempt_timeout_ms": {"type": "integer", "min": 100, "max": 120_000},
            "backoff_initial_ms": {"type": "integer", "min": 10, "max": 3_600_000},
            "backoff_max_ms": {"type": "integer", "min": 10, "max": 86_400_000},
            "claim_after_ms": {"type": "integer", "min": 1000, "max": 86_400_000},
        },
    },
}


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the config file at path (or none: all defaults) and the environment into Settings."""
    env = os.environ if env is None else env
    source = str(path) if path else None
    document: Any = {}
    if path is not None:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError("config", f"cannot read the file: {exc.strerror}", source=source) from None
        except yaml.YAMLError as exc:
            raise ConfigError("config", f"not valid YAML: {exc}", source=source) from None
        if not isinstance(document, dict):
            raise ConfigError(
                "config", "the top level must be a mapping of keys", type(document).__name__, source=source
            )
    document = _expand_env(document, env, "", source)
    validator = cerberus.Validator(SCHEMA)
    if not validator.validate(document):
        key, message = _first_error(validator.errors)
        if key.endswith((".password", ".password_hash", ".sentinel_password")):  # never echo a secret
            if message == "is required":
                message = "needs password or password_hash"
            raise ConfigError(key, message, source=source)
        value = _value_at(document, key)
        raise ConfigError(key, message, _redacted(value) if key == "state.redis_url" else value, source=source)
    base = path.parent if path is not None else Path.cwd()
    return _build(document, base, env, path)


def _build(doc: dict[str, Any], base: Path, env: Mapping[str, str], path: Path | None) -> Settings:
    listen = doc.get("listen", {})
    tls = doc.get("tls")
    noop = doc.get("protocol", {}).get("noop", {})
    auth = doc.get("auth", {})
    log = doc.get("log", {})
    defaults = Settings()
    return Settings(
        listen=Listen(
            host=listen.get("host", defaults.listen.host),
            port=listen.get("port", defaults.listen.port),
            forwarded_allow_ips=trusted_proxies(listen["forwarded_allow_ips"])
            if "forwarded_allow_ips" in listen
            else defaults.listen.forwarded_allow_ips,
        ),
        root_path=doc.get("root_path", "").rstrip("/"),
        rules=_resolve(base, doc["rules"]) if "rules" in doc else None,
        timezone=doc.get("timezone", defaults.timezone),
        platform_credentials=_credentials(auth.get("platform"), env, "PLATFORM", "autosecretary"),
        admin_credentials=_credentials(auth.get("admin"), env, "ADMIN", "admin"),
        login=LoginLimits(**auth.get("limits", {})),
        tls=None
        if not tls
        else TLS(
            certfile=_resolve(base, tls["certfile"]),
            keyfile=_resolve(base, tls["keyfile"]),
            ciphers=tls.get("ciphers", DEFAULT_CIPHERS),
        ),
        limits=_limits(doc.get("limits", {})),
        noop=NoopAnswer(event_type=noop.get("event_type", 0), param=noop.get("param", "")),
        log=LogSettings(
            format=log.get("format", "auto"), level=log.get("level", "info"), decisions=_decision_log(log, base)
        ),
        state=_state(doc.get("state", {}), base, str(path) if path else None),
        reload=ReloadSettings(**doc.get("reload", {})),
        health=HealthSettings(**doc.get("health", {})),
        lookups=_lookups(doc.get("lookups", {}), base, str(path) if path else None),
        sticky=StickySettings(**doc.get("sticky", {})),
        notify=_notify(doc.get("notify", {}), str(path) if path else None),
        metrics_public=doc.get("metrics", {}).get("public", False),
        source=path,
    )


def _notify(values: dict[str, Any], source: str | None) -> NotifySettings:
    """The notify section: its durations in seconds."""
    defaults = NotifySettings()
    give_up = values.get("give_up_after", defaults.give_up_after)
    seconds = float(give_up) if isinstance(give_up, (int, float)) else duration_seconds(give_up)
    if seconds is None or not 60 <= seconds <= 30 * 86400:
        message = "a duration from 1m to 30d (24h, 90m, or seconds)"
        raise ConfigError("notify.give_up_after", message, give_up, source=source)
    backoff_initial = values.get("backoff_initial_ms", defaults.backoff_initial * 1000) / 1000
    backoff_max = values.get("backoff_max_ms", defaults.backoff_max * 1000) / 1000
    if backoff_max < backoff_initial:
        message = "at least notify.backoff_initial_ms"
        raise ConfigError("notify.backoff_max_ms", message, values.get("backoff_max_ms"), source=source)
    return NotifySettings(
        give_up_after=seconds,
        max_pending=values.get("max_pending", defaults.max_pending),
        concurrency=values.get("concurrency", defaults.concurrency),
        attempt_timeout=values.get("attempt_timeout_ms", defaults.attempt_timeout * 1000) / 1000,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        claim_after=values.get("claim_after_ms", defaults.claim_after * 1000) / 1000,
    )


def _state(values: dict[str, Any], base: Path, source: str | None) -> StateSettings:
    """The state section, its keys checked together, its files resolved and read (a CA file that cannot
    be read fails here, not at the first call)."""

    def refuse(key: str, message: str, value: Any = None) -> ConfigError:
        return ConfigError(f"state.{key}", message, value, source=source)

    state = dict(values)
    url = state.get("redis_url", StateSettings().redis_url)
    if "sentinels" in state and "sentinel_master" not in state:
        raise refuse("sentinel_master", "is required with state.sentinels (the master's name)")
    if "sentinel_master" in state and "sentinels" not in state:
        raise refuse("sentinels", "is required with state.sentinel_master")
    if "sentinel_password" in state and "sentinels" not in state:
        raise refuse("sentinel_password", "is only used with state.sentinels")
    if "sentinels" in state and url.startswith("unix://"):
        raise refuse(
            "redis_url", "cannot be unix:// with state.sentinels: Sentinel names TCP addresses", _redacted(url)
        )
    for first, second in (("tls_cert_file", "tls_key_file"), ("tls_key_file", "tls_cert_file")):
        if first in state and second not in state:
            raise refuse(second, f"is required with state.{first}")
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        if key not in state:
            continue
        if not url.startswith("rediss://"):
            raise refuse(key, "needs a rediss:// state.redis_url (TLS)", state[key])
        given = state[key]
        state[key] = _resolve(base, given)
        try:
            state[key].read_bytes()
        except OSError as exc:
            raise refuse(key, f"cannot read the file: {exc.strerror}", given) from None
    try:
        if "tls_ca_file" in state:
            ssl.create_default_context(cafile=state["tls_ca_file"])
    except ssl.SSLError as exc:
        raise refuse("tls_ca_file", f"holds no CA certificate that can be read: {exc}", values["tls_ca_file"]) from None
    try:
        if "tls_cert_file" in state:
            ssl.create_default_context().load_cert_chain(state["tls_cert_file"], state["tls_key_file"])
    except ssl.SSLError as exc:
        message = f"with state.tls_key_file, not a certificate and its key: {exc}"
        raise refuse("tls_cert_file", message, values["tls_cert_file"]) from None
    if "sentinels" in state:
        state["sentinels"] = tuple(state["sentinels"])
    if "data_dir" in state:
        state["data_dir"] = _resolve(base, state["data_dir"])
    return StateSettings(**state)


def _lookups(values: dict[str, Any], base: Path, source: str | None) -> LookupSettings:
    lookups = dict(values)
    if "ca_file" in lookups:
        given = lookups["ca_file"]
        lookups["ca_file"] = _resolve(base, given)
        try:
            lookups["ca_file"].read_bytes()
        except OSError as exc:
            raise ConfigError(
                "lookups.ca_file", f"cannot read the file: {exc.strerror}", given, source=source
            ) from None
    return LookupSettings(**lookups)


def _redacted(url: Any) -> Any:
    """A Redis URL as it may be shown: its password replaced by ***."""
    if not isinstance(url, str):
        return url
    return re.sub(r"^([a-z]+://[^/@]*?:)[^/@]*@", r"\1***@", url)


def _limits(values: dict[str, Any]) -> Limits:
    converted: dict[str, Any] = {
        key: float(value) if key.endswith("_seconds") else value for key, value in values.items() if key != "rules"
    }
    return Limits(**converted, rules=RuleLimits(**values.get("rules", {})))


def _decision_log(log: dict[str, Any], base: Path) -> DecisionLogFile | None:
    decisions = log.get("decisions")
    if not decisions:
        return None
    extra = {key: decisions[key] for key in ("max_bytes", "backups") if key in decisions}
    return DecisionLogFile(path=_resolve(base, decisions["file"]), **extra)


def _credentials(
    entries: list[dict[str, str]] | None, env: Mapping[str, str], role: str, default_user: str
) -> tuple[Credential, ...]:
    if entries is None:  # no list in the file: ASCRM_<ROLE>_PASSWORD (and _USER) may give one
        password = env.get(f"ASCRM_{role}_PASSWORD")
        if not password:
            return ()
        return (Credential(user=env.get(f"ASCRM_{role}_USER") or default_user, password=password),)
    return tuple(
        Credential(
            user=entry["user"],
            password=entry.get("password"),
            password_hash=PasswordHash.parse(entry["password_hash"]) if "password_hash" in entry else None,
        )
        for entry in entries
    )


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _expand_env(value: Any, env: Mapping[str, str], key: str, source: str | None) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, env, f"{key}.{k}" if key else str(k), source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, env, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(key, f"environment variable {name} is not set", source=source)
            return env[name]

        return _ENV_REF.sub(substitute, value)
    return value


def _first_error(errors: Any, prefix: str = "") -> tuple[str, str]:
    """Flatten cerberus' nested error tree to the first `dotted.key[0]` and its message."""
    for name, items in sorted(errors.items(), key=lambda kv: str(kv[0])):
        key = f"{prefix}[{name}]" if isinstance(name, int) else (f"{prefix}.{name}" if prefix else str(name))
        for item in items:
            if isinstance(item, dict):
                return _first_error(item, key)
            return key, _plain_message(str(item))
    return prefix or "config", "invalid"


def _plain_message(message: str) -> str:
    if message == "unknown field":
        return "unknown key"
    if message.startswith("value does not match regex"):
        return "has a bad format"
    if message.startswith("'password_hash' must not be present with 'password'"):
        return "give password or password_hash, not both"
    if message.startswith("'password' must not be present with 'password_hash'"):
        return "give password or password_hash, not both"
    if message == "required field":
        return "is required"
    return message


def _value_at(document: Any, key: str) -> Any:
    node = document
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if part.startswith("["):
            index = int(part[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node if not isinstance(node, (dict, list)) else None
