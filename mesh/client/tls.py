"""TLS for clients: the node's certificate must chain to the given CA and name the host."""

import ssl
from pathlib import Path

from mesh.wire.tls import TLS_VERSION_MIN, TlsError, describe_ssl_error


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client's context: the node's certificate must chain to `ca_file` (or, without it,
    to the system's CAs) and name the host the client connects to."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if ca_file is None else str(ca_file)
        )
    except FileNotFoundError as error:
        raise TlsError(f"--ca-file {ca_file}: no such file") from error
    except (ssl.SSLError, OSError) as error:
        raise TlsError(
            f"--ca-file {ca_file}: not a PEM certificate ({describe_ssl_error(error)})"
        ) from error
    context.minimum_version = TLS_VERSION_MIN
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context
