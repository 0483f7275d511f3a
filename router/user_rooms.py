"""A user's rooms, kept with the user's nodes so that every node can list them.

A join or leave is a `MembershipChange`, stored by the gateway that took it and spread
to the user's nodes: the first N on the ring for the user's name, as a room's replicas
are placed. Listing a user's rooms reads this node's changes and those of the user's
live nodes and keeps the latest change per room (last writer wins, by the gateways'
clocks; at the same millisecond a join wins). A change whose spreading failed (its
targets down for the whole retry period) is still on the gateway's disk and shows
whenever that node answers.

A user's read markers travel the same way: kept where they are set, spread to the
user's nodes, gathered from them with the rooms; the greatest marker of a room wins
(router/records.py ReadMarker), so a lookup gives the same answer from any node. A
marker is acknowledged once W of the user's nodes hold it, as a send is once W
replicas do. Spreads go to all the user's nodes, down ones too, and are retried with a
growing wait, so a node that was down or cut off gets them when it answers again.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from router.config import RouterConfig
from router.effects import (
    Complete,
    Effect,
    LoadMemberships,
    Ready,
    Refused,
    Rooms,
    SendPeer,
    StoreMembership,
    StoreReadMarker,
)
from router.error_codes import ErrorCode
from router.limits import SPREAD_ATTEMPTS_MAX, SPREAD_RETRY_MAX_S, SPREADING_MAX
from router.records import MembershipChange, ReadMarker
from router.wire import (
    MEMBERSHIPS_MAX,
    MembershipAck,
    MembershipQuery,
    MembershipReply,
    MembershipUpdate,
    ReadMarkerUpdate,
)


def ring_key(user: str) -> str:
    """Where a user's rooms are placed on the ring (apart from room names)."""
    return f"\x00user:{user}"


def latest(changes: Iterable[MembershipChange]) -> dict[str, MembershipChange]:
    """room -> the change that wins."""
    winners: dict[str, MembershipChange] = {}
    for change in changes:
        held = winners.get(change.room)
        if held is None or change.order > held.order:
            winners[change.room] = change
    return winners


def rooms_joined(changes: Iterable[MembershipChange]) -> list[str]:
    return sorted(room for room, change in latest(changes).items() if change.joined)


def greatest(markers: Iterable[ReadMarker]) -> dict[str, str]:
    """room -> the read marker that wins: the greatest id."""
    winners: dict[str, str] = {}
    for marker in markers:
        held = winners.get(marker.room)
        if held is None or marker.up_to > held:
            winners[marker.room] = marker.up_to
    return winners


UserRecord = MembershipChange | ReadMarker


@dataclass(slots=True)
class _Spread:
    record: UserRecord
    node: str
    attempts: int
    sent_at: float
    ticket: int | None = None  # the gateway's request that waits for a copy on a home


@dataclass(slots=True)
class _Awaited:
    """A read marker's request: acknowledged once on this disk and on W of the user's
    nodes (this one may be one of them), as a send is on W replicas: every lookup asks
    the user's live nodes, so it finds the marker while one of those W is up."""

    deadline: float
    needed: int  # copies on the user's nodes
    home_here: bool  # this node is one of them
    on_disk: bool = False
    home_copies: int = 0


@dataclass(slots=True)
class _Lookup:
    ticket: int
    deadline: float
    waiting: set[str]  # node ids, this node's own included until its disk answered
    changes: list[MembershipChange] = field(default_factory=list)
    markers: list[ReadMarker] = field(default_factory=list)
    homes: frozenset[str] = frozenset()  # all the user's nodes
    homes_answered: int = 0  # of them, those whose disk answered


@dataclass(frozen=True, slots=True)
class _ForChange:
    ticket: int | None  # the gateway's request, or None for a peer's
    peer: str = ""
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class _ForLookup:
    request_id: int
    peer: str = ""  # a peer's query, answered with what was loaded


@dataclass(slots=True)
class UserRoomsStatistics:
    changes_recorded: int = 0
    changes_spread: int = 0
    spreads_abandoned: int = 0
    lookups: int = 0


