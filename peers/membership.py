"""Membership: which nodes make up the mesh, and which of them are alive, as one node sees it.

Theory of operation. Every node sends a heartbeat to every other known node each
`heartbeat_interval_s`. A heartbeat carries the sender's own record and a rotating slice
of its member table (gossip), so a node that knows one seed learns the whole mesh within
a few rounds. Records merge as a semilattice (records.py): the newest incarnation of a
node replaces every trace of its older starts, and `left` is final for an incarnation.

Liveness is judged locally from direct heartbeats only (failure_detector.py): alive, then
suspect after `suspect_after_s` of silence, then dead after `dead_after_s`. While a node
suspects a peer, its heartbeats to that peer say so, and a live peer answers at once:
that answer is the refutation, and it clears the suspicion without waiting a round.
Dead peers still get heartbeats, so a paused or partitioned node is welcomed back the
moment it is heard again, and a restarted node with no seeds of its own is found by the
nodes that remember it. A node first heard from (or heard in a new incarnation) is
answered at once, so a joiner learns the mesh in one round trip rather than one round.
A node leaving cleanly sends `Leave`, and peers mark it `left`.

Records are claims, checked before they are believed. Only trusted node ids enter the
table (with CURVE, the ids whose keys the node trusts). An incarnation further ahead of
this node's wall clock than the allowed skew is refused: incarnations are wall-clock
milliseconds, and one near 2^63 would outlive every real start. Only a node can speak
for itself; the others only pass on what it said. So while a node's own heartbeats are
heard, gossip about it (another start, another address, a departure) is not believed;
a departure gossip did bring is undone by the node's next heartbeat from that start;
and a start known only from gossip gives way when, a whole dead window later, the node
still speaks from another.

This module is sans-IO: it takes messages and the current time, and returns effects
(messages to send, state changes to report). It reads no clock and touches no socket.
"""

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from peers.failure_detector import DetectorConfig, Liveness, judge
from peers.limits import GOSSIP_RECORDS_MAX, MEMBERS_MAX
from peers.records import MemberRecord, merge_record
from peers.wire import Heartbeat, Leave, PeerMessage

# Anomalies about distinct ids reported once each; past it they are only counted.
ANOMALIES_REMEMBERED_MAX = 2 * MEMBERS_MAX


