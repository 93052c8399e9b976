"""Loopback sockets: free ports, and what a peer has not read yet."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _hex_address(host: str, port: int) -> str:
    """An IPv4 address as /proc/net/tcp writes it (host bytes little-endian, port big-endian)."""
    return f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"


def unread_by_peer(sock: socket.socket) -> int | None:
    """The bytes sent on a loopback connection that its other end has not read yet (None: no such socket)."""
    local, remote = sock.getsockname(), sock.getpeername()
    wanted = (_hex_address(*remote), _hex_address(*local))  # the peer's socket: its local is our remote
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == wanted:
            return int(fields[4].split(":")[1], 16)
    return None
