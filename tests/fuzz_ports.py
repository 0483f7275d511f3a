"""A bounded mutation fuzzer against a running node: its client port, HTTP port and peer port,
while a legitimate client sends and reads.

    python -m tests.fuzz_ports --frames 1000000 --seed 7    # the long run
    python -m tests.fuzz_ports --frames 20000               # what tests/test_fuzz_ports.py runs

Theory of operation. One node, n1, is started through the CLI with every port open, a
cluster secret (tokens are JWTs, so the token parser is fuzzed too) and N=W=1 (its own disk
acknowledges). The fuzzer then plays three attackers and two honest users at once:

- client port: sessions that say hello and then pipeline mutated frames (many per
  connection; frames the node must answer come first, at most one that makes it hang up
  comes last), sessions whose hello is mutated, and connections that send bytes unframed;
- HTTP port: keep-alive connections pipelining requests with mutated JSON bodies, query and
  path parameters and headers, and, last on a connection, mutated or truncated HTTP itself;
- peer port: a member holding a trusted CURVE key (plaintext with --insecure-peers) that
  heartbeats correctly but also sends mutated membership and room messages, deep nesting,
  lying lengths, oversize frames and bad envelopes;
- a writer sends acknowledged messages to a room that n1 holds alone, and a reader in
  another session receives them.

Every frame comes from a seeded RNG (one per port and worker), so a seed names its frames.
At the end the run checks: the node is alive; every acknowledged message reached the reader
once and is in the room's history once; the node's log holds no traceback; its RSS grew less
than a bound from the end of the warm-up to the end; and its counters saw the garbage. It
prints a JSON summary and exits 1 if any check failed.
"""

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import functools
import hashlib
import hmac
import json
import random
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import msgspec
import zmq
import zmq.asyncio

from mesh.client import runtime
from mesh.client.chat_client import ChatClient, ClientSettings, ConnectionChanged
from mesh.client.connection import NodeConnection, NodeError
from mesh.client.status import fetch_status
from mesh.node.config import ClientLimits
from mesh.node.doors.auth import issue_token
from mesh.node.peer_codec import decode_peer_frame, encode_peer_frame
from mesh.wire import protocol
from mesh.wire.errors import ErrorCode, ProtocolError
from mesh.wire.framing import HEADER, encode_frame, read_frame
from mesh.wire.protocol import MessageEvent, Placement, StatusReply, Where
from peers.limits import PEER_FRAME_BYTES_MAX
from peers.records import MemberRecord
from peers.wire import Heartbeat, Leave, PeerDecodeError
from router import wire as router_wire
from router.message_ids import MessageId
from router.records import MembershipChange, ReadMarker, RoomMessage
from tests.processes import HOST, Cluster, NodeProcess, free_ports, wait_for

# ---- bounds, each with its reason ----

FRAMES_PER_PORT_DEFAULT: Final = 20_000
# Past the warm-up every cache, pool and lazily built structure of the node exists: RSS
# growth from there on is what the garbage itself costs.
WARMUP_SHARE: Final = 0.1
# A node that holds nothing per bad frame stays well inside this; a leak of even 100 bytes
# per frame crosses it within a million frames.
RSS_GROWTH_MIB_MAX: Final = 50.0
# RSS readings after the warm-up, evenly spread: a plateau and a slope tell apart a
# cache filling up and a leak.
RSS_SAMPLES: Final = 5
# Connections in flight per TCP port: enough to keep the node busy while the next batch is
# drawn, few enough that two cores are not spent on switching.
CONNECTIONS_IN_FLIGHT: Final = 3
# Frames pipelined on one client session: long sessions send frames fast; the draw decides
# each session's length, up to this.
CLIENT_FRAMES_PER_SESSION_MAX: Final = 400
# HTTP requests written before their responses are read, and per keep-alive connection.
HTTP_PIPELINE_DEPTH: Final = 16
HTTP_REQUESTS_PER_CONNECTION_MAX: Final = 400
# Depths of nesting tried: around msgspec's limit (about 1000 in a node), the 5 KB frame of
# 5000 levels that once killed a node, and far beyond.
NESTING_DEPTHS: Final = (64, 900, 1_100, 5_000, 20_000, 100_000, 400_000)
# Warnings a run may log besides one per attacking connection: the first ten rejected
# peer frames, membership changes of the fuzzing member, the node's start and stop.
LOG_LINES_SLACK: Final = 100
# Replies in a summary's list of failures: enough to see the pattern, not a flood.
FAILURES_KEPT_MAX: Final = 20
# The legitimate writer's pace: well under the node's per-user send limit (100/s).
LEGIT_SEND_INTERVAL_S: Final = 0.02
# How long acknowledged messages may take to reach the reader once the fuzzing stops.
DELIVERY_TIMEOUT_S: Final = 20.0
# One port's fuzzing may take this long per 1000 frames before the run counts as hung.
SECONDS_PER_1000_FRAMES_MAX: Final = 30.0
# The node runs with the default client limits; its HTTP API takes bodies up to this (the
# formula of mesh/node/doors/http_api.py: a body of escaped characters, and the JSON around it).
CLIENT_LIMITS: Final = ClientLimits()
HTTP_BODY_BYTES_MAX: Final = CLIENT_LIMITS.body_bytes_max * 6 + 4096
# uvicorn's HTTP parser (h11) refuses a request line and headers longer than this.
HTTP_HEAD_BYTES_MAX: Final = 16 * 1024
# The member the peer-port fuzzer speaks as, and the users it and the writers use.
FUZZ_MEMBER_ID: Final = "fz"
FUZZ_USERS: Final = ("fuzz-a", "fuzz-b", "fuzz-c", "fuzz-d")
FUZZ_ROOMS: Final = ("fuzz-room-0", "fuzz-room-1", "fuzz.room#2", "fuzz_room-3")
WRITER, READER, OBSERVER = "legit-writer", "legit-reader", "legit-observer"
SECRET: Final = b"fuzz-secret-" + b"s" * 32
# Rooms tried for the legitimate traffic before giving up on finding one n1 holds alone.
LEGIT_ROOM_CANDIDATES: Final = 200

# ---- values that break parsers ----

INTERESTING_INTS: Final = (
    *(0, 1, -1, 2, 127, 128, 255, 256, 65_535, 65_536, 2**31 - 1, 2**31, -(2**31)),
    *(2**32, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 10**12, 281_474_976_710_655),
)
INTERESTING_FLOATS: Final = (0.0, -0.0, 0.5, 1e308, -1e308, 5e-324, float("inf"), float("nan"))
INTERESTING_TEXTS: Final = (
    *("", " ", "\x00", "\n", "n1\n", "a" * 64, "a" * 65, "\u202e", "\x1b[2J\x07", "%s%n"),
    *("ffffffffffffffff.n1", "0000000000000000.0", "ffffffffffff0000.fz", "../../etc/passwd"),
    *("hello", "join", "send", "heartbeat", "leave", "replicate", "forward", "n1", "fz"),
)
STRING_LENGTHS: Final = (0, 1, 16, 63, 64, 65, 81, 82, 128, 129, 4096, 4097, 16_385, 65_537)
INTERESTING_BYTES: Final = (
    0x00,
    0x7F,
    0x80,
    0x90,
    0xA0,
    0xC0,
    0xC1,
    0xC3,
    0xD9,
    0xDB,
    0xDD,
    0xDF,
    0xFF,
)
PLACEHOLDER: Final = "\x00fuzz-fragment\x00"  # replaced by raw bytes after encoding


# ---- encodings ----


@dataclass(frozen=True)
class Codec:
    """How a port's payloads are encoded, and the raw fragments only bytes can express."""

    name: str
    encode: Callable[[Any], bytes]
    binary_ok: bool  # bytes and msgpack extensions are values of this encoding

    def deep(self, rng: random.Random, depth: int) -> bytes:
        if self.name == "msgpack":
            unit = rng.choice((b"\x91", b"\x81\xa1k", b"\x92\xc0", b"\xdc\x00\x01"))
            return unit * depth + b"\xc0"
        opening, closing = rng.choice(((b"[", b"]"), (b'{"k":', b"}"), (b'[{"a":', b"}]")))
        tail = b"" if rng.random() < 0.2 else closing * depth  # sometimes never closed
        return opening * depth + b"0" + tail

    def fragment(self, rng: random.Random, bytes_max: int) -> bytes:
        """A value no encoder would write: deep nesting, lying headers, broken scalars."""
        if rng.random() < 0.5:
            depth = rng.choice([d for d in NESTING_DEPTHS if d * 6 < bytes_max] or [64])
            return self.deep(rng, depth)
        if self.name == "msgpack":
            return rng.choice(MSGPACK_FRAGMENTS)
        return rng.choice(JSON_FRAGMENTS)


