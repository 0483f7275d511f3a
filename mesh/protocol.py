"""The native client protocol's messages: one tagged union per direction, msgpack in frames.

docs/protocol.md is the specification; this module is its code. Structs that clients send
ignore unknown fields on purpose: a newer client's optional additions must not break an
older node. Every string and list a client sends has a length limit.
"""

from typing import Annotated, Final

import msgspec

from mesh.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION: Final = 1
PROTOCOL_MINOR: Final = 0
# A frame's payload on the client port, both directions; a status reply for a full
# mesh of 256 members stays far below it.
CLIENT_FRAME_BYTES_MAX: Final = 1024 * 1024

RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
UserName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\s\x00-\x1f]+$")]
Token = Annotated[str, msgspec.Meta(max_length=4096)]


# ---- client to node ----


class Hello(msgspec.Struct, frozen=True, kw_only=True, tag="hello"):
    """The first frame of every session."""

    versions: Annotated[list[int], msgspec.Meta(min_length=1, max_length=16)]
    minor: int = 0
    client: Annotated[str, msgspec.Meta(max_length=64)] = ""
    token: Token = ""


class StatusRequest(msgspec.Struct, frozen=True, kw_only=True, tag="status"):
    request_id: RequestId


ClientMessage = Hello | StatusRequest


# ---- node to client ----


class Welcome(msgspec.Struct, frozen=True, kw_only=True, tag="welcome"):
    version: int
    minor: int
    node: str
    user: str


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True, tag="error", omit_defaults=True):
    code: ErrorCode
    message: str
    request_id: RequestId | None = None


class MemberStatus(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    address: str
    state: str
    incarnation: int
    last_heard_s: float | None
    dropped: int


class StatusReply(msgspec.Struct, frozen=True, kw_only=True, tag="status"):
    request_id: RequestId
    node: str
    members: list[MemberStatus]
    counters: dict[str, int] = {}


NodeMessage = Welcome | ErrorReply | StatusReply


# ---- codecs ----

_encoder = msgspec.msgpack.Encoder()
_client_decoder: msgspec.msgpack.Decoder[ClientMessage] = msgspec.msgpack.Decoder(ClientMessage)
_node_decoder: msgspec.msgpack.Decoder[NodeMessage] = msgspec.msgpack.Decoder(NodeMessage)
_loose_decoder = msgspec.msgpack.Decoder()


class _RequestIdOnly(msgspec.Struct):
    request_id: RequestId | None = None


def encode(message: ClientMessage | NodeMessage) -> bytes:
    return _encoder.encode(message)


def decode_client_message(payload: bytes) -> ClientMessage:
    """Decode what a client sent, or raise ProtocolError with the code to answer.

    Bytes that are not msgpack at all close the session; well-formed msgpack that is not
    a valid request is a bad request that the session survives.
    """
    try:
        return _client_decoder.decode(payload)
    except msgspec.ValidationError as error:
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(error)) from error
    except msgspec.DecodeError as error:
        message = f"undecodable frame: {error}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message, close=True) from error


def request_id_of(payload: bytes) -> int | None:
    """The request id of a request that failed validation, so the error can carry it back."""
    try:
        value = _loose_decoder.decode(payload)
        if not isinstance(value, dict):
            return None
        return msgspec.convert(value, _RequestIdOnly).request_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def decode_node_message(payload: bytes) -> NodeMessage:
    return _node_decoder.decode(payload)
