"""Where call state lives and for how long: the `state` section of the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Where call state lives and for how long."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ascrm:"
    ttl_seconds: int = 4 * 3600  # a call that never ends is dropped this long after its last event
    ended_grace_seconds: int = 300  # an ended call stays readable (late polls, the admin API) this long
    max_calls: int = 100_000
    timeout_ms: int = 1000  # the budget of one store operation before answering without it
    sweep_interval_ms: int = 1000  # how often expired calls are forgotten, whether or not requests come
    max_call_bytes: int = 64 * 1024  # event history kept per call; past it the oldest records are trimmed
    max_connections: int = 64  # Redis connections of one process's requests; more wait for a free one
    cache_mb: int = 64  # Redis: calls this replica folded last, kept to fold only what came since
    tls_ca_file: Path | None = None  # rediss://: the CAs the server's certificate is checked against
    tls_cert_file: Path | None = None  # rediss://: a client certificate (with tls_key_file)
    tls_key_file: Path | None = None
    sentinels: tuple[str, ...] = ()  # "host:port" of Redis Sentinels; then they name the master
    sentinel_master: str = ""  # the master's name in the sentinels' configuration
    sentinel_password: str | None = field(default=None, repr=False)  # the sentinels' own password
    data_dir: Path | None = None  # memory backend: where edited lists are kept across restarts
    max_list_entries: int = 1_000_000  # entries of one editable list; an edit past it is refused


def sentinel_address(entry: str) -> tuple[str, int]:
    """`host:port` (`[v6 address]:port` too) as a (host, port) pair; ValueError names what is wrong."""
    host, colon, port = entry.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("not host:port (a port 1-65535)")
    return host, int(port)
