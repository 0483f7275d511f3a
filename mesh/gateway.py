"""The client port: accepts TCP sessions, runs the handshake, and answers requests.

A session's failures stay in that session: a frame that cannot be decoded or is over
the limit gets an error and a close; a request that decodes but is invalid gets an
error and the session goes on. Nothing a client sends can stop the server loop.
"""

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from mesh import protocol
from mesh.config import ClientLimits
from mesh.errors import ErrorCode, ProtocolError
from mesh.framing import FrameTooLargeError, TruncatedFrameError, encode_frame, read_frame
from mesh.protocol import ErrorReply, Hello, StatusReply, StatusRequest, Welcome

log = logging.getLogger(__name__)

StatusProvider = Callable[[int], StatusReply]


@dataclass(slots=True)
class GatewayStatistics:
    sessions_opened: int = 0
    sessions_refused: int = 0
    requests: int = 0
    errors_by_code: collections.Counter[str] = field(default_factory=collections.Counter)


class Gateway:
    def __init__(self, node_id: str, limits: ClientLimits, status: StatusProvider) -> None:
        self.node_id = node_id
        self.limits = limits
        self.stats = GatewayStatistics()
        self._status = status
        self._sessions: set[asyncio.Task[None]] = set()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        if len(self._sessions) >= self.limits.sessions_max:
            self.stats.sessions_refused += 1
            await self._send_error(writer, ErrorCode.UNAVAILABLE, "node is at its session limit")
            await _close(writer)
            return
        self._sessions.add(task)
        self.stats.sessions_opened += 1
        try:
            await self._run_session(reader, writer)
        except ProtocolError as error:
            self.stats.errors_by_code[error.code] += 1
            log.warning("client %s: %s: %s", peer, error.code, error.message)
            await self._send_error(writer, error.code, error.message)
        except (ConnectionError, TimeoutError) as error:
            log.info("client %s: connection ended: %r", peer, error)
        finally:
            self._sessions.discard(task)
            await _close(writer)

    async def close_sessions(self) -> None:
        for task in list(self._sessions):
            task.cancel()
        for task in list(self._sessions):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async with asyncio.timeout(self.limits.handshake_timeout_s):
            first = await self._read(reader)
        if first is None:
            return
        hello = protocol.decode_client_message(first)
        if not isinstance(hello, Hello):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the first frame must be hello", close=True)
        user = self._handshake(hello)
        await self._send(
            writer,
            Welcome(
                version=protocol.PROTOCOL_VERSION,
                minor=protocol.PROTOCOL_MINOR,
                node=self.node_id,
                user=user,
            ),
        )
        while True:
            payload = await self._read(reader)
            if payload is None:
                return
            self.stats.requests += 1
            try:
                request = protocol.decode_client_message(payload)
            except ProtocolError as error:
                if error.close:
                    raise
                self.stats.errors_by_code[error.code] += 1
                request_id = protocol.request_id_of(payload)
                await self._send_error(writer, error.code, error.message, request_id)
                continue
            if isinstance(request, StatusRequest):
                await self._send(writer, self._status(request.request_id))
            else:
                await self._send_error(writer, ErrorCode.BAD_REQUEST, "hello was already sent")

    def _handshake(self, hello: Hello) -> str:
        if protocol.PROTOCOL_VERSION not in hello.versions:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"this node speaks protocol version {protocol.PROTOCOL_VERSION}; "
                f"the client offered {hello.versions}",
                close=True,
            )
        # Without a cluster secret (local development) the token is the user name.
        try:
            return _user_from_plain_token(hello.token)
        except ValueError as error:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, str(error), close=True) from error

    async def _read(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            return await read_frame(reader, self.limits.frame_bytes_max)
        except FrameTooLargeError as error:
            raise ProtocolError(ErrorCode.TOO_LARGE, str(error), close=True) from error
        except TruncatedFrameError as error:
            raise ConnectionError(str(error)) from error

    async def _send(self, writer: asyncio.StreamWriter, message: protocol.NodeMessage) -> None:
        writer.write(encode_frame(protocol.encode(message)))
        await writer.drain()

    async def _send_error(
        self,
        writer: asyncio.StreamWriter,
        code: ErrorCode,
        message: str,
        request_id: int | None = None,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            await self._send(writer, ErrorReply(code=code, message=message, request_id=request_id))


def _user_from_plain_token(token: str) -> str:
    if not token:
        raise ValueError("a token is required (the user name, when the node has no secret)")
    if len(token) > 64 or any(character.isspace() or ord(character) < 32 for character in token):
        raise ValueError("a user name is 1 to 64 characters without spaces or control characters")
    return token


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
