"""The listening sockets, bound before anything else starts so that a taken port is one clear error."""

from __future__ import annotations

import errno
import socket

from ascrm.errors import ListenError

# The exit status of `ascrm serve` when it cannot listen (2 is a bad config, 3 a failed start-up).
EXIT_CANNOT_LISTEN = 4

_HINTS = {
    errno.EADDRINUSE: "another process listens there; stop it or set listen.port / --port",
    errno.EACCES: "ports below 1024 need privileges; use a higher port",
    errno.EADDRNOTAVAIL: "no interface has this address; check listen.host / --host",
}


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address host resolves to, on port (0: one free port for all of them)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {where}: {exc.strerror}") from None
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in found))
    sockets: list[socket.socket] = []
    try:
        for family, found_address in addresses:
            address = found_address
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the same free port on every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = (exc.strerror or str(exc)).lower()
        hint = _HINTS.get(exc.errno or 0)
        raise ListenError(f"cannot listen on {where}: {reason}" + (f" ({hint})" if hint else "")) from None
    return sockets
