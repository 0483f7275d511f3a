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
import time
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from peers.authenticator import PEER_ZAP_DOMAIN, PeerAuthenticator
from peers.keys import NodeKey, TrustedKeys
from peers.limits import MEMBERS_MAX, PEER_FRAME_BYTES_MAX, PEER_OUTBOX_MESSAGES_MAX

log = logging.getLogger(__name__)

# Reconnect quickly to a peer that restarts, but back off from one that stays away.
RECONNECT_INTERVAL_MS = 100
RECONNECT_INTERVAL_MAX_MS = 2000
# An outbox that could send nothing for this long is opened anew (see _renew_if_stuck):
# past the reconnect backoff's ceiling, so a peer merely down costs one socket per period.
OUTBOX_RENEW_AFTER_S = 2.5
# Outboxes held at once: one per member, and as many again for members that moved or
# restarted elsewhere; past it the oldest is closed (its peer is long gone).
OUTBOXES_MAX = 2 * MEMBERS_MAX
# How long closing waits for queued frames (a Leave) to go out.
CLOSE_LINGER_MS = 1000

_HANDSHAKE_EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
# After its first time, a reason for a refused connection is logged once per this many.
HANDSHAKE_LOG_EVERY = 1000
# Connections tracked between accept and handshake; beyond it (a flood) some go uncounted.
PENDING_HANDSHAKES_MAX = 4096


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
    bad_addresses: int = 0
    untrusted_frames: int = 0  # from a connection whose key is no longer the node's


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
    failing_since: float | None = None  # monotonic time of the first drop in a row


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
        self._outboxes: dict[tuple[str, bytes | None], _Outbox] = {}  # by address, key
        self._closed = False  # a frame queued after close() (a late callback) is dropped
        self._monitor: zmq.asyncio.Socket | None = None
        self._authenticator: PeerAuthenticator | None = None
        self._handshake_failures_by_reason: dict[str, int] = {}

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
        self._monitor = inbox.get_monitor_socket(_HANDSHAKE_EVENTS)

    async def receive(self) -> tuple[str, bytes] | str:
        """The next (sender node id, frame), or why a frame was refused unread.

        With CURVE the sender is the node whose key the connection authenticated with;
        without, it is the routing id the sender chose."""
        parts = await self._inbox.recv_multipart(copy=False)
        self.stats.frames_received += 1
        if len(parts) != 2:
            self.stats.malformed_envelopes += 1
            return "an envelope that is not [routing id, frame]"
        identity, frame = parts
        if self.security is None:
            return identity.bytes.decode("utf-8", "replace"), frame.bytes
        # "node/key" (peers/authenticator.py): the key must still be the node's trusted
        # one, so a connection made with a revoked or replaced key is heard no more.
        node, _, key = str(frame.get("User-Id")).partition("/")
        if not node or self.security.trusted.key_of(node) != key.encode():
            self.stats.untrusted_frames += 1
            return f"from {node[:64]!r}: its key is no longer the one trusted for it"
        return node, frame.bytes

    async def watch_handshakes(self) -> None:
        """Count connections that failed the ZMTP handshake, and say why: each reason in
        full the first time, then once per HANDSHAKE_LOG_EVERY (a port scan or a peer
        retrying every 100 ms must not flood the log). A connection that hangs up before
        any handshake (garbage, another protocol) counts as failed too."""
        assert self._monitor is not None
        # Accepted connections (by fd) not yet past the handshake, oldest first. Failure
        # events name no fd; handshakes mostly end in order, so a failure closes the oldest.
        pending: dict[int, None] = {}
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            code, value = event["event"], event["value"]
            if code == zmq.EVENT_ACCEPTED:
                if len(pending) < PENDING_HANDSHAKES_MAX:
                    pending[value] = None
                continue
            if code == zmq.EVENT_HANDSHAKE_SUCCEEDED:  # names no fd either (value 0)
                if pending:
                    del pending[next(iter(pending))]
                continue
            if code == zmq.EVENT_DISCONNECTED:
                if value not in pending:
                    continue
                del pending[value]
            elif pending:
                del pending[next(iter(pending))]
            self.stats.handshake_failures += 1
            reason = _handshake_failure_reason(code, value, secure=self.security is not None)
            seen = self._handshake_failures_by_reason
            seen[reason] = seen.get(reason, 0) + 1
            if seen[reason] == 1 or seen[reason] % HANDSHAKE_LOG_EVERY == 0:
                log.warning(
                    "peer port: refused a connection (%d so far for this reason): %s",
                    seen[reason],
                    reason,
                )

    def send(self, address: str, frame: bytes, server_key: bytes | None = None) -> bool:
        """Queue a frame to a peer without waiting; False (and counted) when dropped.

        With CURVE, `server_key` is the z85 public key of the node expected at `address`:
        a frame towards a node with no trusted key is dropped. Outboxes are per address
        and key, so two ids claiming one address cannot make a link flap between keys."""
        if self._closed or (self.security is not None and server_key is None):
            self.stats.frames_dropped += 1
            return False
        outbox = self._outboxes.get((address, server_key))
        if outbox is None:
            outbox = self._open(address, server_key)
            if outbox is None:
                self.stats.frames_dropped += 1
                return False
        try:
            outbox.socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            outbox.dropped += 1
            self.stats.frames_dropped += 1
            self._renew_if_stuck(address, outbox)
            return False
        outbox.failing_since = None
        self.stats.frames_sent += 1
        return True

    def _renew_if_stuck(self, address: str, outbox: "_Outbox") -> None:
        """libzmq never reconnects after the other side refused our key, so an outbox
        that has dropped everything for a while is opened anew: the peer may trust us now
        (its trusted directory was reloaded), and a fresh connect asks it again."""
        now = time.monotonic()
        if outbox.failing_since is None:
            outbox.failing_since = now
        elif now - outbox.failing_since >= OUTBOX_RENEW_AFTER_S:
            self._close((address, outbox.server_key))
            renewed = self._open(address, outbox.server_key)
            if renewed is not None:
                renewed.dropped = outbox.dropped

    def dropped(self, address: str) -> int:
        return sum(box.dropped for (at, _), box in self._outboxes.items() if at == address)

    def forget(self, address: str) -> None:
        """Close the outboxes to an address, discarding what is queued for an old start."""
        for key in [key for key in self._outboxes if key[0] == address]:
            self._close(key)

    def _close(self, key: tuple[str, bytes | None]) -> None:
        outbox = self._outboxes.pop(key, None)
        if outbox is not None:
            outbox.socket.close(linger=0)

    def _open(self, address: str, server_key: bytes | None) -> "_Outbox | None":
        """A new outbox; None when the address cannot be connected to (a peer's record
        may carry any text that fits the schema)."""
        if len(self._outboxes) >= OUTBOXES_MAX:
            self._close(next(iter(self._outboxes)))  # the oldest: a member long gone
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
        try:
            socket.connect(f"tcp://{address}")
        except zmq.ZMQError as error:
            socket.close(linger=0)
            self.stats.bad_addresses += 1
            if self.stats.bad_addresses == 1 or self.stats.bad_addresses % 1000 == 0:
                log.warning("cannot connect to peer address %r: %s", address[:80], error)
            return None
        outbox = _Outbox(socket, server_key)
        self._outboxes[(address, server_key)] = outbox
        return outbox

    async def close(self) -> None:
        """Close every socket, giving queued frames up to CLOSE_LINGER_MS to leave."""
        self._closed = True
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


def _handshake_failure_reason(code: int, value: int, *, secure: bool) -> str:
    if code == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "its key is not trusted here (not in the trusted key directory)"
    if code == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            if secure:
                return "it speaks plaintext: is it running with --insecure-peers?"
            return "it speaks CURVE, and this node runs with --insecure-peers"
        if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "its CURVE handshake failed (it expected another key for this node)"
        return f"ZMTP protocol error {value:#x}"
    if secure:
        return "no CURVE handshake: not a ZeroMQ peer, or a node running with --insecure-peers"
    return "no ZeroMQ handshake: not a ZeroMQ peer, or another protocol"
