"""The messages nodes send each other: one tagged union, msgpack, decoded with limits."""

from typing import Annotated, TypeVar

import msgspec

from peers.limits import GOSSIP_RECORDS_MAX, PEER_FRAME_BYTES_MAX
from peers.records import MemberRecord

T = TypeVar("T")

Sequence = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Heartbeat(msgspec.Struct, frozen=True, tag="heartbeat"):
    """I am alive; here is part of what I know of the mesh.

    `suspects_you` asks the recipient to answer at once: the sender has stopped hearing
    from it, and a reply is the cheapest way to refute a suspicion born of lost packets.
    """

    sender: MemberRecord
    sequence: Sequence
    gossip: Annotated[list[MemberRecord], msgspec.Meta(max_length=GOSSIP_RECORDS_MAX)] = []
    suspects_you: bool = False


class Leave(msgspec.Struct, frozen=True, tag="leave"):
    """The sender is shutting down cleanly: mark it left now rather than wait to detect it."""

    sender: MemberRecord


PeerMessage = Heartbeat | Leave


class PeerDecodeError(ValueError):
    """A peer frame that is not a valid PeerMessage; the reason says why."""


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[PeerMessage] = msgspec.msgpack.Decoder(PeerMessage)


def encode_peer_message(message: PeerMessage) -> bytes:
    return _encoder.encode(message)


def decode_peer_message(frame: bytes) -> PeerMessage:
    """Decode one frame, or raise PeerDecodeError; never anything else."""
    return decode_bounded(_decoder, frame)


def decode_bounded(decoder: msgspec.msgpack.Decoder[T], frame: bytes) -> T:
    """Decode a peer frame with `decoder` within the frame size limit, or raise
    PeerDecodeError; never anything else."""
    if len(frame) > PEER_FRAME_BYTES_MAX:
        raise PeerDecodeError(f"frame of {len(frame)} bytes exceeds {PEER_FRAME_BYTES_MAX}")
    try:
        return decoder.decode(frame)
    except msgspec.DecodeError as error:  # ValidationError is a subclass
        raise PeerDecodeError(str(error)) from error
    except RecursionError as error:
        # msgspec recurses once per nesting level, also while skipping unknown fields.
        raise PeerDecodeError("frame nested too deeply") from error
