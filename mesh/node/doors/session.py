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

from mesh.node.doors.token_scope import UNSCOPED, TokenScope

log = logging.getLogger(__name__)

_session_ids = itertools.count(1)
# Queued frames joined into one write: enough for a busy moment's deliveries in one send
# call, small enough that joining never copies much at once.
WRITE_BYTES_MAX = 256 * 1024


class Session:
    """Kept lean (a list and plain fields; futures only while someone waits): a node holds
    one per connection, most of them idle."""

    def __init__(
        self, user: str, queue_max: int, minor: int = 0, scope: TokenScope = UNSCOPED
    ) -> None:
        self.session_id = next(_session_ids)
        self.user = user
        self.scope = scope  # what the user's token lets this session do
        self.minor = minor  # the client's protocol minor version: what it can be sent
        self.rooms: set[str] = set()
        self.queue_max = queue_max
        # Frames not yet taken by the writer; a list, as an empty one is a tenth of an
        # empty deque and the writer takes many frames at a time from its front.
        self._outbox: list[bytes] = []
        self._catching_up: dict[str, list[tuple[str, bytes]]] = {}
        self.cut_off_reason = ""  # set (never empty once cut off) when the session must end
        self.closed = False
        self.sends_in_flight = 0
        self.events_dropped = 0
        # Each is made only while someone waits on it, and resolved to wake them.
        self._frames_queued: asyncio.Future[None] | None = None  # the writer, for frames
        self._room_freed: asyncio.Future[None] | None = None  # a replay, for queue space
        self._send_slot_freed: asyncio.Future[None] | None = None  # the reader, for a slot
        self._writer_task: asyncio.Task[None] | None = None
        self._stream: asyncio.StreamWriter | None = None  # the connection, once writing

    @property
    def overflowed(self) -> bool:
        return bool(self.cut_off_reason)

    def close(self) -> None:
        """The connection is gone: nothing more is queued, and no one waits on it."""
        self.closed = True
        self._outbox.clear()
        self._frames_queued = _wake(self._frames_queued)
        self._room_freed = _wake(self._room_freed)
        self._send_slot_freed = _wake(self._send_slot_freed)

    def cut_off(self, reason: str) -> None:
        """End the session with `unavailable`: the client reconnects and resumes."""
        if self.cut_off_reason:
            return
        self.cut_off_reason = reason
        # What is queued still goes out, as the writer would have sent it, so a client
        # cut off under a flood of replies keeps those; but without waiting on a client
        # that may read nothing: the writer is stopped wherever it waits.
        stream = self._stream
        if stream is not None and self._outbox and not self.closed and not stream.is_closing():
            stream.write(b"".join(self._outbox))
            self._outbox = []
        writer_task = self._writer_task
        if writer_task is not None and writer_task is not asyncio.current_task():
            writer_task.cancel()

    # ---- pushing frames ----

    def push(self, frame: bytes) -> None:
        """Queue a frame without waiting; a full queue cuts the session off."""
        if self.closed or self.cut_off_reason:
            return
        if len(self._outbox) >= self.queue_max:
            log.warning(
                "session %d (%s): outgoing queue full; cutting it off", self.session_id, self.user
            )
            self.cut_off(self._too_slow())
            return
        self._queue(frame)

    def push_if_room(self, frame: bytes) -> None:
        """Queue an ephemeral frame (typing) if there is space; drop it otherwise."""
        if self.closed or len(self._outbox) >= self.queue_max:
            self.events_dropped += 1
            return
        self._queue(frame)

    async def push_waiting(self, frame: bytes) -> None:
        """Queue a frame, waiting for space: for replays the client asked for."""
        while not self.closed and len(self._outbox) >= self.queue_max:
            if self._room_freed is None:
                self._room_freed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._room_freed)
        if not self.closed:
            self._queue(frame)

    def _queue(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._frames_queued = _wake(self._frames_queued)

    def _too_slow(self) -> str:
        return (
            f"too slow to read: {self.queue_max} frames were waiting; "
            "reconnect and resume from the last message id"
        )

    def deliver(self, room: str, frame: bytes, message_id: str) -> None:
        """A new message in a room this session is in."""
        held = self._catching_up.get(room)
        if held is None:
            self.push(frame)
            return
        if len(held) >= self.queue_max:
            self.cut_off(self._too_slow())
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
            if self._send_slot_freed is None:
                self._send_slot_freed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._send_slot_freed)
        self.sends_in_flight += 1

    def release_send_slot(self) -> None:
        self.sends_in_flight -= 1
        self._send_slot_freed = _wake(self._send_slot_freed)

    # ---- the writer ----

    async def write_loop(self, writer: asyncio.StreamWriter) -> None:
        """Write queued frames until the session is cut off (then return, leaving the rest:
        the client resumes from what it got)."""
        self._writer_task = asyncio.current_task()
        self._stream = writer
        while not self.cut_off_reason:
            if not self._outbox:
                self._frames_queued = asyncio.get_running_loop().create_future()
                await self._frames_queued
                continue
            frames = self._take_frames()
            self._room_freed = _wake(self._room_freed)
            if writer.is_closing():
                return  # the client is gone (uvloop refuses writes to a closed socket)
            writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
            await writer.drain()

    def _take_frames(self) -> list[bytes]:
        """The oldest queued frames, up to WRITE_BYTES_MAX (at least one), for one write:
        one send call rather than one per frame. The rest stay counted as queued."""
        outbox = self._outbox
        size, count = 0, 0
        while count < len(outbox) and size < WRITE_BYTES_MAX:
            size += len(outbox[count])
            count += 1
        if count == len(outbox):
            self._outbox = []
            return outbox
        taken = outbox[:count]
        del outbox[:count]
        return taken

    async def wait_flushed(self) -> None:
        while self._outbox and not self.cut_off_reason:
            await asyncio.sleep(0.005)

    @property
    def queued(self) -> int:
        return len(self._outbox)


def _wake(waiter: "asyncio.Future[None] | None") -> "asyncio.Future[None] | None":
    """Resolve `waiter` if it is there and still pending; returns what to hold: None."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
    return None
