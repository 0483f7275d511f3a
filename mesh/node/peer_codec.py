"""Everything on the peer port: membership messages and room messages, one decoder."""

import msgspec

from peers.wire import Heartbeat, Leave, PeerMessage, decode_bounded
from router.wire import RouterMessage

NodeMessage = Heartbeat | Leave | RouterMessage

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[NodeMessage] = msgspec.msgpack.Decoder(NodeMessage)


def encode_peer_frame(message: PeerMessage | RouterMessage) -> bytes:
    return _encoder.encode(message)


def decode_peer_frame(frame: bytes) -> NodeMessage:
    """Decode one frame, or raise PeerDecodeError; never anything else."""
    return decode_bounded(_decoder, frame)
