"""The coordinator of a room's writes: assign the id, store, replicate, answer at W copies.

A replica that is down gets a stand-in holding the copy as a hint (a sloppy quorum). Once
W copies are on disk the write is answered to everyone waiting for it, and settled writes
are published in the order their ids were assigned, so members never pass one by.
"""

from collections import deque

from router.effects import Acked, Complete, Outcome, Refused, SendPeer, Store, StoreHint
from router.error_codes import ErrorCode
from router.internal_events import Publish, Repair, StateAcknowledged, Step
from router.limits import (
    BUSY_WAIT_S_MAX,
    BUSY_WAIT_S_MIN,
    PUSHES_BEHIND_FOR_WRITES_MAX,
    ROOM_WRITES_IN_FLIGHT_MAX,
)
from router.records import RoomMessage
from router.role_context import RoleContext
from router.room_state import STATE_KINDS
from router.wire import ForwardReply, Posted, Replicate
from router.writes import LocalOrigin, Origin, SendRequest, Write, request_problem, same_event


class Coordinator:
    def __init__(
        self,
        context: RoleContext,
    ) -> None:
        self._config = context.config
        self._placement = context.placement
        self._clock = context.clock
        self._numbers = context.numbers
        self._stats = context.stats
        self._writes: dict[int, Write] = {}
        self._write_by_key: dict[tuple[str, str], int] = {}
        self._room_order: dict[str, deque[int]] = {}  # room -> write ids, in id order
        self._copies: dict[int, int] = {}  # storage token -> write id (this node's copy)
        self._own_hints: set[int] = set()  # storage tokens of hints kept here

    @property
    def in_flight(self) -> int:
        return len(self._writes)

    def owns(self, token: int) -> bool:
        return token in self._copies or token in self._own_hints

    def coordinate(
        self, origin: Origin, request: SendRequest, now: float, behind: tuple[str, int] = ("", 0)
    ) -> list[Step]:
        """`behind`: the room's member node furthest behind on pushes, and by how many."""
        placement = self._placement
        if not placement.joined:
            refused = Refused(ErrorCode.UNAVAILABLE, placement.why_no_replica())
            if isinstance(origin, LocalOrigin):
                return _answer(origin, refused)
            # Told how long, the gateway routes past this node until then, at once.
            joining = ForwardReply(
                origin.forward_id,
                error=refused.code,
                reason=refused.reason,
                joining_for_s=placement.joining_for_s(now),
            )
            return [SendPeer(origin.node, joining)]
        if (problem := request_problem(request)) is not None:
            return _answer(origin, Refused(ErrorCode.BAD_REQUEST, problem))
        write_id = self._write_by_key.get((request.sender, request.client_msg_id))
        if write_id is not None:
            write = self._writes[write_id]
            if write.attach(origin) and write.outcome is not None:
                return _answer(origin, write.outcome)
            return []
        room = request.room
        open_writes = len(self._room_order.get(room, ()))
        if (reason := _too_busy(room, open_writes, behind)) is not None:
            self._stats.writes_refused_busy += 1
            # How fast a member node far behind catches up is not known here: no wait is
            # told, and the client backs off on its own.
            wait_s = (
                self._busy_wait_s(room, now) if open_writes >= ROOM_WRITES_IN_FLIGHT_MAX else None
            )
            return _answer(origin, Refused(ErrorCode.UNAVAILABLE, reason, retry_after_s=wait_s))
        replicas = placement.preference_list(room)
        alive = placement.alive
        targets = [node for node in replicas if node in alive and node != placement.node_id]
        stand_ins, kept_here = self._stand_ins(room, replicas)
        wanted = min(self._config.write_quorum, len(replicas))
        possible = len(targets) + len(stand_ins) + 1
        if possible < wanted:
            reason = f"{possible} of the {wanted} copies needed can be made"
            return _answer(origin, Refused(ErrorCode.UNAVAILABLE, reason))
        targets += list(stand_ins)
        write = self._open(origin, request, targets, wanted, stand_ins, now)
        message = write.message
        token = next(self._numbers)
        self._copies[token] = write.write_id
        steps: list[Step] = [Store(token, message)]
        steps += [
            SendPeer(node, Replicate(write.write_id, message, stand_ins.get(node, "")))
            for node in targets
        ]
        for owner in kept_here:
            hint_token = next(self._numbers)
            self._own_hints.add(hint_token)
            self._stats.hints_stored += 1
            steps.append(StoreHint(hint_token, owner, message))
        return steps

    def refuse(self, origin: Origin, refused: Refused) -> list[Step]:
        """Answer a write that is not to be coordinated (its room's state refuses it)."""
        return _answer(origin, refused)

    def _stand_ins(self, room: str, replicas: list[str]) -> tuple[dict[str, str], list[str]]:
        """Each replica that is down gets a stand-in: the next live node on the ring past
        the room's replicas, holding the copy as a hint (it counts towards W). With no
        node left to stand in, the coordinator keeps the hint itself (that copy shares
        its disk, so it does not count). Returns {stand-in: owner}, and those kept here."""
        placement = self._placement
        down = [node for node in replicas if node not in placement.alive]
        if not down:
            return {}, []
        ring = placement.ring.preference_list(room, len(placement.ring.nodes))
        spare = [node for node in ring if node not in replicas and node in placement.alive]
        stand_ins = dict(zip(spare, down, strict=False))
        return stand_ins, down[len(stand_ins) :]

    def _open(  # noqa: PLR0917 - one write's parts, named where it is called
        self,
        origin: Origin,
        request: SendRequest,
        targets: list[str],
        wanted: int,
        stand_ins: dict[str, str],
        now: float,
    ) -> Write:
        message_id = self._clock.next_id(now)
        message = RoomMessage(
            id=str(message_id),
            room=request.room,
            sender=request.sender,
            client_msg_id=request.client_msg_id,
            time_ms=message_id.time_ms,
            body=request.body,
            kind=request.kind,
            target=request.target,
            reaction_key=request.reaction_key,
            reply_to=request.reply_to,
            subject=request.subject,
        )
        write = Write(
            next(self._numbers),
            message,
            targets,
            wanted,
            deadline=now + self._config.write_timeout_s,
            origins=[origin],
            sent_at=now,
            hints=stand_ins,
            opened_at=now,
        )
        assert write.write_id not in self._writes, f"write id {write.write_id} reused"
        assert message.key not in self._write_by_key, "two writes of one send at once"
        order = self._room_order.setdefault(message.room, deque())
        # Ids and write numbers both grow: the room's order is the order of its ids.
        assert not order or order[-1] < write.write_id, "a room's writes out of order"
        self._writes[write.write_id] = write
        self._write_by_key[message.key] = write.write_id
        order.append(write.write_id)
        self._stats.writes_coordinated += 1
        return write

    def coordinating(self, message: RoomMessage) -> bool:
        """A write of this send is under way here: it is published in its place once
        settled, so an announcement of a copy a replica stored late must not pass it."""
        return message.key in self._write_by_key

    def stored(self, token: int, kept: RoomMessage | None, duplicate: bool) -> list[Step]:
        """This node's own copy (or a hint kept here) is on disk, or failed."""
        if token in self._own_hints:
            self._own_hints.discard(token)
            return []
        write_id = self._copies.pop(token, None)
        write = None if write_id is None else self._writes.get(write_id)
        if write is None:
            return []
        assert write.message.key == (kept or write.message).key, "a copy of another send"
        if kept is not None and not same_event(kept, write.message) and write.outcome is None:
            # The client gave this client message id to another event before: a retry is
            # the same event, this is a mistake the client must hear of.
            reason = f"client_msg_id {kept.client_msg_id} already names another event"
            steps = self._settle(write, write.give_up(reason, ErrorCode.CONFLICT))
            write.record(self._placement.node_id, kept.id)
            return steps + self._progress(write)
        write.record(self._placement.node_id, None if kept is None else kept.id)
        write.duplicate = write.duplicate or duplicate
        return self._progress(write)

    def replica_acknowledged(self, sender: str, write_id: int, kept_id: str) -> list[Step]:
        write = self._writes.get(write_id)
        if write is None or sender not in write.targets:
            return []
        write.record(sender, kept_id or None)
        return self._progress(write)

    def tick(self, now: float) -> list[Step]:
        steps: list[Step] = []
        for write in list(self._writes.values()):
            if now >= write.deadline:
                if write.outcome is None:
                    missing = write.wanted - len(write.kept)
                    reason = f"{missing} more replica(s) needed did not store it in time"
                    steps += self._settle(write, write.give_up(reason))
                self._forget(write)
            elif now - write.sent_at >= self._config.retry_interval_s:
                write.sent_at = now
                for node in write.waiting_on:
                    hint_for = write.hints.get(node, "")
                    steps.append(SendPeer(node, Replicate(write.write_id, write.message, hint_for)))
        return steps

    def _progress(self, write: Write) -> list[Step]:
        steps: list[Step] = []
        if write.outcome is None:
            if write.quorum_reached:
                outcome = write.settle()
                assert outcome.message.key == write.message.key
                assert outcome.message.id <= write.message.id, "the smallest id wins"
                steps += self._settle(write, outcome)
                # Replicas that stored an older id's twin get the winner (smallest id).
                for node, kept_id in write.kept.items():
                    if kept_id != outcome.message.id and node not in write.hints:
                        steps.append(Repair(node, (outcome.message,)))
            elif write.hopeless:
                # Disks failed (not the network): an internal error, not a wait.
                failed = write.give_up("replicas failed to store it on disk", ErrorCode.INTERNAL)
                steps += self._settle(write, failed)
        if write.finished and write.drained:
            self._forget(write)
        return steps

    def _settle(self, write: Write, outcome: Outcome) -> list[Step]:
        steps: list[Step] = []
        if isinstance(outcome, Acked):
            self._stats.writes_acknowledged += 1
            if outcome.message.kind in STATE_KINDS:
                steps.append(StateAcknowledged(outcome.message))
        else:
            self._stats.writes_failed += 1
        for origin in write.origins:
            steps += _answer(origin, outcome)
        return steps + self._publish_in_order(write.message.room)

    def _busy_wait_s(self, room: str, now: float) -> float:
        """How long a refused sender should wait: about as long as the room's oldest open
        write has been open, which is about how long a write takes now; by then the
        writes ahead of it have made room."""
        order = self._room_order.get(room)
        oldest = self._writes.get(order[0]) if order else None
        age_s = now - oldest.opened_at if oldest is not None else 0.0
        return min(max(age_s, BUSY_WAIT_S_MIN), BUSY_WAIT_S_MAX)

    def _publish_in_order(self, room: str) -> list[Step]:
        """Publish the room's settled writes in the order their ids were assigned: the
        acknowledged ones, and failed ones this node stored, since history shows them and
        a retry would acknowledge them under that same, by then older, id. Were they
        not pushed, members would pass them by and never resume from before them."""
        order = self._room_order.get(room)
        steps: list[Step] = []
        while order:
            write = self._writes.get(order[0])
            if write is not None and write.outcome is None:
                break
            order.popleft()
            if write is None:
                continue
            write.drained = True
            visible = write.visible_copy(self._placement.node_id)
            if visible is not None:
                steps.append(Publish(Posted(visible)))
        if order is not None and not order:
            del self._room_order[room]
        return steps

    def _forget(self, write: Write) -> None:
        self._writes.pop(write.write_id, None)
        if self._write_by_key.get(write.message.key) == write.write_id:
            del self._write_by_key[write.message.key]


def _too_busy(room: str, open_writes: int, behind: tuple[str, int]) -> str | None:
    """Why a new write of `room` must wait, if it must: the room has too many writes
    open here, or one of its member nodes is too far behind on what was pushed to it."""
    if open_writes >= ROOM_WRITES_IN_FLIGHT_MAX:
        return f"room {room} has {open_writes} writes in flight at its coordinator"
    node, pushes = behind
    if pushes >= PUSHES_BEHIND_FOR_WRITES_MAX:
        return f"{node}, with members in room {room}, is {pushes} pushes behind"
    return None


def _answer(origin: Origin, outcome: Outcome) -> list[Step]:
    if isinstance(origin, LocalOrigin):
        return [Complete(origin.ticket, outcome)]
    if isinstance(outcome, Acked):
        reply = ForwardReply(origin.forward_id, outcome.message, outcome.duplicate)
    elif isinstance(outcome, Refused):
        reply = ForwardReply(
            origin.forward_id,
            error=outcome.code,
            reason=outcome.reason[:512],
            retry_after_s=outcome.retry_after_s,
        )
    else:
        return []
    return [SendPeer(origin.node, reply)]
