"""Node keys: each node's CURVE key pair is its identity on the peer port.

A node's certificate pair is two files in zmq.auth's format: `ID.key` (the public key,
safe to hand out) and `ID.key_secret` (public and secret key, mode 0600). A node trusts
the public certificates in one directory, and the file stem names the node that holds
the key: `trusted/n2.key` is how every node knows that this key is n2 and nobody else.
Removing a file revokes that node; nodes re-read the directory while they run.
"""

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zmq
import zmq.auth

from peers.limits import MEMBERS_MAX, NODE_ID_LENGTH_MAX

log = logging.getLogger(__name__)

PUBLIC_SUFFIX: Final = ".key"
SECRET_SUFFIX: Final = ".key_secret"
# A z85-encoded Curve25519 key: 32 bytes as 40 characters.
Z85_KEY_LENGTH: Final = 40
# A certificate is a few lines; anything larger in a trusted dir is not one of ours.
CERTIFICATE_BYTES_MAX: Final = 4096

_NODE_ID = re.compile(rf"[A-Za-z0-9_.-]{{1,{NODE_ID_LENGTH_MAX}}}")


class NodeKeyError(Exception):
    """A key file or trusted directory that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class NodeKey:
    """A node's own key pair, z85-encoded."""

    node_id: str
    public: bytes
    secret: bytes


def is_node_id(text: str) -> bool:
    return _NODE_ID.fullmatch(text) is not None


def create_key_pair(directory: Path, node_id: str) -> tuple[Path, Path]:
    """Write `ID.key` and `ID.key_secret` (0600) into `directory`; refuse to overwrite."""
    if not is_node_id(node_id):
        raise NodeKeyError(f"not a node id: {node_id!r}")
    directory.mkdir(parents=True, exist_ok=True)
    public_path = directory / f"{node_id}{PUBLIC_SUFFIX}"
    secret_path = directory / f"{node_id}{SECRET_SUFFIX}"
    for path in (public_path, secret_path):
        if path.exists():
            raise NodeKeyError(f"{path} exists already; remove it first to make a new key")
    # Created with 0600 from the start: the secret is never readable by others, not even
    # for the moment between writing and a chmod.
    umask = os.umask(0o077)
    try:
        zmq.auth.create_certificates(directory, node_id)
    finally:
        os.umask(umask)
    public_path.chmod(0o644)
    secret_path.chmod(0o600)
    return public_path, secret_path


def load_node_key(path: Path, node_id: str) -> NodeKey:
    """A node's own secret certificate; its file stem must be the node's id."""
    if path.name != f"{node_id}{SECRET_SUFFIX}":
        raise NodeKeyError(
            f"{path} is not node {node_id}'s key (expected {node_id}{SECRET_SUFFIX})"
        )
    public, secret = _read_certificate(path)
    if secret is None:
        raise NodeKeyError(f"{path} holds no secret key")
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", path)
    return NodeKey(node_id, public, secret)


def ensure_node_key(directory: Path, node_id: str) -> NodeKey:
    """The node's key pair in `directory`, made on first use and kept after."""
    secret_path = directory / f"{node_id}{SECRET_SUFFIX}"
    if not secret_path.exists():
        create_key_pair(directory, node_id)
        log.debug("made a new key pair for %s in %s", node_id, directory)
    return load_node_key(secret_path, node_id)


def load_trusted(directory: Path) -> dict[str, bytes]:
    """Node id -> z85 public key for every certificate in a trusted directory.

    Files that are no certificate of a node are skipped with a warning rather than
    failing the node: one stray file must not cut a running node off from its mesh.
    """
    if not directory.is_dir():
        raise NodeKeyError(f"trusted key directory {directory} does not exist")
    trusted: dict[str, bytes] = {}
    for path in sorted(directory.glob(f"*{PUBLIC_SUFFIX}")):
        node_id = path.name[: -len(PUBLIC_SUFFIX)]
        if not is_node_id(node_id):
            log.warning("skipping %s: its name is not a node id", path)
            continue
        try:
            public, _ = _read_certificate(path)
        except NodeKeyError as error:
            log.warning("skipping %s: %s", path, error)
            continue
        if public in trusted.values():
            log.warning("skipping %s: the same key is trusted under another id", path)
            continue
        trusted[node_id] = public
        if len(trusted) >= MEMBERS_MAX:
            log.warning("%s holds more than %d keys; the rest are ignored", directory, MEMBERS_MAX)
            break
    return trusted


def read_public_key(path: Path) -> bytes:
    """The z85 public key of a certificate file, or NodeKeyError saying why not."""
    public, _ = _read_certificate(path)
    return public


def _read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    try:
        if path.stat().st_size > CERTIFICATE_BYTES_MAX:
            raise NodeKeyError(f"{path} is too large to be a certificate")
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise NodeKeyError(f"{path}: {error}") from error
    for key in (public, secret):
        if key is not None and len(key) != Z85_KEY_LENGTH:
            raise NodeKeyError(f"{path} holds a malformed key")
        if key is not None:
            try:
                zmq.utils.z85.decode(key)
            except (ValueError, TypeError) as error:
                raise NodeKeyError(f"{path} holds a malformed key") from error
    return public, secret


def fingerprint(public: bytes) -> str:
    """A short, stable name of a public key for logs and listings."""
    return hashlib.blake2b(public, digest_size=8).hexdigest()


class TrustedKeys:
    """The trusted directory as the node holds it, re-read when its files change."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._by_node: dict[str, bytes] = load_trusted(directory)
        self._by_key = {key: node for node, key in self._by_node.items()}
        self._signature = self._listing()

    def node_of(self, public: bytes) -> str | None:
        """The node a z85 public key belongs to, or None for a stranger."""
        return self._by_key.get(public)

    def key_of(self, node_id: str) -> bytes | None:
        return self._by_node.get(node_id)

    def nodes(self) -> frozenset[str]:
        return frozenset(self._by_node)

    def reload(self) -> tuple[set[str], set[str]]:
        """Re-read the directory if it changed: (nodes added or re-keyed, nodes revoked)."""
        signature = self._listing()
        if signature == self._signature:
            return set(), set()
        self._signature = signature
        try:
            fresh = load_trusted(self.directory)
        except NodeKeyError as error:
            # A vanished directory trusts nobody new but revokes nobody either: an
            # operator's slip must not cut the node off from every peer at once.
            log.warning("keeping the trusted keys already loaded: %s", error)
            return set(), set()
        changed = {node for node, key in fresh.items() if self._by_node.get(node) != key}
        revoked = {node for node in self._by_node if fresh.get(node) != self._by_node[node]}
        self._by_node = fresh
        self._by_key = {key: node for node, key in fresh.items()}
        return changed, revoked

    def _listing(self) -> tuple[tuple[str, int, int], ...]:
        try:
            return tuple(
                sorted(
                    (entry.name, entry.stat().st_mtime_ns, entry.stat().st_size)
                    for entry in os.scandir(self.directory)
                    if entry.name.endswith(PUBLIC_SUFFIX)
                )
            )
        except OSError:
            return ()
