"""The ZeroMQ shell that moves peer frames: one ROUTER inbox, one DEALER outbox per peer address.

Outboxes are bounded (SNDHWM) and send without blocking: a frame that cannot be queued
because the peer is gone (IMMEDIATE: no completed connection) or slow (queue full) is
dropped and counted per peer. Membership traffic is periodic, so a dropped heartbeat is
replaced by the next one; data messages built on this layer carry their own acks.

Secure links (the default) are CURVE: encrypted, and the inbox admits only clients whose
key is trusted (ZAP, peers/authenticator.py). The sender of a frame is then the node id
bound to its key (the frame's User-Id), never a name the sender chose: outboxes set no
routing id, so the inbox assigns each connection its own and no peer can take over
another's pipe. Insecure links (development only) name the sender by routing id.
"""

import asyncio
import errno
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from peers.authenticator import PEER_ZAP_DOMAIN, PeerAuthenticator
from peers.keys import NodeKey, TrustedKeys
from peers.limits import PEER_FRAME_BYTES_MAX, PEER_OUTBOX_MESSAGES_MAX

log = logging.getLogger(__name__)

# Reconnect quickly to a peer that restarts, but back off from one that stays away.
RECONNECT_INTERVAL_MS = 100
RECONNECT_INTERVAL_MAX_MS = 2000
# How long closing waits for queued frames (a Leave) to go out.
CLOSE_LINGER_MS = 1000

_HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
# Remote addresses whose failed handshakes are logged one by one; past this many, only
# the count grows (a scan of the port must not flood the log).
HANDSHAKE_LOG_ADDRESSES_MAX = 256


class PortInUseError(OSError):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} on {host} is already in use")
        self.port = port


@dataclass(slots=True)
class TransportStatistics:
    frames_sent: int = 0
    frames_received: int = 0
    frames_dropped: int = 0
    malformed_envelopes: int = 0
    handshake_failures: int = 0


@dataclass(frozen=True, slots=True)
class PeerSecurity:
    """CURVE on every peer link: this node's key pair and the keys it trusts."""

    own: NodeKey
    trusted: TrustedKeys


@dataclass(slots=True)
class _Outbox:
    socket: zmq.Socket[bytes]
    server_key: bytes | None
    dropped: int = 0


