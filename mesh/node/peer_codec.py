"""Everything on the peer port: membership messages, room messages and bundles of room
messages, one decoder."""

from typing import Annotated

import msgspec

from peers.limits import PEER_BUNDLE_MESSAGES_MAX
from peers.wire import Heartbeat, Leave, PeerMessage, decode_bounded
from router.wire import RouterMessage


class PeerBundle(msgspec.Struct, frozen=True, tag="bundle"):
    """Room messages to one peer from one turn of the sender's event loop, in the order
    they were sent (mesh/node/peer_bundles.py)."""

    messages: Annotated[list[RouterMessage], msgspec.Meta(max_length=PEER_BUNDLE_MESSAGES_MAX)]


class _EncodedBundle(msgspec.Struct, frozen=True, tag="bundle"):
    """A PeerBundle whose messages are encoded already: each is encoded once, to know
    its size, and put in as it is."""

    messages: list[msgspec.Raw]


NodeMessage = Heartbeat | Leave | RouterMessage | PeerBundle

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[NodeMessage] = msgspec.msgpack.Decoder(NodeMessage)


def encode_peer_frame(message: PeerMessage | RouterMessage) -> bytes:
    return _encoder.encode(message)


def encode_bundle(frames: list[bytes]) -> bytes:
    """One frame carrying the messages encoded in `frames` (by encode_peer_frame)."""
    return _encoder.encode(_EncodedBundle([msgspec.Raw(frame) for frame in frames]))


def decode_peer_frame(frame: bytes) -> NodeMessage:
    """Decode one frame, or raise PeerDecodeError; never anything else."""
    return decode_bounded(_decoder, frame)
