"""A client-side connection to one node: handshake, then requests and their replies.

This is the base of the client library; it speaks the same framing and schema as the
node's gateway, and raises NodeError carrying the node's error code.
"""

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import Callable, Sequence
from typing import Self

from mesh.client.reach import CLOSED_AT_HELLO, read_first_frame
from mesh.wire import protocol
from mesh.wire.errors import ErrorCode
from mesh.wire.framing import (
    FrameReader,
    FrameTooLargeError,
    TruncatedFrameError,
    encode_frame,
    read_frame,
)
from mesh.wire.protocol import ErrorReply, Hello, NodeMessage, Welcome


class NodeError(Exception):
    """The node answered with an error; `code` is its stable error code."""

    def __init__(self, code: ErrorCode, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


def parse_servers(text: str) -> list[tuple[str, int]]:
    """'HOST:PORT[,HOST:PORT...]' as a list of (host, port)."""
    servers = []
    for item in text.split(","):
        host, separator, port = item.strip().rpartition(":")
        if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not HOST:PORT: {item!r}")
        servers.append((host.strip("[]"), int(port)))
    return servers


class NodeConnection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, welcome: Welcome
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.welcome = welcome
        self._request_ids = itertools.count(1)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        token: str,
        client_name: str = "meshchat",
        timeout_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Self:
        """With `ssl_context`, over TLS: the node's certificate must name `host`."""
        async with asyncio.timeout(timeout_s):
            reader, writer = await open_stream(host, port, ssl_context)
            try:
                hello = Hello(
                    versions=[protocol.PROTOCOL_VERSION],
                    minor=protocol.PROTOCOL_MINOR,
                    client=client_name,
                    token=token,
                )
                writer.write(encode_frame(protocol.encode(hello)))
                reply = await _read_reply(reader, first=True)
                if not isinstance(reply, Welcome):
                    raise NodeError(ErrorCode.INTERNAL, f"expected welcome, got {reply!r}")
            except BaseException:
                writer.close()
                raise
        return cls(reader, writer, reply)

    async def request(
        self, build: Callable[[int], protocol.ClientMessage], timeout_s: float = 5.0
    ) -> NodeMessage:
        """Send the request that `build(request_id)` makes and return its reply."""
        request_id = next(self._request_ids)
        async with asyncio.timeout(timeout_s):
            self._writer.write(encode_frame(protocol.encode(build(request_id))))
            await self._writer.drain()
            while True:
                reply = await _read_reply(self._reader)
                if getattr(reply, "request_id", None) == request_id:
                    return reply

    async def pipeline(
        self, builds: Sequence[Callable[[int], protocol.ClientMessage]], timeout_s: float = 10.0
    ) -> list[NodeMessage | NodeError]:
        """Send every request at once, then wait for all their replies: each request's
        reply, or the error it was answered with, in the order of `builds`."""
        ids = [next(self._request_ids) for _ in builds]
        replies: dict[int, NodeMessage | NodeError] = {}
        async with asyncio.timeout(timeout_s):
            for request_id, build in zip(ids, builds, strict=True):
                self._writer.write(encode_frame(protocol.encode(build(request_id))))
            await self._writer.drain()
            while len(replies) < len(ids):
                payload = await read_node_frame(self._reader)
                if payload is None:
                    raise ConnectionError("the node closed the connection")
                reply = protocol.decode_node_message(payload)
                answered = getattr(reply, "request_id", None)
                if isinstance(answered, int) and ids[0] <= answered <= ids[-1]:
                    replies[answered] = (
                        NodeError(reply.code, reply.message, reply.retry_after_s)
                        if isinstance(reply, ErrorReply)
                        else reply
                    )
        return [replies[request_id] for request_id in ids]

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()


async def open_stream(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to a node, on TLS with `ssl_context` (verifying the name `host`)."""
    if ssl_context is None:
        return await asyncio.open_connection(host, port)
    return await asyncio.open_connection(host, port, ssl=ssl_context, server_hostname=host)


class NodeFrames:
    """A node's frames after the welcome, many per socket read (see FrameReader); a frame
    over the limit or cut short breaks the connection, as in `read_node_frame`."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._frames = FrameReader(reader, protocol.CLIENT_FRAME_BYTES_MAX)

    async def next(self) -> bytes | None:
        try:
            return await self._frames.next()
        except (FrameTooLargeError, TruncatedFrameError) as error:
            raise protocol.NodeReplyError(f"the node sent an invalid frame: {error}") from error


async def read_node_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame from a node; one over the limit or cut short breaks the connection
    (NodeReplyError, a ConnectionError), like a frame that does not decode."""
    try:
        return await read_frame(reader, protocol.CLIENT_FRAME_BYTES_MAX)
    except (FrameTooLargeError, TruncatedFrameError) as error:
        raise protocol.NodeReplyError(f"the node sent an invalid frame: {error}") from error


async def _read_reply(reader: asyncio.StreamReader, *, first: bool = False) -> NodeMessage:
    """The next reply; the `first` of a connection is also checked for another kind of port."""
    payload = await (read_first_frame(reader) if first else read_node_frame(reader))
    if payload is None:
        raise ConnectionError(CLOSED_AT_HELLO if first else "the node closed the connection")
    reply = protocol.decode_node_message(payload)
    if isinstance(reply, ErrorReply):
        raise NodeError(reply.code, reply.message, reply.retry_after_s)
    return reply
