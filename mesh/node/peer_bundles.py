"""Room messages to each peer, gathered over one turn of the event loop and sent as one
frame: a replicate, its acks, the pushes and their acks of a busy moment travel and are
received together instead of one frame (and one receive) each.

Nothing waits for a bundle to fill: the first message of a turn schedules the flush,
which runs once the callbacks already due have run.
"""

from collections.abc import Callable
from dataclasses import dataclass

from mesh.node.peer_codec import PeerBundle, encode_bundle, encode_peer_frame
from peers.limits import PEER_BUNDLE_BYTES_MAX, PEER_BUNDLE_MESSAGES_MAX
from router.wire import RouterMessage

SendFrame = Callable[[str, bytes], None]  # (node, frame)
CallSoon = Callable[[Callable[[], None]], object]


@dataclass(slots=True)
class BundleStatistics:
    frames_sent: int = 0  # frames of one message or of a bundle
    messages_sent: int = 0


class PeerBundler:
    def __init__(self, send_frame: SendFrame, call_soon: CallSoon) -> None:
        self.stats = BundleStatistics()
        self._send_frame = send_frame
        self._call_soon = call_soon
        self._waiting: dict[str, list[bytes]] = {}  # node -> encoded messages, in order
        self._flush_scheduled = False

    def send_to(self, node: str, message: RouterMessage) -> None:
        self._waiting.setdefault(node, []).append(encode_peer_frame(message))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        waiting, self._waiting = self._waiting, {}
        for node, frames in waiting.items():
            for chunk in _chunks(frames):
                self.stats.frames_sent += 1
                self.stats.messages_sent += len(chunk)
                self._send_frame(node, chunk[0] if len(chunk) == 1 else encode_bundle(chunk))


def _chunks(frames: list[bytes]) -> list[list[bytes]]:
    """Consecutive runs of frames within the bundle bounds; a frame past the byte bound
    on its own goes alone."""
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for frame in frames:
        if current and (
            len(current) == PEER_BUNDLE_MESSAGES_MAX or size + len(frame) > PEER_BUNDLE_BYTES_MAX
        ):
            chunks.append(current)
            current, size = [], 0
        current.append(frame)
        size += len(frame)
    if current:
        chunks.append(current)
    return chunks


def unbundled(message: RouterMessage | PeerBundle) -> list[RouterMessage]:
    """The room messages a received frame carries, in the order they were sent."""
    return message.messages if isinstance(message, PeerBundle) else [message]