MSGPACK_FRAGMENTS: Final = (
    b"\xdd\xff\xff\xff\xff",  # an array of 4 billion items, then nothing
    b"\xdf\xff\xff\xff\xff\xa1k",  # a map of 4 billion pairs
    b"\xdb\xff\xff\xff\xffabc",  # a string of 4 GiB
    b"\xc6\x7f\xff\xff\xff",  # binary of 2 GiB
    b"\xc9\xff\xff\xff\xff\x05",  # an extension of 4 GiB
    b"\xd4\xff\x00",  # a timestamp extension one byte long
    b"\xd7\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a timestamp with nanoseconds out of range
    b"\xc1",  # the one byte msgpack never uses
    b"\xa2\xff\xfe",  # a string that is not UTF-8
    b"\xa3\xed\xa0\x80",  # a UTF-8 encoded surrogate
    b"\xca\x7f\xc0\x00\x00",  # float32 NaN
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # uint64 max
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",  # int64 min
    b"\xd4\x01\x00",  # an application extension
    b"\x80",  # an empty map where a scalar belongs
)
JSON_FRAGMENTS: Final = (
    b"1" + b"0" * 5000,  # an integer of 5000 digits
    b"-" + b"9" * 400,
    b"1e999999",
    b"-0",
    b"NaN",
    b"Infinity",
    b'"\\ud800"',  # a lone surrogate
    b'"\xff\xfe"',  # not UTF-8
    b'"\\u0000"',
    b"tru",
    b'"unterminated',
    b'{"a":1,"a":2}',  # a repeated key
    b"[1,]",
    b"/* comment */ 1",
    b"\xef\xbb\xbf{}",  # a byte order mark
)


def _encode_msgpack(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


def _encode_json(value: Any) -> bytes:
    return msgspec.json.encode(value)


MSGPACK = Codec("msgpack", _encode_msgpack, binary_ok=True)
JSON = Codec("json", _encode_json, binary_ok=False)


# ---- the mutation engine ----


class Mutator:
    """Seeded mutations of valid messages: frames that are almost right are the ones that
    reach deepest into a decoder, so most changes are small."""

    KINDS: Final = ("valid", "fields", "bytes", "nest", "splice", "lie", "random", "oversize")
    WEIGHTS: Final = (8, 40, 22, 10, 6, 6, 7, 1)

    def __init__(
        self,
        rng: random.Random,
        codec: Codec,
        bytes_max: int,
        weights: Sequence[float] = WEIGHTS,
    ) -> None:
        self.rng = rng
        self.codec = codec
        self.bytes_max = bytes_max  # the receiver's frame limit: "oversize" goes past it
        self.weights = weights  # of KINDS
        self._placeholder = codec.encode(PLACEHOLDER)

    def frame(self, corpus: Sequence[Any]) -> tuple[str, bytes]:
        """(kind of mutation, payload) for one frame built from the valid `corpus`."""
        kind = self.rng.choices(self.KINDS, self.weights)[0]
        if kind == "oversize":
            return kind, self.oversize(corpus)
        return kind, self.mutation(kind, corpus)

    def mutation(self, kind: str, corpus: Sequence[Any]) -> bytes:
        rng = self.rng
        value = copy.deepcopy(rng.choice(corpus))
        if kind == "valid":
            return self.codec.encode(value)
        if kind == "fields":
            for _ in range(rng.randint(1, 3)):
                value = self.mutate_value(value)
            return self.encode(value)
        if kind == "bytes":
            data = self.codec.encode(value)
            for _ in range(rng.randint(1, 4)):
                data = self.mutate_bytes(data)
            return data
        if kind == "nest":
            return self.nest(value)
        if kind == "splice":
            first, second = self.codec.encode(value), self.codec.encode(rng.choice(corpus))
            return first[: rng.randint(0, len(first))] + second[rng.randint(0, len(second)) :]
        if kind == "lie":
            return self.lie(self.codec.encode(value))
        return rng.randbytes(rng.choice((0, 1, 4, 16, 300, 2048)))

    def encode(self, value: Any) -> bytes:
        """Encode, then put raw fragments where placeholders stand."""
        try:
            data = self.codec.encode(value)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
            data = self.codec.encode(None)
        while self._placeholder in data and len(data) < self.bytes_max:
            fragment = self.codec.fragment(self.rng, self.bytes_max - len(data))
            data = data.replace(self._placeholder, fragment, 1)
        return data

    def mutate_value(self, value: Any) -> Any:
        """`value` with one change somewhere in its tree (in place where it can)."""
        rng = self.rng
        locations: list[tuple[Any, Any]] = []
        _collect_locations(value, locations)
        if not locations or rng.random() < 0.03:
            return self.random_value(2)
        parent, key = rng.choice(locations)
        operation = rng.randrange(7)
        if operation == 0 and isinstance(parent, dict):
            del parent[key]
        elif operation == 0:
            parent.pop(key)
        elif operation == 1:
            target = parent if isinstance(parent, dict) else value
            if isinstance(target, dict):
                target[self.random_text()] = self.random_value(3)
            else:
                parent.append(self.random_value(3))
        elif operation == 2:
            parent[key] = "a" * rng.choice(STRING_LENGTHS)
        elif operation == 3:
            parent[key] = rng.choice(INTERESTING_INTS) if rng.random() < 0.8 else rng.randbytes(8)
        elif operation == 4:
            parent[key] = [parent[key]] if rng.random() < 0.5 else {"type": parent[key]}
        elif operation == 5 and isinstance(value, dict) and "type" in value:
            value["type"] = rng.choice(INTERESTING_TEXTS)
        else:
            parent[key] = self.random_value(3)
        return value

    def random_value(self, depth: int) -> Any:
        rng = self.rng
        choice = rng.randrange(12 if depth > 0 else 9)
        if choice == 0:
            return None
        if choice == 1:
            return rng.random() < 0.5
        if choice == 2:
            return rng.choice(INTERESTING_INTS)
        if choice == 3:
            return rng.randint(-(2**63), 2**64 - 1)
        if choice == 4:
            return rng.choice(INTERESTING_FLOATS)
        if choice in (5, 6):
            return self.random_text()
        if choice == 7:
            return rng.randbytes(rng.randint(0, 40)) if self.codec.binary_ok else PLACEHOLDER
        if choice == 8:
            if self.codec.binary_ok and rng.random() < 0.5:
                return msgspec.msgpack.Ext(rng.randint(-128, 127), rng.randbytes(rng.randint(0, 9)))
            return PLACEHOLDER
        if choice in (9, 10):
            return [self.random_value(depth - 1) for _ in range(rng.randint(0, 4))]
        return {self.random_text(): self.random_value(depth - 1) for _ in range(rng.randint(0, 4))}

    def random_text(self) -> str:
        rng = self.rng
        if rng.random() < 0.6:
            return rng.choice(INTERESTING_TEXTS)
        alphabet = rng.choice(("abcxyz019_.#-", "\x00\x01\x1b\n\r\t ", "éü中文😀\u200b\u202e"))
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))

    def mutate_bytes(self, data: bytes) -> bytes:
        rng = self.rng
        if not data:
            return rng.randbytes(rng.randint(1, 8))
        buffer = bytearray(data)
        position = rng.randrange(len(buffer))
        operation = rng.randrange(7)
        if operation == 0:
            for _ in range(rng.randint(1, 8)):
                index = rng.randrange(len(buffer))
                buffer[index] ^= 1 << rng.randrange(8)
        elif operation == 1:
            buffer[position] = rng.choice(INTERESTING_BYTES)
        elif operation == 2:
            buffer[position:position] = rng.randbytes(rng.randint(1, 16))
        elif operation == 3:
            del buffer[position : position + rng.randint(1, 16)]
        elif operation == 4:
            end = min(len(buffer), position + rng.randint(1, 64))
            buffer[position:position] = buffer[position:end] * rng.randint(2, 50)
        elif operation == 5:
            del buffer[position:]
        else:
            return self.lie(data)
        return bytes(buffer)

    def nest(self, value: Any) -> bytes:
        """Deep nesting: around the whole message, in a field, or in an unknown field."""
        rng = self.rng
        depth = rng.choice([d for d in NESTING_DEPTHS if d * 6 < self.bytes_max] or [64])
        where = rng.randrange(3)
        if where == 0 or not isinstance(value, dict):
            deep = self.codec.deep(rng, depth)
            if self.codec.name == "msgpack":
                return deep[:-1] + self.codec.encode(value)
            return deep  # JSON cannot wrap without closing brackets: the deep value alone
        if where == 1 and value:
            value[rng.choice(list(value))] = PLACEHOLDER
        else:
            value[rng.choice(("x", "extra", "_"))] = PLACEHOLDER
        data = self.codec.encode(value)
        return data.replace(self._placeholder, self.codec.deep(rng, depth), 1)

    def lie(self, data: bytes) -> bytes:
        """A length that promises more (or less) than follows."""
        rng = self.rng
        if self.codec.name != "msgpack" or not data:
            return data[: rng.randint(0, max(0, len(data) - 1))] + rng.choice(JSON_FRAGMENTS)
        headers = [i for i, byte in enumerate(data) if 0x80 <= byte <= 0xBF]
        if not headers:
            return rng.choice(MSGPACK_FRAGMENTS) + data
        index = rng.choice(headers)
        kind = data[index] & 0xF0
        count = rng.choice((0xFFFF_FFFF, 0x7FFF_FFFF, 0x10000, rng.randint(1, 300)))
        marker = b"\xdf" if kind == 0x80 else b"\xdd" if kind == 0x90 else b"\xdb"
        return data[:index] + marker + struct.pack(">I", count) + data[index + 1 :]

    def oversize(self, corpus: Sequence[Any]) -> bytes:
        """A valid-looking message just past the receiver's frame limit."""
        filler = "x" * (self.bytes_max + self.rng.randint(1, 1024))
        value = copy.deepcopy(self.rng.choice(corpus))
        if isinstance(value, dict):
            value["body" if "body" in value else "padding"] = filler
            return self.codec.encode(value)
        return self.codec.encode([value, filler])


