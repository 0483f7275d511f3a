"""Room messages to a peer are bundled per turn of the event loop: in order, within the
bundle bounds, each decoded back exactly as sent; a bundle past its bounds is refused."""

import asyncio
from collections.abc import Callable

import msgspec
import pytest

from mesh.node.peer_bundles import PeerBundler, unbundled
from mesh.node.peer_codec import PeerBundle, decode_peer_frame, encode_peer_frame
from peers.limits import PEER_BUNDLE_BYTES_MAX, PEER_BUNDLE_MESSAGES_MAX, PEER_FRAME_BYTES_MAX
from peers.wire import PeerDecodeError
from router.wire import PushAck, ReplicaAck, RouterMessage


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes]] = []
        self.scheduled: list[Callable[[], None]] = []

    def send(self, node: str, frame: bytes) -> None:
        self.frames.append((node, frame))

    def received(self, node: str) -> list[RouterMessage]:
        messages: list[RouterMessage] = []
        for target, frame in self.frames:
            if target == node:
                decoded = decode_peer_frame(frame)
                assert isinstance(decoded, PeerBundle | PushAck | ReplicaAck)
                messages += unbundled(decoded)
        return messages


def bundler_with(recorder: Recorder) -> PeerBundler:
    return PeerBundler(recorder.send, recorder.scheduled.append)


def test_one_turns_messages_to_a_peer_go_as_one_frame_in_order() -> None:
    recorder = Recorder()
    bundler = bundler_with(recorder)
    sent: dict[str, list[RouterMessage]] = {
        "n2": [PushAck(1, through) for through in range(1, 6)],
        "n3": [ReplicaAck(7, "a"), PushAck(2, 9)],
    }
    for through in range(5):
        bundler.send_to("n2", sent["n2"][through])
        if through < 2:
            bundler.send_to("n3", sent["n3"][through])
    assert recorder.frames == [] and len(recorder.scheduled) == 1, "one flush per turn"
    recorder.scheduled.pop()()
    assert [node for node, _ in recorder.frames] == ["n2", "n3"]
    assert recorder.received("n2") == sent["n2"] and recorder.received("n3") == sent["n3"]
    assert (bundler.stats.frames_sent, bundler.stats.messages_sent) == (2, 7)
    bundler.send_to("n2", PushAck(1, 6))
    assert len(recorder.scheduled) == 1, "the next turn flushes again"


def test_a_lone_message_goes_as_it_is() -> None:
    recorder = Recorder()
    bundler = bundler_with(recorder)
    bundler.send_to("n2", PushAck(1, 1))
    recorder.scheduled.pop()()
    assert recorder.frames == [("n2", encode_peer_frame(PushAck(1, 1)))]


def test_bundles_keep_within_their_count_and_byte_bounds() -> None:
    recorder = Recorder()
    bundler = bundler_with(recorder)
    many = [PushAck(1, through) for through in range(1, 2 * PEER_BUNDLE_MESSAGES_MAX + 2)]
    # A kept id of 80 characters makes each ack ~100 bytes: bytes bound a bundle first.
    wide = [ReplicaAck(number, "x" * 80) for number in range(PEER_BUNDLE_BYTES_MAX // 50)]
    for ack in many:
        bundler.send_to("n2", ack)
    for replica_ack in wide:
        bundler.send_to("n3", replica_ack)
    recorder.scheduled.pop()()
    assert recorder.received("n2") == many and recorder.received("n3") == wide
    for _, frame in recorder.frames:
        decoded = decode_peer_frame(frame)
        count = len(decoded.messages) if isinstance(decoded, PeerBundle) else 1
        assert count <= PEER_BUNDLE_MESSAGES_MAX
        assert len(frame) <= PEER_BUNDLE_BYTES_MAX + 1024
    n3_frames = [frame for node, frame in recorder.frames if node == "n3"]
    assert len(n3_frames) >= 2, "the byte bound cut the acks into several bundles"


def test_a_bundle_over_its_message_bound_is_refused() -> None:
    too_many = msgspec.msgpack.encode(
        {"type": "bundle", "messages": [{"type": "push_ack", "epoch": 1, "through": 1}] * 1025}
    )
    assert PEER_BUNDLE_MESSAGES_MAX < 1025 and len(too_many) < PEER_FRAME_BYTES_MAX
    with pytest.raises(PeerDecodeError):
        decode_peer_frame(too_many)


def test_a_bundle_carries_room_messages_only() -> None:
    heartbeat_inside = msgspec.msgpack.encode(
        {"type": "bundle", "messages": [{"type": "leave", "sender": {"id": "n2"}}]}
    )
    with pytest.raises(PeerDecodeError):
        decode_peer_frame(heartbeat_inside)
    nested = msgspec.msgpack.encode({"type": "bundle", "messages": [{"type": "bundle"}]})
    with pytest.raises(PeerDecodeError):
        decode_peer_frame(nested)


def test_the_node_bundler_flushes_on_the_running_loop() -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        recorder = Recorder()
        loop = asyncio.get_running_loop()
        bundler = PeerBundler(recorder.send, loop.call_soon)
        bundler.send_to("n2", PushAck(1, 1))
        bundler.send_to("n2", PushAck(1, 2))
        await asyncio.sleep(0)
        return recorder.frames

    frames = asyncio.run(scenario())
    assert len(frames) == 1
    decoded = decode_peer_frame(frames[0][1])
    assert isinstance(decoded, PeerBundle) and len(decoded.messages) == 2
