"""`meshchat send ROOM -`: each line of stdin sent as soon as it arrives, acknowledged
(its id printed) in the order it was read.

Ctrl-C stops reading; the lines already read are still sent and acknowledged, and a
second Ctrl-C stops waiting for them. The exit code says whether every line read was
acknowledged."""

import asyncio
import collections
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
    blocked at exit holds no lock the interpreter's shutdown waits for."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._loop = loop
        self._lines: asyncio.Queue[str | None] = asyncio.Queue(LINES_AHEAD_MAX)
        # A daemon: a read blocked on a terminal or an idle pipe must not hold up the exit.
        self._thread = threading.Thread(target=self._read, name="stdin-lines", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        pending = b""
        try:
            while chunk := os.read(self._fd, READ_CHUNK_BYTES):
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

    def _hand_over(self, line: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody reads any more
            asyncio.run_coroutine_threadsafe(self._lines.put(line), self._loop).result()

    async def next(self) -> str | None:
        """The next line, None at the end of the stream."""
        return await self._lines.get()


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
    sender = _LineSender(client, room, StdinLines(fd, loop), write_id)
    reading = asyncio.create_task(sender.read_and_send())
    acknowledging = asyncio.create_task(sender.acknowledge(reading))

    def interrupted() -> None:
        if not reading.done():
            sys.stderr.write(
                "meshchat send: interrupted: sending the lines already read "
                "(Ctrl-C again to stop waiting)\n"
            )
            reading.cancel()
        else:
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
        """A slot before a line: cancelled (Ctrl-C) while waiting for either, no line read
        is left unsent."""
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
                if not text.strip():
                    self._slots.release()  # a blank line is no message
                    continue
                self.outcome.read += 1
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
