"""Certificates made by the test (trustme), client contexts and bare TLS handshakes."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

import trustme


def write_server_certificate(
    ca: trustme.CA, folder: Path, *hosts: str, certfile: str = "server.pem", keyfile: str = "key.pem"
) -> dict[str, str]:
    """A certificate of ca for hosts (default 127.0.0.1) written into folder; the config's `tls` section."""
    cert = ca.issue_cert(*(hosts or ("127.0.0.1",)))
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / certfile))
    cert.private_key_pem.write_to_path(str(folder / keyfile))
    return {"certfile": certfile, "keyfile": keyfile}


def client_context(ca: trustme.CA, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context trusting ca; with version, offering only that TLS version (old ones allowed)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if version is not None:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old versions at all
        context.minimum_version = version
        context.maximum_version = version
    return context


def handshake_to(host: str, port: int, context: ssl.SSLContext) -> str:
    """The TLS version a handshake with host:port settles on."""
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.version() or ""


def handshake_with_permissive_server(ca: trustme.CA, client: ssl.SSLContext) -> str:
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
            return handshake_to("127.0.0.1", listener.getsockname()[1], client)
        finally:
            thread.join(5)
