"""Reads from R replicas: ask them, merge their pages, repair those that lacked something.

A read asks the room's live replicas (this node first when it is one) and ends when all
asked answered or the deadline passed; it succeeds when enough answered that the page
overlaps every write quorum. Replicas that lacked a message the others had get it.
"""

from dataclasses import dataclass, field

from router.effects import Load, Page, Refused, SendPeer
from router.error_codes import ErrorCode
from router.internal_events import ReadDone, ReadWanted, Repair, Step
from router.message_ids import MessageId, is_message_id
from router.reads import ReplicaPage, merge_pages
from router.role_context import RoleContext
from router.wire import ReadReply, ReadRequest


@dataclass(slots=True)
class _Read:
    wanted: ReadWanted
    deadline: float
    waiting: set[str]
    needed: int  # answers without which the page could miss acknowledged messages
    pages: dict[str, ReplicaPage] = field(default_factory=dict)


class QuorumReads:
    def __init__(
        self,
        context: RoleContext,
    ) -> None:
        self._config = context.config
        self._placement = context.placement
        self._numbers = context.numbers
        self._stats = context.stats
        self._reads: dict[int, _Read] = {}
        self._own_loads: dict[int, int] = {}  # storage token -> read id

    def owns(self, token: int) -> bool:
        return token in self._own_loads

    def resume_page(self, wanted: ReadWanted, since: str) -> ReadWanted:
        """A resume's page, read from enough replicas to overlap every write quorum. The
        first page (at `since`) also asks the late arrivals replicas recorded since a
        margin before its time, with ids up to it: written where this node could not
        hear, they sort before the resume point although the client never saw them."""
        late_since_ms = None
        if wanted.after == since and is_message_id(since):
            margin_ms = self._config.catch_up_margin_ms
            late_since_ms = max(0, MessageId.parse(since).time_ms - margin_ms)
        return ReadWanted(
            wanted.reader,
            wanted.room,
            None,
            wanted.after,
            wanted.limit,
            quorum=self._config.resume_quorum,
            late_since_ms=late_since_ms,
        )

    def read(self, wanted: ReadWanted, now: float) -> list[Step]:
        """A page of the room from R replicas (`quorum` asks more or fewer: a sweep that
        repairs a whole room reads from all of them), merged, within `bytes_max` when
        given. With `late_since_ms` every live replica is asked, since any one may be the
        one that received a message late, and `quorum` of them must answer."""
        placement = self._placement
        live = placement.live_replicas(wanted.room)
        if placement.node_id in live:
            live.remove(placement.node_id)
            live.insert(0, placement.node_id)
        needed = min(
            wanted.quorum or self._config.read_quorum,
            len(placement.preference_list(wanted.room)),
        )
        asked = live if wanted.late_since_ms is not None else live[:needed]
        targets = asked if placement.joined else []
        if not targets or len(targets) < needed:
            reason = placement.why_no_replica()
            if targets:
                reason = f"{len(targets)} of the {needed} replicas this read needs are alive"
            return [ReadDone(wanted.reader, Refused(ErrorCode.UNAVAILABLE, reason))]
        read_id = next(self._numbers)
        deadline = now + self._config.read_timeout_s
        self._reads[read_id] = _Read(wanted, deadline, set(targets), needed)
        steps: list[Step] = []
        room, before, after, limit = wanted.room, wanted.before, wanted.after, wanted.limit
        for target in targets:
            if target == placement.node_id:
                token = next(self._numbers)
                self._own_loads[token] = read_id
                late_since_ms, only = wanted.late_since_ms, wanted.messages_only
                steps.append(
                    Load(token, room, before, after, limit, late_since_ms, only, wanted.state_only)
                )
            else:
                request = ReadRequest(
                    read_id,
                    room,
                    before,
                    after,
                    limit,
                    wanted.late_since_ms,
                    wanted.messages_only,
                    wanted.state_only,
                )
                steps.append(SendPeer(target, request))
        return steps

    def loaded(self, token: int, page: ReplicaPage | None) -> list[Step]:
        """This node's own page of a read (None: the disk failed)."""
        read_id = self._own_loads.pop(token, None)
        if read_id is None:
            return []
        return self._answered(read_id, self._placement.node_id, page)

    def replied(self, sender: str, reply: ReadReply) -> list[Step]:
        page = None
        if reply.ok:
            page = ReplicaPage(reply.messages, reply.more, reply.late, reply.relations)
        return self._answered(reply.read_id, sender, page)

    def tick(self, now: float) -> list[Step]:
        steps: list[Step] = []
        for read_id in [key for key, read in self._reads.items() if now >= read.deadline]:
            steps += self._finish(read_id)
        return steps

    def _answered(self, read_id: int, replica: str, page: ReplicaPage | None) -> list[Step]:
        read = self._reads.get(read_id)
        if read is None or replica not in read.waiting:
            return []
        read.waiting.discard(replica)
        if page is not None:
            read.pages[replica] = page
        if read.waiting:
            return []
        return self._finish(read_id)

    def _finish(self, read_id: int) -> list[Step]:
        read = self._reads.pop(read_id)
        wanted = read.wanted
        if len(read.pages) < read.needed:
            reason = f"{len(read.pages)} of the {read.needed} replicas asked answered the read"
            return [ReadDone(wanted.reader, Refused(ErrorCode.UNAVAILABLE, reason))]
        merged = merge_pages(
            read.pages,
            forward=wanted.after is not None,
            limit=wanted.limit,
            bytes_max=wanted.bytes_max,
        )
        steps: list[Step] = []
        for replica, missing in merged.repairs.items():
            self._stats.read_repairs += len(missing)
            steps.append(Repair(replica, tuple(missing)))
        page = Page(merged.messages, merged.more, merged.late, merged.relations)
        return [*steps, ReadDone(wanted.reader, page)]
