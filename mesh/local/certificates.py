"""A local certificate authority for `meshchat up --tls`: no set-up needed.

It makes a CA and one certificate per node in the mesh's data dir, and keeps them while
they are good; clients are given the CA file.
"""

import datetime
import ipaddress
import logging
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.wire.tls import CertificateFiles, TlsError

log = logging.getLogger(__name__)

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