class MemberState(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    heartbeat_interval_s: float = 0.5
    suspect_after_s: float = 2.0
    dead_after_s: float = 5.0
    # How far ahead of this node's wall clock another node's incarnation may be.
    clock_skew_max_s: float = 60.0
    # A peer the data dir remembers, silent this long, is forgotten: it was removed, or
    # moved; were it only down, it finds the mesh again through its own seeds and book.
    remembered_peer_window_s: float = 600.0

    def __post_init__(self) -> None:
        if self.heartbeat_interval_s <= 0:
            raise ValueError("heartbeat_interval_s must be positive")
        if self.suspect_after_s <= self.heartbeat_interval_s:
            raise ValueError("suspect_after_s must exceed heartbeat_interval_s")
        DetectorConfig(self.suspect_after_s, self.dead_after_s)  # validates the pair
        if self.clock_skew_max_s <= 0:
            raise ValueError("clock_skew_max_s must be positive")
        if self.remembered_peer_window_s < self.dead_after_s:
            raise ValueError("remembered_peer_window_s must be at least dead_after_s")

    @property
    def detector(self) -> DetectorConfig:
        return DetectorConfig(self.suspect_after_s, self.dead_after_s)


_STATE_OF_LIVENESS = {
    Liveness.ALIVE: MemberState.ALIVE,
    Liveness.SUSPECT: MemberState.SUSPECT,
    Liveness.DEAD: MemberState.DEAD,
}


# Effects: what the shell must do or report after an event.


@dataclass(frozen=True, slots=True)
class SendTo:
    address: str
    message: PeerMessage
    node_id: str | None = None  # the node expected at `address`; None for a bare seed


@dataclass(frozen=True, slots=True)
class StateChanged:
    member_id: str
    address: str
    incarnation: int
    before: MemberState | None  # None: first heard of
    after: MemberState
    new_incarnation: bool  # a new start of the node: drop anything held for the old one


@dataclass(frozen=True, slots=True)
class SeedUnanswered:
    address: str
    attempts: int
    retry_in_s: float
    remembered: bool = False  # only the data dir's peer book names it

    @property
    def worth_a_warning(self) -> bool:
        # The first attempts fail routinely while the mesh starts together; a remembered
        # peer may be gone for good, and is forgotten after a window instead.
        return self.attempts >= 3 and not self.remembered


@dataclass(frozen=True, slots=True)
class RememberedPeerForgotten:
    """A peer the book remembered did not answer for the whole window: no longer probed,
    and left out of the book."""

    address: str
    silent_s: float


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Input that was ignored on purpose; logged and counted by the shell."""

    reason: str


Effect = SendTo | StateChanged | SeedUnanswered | RememberedPeerForgotten | Anomaly


@dataclass(frozen=True, slots=True)
class MemberView:
    """One row of the membership as this node sees it."""

    id: str
    address: str
    state: MemberState
    incarnation: int
    last_heard_s: float | None  # None: known only through gossip so far


@dataclass(slots=True)
class _Peer:
    record: MemberRecord
    liveness: Liveness
    known_since: float
    last_heard_at: float | None
    left_by_hearsay: bool = False  # `left` came from gossip: the node's own word undoes it

    @property
    def state(self) -> MemberState:
        return MemberState.LEFT if self.record.left else _STATE_OF_LIVENESS[self.liveness]

    def silence_s(self, now: float) -> float:
        heard = self.known_since if self.last_heard_at is None else self.last_heard_at
        return now - heard


class _Learned(enum.Enum):
    STALE = "about an older start than we know"
    KNOWN = "a start we already knew"
    NEW = "a node or start we had not known"


@dataclass(slots=True)
class _SeedProbe:
    attempts: int = 0
    next_at: float = 0.0
    remembered: bool = False
    silent_since: float = 0.0


@dataclass(slots=True)
class MembershipStatistics:
    heartbeats_sent: int = 0
    heartbeats_received: int = 0
    refutations_sent: int = 0
    welcomes_sent: int = 0
    stale_messages: int = 0
    members_rejected: int = 0
    state_changes: int = 0
    untrusted_records: int = 0
    future_incarnations: int = 0
    hearsay_ignored: int = 0


@dataclass
class Membership:
    """One node's membership state machine."""

    own: MemberRecord
    seeds: tuple[str, ...]
    config: MembershipConfig
    now: float  # the time of creation; every later event brings its own
    # Wall-clock ms minus `now` in ms: bounds incarnations without reading a clock.
    wall_offset_ms: int = 0
    # The node ids that may be members; None admits any (insecure development mode).
    trusted: frozenset[str] | None = None
    # The seeds only the data dir's peer book names (not configured): forgotten when silent.
    remembered: frozenset[str] = frozenset()
    _peers: dict[str, _Peer] = field(default_factory=dict, init=False)
    _seed_probes: dict[str, _SeedProbe] = field(default_factory=dict, init=False)
    _sequence: int = field(default=0, init=False)
    _next_heartbeat_at: float = field(init=False)
    _gossip_offset: int = field(default=0, init=False)
    _leaving: bool = field(default=False, init=False)
    _said: set[tuple[str, str]] = field(default_factory=set, init=False)  # (anomaly, id)
    stats: MembershipStatistics = field(default_factory=MembershipStatistics, init=False)

    def __post_init__(self) -> None:
        assert not self.own.left
        self._next_heartbeat_at = self.now
        for address in self.seeds:
            if address != self.own.address:
                remembered = address in self.remembered
                self._seed_probes[address] = _SeedProbe(
                    next_at=self.now, remembered=remembered, silent_since=self.now
                )

    # ---- events ----

    def handle_message(self, message: PeerMessage, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if message.sender.id == self.own.id:
            if message.sender.address != self.own.address:
                effects.append(Anomaly(f"another node claims our id from {message.sender.address}"))
            return effects
        if isinstance(message, Leave):
            self._learn(message.sender, now, direct=False, effects=effects, own_word=True)
            return effects
        self.stats.heartbeats_received += 1
        learned = self._learn(message.sender, now, direct=True, effects=effects, own_word=True)
        if learned is _Learned.STALE:
            self.stats.stale_messages += 1
            return effects  # from an older start of the sender: its view is stale too
        for record in message.gossip:
            if record.id != self.own.id:
                self._learn(record, now, direct=False, effects=effects)
        if self._leaving:
            return effects
        sender = message.sender
        if learned is _Learned.NEW:
            self.stats.welcomes_sent += 1
            self._send_heartbeat(sender.address, False, effects, node_id=sender.id)
        elif message.suspects_you:
            self.stats.refutations_sent += 1
            self._send_heartbeat(sender.address, False, effects, node_id=sender.id)
        return effects

    def tick(self, now: float) -> list[Effect]:
        """Advance time: judge silences, send heartbeats that are due, retry seeds."""
        effects: list[Effect] = []
        if self._leaving:
            return effects
        for peer in self._peers.values():
            if peer.record.left:
                continue
            liveness = judge(peer.silence_s(now), self.config.detector)
            if liveness != peer.liveness:
                before = peer.state
                peer.liveness = liveness
                self._changed(peer, before, new_incarnation=False, effects=effects)
        if now >= self._next_heartbeat_at:
            self._next_heartbeat_at = now + self.config.heartbeat_interval_s
            self._sequence += 1
            for peer in self._peers.values():
                if not peer.record.left:
                    suspects = peer.liveness is not Liveness.ALIVE
                    self._send_heartbeat(
                        peer.record.address, suspects, effects, node_id=peer.record.id
                    )
        self._probe_seeds(now, effects)
        return effects

    def set_trusted(self, trusted: frozenset[str], now: float) -> list[Effect]:
        """A new set of trusted ids: members no longer in it are dropped at once."""
        del now  # immediate; the parameter keeps every event's signature alike
        self.trusted = trusted
        self._said.clear()
        effects: list[Effect] = []
        for member_id in [member for member in self._peers if member not in trusted]:
            peer = self._peers.pop(member_id)
            effects.append(
                StateChanged(
                    member_id,
                    peer.record.address,
                    peer.record.incarnation,
                    peer.state,
                    MemberState.LEFT,
                    new_incarnation=True,
                )
            )
            effects.append(Anomaly(f"{member_id} is no longer trusted; dropped from the mesh"))
        return effects

    def leave(self, now: float) -> list[Effect]:
        """Announce a clean departure to every peer; after this the node sends nothing."""
        del now  # leaving is immediate; the parameter keeps every event's signature alike
        self._leaving = True
        self.own = MemberRecord(self.own.id, self.own.address, self.own.incarnation, left=True)
        return [
            SendTo(peer.record.address, Leave(sender=self.own), peer.record.id)
            for peer in self._peers.values()
            if not peer.record.left
        ]

    # ---- queries ----

    def members(self, now: float) -> list[MemberView]:
        """Every member including this node, sorted by id."""
        rows = [
            MemberView(
                id=self.own.id,
                address=self.own.address,
                state=MemberState.LEFT if self._leaving else MemberState.ALIVE,
                incarnation=self.own.incarnation,
                last_heard_s=0.0,
            )
        ]
        for peer in self._peers.values():
            heard = None if peer.last_heard_at is None else max(0.0, now - peer.last_heard_at)
            rows.append(
                MemberView(
                    peer.record.id,
                    peer.record.address,
                    peer.state,
                    peer.record.incarnation,
                    heard,
                )
            )
        return sorted(rows, key=lambda row: row.id)

    def state_of(self, member_id: str) -> MemberState | None:
        peer = self._peers.get(member_id)
        return None if peer is None else peer.state

    def records(self) -> list[MemberRecord]:
        return [self.own, *(peer.record for peer in self._peers.values())]

    def records_to_remember(self, now: float) -> list[MemberRecord]:
        """The peers worth a place in the data dir's book: all but those silent for the
        remembered-peer window (gossip of a long-dead member must not keep it there)."""
        window_s = self.config.remembered_peer_window_s
        return [peer.record for peer in self._peers.values() if peer.silence_s(now) < window_s]

    def remembered_addresses(self) -> list[str]:
        """The remembered peers not yet heard and not yet forgotten: kept in the book
        until their window ends, though no record of them exists yet."""
        answered = set(self._heard_addresses())
        return sorted(
            address
            for address, probe in self._seed_probes.items()
            if probe.remembered and address not in answered
        )

    def peer_addresses(self, now: float) -> list[str]:
        """Where the peers to remember were last reached: seeds for this node's next start."""
        heard = {record.address for record in self.records_to_remember(now)}
        return sorted(heard | set(self.remembered_addresses()))

    # ---- internals ----

    def _learn(
        self,
        record: MemberRecord,
        now: float,
        *,
        direct: bool,
        effects: list[Effect],
        own_word: bool = False,
    ) -> "_Learned":
        """Fold one record into the table. `own_word`: the record's node sent it itself."""
        if not self._believable(record, now, effects):
            return _Learned.STALE if own_word else _Learned.KNOWN
        peer = self._peers.get(record.id)
        if peer is not None and not own_word and self._heard_alive(peer):
            if record != peer.record and record.incarnation >= peer.record.incarnation:
                self.stats.hearsay_ignored += 1
            return _Learned.KNOWN
        if peer is not None and direct and self._outlived_hearsay(peer, record, now):
            peer = None
            del self._peers[record.id]
        if peer is None:
            if len(self._peers) + 1 >= MEMBERS_MAX:
                self.stats.members_rejected += 1
                reason = f"member table full ({MEMBERS_MAX}); ignored {record.id}"
                self._say_once("full", record.id, reason, effects)
                return _Learned.KNOWN
            hearsay_left = record.left and not own_word
            peer = _Peer(record, Liveness.ALIVE, now, now if direct else None, hearsay_left)
            self._peers[record.id] = peer
            self._changed(peer, None, new_incarnation=True, effects=effects)
            return _Learned.NEW
        if record.incarnation < peer.record.incarnation:
            return _Learned.STALE
        before = peer.state
        merged = self._merged(peer, record, own_word=own_word)
        if merged.incarnation > peer.record.incarnation:
            # A new start of the node: forget everything about the old one.
            hearsay_left = merged.left and not own_word
            fresh = _Peer(merged, Liveness.ALIVE, now, now if direct else None, hearsay_left)
            self._peers[record.id] = fresh
            self._changed(fresh, before, new_incarnation=True, effects=effects)
            return _Learned.NEW
        if merged.left and not peer.record.left:
            peer.left_by_hearsay = not own_word
        peer.record = merged
        if direct and not merged.left:
            peer.last_heard_at = now
            peer.liveness = Liveness.ALIVE
        if peer.state != before:
            self._changed(peer, before, new_incarnation=False, effects=effects)
        return _Learned.KNOWN

    def _believable(self, record: MemberRecord, now: float, effects: list[Effect]) -> bool:
        """Is the record about a node that may be a member, at a possible incarnation?"""
        if self.trusted is not None and record.id not in self.trusted:
            self.stats.untrusted_records += 1
            self._say_once(
                "untrusted", record.id, f"ignored {record.id}: not a trusted node id", effects
            )
            return False
        wall_ms = now * 1000 + self.wall_offset_ms
        if record.incarnation > wall_ms + self.config.clock_skew_max_s * 1000:
            self.stats.future_incarnations += 1
            reason = (
                f"ignored {record.id} at incarnation {record.incarnation}: more than "
                f"{self.config.clock_skew_max_s:g}s ahead of this node's clock"
            )
            self._say_once("future", record.id, reason, effects)
            return False
        return True

    def _heard_alive(self, peer: _Peer) -> bool:
        """Do we hear this node ourselves? Then hearsay about it (another start, another
        address, a departure) is not believed: its own heartbeats say otherwise."""
        return (
            not peer.record.left
            and peer.last_heard_at is not None
            and peer.liveness is Liveness.ALIVE
        )

    @staticmethod
    def _merged(peer: _Peer, record: MemberRecord, *, own_word: bool) -> MemberRecord:
        """The record to hold. Within one start, a node's own word stands over gossip: its
        address is the one it says, and a departure only gossip claimed is undone."""
        if not own_word or record.incarnation != peer.record.incarnation:
            return merge_record(peer.record, record)
        left = record.left or (peer.record.left and not peer.left_by_hearsay)
        return MemberRecord(record.id, record.address, record.incarnation, left)

    def _outlived_hearsay(self, peer: _Peer, record: MemberRecord, now: float) -> bool:
        """The node speaks from an older start than the one gossip claimed, and the
        claimed start has not been heard from in a whole dead window: the claim was false."""
        return (
            record.incarnation < peer.record.incarnation
            and not record.left
            and peer.last_heard_at is None
            and now - peer.known_since >= self.config.dead_after_s
        )

    def _changed(
        self,
        peer: _Peer,
        before: MemberState | None,
        *,
        new_incarnation: bool,
        effects: list[Effect],
    ) -> None:
        self.stats.state_changes += 1
        effects.append(
            StateChanged(
                peer.record.id,
                peer.record.address,
                peer.record.incarnation,
                before,
                peer.state,
                new_incarnation,
            )
        )

    def _send_heartbeat(
        self,
        address: str,
        suspects_you: bool,
        effects: list[Effect],
        *,
        node_id: str | None = None,
    ) -> None:
        self.stats.heartbeats_sent += 1
        heartbeat = Heartbeat(self.own, self._sequence, self._gossip(), suspects_you)
        effects.append(SendTo(address, heartbeat, node_id))

    def _say_once(self, kind: str, member_id: str, reason: str, effects: list[Effect]) -> None:
        """An anomaly about one id is reported the first time only (it may recur on every
        heartbeat); the statistics count every time."""
        if (kind, member_id) not in self._said and len(self._said) < ANOMALIES_REMEMBERED_MAX:
            self._said.add((kind, member_id))
            effects.append(Anomaly(reason))

    def _gossip(self) -> list[MemberRecord]:
        """A rotating window of the table, so large tables spread over several rounds."""
        records = [peer.record for peer in self._peers.values()]
        if len(records) <= GOSSIP_RECORDS_MAX:
            return records
        start = self._gossip_offset % len(records)
        self._gossip_offset = start + GOSSIP_RECORDS_MAX
        window = records[start : start + GOSSIP_RECORDS_MAX]
        return window + records[: GOSSIP_RECORDS_MAX - len(window)]

    def _heard_addresses(self) -> Iterable[str]:
        for peer in self._peers.values():
            if peer.last_heard_at is not None and not peer.record.left:
                yield peer.record.address

    def _probe_seeds(self, now: float, effects: list[Effect]) -> None:
        if not self._seed_probes:
            return
        answered = set(self._heard_addresses())
        for address, probe in list(self._seed_probes.items()):
            if address in answered:
                probe.attempts = 0
                probe.next_at = probe.silent_since = now
                continue
            silent_s = now - probe.silent_since
            if probe.remembered and silent_s >= self.config.remembered_peer_window_s:
                del self._seed_probes[address]
                effects.append(RememberedPeerForgotten(address, silent_s))
                continue
            if now < probe.next_at:
                continue
            probe.attempts += 1
            # Doubling from one heartbeat interval, capped at the dead window: a seed that
            # comes back is noticed no later than a silent peer would be declared dead.
            delay_s = min(
                self.config.dead_after_s,
                self.config.heartbeat_interval_s * 2 ** min(probe.attempts - 1, 16),
            )
            probe.next_at = now + delay_s
            self._send_heartbeat(address, False, effects)
            if probe.attempts > 1:
                effects.append(
                    SeedUnanswered(address, probe.attempts - 1, delay_s, probe.remembered)
                )
