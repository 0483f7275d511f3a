"""The ZeroMQ shell that moves peer frames: one ROUTER inbox, one DEALER outbox per peer address.

Outboxes are bounded (SNDHWM) and send without blocking: a frame that cannot be queued
because the peer is gone (IMMEDIATE: no completed connection) or slow (queue full) is
dropped and counted per peer. Membership traffic is periodic, so a dropped heartbeat is
replaced by the next one; data messages built on this layer carry their own acks.
"""

import asyncio
import errno
import logging
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

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


@dataclass(slots=True)
class _Outbox:
    socket: zmq.Socket[bytes]
    dropped: int = 0


class PeerTransport:
    def __init__(self, node_id: str, host: str, port: int) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.stats = TransportStatistics()
        # Outboxes only ever send without blocking, so they are plain sockets; the inbox
        # is awaited, so it lives on an asyncio shadow of the same context.
        self._context = zmq.Context()
        self._async_context = zmq.asyncio.Context.shadow(self._context)
        self._inbox = self._async_context.socket(zmq.ROUTER)
        self._outboxes: dict[str, _Outbox] = {}
        self._monitor: zmq.asyncio.Socket | None = None

    def bind(self) -> None:
        inbox = self._inbox
        # A restarted peer reconnects with the same routing id; let it take over at once.
        inbox.setsockopt(zmq.ROUTER_HANDOVER, 1)
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
        """The next (sender routing id, frame); None for an envelope that is not ours."""
        parts = await self._inbox.recv_multipart(copy=True)
        self.stats.frames_received += 1
        if len(parts) != 2:
            self.stats.malformed_envelopes += 1
            return None
        identity, frame = parts
        return identity.decode("utf-8", "replace"), frame

    async def watch_handshakes(self) -> None:
        """Count connections that failed the ZMTP handshake (garbage on the peer port)."""
        assert self._monitor is not None
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            self.stats.handshake_failures += 1
            log.warning(
                "peer port: handshake failed from %s (event %s)",
                event.get("endpoint"),
                event.get("event"),
            )

    def send(self, address: str, frame: bytes) -> bool:
        """Queue a frame to a peer without waiting; False (and counted) when dropped."""
        outbox = self._outboxes.get(address)
        if outbox is None:
            outbox = self._open(address)
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

    def _open(self, address: str) -> _Outbox:
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.ROUTING_ID, self.node_id.encode())
        socket.setsockopt(zmq.SNDHWM, PEER_OUTBOX_MESSAGES_MAX)
        socket.setsockopt(zmq.IMMEDIATE, 1)
        socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_INTERVAL_MAX_MS)
        socket.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        socket.connect(f"tcp://{address}")
        outbox = _Outbox(socket)
        self._outboxes[address] = outbox
        return outbox

    async def close(self) -> None:
        """Close every socket, giving queued frames up to CLOSE_LINGER_MS to leave."""
        if self._monitor is not None:
            self._inbox.disable_monitor()
            self._monitor.close(linger=0)
        self._inbox.close(linger=0)
        for outbox in self._outboxes.values():
            outbox.socket.close()
        self._outboxes.clear()
        # term() blocks until lingering frames are sent; keep the loop free meanwhile.
        await asyncio.to_thread(self._context.term)
