"""One client session's outgoing side: a bounded queue of frames and per-room catch-up.

Every frame to a client goes through its queue, drained by one writer task. Live events
never wait: if the queue is full the client is too slow to read, and the session is cut
off (it resumes from its last id on reconnect) rather than making the node buffer without
bound or slowing the room's other members. A backlog replay (join with `since`) waits for
space instead, and live messages for that room are held aside meanwhile, then sent after
the backlog with anything already replayed skipped: no gap, no duplicate.
"""

import asyncio
import itertools
import logging

log = logging.getLogger(__name__)

_session_ids = itertools.count(1)
# Queued frames joined into one write: enough for a busy moment's deliveries in one send
# call, small enough that joining never copies much at once.
WRITE_BYTES_MAX = 256 * 1024


class Session:
    def __init__(self, user: str, queue_max: int) -> None:
        self.session_id = next(_session_ids)
        self.user = user
        self.rooms: set[str] = set()
        self.queue_max = queue_max
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(queue_max)
        self._catching_up: dict[str, list[tuple[str, bytes]]] = {}
        self.overflowed = asyncio.Event()  # set: the session must end (see cut_off_reason)
        self.cut_off_reason = ""
        self.closed = False
        self.sends_in_flight = 0
        self._send_slot_free = asyncio.Event()
        self.events_dropped = 0

    def cut_off(self, reason: str) -> None:
        """End the session with `unavailable`: the client reconnects and resumes."""
        if not self.overflowed.is_set():
            self.cut_off_reason = reason
            self.overflowed.set()

    # ---- pushing frames ----

    def push(self, frame: bytes) -> None:
        """Queue a frame without waiting; a full queue cuts the session off."""
        if self.closed or self.overflowed.is_set():
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning(
                "session %d (%s): outgoing queue full; cutting it off", self.session_id, self.user
            )
            self.overflowed.set()

    def push_if_room(self, frame: bytes) -> None:
        """Queue an ephemeral frame (typing) if there is space; drop it otherwise."""
        if self.closed or self._queue.full():
            self.events_dropped += 1
            return
        self._queue.put_nowait(frame)

    async def push_waiting(self, frame: bytes) -> None:
        """Queue a frame, waiting for space: for replays the client asked for."""
        if not self.closed:
            await self._queue.put(frame)

    def deliver(self, room: str, frame: bytes, message_id: str) -> None:
        """A new message in a room this session is in."""
        held = self._catching_up.get(room)
        if held is None:
            self.push(frame)
            return
        if len(held) >= self.queue_max:
            self.overflowed.set()
            return
        held.append((message_id, frame))

    def begin_catch_up(self, room: str) -> None:
        self._catching_up[room] = []

    def end_catch_up(self, room: str, last_replayed_id: str) -> None:
        for message_id, frame in self._catching_up.pop(room, []):
            if message_id > last_replayed_id:
                self.push(frame)

    def abandon_catch_up(self, room: str) -> None:
        self._catching_up.pop(room, None)

    # ---- pipelined sends ----

    async def wait_send_slot(self, window_max: int) -> None:
        while self.sends_in_flight >= window_max:
            self._send_slot_free.clear()
            await self._send_slot_free.wait()
        self.sends_in_flight += 1

    def release_send_slot(self) -> None:
        self.sends_in_flight -= 1
        self._send_slot_free.set()

    # ---- the writer ----

    async def write_loop(self, writer: asyncio.StreamWriter) -> None:
        queue = self._queue
        while True:
            frames = [await queue.get()]
            size = len(frames[0])
            # Whatever else is queued goes in the same write (one send call, not one per
            # frame), up to WRITE_BYTES_MAX at a time, before waiting on the socket.
            while not queue.empty():
                if size >= WRITE_BYTES_MAX:
                    writer.write(b"".join(frames))
                    frames, size = [], 0
                frame = queue.get_nowait()
                frames.append(frame)
                size += len(frame)
            writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
            await writer.drain()

    async def wait_flushed(self) -> None:
        while not self._queue.empty():
            await asyncio.sleep(0.005)

    @property
    def queued(self) -> int:
        return self._queue.qsize()
