"""Length-prefixed framing for the client protocol: a 4-byte big-endian length, then the payload."""

import asyncio
import struct
from typing import Final

HEADER: Final = struct.Struct(">I")


class FrameTooLargeError(ValueError):
    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit}")
        self.length = length
        self.limit = limit


class TruncatedFrameError(ValueError):
    """The stream ended inside a frame."""


def encode_frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader, frame_bytes_max: int) -> bytes | None:
    """The next payload; None when the stream ends cleanly between frames."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise TruncatedFrameError("stream ended inside a frame header") from error
    (length,) = HEADER.unpack(header)
    if length > frame_bytes_max:
        raise FrameTooLargeError(length, frame_bytes_max)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as error:
        raise TruncatedFrameError(
            f"stream ended after {len(error.partial)} of {length} payload bytes"
        ) from error
