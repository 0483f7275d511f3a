"""Which key each peer address must answer with, and the node's own key and trust.

With CURVE, a node can only open a link to a peer whose public key it knows, and it
knows keys by node id (the trusted directory). Membership speaks in addresses, so the
node keeps the address of every node id it knows (from seeds written `ID@HOST:PORT` and
from member records) and looks the key up through it.
"""

import logging
from pathlib import Path
from typing import Final

from peers.keys import (
    NodeKeyError,
    TrustedKeys,
    ensure_node_key,
    fingerprint,
    is_node_id,
    load_node_key,
)
from peers.transport import PeerSecurity

log = logging.getLogger(__name__)

# Trusted peers named in the start-up line; a longer list is for `meshchat keys list`.
TRUSTED_NAMED_MAX = 16
# Where a node keeps the key pair it made itself, and the keys it trusts, by default.
OWN_KEYS_DIR: Final = "keys"
TRUSTED_KEYS_DIR: Final = "trusted"


class SeedError(ValueError):
    """A seed that is not `HOST:PORT` or `ID@HOST:PORT`."""


def parse_seed(text: str) -> tuple[str | None, str]:
    """(node id or None, address) of a seed written `ID@HOST:PORT` or `HOST:PORT`."""
    node_id, at, address = text.rpartition("@")
    if not at:
        node_id, address = "", text
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SeedError(f"not a peer address: {text!r} (use HOST:PORT or ID@HOST:PORT)")
    if at and not is_node_id(node_id):
        raise SeedError(f"not a node id: {node_id!r} in seed {text!r}")
    return (node_id or None), address


def load_security(
    node_id: str, data_dir: Path, node_key: Path | None, trusted_dir: Path | None
) -> PeerSecurity:
    """The node's key pair (made in DATA/keys on first start without --node-key) and the
    keys it trusts (DATA/trusted without --trusted-keys). Raises NodeKeyError."""
    own = (
        load_node_key(node_key, node_id)
        if node_key is not None
        else ensure_node_key(data_dir / OWN_KEYS_DIR, node_id)
    )
    if trusted_dir is None:
        trusted_dir = data_dir / TRUSTED_KEYS_DIR
        trusted_dir.mkdir(parents=True, exist_ok=True)
    trusted = TrustedKeys(trusted_dir)
    if node_id in trusted.nodes() and trusted.key_of(node_id) != own.public:
        raise NodeKeyError(
            f"{trusted_dir}/{node_id}.key is not the public half of this node's key: "
            "the others would not know this node"
        )
    return PeerSecurity(own, trusted)


def describe_security(security: PeerSecurity | None, peer_port: int) -> tuple[int, str]:
    """The log level and line that say how this node's peer links are protected."""
    if security is None:
        return logging.WARNING, (
            f"peer links are plaintext and unauthenticated (--insecure-peers): anyone who "
            f"reaches port {peer_port} can join this mesh; for development only"
        )
    trusted = sorted(security.trusted.nodes() - {security.own.node_id})
    if not trusted:
        return logging.WARNING, (
            f"peer links: CURVE; no peer is trusted yet: put each peer's ID.key in "
            f"{security.trusted.directory}"
        )
    named = ", ".join(trusted[:TRUSTED_NAMED_MAX]) + (
        ", ..." if len(trusted) > TRUSTED_NAMED_MAX else ""
    )
    return logging.INFO, (
        f"peer links: CURVE, key {fingerprint(security.own.public)}, trusting "
        f"{len(trusted)} peer(s) from {security.trusted.directory}: {named}"
    )


class PeerKeys:
    """The trusted key a link to a node must answer with; None in insecure mode.

    Links to members are keyed by their node id; only a seed is known by its address
    (and the id it was written with), since no member record names it yet."""

    def __init__(self, security: PeerSecurity | None) -> None:
        self.security = security
        self._seed_at: dict[str, str] = {}  # address -> node id, from the seeds only

    def learn_seed(self, node_id: str | None, address: str) -> None:
        if node_id is not None:
            self._seed_at[address] = node_id

    def key_for(self, node_id: str | None, address: str) -> bytes | None:
        """The key of `node_id`, or of the seed at `address` when the id is not known."""
        node = node_id if node_id is not None else self._seed_at.get(address)
        return None if node is None else self.key_for_node(node)

    def key_for_node(self, node_id: str) -> bytes | None:
        if self.security is None:
            return None
        return self.security.trusted.key_of(node_id)


__all__ = ["NodeKeyError", "PeerKeys", "SeedError", "load_security", "parse_seed"]