def _collect_locations(value: Any, locations: list[tuple[Any, Any]]) -> None:
    if isinstance(value, dict):
        for key in list(value):
            locations.append((value, key))
            _collect_locations(value[key], locations)
    elif isinstance(value, list):
        for index in range(len(value)):
            locations.append((value, index))
            _collect_locations(value[index], locations)


# ---- corpora: valid messages to start from ----


def _builtins(*messages: msgspec.Struct) -> list[Any]:
    return [msgspec.to_builtins(message) for message in messages]


def message_id_near(now_ms: int, node: str = "n1", counter: int = 0) -> str:
    return str(MessageId(now_ms, counter, node))


def client_corpus(token: str) -> list[Any]:
    """Every request a client may send, valid, in builtins form."""
    room, now_ms = FUZZ_ROOMS[0], int(time.time() * 1000)
    since = message_id_near(now_ms - 60_000)
    return _builtins(
        protocol.Hello(versions=[1], minor=protocol.PROTOCOL_MINOR, client="fuzz", token=token),
        protocol.Join(request_id=1, room=room, since=since),
        protocol.Join(request_id=2, room=FUZZ_ROOMS[1]),
        protocol.LeaveRoom(request_id=3, room=room),
        protocol.Send(request_id=4, room=room, client_msg_id="c1", body="hello"),
        protocol.Send(request_id=5, room=FUZZ_ROOMS[2], client_msg_id="c2", body="é" * 40),
        protocol.History(request_id=6, room=room, before=since, limit=10),
        protocol.History(request_id=7, room=room, after=since, limit=200),
        protocol.ListRooms(request_id=8),
        protocol.Who(request_id=9, room=room),
        protocol.Typing(request_id=10, room=room),
        protocol.Ping(request_id=11),
        protocol.StatusRequest(request_id=12),
        protocol.Where(request_id=13, room=FUZZ_ROOMS[3]),
        protocol.Edit(request_id=14, room=room, client_msg_id="c3", id=since, body="fixed"),
        protocol.Delete(request_id=15, room=room, client_msg_id="c4", id=since),
        protocol.React(request_id=16, room=room, client_msg_id="c5", id=since, key="+1"),
        protocol.MarkRead(request_id=17, room=room, up_to=since),
        protocol.MarkRead(request_id=18, room=FUZZ_ROOMS[1]),
        protocol.GetUnread(request_id=19),
        protocol.GetUnread(request_id=20, room=room),
    )


def node_corpus() -> list[Any]:
    """Every reply and event a node may send a client, valid, in builtins form."""
    message = protocol.Message(
        id=message_id_near(1_700_000_000_000), room="r", sender="ann", time_ms=1, body="hi"
    )
    member = protocol.MemberStatus(
        id="n1", address="127.0.0.1:1", state="alive", incarnation=1, last_heard_s=0.1, dropped=0
    )
    return _builtins(
        protocol.Welcome(version=1, minor=3, node="n1", user="ann", limits={"sends_per_s": 10}),
        protocol.ErrorReply(code=ErrorCode.RATE_LIMITED, message="slow", retry_after_s=0.5),
        protocol.Joined(
            request_id=1,
            room="r",
            members=["ann"],
            head=message.id,
            read_up_to=message.id,
            unread=3,
        ),
        protocol.Sent(request_id=2, id=message.id, time_ms=1),
        protocol.HistoryPage(request_id=3, room="r", messages=[message], cursor=message.id),
        protocol.RoomList(request_id=4, rooms=["r"]),
        protocol.Members(request_id=5, room="r", users=["ann"]),
        protocol.Ok(request_id=6),
        protocol.Pong(request_id=7, time_ms=1),
        protocol.StatusReply(request_id=8, node="n1", members=[member], counters={"a": 1}),
        protocol.Placement(
            request_id=9,
            room="r",
            replicas_wanted=3,
            replicas=[protocol.Replica(id="n1", state="alive")],
            coordinator="n1",
        ),
        protocol.MessageEvent(message=message),
        protocol.PresenceEvent(room="r", user="ann", state="joined"),
        protocol.TypingEvent(room="r", user="ann"),
        protocol.RelationEvent(
            id=message.id, room="r", kind="edit", target=message.id, sender="ann", time_ms=1
        ),
        protocol.UnreadCounts(
            request_id=10,
            rooms=[protocol.UnreadCount(room="r", read_up_to=None, count=1000, capped=True)],
        ),
        protocol.ReadMarkerEvent(room="r", read_up_to=message.id, unread=0),
    )


def peer_corpus(member: MemberRecord, target: MemberRecord) -> list[Any]:
    """Every message a member may send another, valid, in builtins form."""
    now_ms = int(time.time() * 1000)
    room, user = FUZZ_ROOMS[0], FUZZ_USERS[0]
    stored = RoomMessage(
        id=message_id_near(now_ms, member.id), room=room, sender=user,
        client_msg_id="p1", time_ms=now_ms, body="from a member",
    )  # fmt: skip
    posted = router_wire.Posted(message=stored)
    presence = router_wire.PresenceChanged(room=room, user=user, state="joined", origin=member.id)
    change = MembershipChange(user=user, room=room, joined=True, time_ms=now_ms)
    return _builtins(
        Heartbeat(sender=member, sequence=1, gossip=[target, member], suspects_you=True),
        Leave(sender=member),
        router_wire.Forward(1, room, user, "p2", "forwarded"),
        router_wire.ForwardReply(1, stored),
        router_wire.Replicate(2, stored),
        router_wire.Replicate(3, stored, hint_for=target.id),
        router_wire.ReplicaAck(2, stored.id),
        router_wire.ReadRequest(4, room, after=message_id_near(now_ms - 5000), late_since_ms=0),
        router_wire.ReadReply(4, [stored], more=True, late=[stored]),
        router_wire.Interest(5, [room, FUZZ_ROOMS[1]], withdrawn=[FUZZ_ROOMS[2]]),
        router_wire.InterestAck(5, [room], [1]),
        router_wire.Push(epoch=1, seq=1, base=1, event=posted),
        router_wire.Push(epoch=1, seq=2, base=1, event=presence),
        router_wire.PushAck(epoch=1, through=1),
        router_wire.Announce(event=posted),
        router_wire.Announce(event=router_wire.TypingNotice(room, user, member.id)),
        router_wire.WhoRequest(6, room),
        router_wire.WhoReply(6, [user]),
        router_wire.MembershipUpdate(7, change),
        router_wire.MembershipAck(7),
        router_wire.MembershipQuery(8, user),
        router_wire.MembershipReply(8, [change], [ReadMarker(user, room, stored.id)]),
        router_wire.ReadMarkerUpdate(10, ReadMarker(user, room, stored.id)),
        router_wire.DigestOffer(9, room, [router_wire.BucketDigest("0193", 1, 7)]),
        router_wire.DigestDiff(9, room, ["0193"]),
        router_wire.IdPage(room, "0193", "", [stored.id], more=False),
        router_wire.Want(room, "0193", [stored.id], next_after=""),
    )


HTTP_BODIES: Final = ({"body": "hello over http"}, {"body": ""}, {"body": "é" * 50})


# ---- results ----


