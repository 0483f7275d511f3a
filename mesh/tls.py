"""TLS for the client port and the HTTP API: contexts, failed handshakes, a local CA.

A node given a certificate and key serves both client-facing ports on TLS 1.2 or later.
A failed handshake (a plaintext client, garbage, a client that does not trust us) closes
only that connection; it is counted, and logged without a traceback (the first ones, then
one in every thousand).
`meshchat up --tls` needs no set-up: it makes a local certificate authority and one
certificate per node in its data dir, and keeps them.
"""

import datetime
import ipaddress
import logging
import os
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

# TLS 1.0 and 1.1 are broken and withdrawn (RFC 8996); every client we support has 1.2.
TLS_VERSION_MIN = ssl.TLSVersion.TLSv1_2
# Log the first failed handshakes one by one, then only every Nth, so a port scan or a
# misconfigured client retrying in a loop cannot flood the log.
HANDSHAKE_FAILURES_LOGGED_FIRST = 10
HANDSHAKE_FAILURE_LOG_EVERY = 1000
# The local CA lives long (its file is what clients are configured with); node
# certificates stay within the 825 days that some TLS clients accept at most.
CA_VALIDITY = datetime.timedelta(days=3650)
NODE_CERTIFICATE_VALIDITY = datetime.timedelta(days=825)
# A certificate this close to its end is made anew at the next start rather than reused.
RENEW_BEFORE = datetime.timedelta(days=30)
# Back-date certificates a little, so a client whose clock is slightly behind accepts them.
CLOCK_SLACK = datetime.timedelta(minutes=5)
CA_COMMON_NAME = "meshchat local CA"
LOCALHOST = "localhost"
PRIVATE_KEY_MODE = 0o600


class TlsError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """A PEM certificate and its PEM private key."""

    cert: Path
    key: Path


# ---- contexts ----


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
            f"key ({_describe(error)})"
        ) from error
    return context


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
            f"--ca-file {ca_file}: not a PEM certificate ({_describe(error)})"
        ) from error
    context.minimum_version = TLS_VERSION_MIN
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


def _describe(error: OSError) -> str:
    """OpenSSL's reason in words, without the C source location."""
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason).lower().replace("_", " ")
    text = error.strerror or str(error) or type(error).__name__
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)


# ---- a node's side ----


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
            log.info("client connection: TLS handshake failed (#%d): %s", count, _describe(error))


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


# ---- a local certificate authority for `meshchat up --tls` ----


def prepare_local_tls(
    directory: Path, node_ids: list[str], host: str, now: datetime.datetime
) -> tuple[CertificateFiles, dict[str, CertificateFiles]]:
    """The local CA and a certificate for each node, in `directory`: reused when they are
    still good, made otherwise."""
    ca = make_local_ca(directory, now)
    return ca, {node: make_node_certificate(ca, directory, node, host, now) for node in node_ids}


def make_local_ca(directory: Path, now: datetime.datetime) -> CertificateFiles:
    """DIR/ca.pem and DIR/ca.key: kept if present and not near their end, else made."""
    files = CertificateFiles(directory / "ca.pem", directory / "ca.key")
    if files.cert.exists() or files.key.exists():
        certificate, _ = _load_pair(files)
        if certificate.not_valid_after_utc - RENEW_BEFORE > now:
            return files
        log.warning(
            "%s ends on %s: making a new local CA", files.cert, certificate.not_valid_after_utc
        )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    public = key.public_key()
    certificate = (
        _builder(name, name, public, now, CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(files, certificate, key)
    return files


def make_node_certificate(
    ca: CertificateFiles, directory: Path, name: str, host: str, now: datetime.datetime
) -> CertificateFiles:
    """DIR/NAME.pem and DIR/NAME.key, signed by `ca`, for `host` and localhost: kept if
    they are still good for both, else made."""
    files = CertificateFiles(directory / f"{name}.pem", directory / f"{name}.key")
    ca_certificate, ca_key = _load_pair(ca)
    names = subject_alternative_names(host)
    if _still_good(files, ca_certificate, names, now):
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_public = ca_key.public_key()
    certificate = (
        _builder(subject, ca_certificate.subject, key.public_key(), now, NODE_CERTIFICATE_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_pair(files, certificate, key)
    return files


def subject_alternative_names(host: str) -> list[x509.GeneralName]:
    """The names clients may use for a node on `host`: the host itself (an IP address SAN
    for an address, a DNS SAN for a name) and localhost; a wildcard bind address means
    the machine's own name and loopback."""
    names: list[x509.GeneralName] = []
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        names.append(x509.DNSName(host))
    else:
        if address.is_unspecified:
            names += [
                x509.DNSName(socket.gethostname()),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]
        else:
            names.append(x509.IPAddress(address))
    if x509.DNSName(LOCALHOST) not in names:
        names.append(x509.DNSName(LOCALHOST))
    return names


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    validity: datetime.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SLACK)
        .not_valid_after(now + validity)
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _still_good(
    files: CertificateFiles,
    ca_certificate: x509.Certificate,
    names: list[x509.GeneralName],
    now: datetime.datetime,
) -> bool:
    """A kept node certificate is reused only if the current CA signed it, it names every
    name wanted now, its key is its own and it is not near its end."""
    if not (files.cert.exists() and files.key.exists()):
        return False
    try:
        certificate, key = _load_pair(files)
        certificate.verify_directly_issued_by(ca_certificate)
        held = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (TlsError, InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    return (
        all(name in held for name in names)
        and key.public_key() == certificate.public_key()
        and certificate.not_valid_after_utc - RENEW_BEFORE > now
    )


def _load_pair(files: CertificateFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        certificate = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except FileNotFoundError as error:
        raise TlsError(f"{error.filename}: missing (remove its pair to make both anew)") from error
    except (ValueError, TypeError) as error:
        raise TlsError(f"{files.cert} / {files.key}: not a PEM certificate and key") from error
    if (
        not isinstance(key, ec.EllipticCurvePrivateKey)
        or key.public_key() != certificate.public_key()
    ):
        raise TlsError(f"{files.key} is not the key of {files.cert}")
    return certificate, key


def _write_pair(
    files: CertificateFiles, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    """The key first, readable by its owner only; each file replaced whole, never half written."""
    files.key.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(files.key, key_pem, PRIVATE_KEY_MODE)
    _write_file(files.cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(descriptor, mode)  # the umask may have narrowed it, or the file existed
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
