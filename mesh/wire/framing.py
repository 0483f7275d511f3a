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


# Bytes asked of the socket at a time by FrameReader: many small frames per read.
READ_CHUNK_BYTES: Final = 64 * 1024


class FrameReader:
    """The payloads of a stream, read many frames at a time: one socket read (and one
    wait) serves every frame it brought, where `read_frame` waits twice per frame. Made
    after a handshake read with `read_frame`: it takes the stream from there."""

    def __init__(self, reader: asyncio.StreamReader, frame_bytes_max: int) -> None:
        self._reader = reader
        self._frame_bytes_max = frame_bytes_max
        self._buffer = bytearray()
        self._ready: list[bytes] = []  # whole payloads not yet returned, oldest last
        # A frame over the limit, raised once the whole frames before it are served.
        self._too_large: FrameTooLargeError | None = None

    async def next(self) -> bytes | None:
        """The next payload; None when the stream ends cleanly between frames."""
        while not self._ready:
            if self._too_large is not None:
                raise self._too_large
            data = await self._reader.read(READ_CHUNK_BYTES)
            if not data:
                if self._buffer:
                    raise TruncatedFrameError(
                        f"stream ended inside a frame ({len(self._buffer)} bytes of it)"
                    )
                return None
            self._split(data)
        return self._ready.pop()

    def _split(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, start)
            if length > self._frame_bytes_max:
                self._too_large = FrameTooLargeError(length, self._frame_bytes_max)
                break
            end = start + HEADER.size + length
            if end > len(buffer):
                break
            frames.append(bytes(buffer[start + HEADER.size : end]))
            start = end
        del buffer[:start]
        frames.reverse()
        self._ready = frames
