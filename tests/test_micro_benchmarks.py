"""Micro-benchmarks of the hot path's pieces: the codec, the framing and the ring lookup.

In the test suite they run once each (--benchmark-disable); to measure:
    .venv/bin/pytest tests/test_micro_benchmarks.py --benchmark-enable
"""

import struct

from pytest_benchmark.fixture import BenchmarkFixture

from mesh.wire import protocol
from mesh.wire.framing import HEADER, encode_frame
from router.ring import HashRing

MESSAGE = protocol.MessageEvent(
    message=protocol.Message(
        id="01a213ba8e9d0003.n1",
        room="lobby",
        sender="ann",
        time_ms=1_795_627_222_770,
        body="x" * 64,
        client_msg_id="5f0c2d9a6b1e4e27a0b2f61b8b9d5c11",
    )
)
SEND = protocol.Send(request_id=7, room="lobby", client_msg_id="5f0c2d9a", body="x" * 64)


def test_encode_a_message_event(benchmark: BenchmarkFixture) -> None:
    payload = benchmark(protocol.encode, MESSAGE)
    assert protocol.decode_node_message(payload) == MESSAGE


def test_decode_a_send_request(benchmark: BenchmarkFixture) -> None:
    payload = protocol.encode(SEND)
    assert benchmark(protocol.decode_client_message, payload) == SEND


def test_frame_a_payload(benchmark: BenchmarkFixture) -> None:
    payload = protocol.encode(MESSAGE)
    frame = benchmark(encode_frame, payload)
    assert struct.unpack(">I", frame[: HEADER.size])[0] == len(payload)


def test_look_up_a_preference_list_on_a_50_node_ring(benchmark: BenchmarkFixture) -> None:
    ring = HashRing(f"node-{n}" for n in range(50))
    replicas = benchmark(ring.preference_list, "lobby", 3)
    assert len(replicas) == 3
