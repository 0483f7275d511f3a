"""TLS as both sides of the client protocol set it up: the lowest version, file pairs, errors."""

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

# TLS 1.0 and 1.1 are broken and withdrawn (RFC 8996); every client we support has 1.2.
TLS_VERSION_MIN = ssl.TLSVersion.TLSv1_2


class TlsError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """A PEM certificate and its PEM private key."""

    cert: Path
    key: Path


def describe_ssl_error(error: OSError) -> str:
    """OpenSSL's reason in words, without the C source location."""
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason).lower().replace("_", " ")
    text = error.strerror or str(error) or type(error).__name__
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)