@dataclass(slots=True)
class UserRooms:
    node_id: str
    config: RouterConfig
    numbers: Iterator[int]
    user_nodes: Callable[[str], list[str]]  # the user's live nodes (none while joining)
    # All the user's nodes, down ones included; None while this node does not know the
    # ring yet (it is joining).
    user_homes: Callable[[str], list[str] | None]
    stats: UserRoomsStatistics = field(default_factory=UserRoomsStatistics)
    _tokens: dict[int, _ForChange | _ForLookup] = field(default_factory=dict)
    _spreading: dict[int, _Spread] = field(default_factory=dict)  # request id -> spread
    # Kept before the ring was known, with the request waiting for their copies.
    _unplaced: list[tuple[UserRecord, int | None]] = field(default_factory=list)
    _awaited: dict[int, _Awaited] = field(default_factory=dict)  # ticket -> a marker's copies
    _lookups: dict[int, _Lookup] = field(default_factory=dict)  # request id -> lookup

    def owns(self, token: int) -> bool:
        return token in self._tokens

    def record(self, ticket: int, record: UserRecord, now: float) -> list[Effect]:
        """Store a membership change or a read marker here and spread it to all the
        user's nodes: one that is down or cut off gets it when it answers again, within
        the retries. A change completes once on this disk; a marker once also on W of
        the user's nodes, since a lookup asks only those (`unavailable` when they did
        not take it within the write timeout: the client sets it again)."""
        self.stats.changes_recorded += 1
        effects: list[Effect] = [_store(self._token(_ForChange(ticket)), record)]
        waits = None
        if isinstance(record, ReadMarker):
            homes = self.user_homes(record.user) or []
            waits = ticket
            needed = max(1, min(self.config.write_quorum, len(homes)))
            deadline = now + self.config.write_timeout_s
            self._awaited[ticket] = _Awaited(deadline, needed, self.node_id in homes)
        return effects + self._spread(record, now, waits)

    def _spread(self, record: UserRecord, now: float, ticket: int | None = None) -> list[Effect]:
        homes = self.user_homes(record.user)
        if homes is None:
            if len(self._unplaced) >= SPREADING_MAX:
                self._unplaced.pop(0)
                self.stats.spreads_abandoned += 1
            self._unplaced.append((record, ticket))
            return []
        if ticket in self._awaited:  # the ring is known now: does this node count?
            awaited = self._awaited[ticket]
            awaited.needed = max(1, min(self.config.write_quorum, len(homes)))
            if not awaited.home_here and self.node_id in homes:
                awaited.home_here = True
                awaited.home_copies += awaited.on_disk
        effects: list[Effect] = []
        for node in homes:
            if node == self.node_id:
                continue
            if len(self._spreading) >= SPREADING_MAX:
                del self._spreading[next(iter(self._spreading))]
                self.stats.spreads_abandoned += 1
            request_id = next(self.numbers)
            self._spreading[request_id] = _Spread(record, node, 1, now, ticket)
            effects.append(SendPeer(node, _update(request_id, record)))
        return effects

    def lookup(self, ticket: int, user: str, now: float) -> list[Effect]:
        """The user's rooms, from this node and the user's live nodes."""
        self.stats.lookups += 1
        request_id = next(self.numbers)
        others = [node for node in self.user_nodes(user) if node != self.node_id]
        deadline = now + self.config.read_timeout_s
        homes = frozenset(self.user_homes(user) or ())
        look = _Lookup(ticket, deadline, {self.node_id, *others}, homes=homes)
        self._lookups[request_id] = look
        effects: list[Effect] = [LoadMemberships(self._token(_ForLookup(request_id)), user)]
        effects += [SendPeer(node, MembershipQuery(request_id, user)) for node in others]
        return effects

    def stored(self, token: int, ok: bool) -> list[Effect]:
        purpose = self._tokens.pop(token, None)
        if not isinstance(purpose, _ForChange):
            return []
        if purpose.ticket is not None:
            if not ok:
                self._awaited.pop(purpose.ticket, None)
                refused = Refused(ErrorCode.INTERNAL, "the change was not stored")
                return [Complete(purpose.ticket, refused)]
            awaited = self._awaited.get(purpose.ticket)
            if awaited is None:
                return [Complete(purpose.ticket, Ready())]
            awaited.on_disk = True
            awaited.home_copies += awaited.home_here
            return self._settle(purpose.ticket)
        if ok:
            return [SendPeer(purpose.peer, MembershipAck(purpose.request_id))]
        return []  # unacknowledged: the gateway sends it again

    def loaded(
        self,
        token: int,
        changes: list[MembershipChange] | None,
        markers: list[ReadMarker] | None = None,
    ) -> list[Effect]:
        purpose = self._tokens.pop(token, None)
        if not isinstance(purpose, _ForLookup):
            return []
        markers = markers or []
        if purpose.peer:
            if changes is None:
                return []  # no answer: the asker's lookup does without this node
            reply = MembershipReply(
                purpose.request_id, changes[:MEMBERSHIPS_MAX], markers[:MEMBERSHIPS_MAX]
            )
            return [SendPeer(purpose.peer, reply)]
        read = changes is not None  # a failed read answers, but speaks for nothing
        return self._answered(purpose.request_id, self.node_id, changes or [], markers, read=read)

    def handle(
        self,
        sender: str,
        message: MembershipUpdate
        | ReadMarkerUpdate
        | MembershipAck
        | MembershipQuery
        | MembershipReply,
    ) -> list[Effect]:
        match message:
            case MembershipUpdate(request_id, change):
                token = self._token(_ForChange(None, sender, request_id))
                return [StoreMembership(token, change)]
            case ReadMarkerUpdate(request_id, marker):
                token = self._token(_ForChange(None, sender, request_id))
                return [StoreReadMarker(token, marker)]
            case MembershipAck(request_id):
                spread = self._spreading.get(request_id)
                if spread is None or spread.node != sender:
                    return []
                del self._spreading[request_id]
                self.stats.changes_spread += 1
                if spread.ticket is None or spread.ticket not in self._awaited:
                    return []
                self._awaited[spread.ticket].home_copies += 1
                return self._settle(spread.ticket)
            case MembershipQuery(request_id, user):
                return [LoadMemberships(self._token(_ForLookup(request_id, sender)), user)]
            case MembershipReply(request_id, changes, markers):
                return self._answered(request_id, sender, changes, markers)
        return []

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for request_id in [key for key, look in self._lookups.items() if now >= look.deadline]:
            effects += self._finish(request_id)
        for ticket in [key for key, waits in self._awaited.items() if now >= waits.deadline]:
            del self._awaited[ticket]
            reason = "none of the user's nodes took the read marker in time"
            effects.append(Complete(ticket, Refused(ErrorCode.UNAVAILABLE, reason)))
        if self._unplaced and self.user_homes(self._unplaced[0][0].user) is not None:
            unplaced, self._unplaced = self._unplaced, []
            for record, waiting in unplaced:
                effects += self._spread(record, now, waiting)
                if waiting is not None and waiting in self._awaited:
                    effects += self._settle(waiting)
        retry_s = self.config.retry_interval_s
        for request_id, spread in list(self._spreading.items()):
            wait_s = min(retry_s * 2 ** (spread.attempts - 1), SPREAD_RETRY_MAX_S)
            if now - spread.sent_at < wait_s:
                continue
            if spread.attempts >= SPREAD_ATTEMPTS_MAX:
                del self._spreading[request_id]
                self.stats.spreads_abandoned += 1
                continue
            spread.attempts += 1
            spread.sent_at = now
            effects.append(SendPeer(spread.node, _update(request_id, spread.record)))
        return effects

    def _settle(self, ticket: int) -> list[Effect]:
        awaited = self._awaited[ticket]
        if not awaited.on_disk or awaited.home_copies < awaited.needed:
            return []
        del self._awaited[ticket]
        return [Complete(ticket, Ready())]

    def _answered(
        self,
        request_id: int,
        node: str,
        changes: list[MembershipChange],
        markers: list[ReadMarker],
        *,
        read: bool = True,
    ) -> list[Effect]:
        look = self._lookups.get(request_id)
        if look is None or node not in look.waiting:
            return []
        look.waiting.discard(node)
        look.changes += changes
        look.markers += markers
        look.homes_answered += read and node in look.homes
        return [] if look.waiting else self._finish(request_id)

    def _finish(self, request_id: int) -> list[Effect]:
        look = self._lookups.pop(request_id)
        # Complete when the answers overlap every W copies of a marker or a change.
        overlap = max(1, min(self.config.resume_quorum, len(look.homes)))
        complete = bool(look.homes) and look.homes_answered >= overlap
        known = sorted(latest(look.changes))
        rooms = Rooms(rooms_joined(look.changes), greatest(look.markers), complete, known)
        return [Complete(look.ticket, rooms)]

    def _token(self, purpose: _ForChange | _ForLookup) -> int:
        token = next(self.numbers)
        self._tokens[token] = purpose
        return token


def _store(token: int, record: UserRecord) -> Effect:
    if isinstance(record, ReadMarker):
        return StoreReadMarker(token, record)
    return StoreMembership(token, record)


def _update(request_id: int, record: UserRecord) -> MembershipUpdate | ReadMarkerUpdate:
    if isinstance(record, ReadMarker):
        return ReadMarkerUpdate(request_id, record)
    return MembershipUpdate(request_id, record)
