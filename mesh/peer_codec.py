"""Everything on the peer port: membership messages and room messages, one decoder."""

import msgspec

from peers.limits import PEER_FRAME_BYTES_MAX
from peers.wire import Heartbeat, Leave, PeerDecodeError, PeerMessage
from router.wire import RouterMessage

NodeMessage = Heartbeat | Leave | RouterMessage

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[NodeMessage] = msgspec.msgpack.Decoder(NodeMessage)


def encode_node_message(message: PeerMessage | RouterMessage) -> bytes:
    return _encoder.encode(message)


def decode_node_message(frame: bytes) -> NodeMessage:
    """Decode one frame, or raise PeerDecodeError; never anything else."""
    if len(frame) > PEER_FRAME_BYTES_MAX:
        raise PeerDecodeError(f"frame of {len(frame)} bytes exceeds {PEER_FRAME_BYTES_MAX}")
    try:
        return _decoder.decode(frame)
    except msgspec.DecodeError as error:  # ValidationError is a subclass
        raise PeerDecodeError(str(error)) from error
