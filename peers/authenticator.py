"""ZAP for the peer port: a CURVE client is let in only with a trusted node's key, and
every frame it sends then carries that node's id and key as its User-Id.

pyzmq's asyncio authenticator does the ZAP protocol; this subclass answers from the
node's trusted keys, so a reload of the trusted directory takes effect on the next
connection without reconfiguring anything.
"""

import logging
from typing import Final

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from peers.keys import TrustedKeys

# The ZAP domain of the peer port; only this socket authenticates, so one name is enough.
PEER_ZAP_DOMAIN: Final = "meshchat-peers"
# What the authenticator says per handshake is debugging detail; refusals are counted
# and logged by the transport's monitor instead.
_QUIET = logging.getLogger("meshchat.zap")
_QUIET.setLevel(logging.WARNING)


class _TrustedKeysProvider:
    def __init__(self, trusted: TrustedKeys) -> None:
        self._trusted = trusted

    def callback(self, domain: str, key: bytes) -> bool:
        del domain
        return self._trusted.node_of(key) is not None


class PeerAuthenticator(AsyncioAuthenticator):
    """Admits CURVE clients whose key is in the trusted directory; User-Id = node id."""

    def __init__(self, context: zmq.asyncio.Context, trusted: TrustedKeys) -> None:
        super().__init__(context, log=_QUIET)
        self._trusted = trusted
        self.configure_curve_callback(PEER_ZAP_DOMAIN, _TrustedKeysProvider(trusted))

    def curve_user_id(self, client_public_key: bytes) -> str:
        """ "node/key": the transport checks the key against the trusted one on every
        frame, so a key revoked or replaced after the handshake is heard no more."""
        key = z85.encode(client_public_key)
        node = self._trusted.node_of(key)
        return f"{node}/{key.decode()}" if node is not None else ""