@dataclass
class PortReport:
    """What one port was sent and what came back."""

    frames: int = 0
    connections: int = 0
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    elapsed_s: float = 0.0

    def fail(self, text: str) -> None:
        self.failure_count += 1
        if len(self.failures) < FAILURES_KEPT_MAX:
            self.failures.append(text[:400])

    def summary(self) -> dict[str, Any]:
        rate = self.frames / self.elapsed_s if self.elapsed_s else 0.0
        return {
            "frames": self.frames,
            "connections": self.connections,
            "elapsed_s": round(self.elapsed_s, 2),
            "frames_per_s": round(rate),
            "kinds": dict(sorted(self.kinds.items())),
            "answers": dict(sorted(self.answers.most_common(40))),
            "failures": self.failure_count,
            "failure_examples": self.failures,
        }


def token_for(user: str, ttl_s: float = 24 * 3600) -> str:
    return issue_token(SECRET, user, ttl_s, time.time())


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def crafted_token(header: bytes, claims: bytes, secret: bytes = SECRET) -> str:
    """A JWT signed with the cluster secret around any header and claims, even invalid ones."""
    signing_input = _b64(header) + b"." + _b64(claims)
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode()


def bad_tokens() -> list[str]:
    """Tokens that are almost right: a parser bug shows on these first."""
    header = b'{"alg":"HS256","typ":"JWT"}'
    valid = token_for(FUZZ_USERS[1])
    return [
        "",
        "x",
        valid[:-3],
        valid + "a",
        valid.replace(".", "..", 1),
        crafted_token(b"[" * 3000, b"{}"),  # nesting in a header read before the signature
        crafted_token(header, b'{"sub":' + b"[" * 3000 + b"]" * 3000 + b',"exp":9e9}'),
        crafted_token(header, b'{"sub":"bob\\n","exp":9999999999}'),
        crafted_token(header, b'{"sub":"bob","exp":"inf"}'),
        crafted_token(header, b'{"sub":"bob","exp":1e400}'),
        crafted_token(header, b'{"sub":"bob","exp":' + b"9" * 5000 + b"}"),
        crafted_token(header, b'{"sub":["bob"],"exp":9999999999}'),
        crafted_token(b'{"alg":"none"}', b'{"sub":"bob","exp":9999999999}'),
        crafted_token(header, b'{"sub":"bob","exp":9999999999}', secret=b"w" * 40),
        token_for(FUZZ_USERS[2], ttl_s=0.001),
        "a" * 4097,
    ]


# ---- the client port ----


def closes_session(payload: bytes, frame_bytes_max: int) -> bool:
    """Whether the node hangs up after this frame, as the node's own decoder decides."""
    if len(payload) > frame_bytes_max:
        return True
    try:
        protocol.decode_client_message(payload)
    except ProtocolError as error:
        return error.close
    return False


