"""The server-side TLS context: TLS 1.2 or newer, explicit modern ciphers."""

from __future__ import annotations

import ssl

from ascrm.settings import TLS


def server_context(tls: TLS) -> ssl.SSLContext:
    """An SSLContext for the listening socket, from the configured certificate, key and ciphers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(tls.ciphers)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(str(tls.certfile), str(tls.keyfile))
    return context
