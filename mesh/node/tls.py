"""TLS for the client port and the HTTP API: the server context, and failed handshakes.

A node given a certificate and key serves both client-facing ports on TLS 1.2 or later.
A failed handshake (a plaintext client, garbage, a client that does not trust us) closes
only that connection; it is counted, and logged without a traceback (the first ones, then
one in every thousand).
"""

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh.wire.tls import TLS_VERSION_MIN, CertificateFiles, TlsError, describe_ssl_error

log = logging.getLogger(__name__)

# Log the first failed handshakes one by one, then only every Nth, so a port scan or a
# misconfigured client retrying in a loop cannot flood the log.
HANDSHAKE_FAILURES_LOGGED_FIRST = 10
HANDSHAKE_FAILURE_LOG_EVERY = 1000


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The context of a node's client port and HTTP API; a bad file raises TlsError."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = TLS_VERSION_MIN
    try:
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as error:
        raise TlsError(f"{error.filename}: no such file") from error
    except (ssl.SSLError, OSError) as error:
        raise TlsError(
            f"--tls-cert {cert_file} / --tls-key {key_file}: not a PEM certificate and its "
            f"key ({describe_ssl_error(error)})"
        ) from error
    return context


class ServerTls:
    """A node's TLS on its client port and HTTP API: one context, and the handshakes that
    failed on it (a plaintext client, garbage, a client that does not trust us)."""

    def __init__(self, files: CertificateFiles, handshake_timeout_s: float) -> None:
        assert handshake_timeout_s > 0
        self.context = server_context(files.cert, files.key)
        self.context.sslobject_class = _watched_ssl_object(self._handshake_failed)
        self.handshake_timeout_s = handshake_timeout_s
        self.handshake_failures = 0

    def server_options(self) -> dict[str, Any]:
        """What `asyncio.start_server` needs to serve on TLS."""
        return {"ssl": self.context, "ssl_handshake_timeout": self.handshake_timeout_s}

    def _handshake_failed(self, error: ssl.SSLError) -> None:
        self.handshake_failures += 1
        count = self.handshake_failures
        if count <= HANDSHAKE_FAILURES_LOGGED_FIRST or count % HANDSHAKE_FAILURE_LOG_EVERY == 0:
            log.info(
                "client connection: TLS handshake failed (#%d): %s",
                count,
                describe_ssl_error(error),
            )


def _watched_ssl_object(on_failure: Callable[[ssl.SSLError], None]) -> type[ssl.SSLObject]:
    """An SSLObject class that reports a failed handshake before the event loop closes the
    connection: asyncio and uvloop both drive the handshake through `do_handshake`, and
    neither tells the application when it fails (they only log it at DEBUG)."""

    class WatchedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # the handshake goes on when more bytes arrive
            except ssl.SSLError as error:
                on_failure(error)
                raise

    return WatchedSSLObject