class ClientPortFuzzer:
    """Sessions of pipelined mutated frames, mutated hellos, and bytes without framing."""

    def __init__(self, address: tuple[str, int], seed: int, frame_bytes_max: int) -> None:
        self.address = address
        self.seed = seed
        self.frame_bytes_max = frame_bytes_max
        self.report = PortReport()
        self.session_frames = 0  # frames sent after a welcome: each one read by the node
        self._tokens = [token_for(user) for user in FUZZ_USERS]
        self._bad_tokens = bad_tokens()
        self._runs = 0

    async def run(self, frames: int) -> None:
        started = time.monotonic()
        self._runs += 1
        shares = [frames // CONNECTIONS_IN_FLIGHT] * CONNECTIONS_IN_FLIGHT
        shares[0] += frames - sum(shares)
        await asyncio.gather(*(self._worker(i, share) for i, share in enumerate(shares)))
        self.report.elapsed_s += time.monotonic() - started

    async def _worker(self, index: int, frames: int) -> None:
        rng = random.Random(f"client {self.seed} {self._runs} {index}")
        mutator = Mutator(rng, MSGPACK, self.frame_bytes_max)
        sent = 0
        while sent < frames:
            token = rng.choice(self._tokens)
            corpus = client_corpus(token)
            draw = rng.random()
            if draw < 0.04:
                sent += await self._exchange(self._bad_hello(rng, mutator, corpus), 1, "hello")
            elif draw < 0.07:
                sent += await self._exchange(self._unframed(rng, mutator, corpus), 1, "unframed")
            else:
                budget = min(frames - sent, rng.randint(1, CLIENT_FRAMES_PER_SESSION_MAX))
                hello = encode_frame(msgspec.msgpack.encode(corpus[0]))
                batch, counted = self._session_frames(mutator, corpus, budget)
                sent += await self._exchange(hello + batch, counted, "session", counted)

    def _session_frames(
        self, mutator: Mutator, corpus: Sequence[Any], budget: int
    ) -> tuple[bytes, int]:
        """`budget` frames the node answers, the last of them perhaps one it hangs up on.

        A session ends at the first frame the node hangs up on, so such frames drawn
        earlier are set aside and one of them ends the session; the rest are not sent
        (else most sessions would be a few frames long, and most time spent connecting)."""
        frames: list[bytes] = []
        enders: list[tuple[str, bytes]] = []
        while len(frames) < budget - 1:
            kind, payload = mutator.frame(corpus)
            rng = mutator.rng
            if len(payload) > self.frame_bytes_max:  # the header alone is refused
                enders.append((kind, HEADER.pack(len(payload)) + payload[:1024]))
            elif kind == "lie" and rng.random() < 0.3:  # the frame header lies
                claimed = len(payload) + rng.choice((-2, -1, 1, 2, 1000))
                enders.append((kind, HEADER.pack(max(0, claimed)) + payload))
            elif closes_session(payload, self.frame_bytes_max):
                enders.append((kind, encode_frame(payload)))
            else:
                self.report.kinds[kind] += 1
                frames.append(encode_frame(payload))
        if enders:
            kind, frame = mutator.rng.choice(enders)
            self.report.kinds[f"{kind}-last"] += 1
            frames.append(frame)
        return b"".join(frames), len(frames)

    def _bad_hello(self, rng: random.Random, mutator: Mutator, corpus: list[Any]) -> bytes:
        hello = copy.deepcopy(corpus[0])
        if rng.random() < 0.4:
            hello["token"] = rng.choice(self._bad_tokens)
            return encode_frame(msgspec.msgpack.encode(hello))
        kind, payload = mutator.frame([hello])
        self.report.kinds[f"hello-{kind}"] += 1
        return encode_frame(payload[: self.frame_bytes_max])

    def _unframed(self, rng: random.Random, mutator: Mutator, corpus: list[Any]) -> bytes:
        kind, payload = mutator.frame(corpus)
        self.report.kinds[f"unframed-{kind}"] += 1
        if rng.random() < 0.2:
            return b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
        return payload[: 64 * 1024]

    async def _exchange(self, data: bytes, frames: int, what: str, session: int = 0) -> int:
        """Write everything, close our side, and read every answer until the node hangs up."""
        report = self.report
        report.connections += 1
        try:
            async with asyncio.timeout(30.0):
                reader, writer = await asyncio.open_connection(*self.address)
                try:
                    writer.write(data)
                    writer.write_eof()
                    await self._read_answers(reader, what)
                finally:
                    writer.close()
        except OSError as error:  # a hang-up (ENOTCONN too, under uvloop) or TimeoutError
            if isinstance(error, TimeoutError):
                report.fail(f"{what}: the node did not finish the exchange within 30 s")
            report.answers[f"{what}-{type(error).__name__}"] += 1
        report.frames += frames
        self.session_frames += max(0, session)
        return frames

    async def _read_answers(self, reader: asyncio.StreamReader, what: str) -> None:
        while True:
            try:
                payload = await read_frame(reader, protocol.CLIENT_FRAME_BYTES_MAX)
            except ValueError as error:  # over the limit, or cut short
                self.report.fail(f"{what}: the node sent a bad frame: {error}")
                return
            if payload is None:
                return
            try:
                answer = protocol.decode_node_message(payload)
            except protocol.NodeReplyError as error:
                self.report.fail(f"{what}: undecodable answer: {error}")
                return
            name = type(answer).__name__
            if isinstance(answer, protocol.ErrorReply):
                name = f"error-{answer.code}"
                if answer.code == ErrorCode.INTERNAL:
                    self.report.fail(f"{what}: internal error: {answer.message}")
            self.report.answers[name] += 1


# ---- the HTTP port ----


@dataclass(frozen=True)
class HttpRequest:
    data: bytes
    kind: str = "api"  # "api": well-formed HTTP; "malformed": broken; "truncated": never ends
    last: bool = False  # the server may hang up after answering it

    @property
    def last_on_connection(self) -> bool:
        return self.last or self.kind != "api"


def http_request(
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    kind: str = "api",
) -> HttpRequest:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    if len(head) > HTTP_HEAD_BYTES_MAX:
        kind = "malformed"  # refused by the HTTP parser before the API sees it
    return HttpRequest(head + body, kind)


class HttpRequests:
    """Mutated requests to every endpoint of the HTTP API."""

    def __init__(self, rng: random.Random, body_limit: int) -> None:
        self.rng = rng
        self.json = Mutator(rng, JSON, body_limit)
        self._tokens = [token_for(user) for user in FUZZ_USERS]
        self._bad_tokens = bad_tokens()

    def next(self) -> tuple[str, HttpRequest]:
        rng = self.rng
        draw = rng.random()
        if draw < 0.45:
            return "body", self._post()
        if draw < 0.65:
            return "query", self._query()
        if draw < 0.75:
            return "path", self._path()
        if draw < 0.85:
            return "headers", self._headers()
        if draw < 0.90:
            return "endpoint", self._endpoint()
        if draw < 0.97:
            return "malformed", self._malformed()
        return "truncated", self._truncated()

    def _auth(self) -> dict[str, str]:
        rng = self.rng
        if rng.random() < 0.9:
            return {"Authorization": f"Bearer {rng.choice(self._tokens)}"}
        return {"Authorization": f"Bearer {rng.choice(self._bad_tokens)}"}

    def _room(self) -> str:
        return quote(self.rng.choice(FUZZ_ROOMS), safe="")

    def _post(self) -> HttpRequest:
        kind, body = self.json.frame(HTTP_BODIES)
        headers = {**self._auth(), "Content-Type": "application/json"}
        if self.rng.random() < 0.2:
            headers["Idempotency-Key"] = self.rng.choice(("k1", "", "a" * 65, "é", "k" * 64))
        request = http_request("POST", f"/v1/rooms/{self._room()}/messages", headers, body)
        return HttpRequest(request.data, last=kind == "oversize")

    def _query(self) -> HttpRequest:
        rng = self.rng
        names = ("limit", "before", "after", "limit", "x")
        query = "&".join(
            f"{rng.choice(names)}={self._parameter()}" for _ in range(rng.randint(0, 4))
        )
        return http_request("GET", f"/v1/rooms/{self._room()}/messages?{query}", self._auth())

    def _parameter(self) -> str:
        rng = self.rng
        now_ms = int(time.time() * 1000)
        values = (
            *("1", "0", "-1", "200", "201", "1.5", "1e3", "", "9" * 400, "0x10", "true"),
            *(message_id_near(now_ms), message_id_near(now_ms) + "\n", "ffffffffffffffff.n1"),
        )
        if rng.random() < 0.7:
            return quote(rng.choice(values), safe="")
        return quote(rng.randbytes(rng.choice((1, 8, 64, 3000))), safe="")

    def _path(self) -> HttpRequest:
        rng = self.rng
        room = quote(rng.randbytes(rng.choice((1, 8, 65, 2000))), safe="")
        if rng.random() < 0.3:
            room = rng.choice(("..", ".", "%2e%2e", "a%2Fb", "%00", "a" * 65, "%C3%A9", "%ff%fe"))
        endpoint = rng.choice(("messages", "members", "messages/", "x"))
        method = rng.choice(("GET", "GET", "POST"))
        body = msgspec.json.encode(HTTP_BODIES[0]) if method == "POST" else b""
        return http_request(method, f"/v1/rooms/{room}/{endpoint}", self._auth(), body)

    def _headers(self) -> HttpRequest:
        rng = self.rng
        headers = self._auth()
        headers["Content-Type"] = rng.choice(
            ("application/json", "text/plain", "application/json; charset=latin-1", "", "x/y" * 50)
        )
        if rng.random() < 0.5:
            headers["Authorization"] = rng.choice(
                ("", "Bearer", "Basic YTpi", "bearer  " + self._tokens[0], "Bearer " + "x" * 9000)
            )
        headers["X-Fuzz"] = rng.choice(("a" * 4000, "\t", "é"))
        body = msgspec.json.encode(rng.choice(HTTP_BODIES))
        return http_request("POST", f"/v1/rooms/{self._room()}/messages", headers, body)

    def _endpoint(self) -> HttpRequest:
        rng = self.rng
        method, target = rng.choice(
            (
                ("GET", "/v1/rooms"),
                ("GET", "/v1/status"),
                ("GET", "/v1/health"),
                ("GET", "/metrics"),
                ("GET", "/v2/rooms"),
                ("GET", "/nothing-here"),
                ("DELETE", f"/v1/rooms/{self._room()}/messages"),
                ("PUT", "/v1/rooms"),
                ("OPTIONS", f"/v1/rooms/{self._room()}/messages"),
            )
        )
        return http_request(method, target, self._auth())

    def _malformed(self) -> HttpRequest:
        """Broken HTTP itself: the server may answer 400 and hang up, or just hang up."""
        rng = self.rng
        body = msgspec.json.encode(HTTP_BODIES[0])
        data = http_request("POST", f"/v1/rooms/{self._room()}/messages", self._auth(), body).data
        buffer = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(buffer))
            if rng.random() < 0.5:
                buffer[position] = rng.choice(b"\x00\r\n :\x7f\xff")
            else:
                del buffer[position : position + rng.randint(1, 20)]
        if rng.random() < 0.2:
            buffer = bytearray(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        return HttpRequest(bytes(buffer), "malformed")

    def _truncated(self) -> HttpRequest:
        """A body shorter than its Content-Length: the server waits until we hang up."""
        body = msgspec.json.encode(HTTP_BODIES[0])
        request = http_request("POST", f"/v1/rooms/{self._room()}/messages", self._auth(), body)
        return HttpRequest(request.data[: -self.rng.randint(1, len(body))], "truncated")


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_http_response(reader: asyncio.StreamReader) -> HttpResponse | None:
    """One response, or None when the server closed the connection first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, OSError):
        # OSError beyond ConnectionError: under uvloop, our write_eof after the server's
        # reset fails with ENOTCONN and is raised here, the server having hung up first
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = await _read_chunked(reader)
    else:
        body = b""
    return HttpResponse(status, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).strip() or b"0", 16):
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")
    return b"".join(chunks)


ERROR_CODES: Final = frozenset(code.value for code in ErrorCode)


def check_http_response(request: HttpRequest, response: HttpResponse) -> str | None:
    """What is wrong with this answer, if anything."""
    if response.status >= 500 and not (response.status == 503 and b"unavailable" in response.body):
        return f"HTTP {response.status}: {response.body[:200]!r}"
    if request.kind != "api" or response.status < 400 or not response.body:
        return None  # broken HTTP is the server's to refuse however it likes
    try:
        document = json.loads(response.body)
        error = document["error"]
        assert set(error) == {"code", "message", "docs"} and error["code"] in ERROR_CODES
    except (ValueError, KeyError, TypeError, AssertionError):
        return f"HTTP {response.status} without the API's error shape: {response.body[:200]!r}"
    if error["code"] == ErrorCode.INTERNAL:
        return f"HTTP {response.status} with code internal: {error['message'][:200]}"
    return None


class HttpPortFuzzer:
    """Keep-alive connections that pipeline mutated requests."""

    def __init__(self, address: tuple[str, int], seed: int, body_limit: int) -> None:
        self.address = address
        self.seed = seed
        self.body_limit = body_limit
        self.report = PortReport()
        self._runs = 0

    async def run(self, frames: int) -> None:
        started = time.monotonic()
        self._runs += 1
        shares = [frames // CONNECTIONS_IN_FLIGHT] * CONNECTIONS_IN_FLIGHT
        shares[0] += frames - sum(shares)
        await asyncio.gather(*(self._worker(i, share) for i, share in enumerate(shares)))
        self.report.elapsed_s += time.monotonic() - started

    async def _worker(self, index: int, frames: int) -> None:
        rng = random.Random(f"http {self.seed} {self._runs} {index}")
        requests = HttpRequests(rng, self.body_limit)
        sent = 0
        while sent < frames:
            budget = min(frames - sent, rng.randint(1, HTTP_REQUESTS_PER_CONNECTION_MAX))
            sent += await self._connection(requests, budget)

    async def _connection(self, requests: HttpRequests, budget: int) -> int:
        """Pipelined batches until `budget` requests went out or one ended the connection."""
        self.report.connections += 1
        sent = 0
        try:
            async with asyncio.timeout(60.0):
                reader, writer = await asyncio.open_connection(*self.address)
                try:
                    while sent < budget:
                        batch = self._batch(requests, min(HTTP_PIPELINE_DEPTH, budget - sent))
                        sent += len(batch)
                        if not await self._exchange(reader, writer, batch):
                            break
                finally:
                    writer.close()
        except OSError as error:  # a hang-up (ENOTCONN too, under uvloop) or TimeoutError
            if isinstance(error, TimeoutError):
                self.report.fail("a pipelined batch was not answered within 60 s")
            self.report.answers[f"connection-{type(error).__name__}"] += 1
        self.report.frames += sent
        return sent

    def _batch(self, requests: HttpRequests, size: int) -> list[HttpRequest]:
        batch: list[HttpRequest] = []
        while len(batch) < size:
            kind, request = requests.next()
            self.report.kinds[kind] += 1
            batch.append(request)
            if request.last_on_connection:
                break
        return batch

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, batch: list[HttpRequest]
    ) -> bool:
        """Write a batch and check its answers; False when the connection is done.

        Broken HTTP goes alone, after the answers to the rest, and with our side closed: the
        server may be waiting for the rest of a request that never comes."""
        well_formed = [request for request in batch if request.kind == "api"]
        writer.write(b"".join(request.data for request in well_formed))
        if not await self._answers(reader, well_formed):
            return False
        if len(well_formed) == len(batch):
            return not batch[-1].last
        writer.write(batch[-1].data)
        writer.write_eof()
        await self._answers(reader, batch[-1:])
        return False

    async def _answers(self, reader: asyncio.StreamReader, batch: list[HttpRequest]) -> bool:
        """Read and check the batch's answers; False when the connection is done."""
        for request in batch:
            response = await read_http_response(reader)
            if response is None:
                if request.kind == "api":
                    self.report.fail(f"no answer to {request.data[:120]!r}")
                return False
            self.report.answers[str(response.status)] += 1
            problem = check_http_response(request, response)
            if problem is not None:
                self.report.fail(f"{problem} for {request.data[:160]!r}")
            if response.headers.get("connection") == "close" or request.kind != "api":
                return False
        return True


# ---- the peer port ----

# A frame past the peer limit is 4 MiB on the wire: one in two thousand keeps the limit
# tested without spending the run on copying megabytes.
PEER_WEIGHTS: Final = (8, 40, 22, 10, 6, 6, 7, 0.01)
# Frames sent between two yields to the event loop: a send that need not wait does not
# yield, and the heartbeats and the other ports share the loop.
PEER_FRAMES_PER_YIELD: Final = 32
# Of the frames that are not a mutation: a bad envelope (more than one part), or empty.
PEER_ENVELOPE_SHARE: Final = 0.01


@dataclass(frozen=True)
class PeerIdentity:
    """Who the peer-port fuzzer speaks as: a member with a trusted CURVE key, or, without
    keys, a plaintext routing id."""

    node_id: str
    public_key: bytes | None = None
    secret_key: bytes | None = None
    server_key: bytes | None = None  # the fuzzed node's peer port key

    @property
    def secure(self) -> bool:
        return self.secret_key is not None


class PeerPortFuzzer:
    """A member that heartbeats correctly and sends mutated frames in between.

    It keeps its own membership intact, as a buggy member would not bother to break itself:
    a mutated frame that decodes as this member's own Leave is withheld, and one that decodes
    as its own Heartbeat is sent with its real record and next sequence number (the mutated
    gossip kept). Without keys any id is admitted, so then gossip naming ids other than the
    two nodes is withheld too: fake members would take the legitimate room away.
    """

    def __init__(
        self, target_address: str, identity: PeerIdentity, drain_port: int, seed: int
    ) -> None:
        self.target_address = target_address
        self.identity = identity
        self.drain_port = drain_port
        self.seed = seed
        self.report = PortReport()
        self.heartbeats_sent = 0
        self.withheld = 0
        self.drained = 0  # frames the node sent us
        self.messages_sent = 0  # every message on the DEALER: heartbeats, frames, envelopes
        self.incarnation = int(time.time() * 1000)
        self._sequence = 0
        self._runs = 0
        self._context = zmq.asyncio.Context()
        self._dealer = self._context.socket(zmq.DEALER)
        self._drain = self._context.socket(zmq.ROUTER)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def record(self) -> MemberRecord:
        return MemberRecord(self.identity.node_id, f"{HOST}:{self.drain_port}", self.incarnation)

    def start(self) -> None:
        identity = self.identity
        for zmq_socket in (self._dealer, self._drain):
            zmq_socket.setsockopt(zmq.LINGER, 0)
        if identity.secure:
            assert identity.public_key and identity.secret_key and identity.server_key
            self._dealer.curve_publickey = identity.public_key
            self._dealer.curve_secretkey = identity.secret_key
            self._dealer.curve_serverkey = identity.server_key
            self._drain.curve_server = True
            self._drain.curve_publickey = identity.public_key
            self._drain.curve_secretkey = identity.secret_key
        else:
            self._dealer.setsockopt(zmq.ROUTING_ID, identity.node_id.encode())
        self._drain.bind(f"tcp://{HOST}:{self.drain_port}")
        self._dealer.connect(f"tcp://{self.target_address}")
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="fuzz-heartbeats"),
            asyncio.create_task(self._drain_loop(), name="fuzz-drain"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dealer.close(linger=0)
        self._drain.close(linger=0)
        self._context.term()

    def _heartbeat(self, gossip: Sequence[MemberRecord] = (), suspects_you: bool = False) -> bytes:
        self._sequence += 1
        self.heartbeats_sent += 1
        return encode_peer_frame(Heartbeat(self.record, self._sequence, list(gossip), suspects_you))

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._dealer.send(self._heartbeat())
            self.messages_sent += 1
            await asyncio.sleep(0.1)

    async def _drain_loop(self) -> None:
        """Read what the node sends us, and answer its requests at once: a member that
        never answered would hold the rooms it owns hostage for a timeout each."""
        while True:
            parts = await self._drain.recv_multipart()
            self.drained += 1
            try:
                message = decode_peer_frame(parts[-1])
            except PeerDecodeError:
                self.report.fail(f"the node sent an undecodable peer frame: {parts[-1][:80]!r}")
                continue
            answer = _member_answer(message)
            if answer is not None:
                await self._dealer.send(encode_peer_frame(answer))
                self.messages_sent += 1

    async def run(self, frames: int) -> None:
        started = time.monotonic()
        self._runs += 1
        rng = random.Random(f"peer {self.seed} {self._runs}")
        mutator = Mutator(rng, MSGPACK, PEER_FRAME_BYTES_MAX, PEER_WEIGHTS)
        target = MemberRecord("n1", self.target_address, int(time.time() * 1000))
        corpus = peer_corpus(self.record, target)
        sent = 0
        while sent < frames:
            if rng.random() < PEER_ENVELOPE_SHARE:
                await self._dealer.send_multipart(rng.choice(([b""], [b"a", b"b"], [b"x"] * 5)))
                self.report.kinds["envelope"] += 1
            else:
                kind, frame = mutator.frame(corpus)
                if kind == "oversize":
                    frame = frame[: PEER_FRAME_BYTES_MAX + rng.randint(1, 512)]
                member_frame = self._as_member(frame)
                if member_frame is None:
                    self.withheld += 1
                    continue
                self.report.kinds[kind] += 1
                await self._dealer.send(member_frame)
            sent += 1
            self.messages_sent += 1
            if sent % PEER_FRAMES_PER_YIELD == 0:
                await asyncio.sleep(0)
        self.report.frames += sent
        self.report.elapsed_s += time.monotonic() - started

    def _as_member(self, frame: bytes) -> bytes | None:
        """The frame as a member that keeps its own membership intact sends it."""
        try:
            message = decode_peer_frame(frame)
        except PeerDecodeError:
            return frame
        own = self.identity.node_id
        if isinstance(message, Leave) and message.sender.id == own:
            return None
        if isinstance(message, Heartbeat) and message.sender.id == own:
            known = {own, "n1"}
            gossip = [
                record
                for record in message.gossip
                if record.id != own and (self.identity.secure or record.id in known)
            ]
            if len(gossip) < len(message.gossip) and not self.identity.secure:
                return None
            return self._heartbeat(gossip, message.suspects_you)
        return frame


def _member_answer(message: Any) -> Any:
    """A member's quick refusal of what the node asks: it stores and holds nothing."""
    wire = router_wire
    match message:
        case wire.Forward(forward_id=forward_id):
            return wire.ForwardReply(forward_id, error="unavailable", reason="fuzzing member")
        case wire.Replicate(write_id=write_id) if write_id:
            return wire.ReplicaAck(write_id)
        case wire.ReadRequest(read_id=read_id):
            return wire.ReadReply(read_id, ok=False)
        case wire.Interest(request_id=request_id, rooms=rooms):
            return wire.InterestAck(request_id, rooms, [1] * len(rooms))
        case wire.Push(epoch=epoch, seq=seq):
            return wire.PushAck(epoch, seq)
        case wire.WhoRequest(request_id=request_id):
            return wire.WhoReply(request_id)
        case (
            wire.MembershipUpdate(request_id=request_id)
            | wire.ReadMarkerUpdate(request_id=request_id)
        ):
            return wire.MembershipAck(request_id)
        case wire.MembershipQuery(request_id=request_id):
            return wire.MembershipReply(request_id)
    return None


# ---- the legitimate users ----


class LegitTraffic:
    """A writer sending acknowledged messages and a reader receiving them, both through
    the client library, as a user would."""

    def __init__(self, servers: list[tuple[str, int]], room: str) -> None:
        self.room = room
        settings = ClientSettings(client_name="fuzz-legit", keepalive_timeout_s=10.0)
        self.writer = ChatClient(servers, token_for(WRITER), settings)
        self.reader = ChatClient(servers, token_for(READER), settings)
        self.acked: dict[str, str] = {}  # client message id -> the id it was stored under
        self.unacked: dict[str, str] = {}  # client message id -> why not
        self.delivered: collections.defaultdict[str, list[str]] = collections.defaultdict(list)
        self.reader_connects = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._sending = True

    async def start(self) -> None:
        await self.writer.connect(timeout_s=10.0)
        await self.reader.connect(timeout_s=10.0)
        await self.reader.join(self.room)
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="legit-writer"),
            asyncio.create_task(self._read_loop(), name="legit-reader"),
        ]

    async def _send_loop(self) -> None:
        number = 0
        while self._sending:
            number += 1
            client_msg_id = f"legit-{number:07d}"
            try:
                sent = await self.writer.send(self.room, f"message {number}", client_msg_id)
                self.acked[client_msg_id] = sent.id
            except (NodeError, ConnectionError, TimeoutError) as error:
                self.unacked[client_msg_id] = repr(error)[:200]
            await asyncio.sleep(LEGIT_SEND_INTERVAL_S)

    async def _read_loop(self) -> None:
        async for event in self.reader.events():
            if isinstance(event, MessageEvent) and event.message.sender == WRITER:
                self.delivered[event.message.client_msg_id].append(event.message.id)
            elif isinstance(event, ConnectionChanged) and event.state == "connected":
                self.reader_connects += 1

    async def stop_and_check(self) -> tuple[dict[str, Any], list[str]]:
        """Stop sending; wait for every acknowledged message; check delivery and history."""
        self._sending = False
        await asyncio.wait_for(self._tasks[0], 60.0)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while set(self.acked) - set(self.delivered) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        history = await self._history()
        self._tasks[1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._tasks[1]
        failures = self._compare(history)
        summary: dict[str, Any] = {
            "room": self.room,
            "acked": len(self.acked),
            "unacked": len(self.unacked),
            "unacked_examples": list(self.unacked.values())[:3],
            "delivered": sum(len(ids) for ids in self.delivered.values()),
            "in_history": sum(len(ids) for ids in history.values()),
            "reader_connects": self.reader_connects,
            "writer_reconnects": self.writer.reconnects,
        }
        return summary, failures

    async def close(self) -> None:
        self._sending = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.writer.close()
        await self.reader.close()

    async def _history(self) -> dict[str, list[str]]:
        stored: collections.defaultdict[str, list[str]] = collections.defaultdict(list)
        cursor: str | None = None
        while True:
            page = await self.reader.history(self.room, before=cursor, limit=200)
            for message in page.messages:
                if message.sender == WRITER:
                    stored[message.client_msg_id].append(message.id)
            if page.cursor is None or not page.messages:
                return stored
            cursor = page.cursor

    def _compare(self, history: dict[str, list[str]]) -> list[str]:
        failures = []
        if not self.acked:
            failures.append("legit: no message was acknowledged")
        for client_msg_id, message_id in self.acked.items():
            for where, seen in (("delivered", self.delivered), ("in history", history)):
                ids = seen.get(client_msg_id, [])
                if ids != [message_id]:
                    failures.append(f"legit: {client_msg_id} ({message_id}) {where} as {ids}")
        for client_msg_id in self.unacked:
            for where, seen in (("delivered", self.delivered), ("in history", history)):
                if len(seen.get(client_msg_id, [])) > 1:
                    failures.append(f"legit: unacknowledged {client_msg_id} {where} twice")
        return failures[:FAILURES_KEPT_MAX]


# ---- the run ----


@dataclass(frozen=True)
class FuzzSettings:
    frames_per_port: int = FRAMES_PER_PORT_DEFAULT
    seed: int = 1
    ports: tuple[str, ...] = ("client", "http", "peer")
    rss_growth_mib_max: float = RSS_GROWTH_MIB_MAX
    secure_peers: bool = True  # CURVE, when the cluster can hand out member keys


def rss_mib(pid: int) -> float:
    """The resident set of a process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def member_key(cluster: Cluster, secure: bool) -> tuple[bytes, bytes] | None:
    """A trusted key for the fuzzing member, made before the node starts (so it need not
    reload its trusted dir); None for plaintext links."""
    return cluster.member_key(FUZZ_MEMBER_ID) if secure else None


def peer_identity(cluster: Cluster, key: tuple[bytes, bytes] | None) -> PeerIdentity:
    if key is None:
        return PeerIdentity(FUZZ_MEMBER_ID)
    public, secret = key
    return PeerIdentity(FUZZ_MEMBER_ID, public, secret, cluster.server_key("n1"))


def start_node(cluster: Cluster, secure: bool) -> NodeProcess:
    secret = cluster.root / "secret"
    secret.write_bytes(SECRET)
    options = ["--secret-file", str(secret), "--replicas", "1", "--write-quorum", "1"]
    if not secure:
        options.append("--insecure-peers")
    node = cluster.add("n1", http=True, options=options).start()
    wait_for(lambda: node.accepts_clients() and _http_accepts(node), 30.0, node.log)
    return node


def _http_accepts(node: NodeProcess) -> bool:
    assert node.http_port is not None
    try:
        with socket.create_connection((HOST, node.http_port), timeout=1.0):
            return True
    except OSError:
        return False


async def node_status(node: NodeProcess) -> StatusReply:
    return await fetch_status([(HOST, node.client_port)], token_for(OBSERVER), 10.0)


async def wait_member(node: NodeProcess, member_id: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = await node_status(node)
        if any(m.id == member_id and m.state == "alive" for m in reply.members):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{member_id} did not become a member of n1: {node.log()[-2000:]}")


def _where(request_id: int, room: str) -> Where:
    return Where(request_id=request_id, room=room)


async def pick_legit_room(node: NodeProcess) -> str:
    """A room that n1 holds alone: its writes never wait on the fuzzing member."""
    connection = await NodeConnection.open(HOST, node.client_port, token=token_for(OBSERVER))
    try:
        for number in range(LEGIT_ROOM_CANDIDATES):
            room = f"legit-{number}"
            reply = await connection.request(functools.partial(_where, room=room))
            if isinstance(reply, Placement) and [r.id for r in reply.replicas] == ["n1"]:
                return room
    finally:
        await connection.close()
    raise AssertionError("no room among the candidates is held by n1 alone")


class FuzzRun:
    """One run: the node, the attackers, the legitimate users, and the checks at the end."""

    def __init__(self, settings: FuzzSettings, cluster: Cluster) -> None:
        self.settings = settings
        self.cluster = cluster
        self.failures: list[str] = []
        self.summary: dict[str, Any] = {"seed": settings.seed, "ports": {}}

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        node, fuzzers = await self._start()
        peer = fuzzers.get("peer")
        legit = LegitTraffic([(HOST, node.client_port)], await pick_legit_room(node))
        await legit.start()
        try:
            await self._attack(node, fuzzers, legit)
        except NodeExitedError as error:
            self.failures.append(f"{error}; the end of its log:\n{node.log()[-2500:]}")
        finally:
            await legit.close()
            if isinstance(peer, PeerPortFuzzer):
                await peer.close()
        for name, fuzzer in fuzzers.items():  # when the checks did not get that far
            self.summary["ports"].setdefault(name, fuzzer.report.summary())
        self._check_log(node, fuzzers)
        self.summary["elapsed_s"] = round(time.monotonic() - started, 1)
        self.summary["failures"] = self.failures
        return self.summary

    async def _start(self) -> tuple[NodeProcess, dict[str, Any]]:
        """The node, and the fuzzers of the ports asked for (the member already joined)."""
        secure = self.settings.secure_peers and hasattr(self.cluster, "member_key")
        key = member_key(self.cluster, secure)
        node = await asyncio.to_thread(start_node, self.cluster, secure)
        identity = peer_identity(self.cluster, key)
        self.summary["peer_links"] = "curve" if secure else "plaintext"
        fuzzers = self._fuzzers(node, identity)
        peer = fuzzers.get("peer")
        if isinstance(peer, PeerPortFuzzer):
            peer.start()
            await wait_member(node, identity.node_id)
        return node, fuzzers

    async def _attack(
        self, node: NodeProcess, fuzzers: dict[str, Any], legit: "LegitTraffic"
    ) -> None:
        """Warm up, fuzz, then check the legitimate traffic, memory and counters."""
        assert node.process is not None
        peer = fuzzers.get("peer")
        initial = (await node_status(node)).counters
        sent_before = peer.messages_sent if isinstance(peer, PeerPortFuzzer) else 0
        warmup = max(1, int(self.settings.frames_per_port * WARMUP_SHARE))
        await self._fuzz(node, fuzzers, warmup)
        rss_before = rss_mib(node.process.pid)
        remaining = self.settings.frames_per_port - warmup
        rss_samples = []
        for chunk in range(RSS_SAMPLES):  # RSS along the way: a plateau or a slope
            frames = remaining // RSS_SAMPLES + (remaining % RSS_SAMPLES if chunk == 0 else 0)
            await self._fuzz(node, fuzzers, frames)
            rss_samples.append(round(rss_mib(node.process.pid), 1))
        if isinstance(peer, PeerPortFuzzer):
            await self._wait_peer_frames(node, initial, peer.messages_sent - sent_before)
        self.summary["legit"], legit_failures = await legit.stop_and_check()
        self.failures += legit_failures
        final = (await node_status(node)).counters
        self.summary["rss_mib"] = self._check_rss(rss_before, rss_mib(node.process.pid))
        self.summary["rss_mib"]["samples"] = rss_samples
        self._check_counters(fuzzers, initial, final)

    def _fuzzers(
        self, node: NodeProcess, identity: PeerIdentity
    ) -> dict[str, ClientPortFuzzer | HttpPortFuzzer | PeerPortFuzzer]:
        assert node.http_port is not None
        seed = self.settings.seed
        fuzzers: dict[str, ClientPortFuzzer | HttpPortFuzzer | PeerPortFuzzer] = {
            "client": ClientPortFuzzer(
                (HOST, node.client_port), seed, CLIENT_LIMITS.frame_bytes_max
            ),
            "http": HttpPortFuzzer((HOST, node.http_port), seed, HTTP_BODY_BYTES_MAX),
            "peer": PeerPortFuzzer(node.peer_address, identity, free_ports(1)[0], seed),
        }
        return {name: fuzzers[name] for name in self.settings.ports}

    async def _fuzz(self, node: NodeProcess, fuzzers: dict[str, Any], frames: int) -> None:
        """`frames` more frames on every port at once; stops at once if the node exits."""
        timeout_s = 60.0 + SECONDS_PER_1000_FRAMES_MAX * frames / 1000
        attack = asyncio.ensure_future(
            asyncio.gather(*(fuzzer.run(frames) for fuzzer in fuzzers.values()))
        )
        watch = asyncio.ensure_future(_wait_exit(node))
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait({attack, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (attack, watch):
                task.cancel()
            await asyncio.gather(attack, watch, return_exceptions=True)
        if watch.done() and not watch.cancelled():
            raise NodeExitedError(f"the node exited with code {watch.result()} under fuzzing")
        attack.result()

    async def _wait_peer_frames(
        self, node: NodeProcess, initial: dict[str, int], sent: int
    ) -> None:
        """Every message the member sent since the start was read off the peer port."""
        deadline = time.monotonic() + 30.0
        received = 0
        while time.monotonic() < deadline:
            counters = (await node_status(node)).counters
            received = counters["peer_frames_received"] - initial["peer_frames_received"]
            if received >= sent:
                return
            await asyncio.sleep(0.1)
        self.failures.append(f"peer: the node read {received} of the {sent} messages sent")

    def _check_rss(self, before_mib: float, after_mib: float) -> dict[str, Any]:
        growth_mib = after_mib - before_mib
        if growth_mib > self.settings.rss_growth_mib_max:
            self.failures.append(
                f"RSS grew by {growth_mib:.1f} MiB (bound {self.settings.rss_growth_mib_max})"
            )
        return {
            "after_warmup": round(before_mib, 1),
            "end": round(after_mib, 1),
            "growth": round(growth_mib, 1),
        }

    def _check_counters(
        self, fuzzers: dict[str, Any], initial: dict[str, int], final: dict[str, int]
    ) -> None:
        """Each port's garbage shows in the node's counters; every frame was read."""
        delta = {name: final.get(name, 0) - initial.get(name, 0) for name in final}
        for name, fuzzer in fuzzers.items():
            report: PortReport = fuzzer.report
            summary = report.summary()
            if report.frames < self.settings.frames_per_port:
                self.failures.append(f"{name}: only {report.frames} frames were sent")
            if report.failure_count:
                self.failures.append(f"{name}: {report.failure_count} bad answers")
            if isinstance(fuzzer, ClientPortFuzzer):
                summary["frames_in_sessions"] = fuzzer.session_frames
                self._expect(delta, "client_errors_bad_request", 1)
                self._expect(delta, "client_requests", fuzzer.session_frames)
            if isinstance(fuzzer, PeerPortFuzzer):
                summary.update(heartbeats=fuzzer.heartbeats_sent, withheld=fuzzer.withheld)
                summary["frames_from_node"] = fuzzer.drained
                self._expect(delta, "peer_frames_rejected", 1)
            self.summary["ports"][name] = summary
        shown = (
            "peer_",
            "client_errors",
            "client_requests",
            "client_sessions",
            "storage_failures",
            "writes_failed",
            "room_catch_ups",
            "late_posts",
        )
        self.summary["counters"] = {
            name: value for name, value in sorted(delta.items()) if name.startswith(shown) and value
        }

    def _expect(self, delta: dict[str, int], name: str, least: int) -> None:
        if delta.get(name, 0) < least:
            self.failures.append(f"counter {name} rose by {delta.get(name, 0)}, not {least}+")

    def _check_log(self, node: NodeProcess, fuzzers: dict[str, Any]) -> None:
        """No tracebacks, and bad input logged at most once per connection (the peer port,
        one connection, logs its first rejections and then every thousandth)."""
        text = node.log()
        lines = text.splitlines()
        tracebacks = text.count("Traceback")
        if tracebacks:
            first = text.index("Traceback")
            self.failures.append(
                f"{tracebacks} tracebacks in the log; the first: {text[first : first + 1500]}"
            )
        if node.process is None or node.process.poll() is not None:
            self.failures.append("the node is not running")
        levels = collections.Counter(
            level for line in lines for level in ("WARNING", "ERROR", "CRITICAL") if level in line
        )
        self.summary["log"] = {"lines": len(lines), "tracebacks": tracebacks, **levels}
        reports = [fuzzer.report for fuzzer in fuzzers.values()]
        allowed = sum(r.connections for r in reports) + sum(r.frames for r in reports) // 1000
        if levels.total() > allowed + LOG_LINES_SLACK:
            self.failures.append(f"{levels.total()} warnings for {allowed} connections")


class NodeExitedError(Exception):
    """The fuzzed node died: the one failure after which nothing else can be checked."""


async def _wait_exit(node: NodeProcess) -> int:
    assert node.process is not None
    while (code := node.process.poll()) is None:
        await asyncio.sleep(0.2)
    return code


async def fuzz(settings: FuzzSettings, root: Path) -> dict[str, Any]:
    """Run the fuzzer against a node started under `root`; the summary, with its failures."""
    cluster = Cluster(root)
    try:
        return await FuzzRun(settings, cluster).run()
    finally:
        await asyncio.to_thread(cluster.close)


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz_ports", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--frames", type=int, default=FRAMES_PER_PORT_DEFAULT, help="per port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ports", default="client,http,peer", help="comma-separated")
    parser.add_argument("--rss-growth-mib-max", type=float, default=RSS_GROWTH_MIB_MAX)
    parser.add_argument("--insecure-peers", action="store_true", help="fuzz plaintext peer links")
    parser.add_argument("--root", type=Path, help="keep the node's data and log here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    ports = tuple(port for port in arguments.ports.split(",") if port)
    unknown = set(ports) - {"client", "http", "peer"}
    if unknown or arguments.frames < 1:
        print(f"unknown ports {sorted(unknown)} or no frames", file=sys.stderr)  # noqa: T201
        return 2
    settings = FuzzSettings(
        frames_per_port=arguments.frames,
        seed=arguments.seed,
        ports=ports,
        rss_growth_mib_max=arguments.rss_growth_mib_max,
        secure_peers=not arguments.insecure_peers,
    )
    with contextlib.ExitStack() as stack:
        root = arguments.root or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        root.mkdir(parents=True, exist_ok=True)
        summary = runtime.run(fuzz(settings, root))
    print(json.dumps(summary, indent=2))  # noqa: T201 - the summary is the output
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
