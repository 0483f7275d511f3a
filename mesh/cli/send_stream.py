"""`meshchat send ROOM -`: each line of stdin sent as soon as it arrives, acknowledged
(its id printed) in the order it was read.

Ctrl-C stops reading; the lines already read are still sent and acknowledged, and a
second Ctrl-C stops waiting for them. The exit code says whether every line read was
acknowledged."""

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from mesh.cli.exit_codes import EXIT_OK, EXIT_UNAVAILABLE, exit_code_of
from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeError
from mesh.wire.protocol import Sent

# Sends in flight at once: enough to fill the node's commit batches.
SEND_WINDOW = 512
# Lines read from stdin ahead of being sent.
LINES_AHEAD_MAX = SEND_WINDOW
READ_CHUNK_BYTES = 64 * 1024
# A "line" this long without a newline is sent as it is (and refused as too large)
# rather than held in memory while more of it arrives.
LINE_BYTES_MAX = 4 * 1024 * 1024

log = logging.getLogger(__name__)


class StdinLines:
    """The lines of a file descriptor, read by a thread of their own: stdin may be a pipe,
    a terminal or a file, and none of them may block the event loop. The thread reads
    the descriptor itself (os.read), never sys.stdin's buffer, so that a read still
    blocked at exit holds no lock the interpreter's shutdown waits for.

    `stop()` ends the lines without losing one already read: those of the chunk in hand
    are still handed over, and no further chunk is read."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._loop = loop
        self._lines: asyncio.Queue[str | None] = asyncio.Queue(LINES_AHEAD_MAX)
        self.read = 0  # lines taken from the descriptor (blank ones are not counted)
        self._state = threading.Lock()  # stopping and in_read change together
        self._stopping = False
        self._in_read = False
        self._ended = asyncio.Event()  # stopped while the thread waits in os.read
        # A daemon: a read blocked on a terminal or an idle pipe must not hold up the exit.
        self._thread = threading.Thread(target=self._read, name="stdin-lines", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        pending = b""
        try:
            while chunk := self._next_chunk():
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > LINE_BYTES_MAX:  # sent as it is: refused as too large
                    lines.append(pending)
                    pending = b""
                for raw in lines:
                    self._hand_over(raw.decode("utf-8", errors="replace").rstrip("\r"))
            if pending:
                self._hand_over(pending.decode("utf-8", errors="replace"))
        except OSError as error:
            log.warning("stdin: %s", error.strerror or error)
        finally:
            self._hand_over(None)

    def _next_chunk(self) -> bytes:
        with self._state:
            if self._stopping:
                return b""
            self._in_read = True
        try:
            return os.read(self._fd, READ_CHUNK_BYTES)
        finally:
            with self._state:
                self._in_read = False

    def _hand_over(self, line: str | None) -> None:
        if line is not None:
            if not line.strip():
                return  # a blank line is no message
            self.read += 1
        # The loop closed (RuntimeError), or the put was cancelled with it: nobody reads.
        with contextlib.suppress(RuntimeError, concurrent.futures.CancelledError):
            asyncio.run_coroutine_threadsafe(self._lines.put(line), self._loop).result()

    def stop(self) -> None:
        with self._state:
            self._stopping = True
            waiting_in_read = self._in_read
        if waiting_in_read:  # nothing in hand: the lines end once the queue is empty
            self._ended.set()

    async def next(self) -> str | None:
        """The next line, None at the end of the stream (or once stopped)."""
        if not self._lines.empty() or not self._ended.is_set():
            getting = asyncio.ensure_future(self._lines.get())
            ended = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait({getting, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                if not getting.done():
                    getting.cancel()
            if getting.done() and not getting.cancelled():
                return getting.result()
        return self._lines.get_nowait() if not self._lines.empty() else None


@dataclass(slots=True)
class StreamOutcome:
    read: int = 0
    acknowledged: int = 0
    error: NodeError | ConnectionError | TimeoutError | None = None


async def send_stream(
    client: ChatClient, room: str, fd: int, write_id: Callable[[str], None]
) -> int:
    """Send each line read from `fd` to `room`; the exit code."""
    loop = asyncio.get_running_loop()
    lines = StdinLines(fd, loop)
    sender = _LineSender(client, room, lines, write_id)
    reading = asyncio.create_task(sender.read_and_send())
    acknowledging = asyncio.create_task(sender.acknowledge(reading))

    interrupts = 0

    def interrupted() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            sys.stderr.write(
                "meshchat send: interrupted: sending the lines already read "
                "(Ctrl-C again to stop waiting)\n"
            )
            lines.stop()
        else:
            reading.cancel()
            acknowledging.cancel()

    loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await acknowledging
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        reading.cancel()
        for send in sender.sends:
            send.cancel()
        await asyncio.gather(*sender.sends, return_exceptions=True)  # every error seen
    sender.outcome.read = lines.read
    return _report(sender.outcome)


class _LineSender:
    def __init__(
        self,
        client: ChatClient,
        room: str,
        lines: StdinLines,
        write_id: Callable[[str], None],
    ) -> None:
        self.client, self.room, self.lines, self.write_id = client, room, lines, write_id
        self.outcome = StreamOutcome()
        self.sends: collections.deque[asyncio.Future[Sent]] = collections.deque()
        self._queued = asyncio.Event()
        self._slots = asyncio.Semaphore(SEND_WINDOW)

    async def read_and_send(self) -> None:
        """A slot before a line: cancelled while waiting for either, no line taken from
        the queue is left unsent (what is left in it is counted as not acknowledged)."""
        try:
            while True:
                await self._slots.acquire()
                try:
                    text = await self.lines.next()
                except asyncio.CancelledError:
                    self._slots.release()
                    raise
                if text is None:
                    return
                self.sends.append(asyncio.ensure_future(self.client.send(self.room, text)))
                self._queued.set()
        finally:
            self._queued.set()

    async def acknowledge(self, reading: "asyncio.Task[None]") -> None:
        """Each send's id in the order the lines were read, as soon as it is acknowledged."""
        while self.sends or not reading.done():
            if not self.sends:
                self._queued.clear()
                await self._queued.wait()
                continue
            try:
                sent = await self.sends[0]
            except (NodeError, ConnectionError, TimeoutError) as error:
                self.outcome.error = error
                reading.cancel()
                return
            self.sends.popleft()
            self._slots.release()
            self.outcome.acknowledged += 1
            self.write_id(sent.id)


def _report(outcome: StreamOutcome) -> int:
    missing = outcome.read - outcome.acknowledged
    error = outcome.error
    if isinstance(error, NodeError):
        sys.stderr.write(f"meshchat send: {error.code}: {error.message}\n")
    elif error is not None:
        sys.stderr.write(f"meshchat send: not acknowledged: {error or type(error).__name__}\n")
    if missing:
        sys.stderr.write(
            f"meshchat send: {missing} of {outcome.read} lines read were not acknowledged\n"
        )
    if isinstance(error, NodeError):
        return exit_code_of(error.code)
    return EXIT_UNAVAILABLE if missing or error is not None else EXIT_OK
