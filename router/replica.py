"""A room's replica: store the copies the coordinator sends, and answer other nodes' reads.

A copy is stored as it comes (or kept as a hint for the replica it stands in for) and
acknowledged with the id it is held under. A copy that arrives long after its id's time
is recorded as a late arrival; one that is new here and recent is announced, since
members cut off with this node may have missed it.
"""

from dataclasses import dataclass

from router.effects import Load, SendPeer, Store, StoreHint
from router.internal_events import AnnounceLate, DeliverHere, Step
from router.limits import LATE_AFTER_MS
from router.page_bytes import LATE_PAGE_BYTES_MAX, READ_PAGE_BYTES_MAX, cut_page
from router.reads import ReplicaPage
from router.records import RoomMessage
from router.role_context import RoleContext
from router.wire import Posted, ReadReply, ReadRequest, ReplicaAck, Replicate


@dataclass(frozen=True, slots=True)
class _ForWrite:
    node: str  # the coordinator, waiting for the ack
    write_id: int
    late: bool = False  # a hint handed back: announce it if it is new here


@dataclass(frozen=True, slots=True)
class _ForRepair:
    """A copy sent to mend this replica: nobody waits for its answer."""


@dataclass(frozen=True, slots=True)
class _ForRead:
    node: str
    read_id: int
    forward: bool  # the read pages forward (from `after`): a cut keeps the oldest


class Replica:
    def __init__(
        self,
        context: RoleContext,
    ) -> None:
        self._config = context.config
        self._placement = context.placement
        self._clock = context.clock
        self._numbers = context.numbers
        self._stats = context.stats
        self._copies: dict[int, _ForWrite | _ForRepair] = {}  # storage token -> why
        self._reads: dict[int, _ForRead] = {}

    def owns(self, token: int) -> bool:
        return token in self._copies or token in self._reads

    def replicate(self, sender: str, message: Replicate, now: float) -> list[Step]:
        copy = message.message
        self._clock.observe(copy.id)
        token = next(self._numbers)
        self._copies[token] = (
            _ForWrite(sender, message.write_id, message.handed_off)
            if message.write_id
            else _ForRepair()
        )
        if message.hint_for and message.hint_for != self._placement.node_id:
            self._stats.hints_stored += 1
            return [StoreHint(token, message.hint_for, copy)]
        return [Store(token, copy, self.late_at(copy, now))]

    def repair(self, node: str, messages: tuple[RoomMessage, ...], now: float) -> list[Step]:
        """Copies `node` lacks: stored here when it is this node, else sent to it."""
        steps: list[Step] = []
        for message in messages:
            if node == self._placement.node_id:
                token = next(self._numbers)
                self._copies[token] = _ForRepair()
                steps.append(Store(token, message, self.late_at(message, now)))
            else:
                steps.append(SendPeer(node, Replicate(0, message)))
        return steps

    def stored(
        self, token: int, kept: RoomMessage | None, duplicate: bool, now: float
    ) -> list[Step]:
        match self._copies.pop(token, None):
            case _ForWrite(node, write_id, late):
                if kept is not None:
                    self._stats.copies_stored += 1
                steps: list[Step] = [
                    SendPeer(node, ReplicaAck(write_id, "" if kept is None else kept.id))
                ]
                if late and kept is not None and not duplicate:
                    return steps + self._announce_late(kept, now)
                return steps
            case _ForRepair() if kept is not None and not duplicate:
                return self._announce_late(kept, now)
        return []

    def _announce_late(self, message: RoomMessage, now: float) -> list[Step]:
        """A recent message reached this replica only by repair: it was written while this
        node was cut off, so members who were too may have missed it. Have the room's
        coordinator push it (nodes hand each id to their sessions once), and hand it to
        this node's sessions at once: the push may come only after a resume that would
        have needed it."""
        horizon_ms = self._clock.wall_ms(now) - self._config.late_post_window_ms
        if message.time_ms < horizon_ms:
            return []
        self._stats.late_posts += 1
        steps: list[Step] = []
        late = self.late_at(message, now) is not None
        if late and self._placement.coordinator(message.room) != self._placement.node_id:
            # Only when it is late indeed: a fresh one repaired here while its write is
            # still under way (a busy replica, say) comes with the room's pushes, in its
            # place; handed on now, it would pass the pushes still queued before it.
            steps.append(DeliverHere(Posted(message)))
        return [*steps, AnnounceLate(message)]

    def late_at(self, message: RoomMessage, now: float) -> int | None:
        """When a copy arriving now is late (see LATE_AFTER_MS): the time to record."""
        now_ms = self._clock.wall_ms(now)
        return now_ms if message.time_ms < now_ms - LATE_AFTER_MS else None

    def read(self, sender: str, request: ReadRequest) -> list[Step]:
        token = next(self._numbers)
        self._reads[token] = _ForRead(sender, request.read_id, forward=request.after is not None)
        return [
            Load(
                token,
                request.room,
                request.before,
                request.after,
                request.limit,
                request.late_since_ms,
                request.messages_only,
                request.state_only,
            )
        ]

    def loaded(self, token: int, page: ReplicaPage | None) -> list[Step]:
        read = self._reads.pop(token, None)
        if read is None:
            return []
        self._stats.reads_served += 1
        if page is None:
            return [SendPeer(read.node, ReadReply(read.read_id, ok=False))]
        return [SendPeer(read.node, read_reply(read.read_id, page, read.forward))]


def read_reply(read_id: int, page: ReplicaPage, forward: bool) -> ReadReply:
    """A replica's answer, within the peer frame: its page (with what relations made of
    its messages) and its late arrivals (the newest ids) cut by bytes; a page cut short
    says `more`, so the reader goes on from it."""
    relations = {made.id: made for made in page.relations}
    messages, cut = cut_page(
        page.messages, READ_PAGE_BYTES_MAX, keep_oldest=forward, relations=relations
    )
    late, _ = cut_page(page.late, LATE_PAGE_BYTES_MAX, keep_oldest=False)
    kept = {message.id for message in messages}
    made = [relations[message_id] for message_id in sorted(kept & relations.keys())]
    return ReadReply(read_id, messages, page.more or cut, late=late, relations=made)
