"""The server-side TLS context: TLS 1.2 or newer, explicit modern ciphers."""

from __future__ import annotations

import ssl

from ascrm.errors import ConfigError
from ascrm.service.settings import TLS


def server_context(tls: TLS) -> ssl.SSLContext:
    """An SSLContext for the listening socket; ConfigError names the file that cannot be used."""
    for key, path in (("tls.certfile", tls.certfile), ("tls.keyfile", tls.keyfile)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigError(key, f"cannot read the file: {exc.strerror}", str(path)) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.set_ciphers(tls.ciphers)
    except ssl.SSLError:
        raise ConfigError("tls.ciphers", "no usable cipher in the list", tls.ciphers) from None
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(str(tls.certfile), str(tls.keyfile))
    except ssl.SSLError as exc:
        message = f"the certificate and key cannot be used together: {exc.reason or exc}"
        raise ConfigError("tls", message, str(tls.certfile)) from None
    return context