class PeerTransport:
    def __init__(
        self, node_id: str, host: str, port: int, security: PeerSecurity | None = None
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.security = security
        self.stats = TransportStatistics()
        # Outboxes only ever send without blocking, so they are plain sockets; the inbox
        # is awaited, so it lives on an asyncio shadow of the same context.
        self._context = zmq.Context()
        self._async_context = zmq.asyncio.Context.shadow(self._context)
        self._inbox = self._async_context.socket(zmq.ROUTER)
        self._outboxes: dict[str, _Outbox] = {}
        self._monitor: zmq.asyncio.Socket | None = None
        self._authenticator: PeerAuthenticator | None = None
        self._handshake_failures_by_address: dict[str, int] = {}

    def bind(self) -> None:
        inbox = self._inbox
        if self.security is None:
            # A restarted peer reconnects with the same routing id; let it take over at once.
            inbox.setsockopt(zmq.ROUTER_HANDOVER, 1)
        else:
            self._authenticator = PeerAuthenticator(self._async_context, self.security.trusted)
            self._authenticator.start()
            inbox.setsockopt(zmq.ZAP_DOMAIN, PEER_ZAP_DOMAIN.encode())
            inbox.setsockopt(zmq.CURVE_SERVER, 1)
            inbox.setsockopt(zmq.CURVE_SECRETKEY, self.security.own.secret)
        inbox.setsockopt(zmq.MAXMSGSIZE, PEER_FRAME_BYTES_MAX + 1024)
        inbox.setsockopt(zmq.RCVHWM, PEER_OUTBOX_MESSAGES_MAX * 4)
        inbox.setsockopt(zmq.LINGER, 0)
        try:
            inbox.bind(f"tcp://{self.host}:{self.port}")
        except zmq.ZMQError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUseError(self.host, self.port) from error
            raise
        self._monitor = inbox.get_monitor_socket(_HANDSHAKE_FAILURES)

    async def receive(self) -> tuple[str, bytes] | None:
        """The next (sender node id, frame); None for an envelope that is not ours.

        With CURVE the sender is the node whose key the connection authenticated with;
        without, it is the routing id the sender chose."""
        parts = await self._inbox.recv_multipart(copy=False)
        self.stats.frames_received += 1
        if len(parts) != 2:
            self.stats.malformed_envelopes += 1
            return None
        identity, frame = parts
        if self.security is None:
            return identity.bytes.decode("utf-8", "replace"), frame.bytes
        sender = frame.get("User-Id")
        if not sender:
            self.stats.malformed_envelopes += 1
            return None
        return str(sender), frame.bytes

    async def watch_handshakes(self) -> None:
        """Count connections that failed the ZMTP handshake, and say why once per address."""
        assert self._monitor is not None
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            self.stats.handshake_failures += 1
            address = str(event.get("endpoint", b"?"), "utf-8", "replace")
            seen = self._handshake_failures_by_address
            if address in seen:
                seen[address] += 1
                continue
            if len(seen) < HANDSHAKE_LOG_ADDRESSES_MAX:
                seen[address] = 1
                log.warning(
                    "peer port: refused a connection from %s: %s",
                    address,
                    _handshake_failure_reason(event, secure=self.security is not None),
                )

    def send(self, address: str, frame: bytes, server_key: bytes | None = None) -> bool:
        """Queue a frame to a peer without waiting; False (and counted) when dropped.

        With CURVE, `server_key` is the z85 public key of the node at `address`: a frame
        towards an address whose node has no trusted key is dropped."""
        outbox = self._outboxes.get(address)
        if outbox is not None and outbox.server_key != server_key:
            self.forget(address)  # the node there now has another key
            outbox = None
        if outbox is None:
            if self.security is not None and server_key is None:
                self.stats.frames_dropped += 1
                return False
            outbox = self._open(address, server_key)
        try:
            outbox.socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            outbox.dropped += 1
            self.stats.frames_dropped += 1
            return False
        self.stats.frames_sent += 1
        return True

    def dropped(self, address: str) -> int:
        outbox = self._outboxes.get(address)
        return 0 if outbox is None else outbox.dropped

    def forget(self, address: str) -> None:
        """Close the outbox to an address, discarding what is queued for an old incarnation."""
        outbox = self._outboxes.pop(address, None)
        if outbox is not None:
            outbox.socket.close(linger=0)

    def _open(self, address: str, server_key: bytes | None) -> _Outbox:
        socket = self._context.socket(zmq.DEALER)
        if self.security is None:
            socket.setsockopt(zmq.ROUTING_ID, self.node_id.encode())
        else:
            assert server_key is not None
            socket.setsockopt(zmq.CURVE_SERVERKEY, server_key)
            socket.setsockopt(zmq.CURVE_PUBLICKEY, self.security.own.public)
            socket.setsockopt(zmq.CURVE_SECRETKEY, self.security.own.secret)
        socket.setsockopt(zmq.SNDHWM, PEER_OUTBOX_MESSAGES_MAX)
        socket.setsockopt(zmq.IMMEDIATE, 1)
        socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_INTERVAL_MAX_MS)
        socket.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        socket.connect(f"tcp://{address}")
        outbox = _Outbox(socket, server_key)
        self._outboxes[address] = outbox
        return outbox

    async def close(self) -> None:
        """Close every socket, giving queued frames up to CLOSE_LINGER_MS to leave."""
        if self._monitor is not None:
            self._inbox.disable_monitor()
            self._monitor.close(linger=0)
        self._inbox.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
        for outbox in self._outboxes.values():
            outbox.socket.close()
        self._outboxes.clear()
        # term() blocks until lingering frames are sent; keep the loop free meanwhile.
        await asyncio.to_thread(self._context.term)


def _handshake_failure_reason(event: Mapping[str, object], *, secure: bool) -> str:
    code, value = event.get("event"), event.get("value")
    if code == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "its key is not trusted here (not in the trusted key directory)"
    if code == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            if secure:
                return "it speaks plaintext; is it running with --insecure-peers?"
            return "it speaks CURVE; this node runs with --insecure-peers"
        if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "its CURVE handshake failed (it expected another key for this node)"
        return f"ZMTP protocol error {value!r}"
    return "not a ZeroMQ peer (garbage or another protocol)"
