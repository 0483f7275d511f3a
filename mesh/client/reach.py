"""Why a node could not be reached, in words: nothing listening, another kind of port,
no answer. Read from the first bytes a server sends and from the socket's error."""

import asyncio
import errno
import socket
import ssl

from mesh.wire import protocol
from mesh.wire.framing import HEADER

# What the node's other ports answer a client's hello with: an HTTP status line, or the
# ZeroMQ greeting (ZMTP's signature starts with 0xFF).
HTTP_REPLY_START = b"HTTP"
ZMTP_SIGNATURE_START = 0xFF
# A TLS server's answer to a plaintext hello: an alert or handshake record, version 3.x.
TLS_RECORD_STARTS = frozenset({b"\x15", b"\x16"})
TLS_MAJOR_VERSION = b"\x03"


# A server that closes at a hello without a word: a TLS port read as plaintext does.
CLOSED_AT_HELLO = (
    "the server closed the connection at our hello without an answer "
    "(if the node serves TLS, connect with --tls)"
)


class WrongPortError(protocol.NodeReplyError):
    """The server answered, but is no node's client port."""


class UnreachableError(ConnectionError):
    """No server could be reached at the first attempt; `reasons` says why, per server."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = dict(reasons)
        super().__init__("; ".join(f"{address}: {reason}" for address, reason in reasons.items()))


def check_client_port(header: bytes) -> None:
    """Raise WrongPortError if the first bytes a server sent say it is no client port."""
    if header and HTTP_REPLY_START.startswith(header[: len(HTTP_REPLY_START)]):
        raise WrongPortError("this is a node's HTTP port, not its client port (7100 by default)")
    if header[:1] == bytes([ZMTP_SIGNATURE_START]):
        raise WrongPortError(
            "this is a node's peer port (ZeroMQ), not its client port (7100 by default)"
        )
    if header[:1] in TLS_RECORD_STARTS and header[1:2] in {b"", TLS_MAJOR_VERSION}:
        raise WrongPortError("this port speaks TLS: connect with --tls (and --ca-file)")
    if len(header) == HEADER.size:
        (length,) = HEADER.unpack(header)
        if length > protocol.CLIENT_FRAME_BYTES_MAX:
            raise WrongPortError("the server there does not speak meshchat's client protocol")


async def read_first_frame(reader: asyncio.StreamReader) -> bytes | None:
    """A node's first frame (its welcome or refusal), or WrongPortError if what answered
    is another kind of server; None if the connection closed before a byte came."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        check_client_port(error.partial)
        raise protocol.NodeReplyError("the node closed the connection inside a frame") from error
    except ConnectionResetError as error:
        return _frame_before_reset(reader, error)
    check_client_port(header)
    (length,) = HEADER.unpack(header)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as error:
        raise protocol.NodeReplyError("the node closed the connection inside a frame") from error
    except ConnectionResetError as error:
        return _frame_before_reset(reader, error, header)


def _frame_before_reset(
    reader: asyncio.StreamReader, reset: ConnectionResetError, header: bytes = b""
) -> bytes:
    """What came before a reset, which readexactly hides though the stream holds it: a
    whole frame (a node refusing us, draining, may close before reading our hello), or
    a ZeroMQ greeting; a reset with neither is what a node's peer port does at a hello."""
    held = header + bytes(getattr(reader, "_buffer", b""))
    check_client_port(held[: HEADER.size])
    if len(held) >= HEADER.size:
        (length,) = HEADER.unpack(held[: HEADER.size])
        if len(held) >= HEADER.size + length:
            return held[HEADER.size : HEADER.size + length]
    raise WrongPortError(
        "the server reset the connection at our hello: not a client port "
        "(a node's peer port does this; clients use 7100 by default)"
    ) from reset


def reason_in_words(error: BaseException, connect_timeout_s: float) -> str:
    """One phrase for a failed attempt to reach a server."""
    if isinstance(error, WrongPortError):
        return str(error)
    if isinstance(error, ConnectionRefusedError):
        return "connection refused: nothing listens on that port (is the node running?)"
    if isinstance(error, socket.gaierror):
        return "unknown host name"
    if isinstance(error, TimeoutError):
        return f"no answer within {connect_timeout_s:g}s (a firewall, or the node is stuck)"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error.reason or error}"
    if isinstance(error, OSError) and error.errno in {errno.ENETUNREACH, errno.EHOSTUNREACH}:
        return "no route to that host"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
