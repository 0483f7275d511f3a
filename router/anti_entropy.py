"""Anti-entropy: replicas of a room compare what they hold and send each other what is missing.

Every round (one room, one other live replica of it) goes:

    A: digest of the room, bucket by bucket      -> DigestOffer
    B: the buckets that differ                   -> DigestDiff
    A: its ids of a differing bucket, a page     -> IdPage
    B: sends A what A lacks (Replicate), and     -> Want (the ids B lacks; next page)
    A: sends B what B lacks (Replicate), and the next page, until the bucket is done

It repairs what pushes and read repair never touched: writes a replica missed while it was
down or cut off, a node restored from an old disk. Copies travel as ordinary repairs, so
storage's rules (one message per sender and client message id, smallest id wins) apply.
One round per interval, a bounded number of buckets per round and a bounded page pace
the comparing; a budget of messages per second bounds the sending, so that refilling an
empty replica takes at most that share of the node from live traffic. What the budget
leaves out is found again by a later round (the digests still differ).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from router.digest import Digest, bucket_bounds, differing
from router.effects import Effect, ListRooms, LoadDigest, LoadIds, LoadMessages, SendPeer
from router.limits import BUCKETS_PER_ROUND
from router.records import RoomMessage
from router.wire import (
    DIGEST_BUCKETS_MAX,
    ID_PAGE_MAX,
    BucketDigest,
    DigestDiff,
    DigestOffer,
    IdPage,
    Replicate,
    Want,
)


@dataclass(frozen=True, slots=True)
class _Offer:
    room: str
    peer: str
    give_only: bool


@dataclass(frozen=True, slots=True)
class _Answer:
    node: str
    exchange_id: int
    room: str
    theirs: Digest
    sliced: bool
    give_only: bool


@dataclass(frozen=True, slots=True)
class _Page:
    node: str
    room: str
    bucket: str
    after: str
    give_only: bool


@dataclass(frozen=True, slots=True)
class _Compare:
    node: str
    room: str
    bucket: str
    theirs: frozenset[str]
    next_after: str  # "" when their page was the bucket's last
    give_only: bool  # they are no replica: send them nothing


@dataclass(frozen=True, slots=True)
class _SendTo:
    node: str


_Purpose = _Offer | _Answer | _Page | _Compare | _SendTo | None


@dataclass(slots=True)
class AntiEntropyStatistics:
    rounds: int = 0
    buckets_compared: int = 0
    messages_sent: int = 0
    messages_deferred: int = 0  # found missing past the budget: left to a later round


@dataclass(slots=True)
class AntiEntropy:
    node_id: str
    interval_s: float
    numbers: Iterator[int]
    live_replicas: Callable[[str], list[str]]
    is_replica: Callable[[str], bool]
    messages_per_s: float
    stats: AntiEntropyStatistics = field(default_factory=AntiEntropyStatistics)
    _tokens: dict[int, _Purpose] = field(default_factory=dict)
    _rooms: list[str] = field(default_factory=list)
    _cursor: int = 0
    _turns: dict[str, int] = field(default_factory=dict)  # room -> rounds it has had
    _next_round: float = 0.0
    _slices: dict[str, int] = field(default_factory=dict)  # room -> offset of its next offer
    # Messages that may be sent now: refilled at messages_per_s, up to a second's worth.
    _allowance: float = 0.0
    _refilled_at: float | None = None

    def owns(self, token: int) -> bool:
        return token in self._tokens

    def tick(self, now: float) -> list[Effect]:
        elapsed_s = self.interval_s if self._refilled_at is None else now - self._refilled_at
        self._refilled_at = now
        self._allowance = min(
            self.messages_per_s, self._allowance + max(0.0, elapsed_s) * self.messages_per_s
        )
        if now < self._next_round:
            return []
        self._next_round = now + self.interval_s
        if self._cursor >= len(self._rooms):
            self._cursor = 0
            return [ListRooms(self._token(None))]
        room = self._rooms[self._cursor]
        self._cursor += 1
        live = self.live_replicas(room)
        peers = [node for node in live if node != self.node_id]
        if not peers:
            return []
        # A node that is no replica of a room it holds copies of (written while it saw
        # only part of the mesh) hands them to the replicas and takes nothing back.
        give_only = self.node_id not in live and not self.is_replica(room)
        # Each room takes its peers in turn (a turn shared by all rooms could keep giving
        # one room the same peer forever).
        turn = self._turns.get(room, 0)
        self._turns[room] = turn + 1
        peer = peers[turn % len(peers)]
        self.stats.rounds += 1
        return [LoadDigest(self._token(_Offer(room, peer, give_only)), room)]

    def abandon(self, token: int) -> list[Effect]:
        """A read of this round failed: the round ends here; a later one compares again."""
        self._tokens.pop(token, None)
        return []

    def rooms_listed(self, token: int, rooms: list[str]) -> list[Effect]:
        self._tokens.pop(token, None)
        self._rooms = sorted(rooms)
        self._cursor = 0
        return []

    def digest_loaded(self, token: int, digest: Digest) -> list[Effect]:
        match self._tokens.pop(token, None):
            case _Offer(room, peer, give_only):
                buckets = sorted(digest)
                sliced = len(buckets) > DIGEST_BUCKETS_MAX
                if sliced:
                    start = self._slices.get(room, 0) % len(buckets)
                    buckets = (buckets[start:] + buckets[:start])[:DIGEST_BUCKETS_MAX]
                    buckets.sort()
                    self._slices[room] = start + DIGEST_BUCKETS_MAX
                offer = DigestOffer(
                    next(self.numbers),
                    room,
                    [BucketDigest(b, digest[b][0], digest[b][1]) for b in buckets],
                    give_only,
                )
                return [SendPeer(peer, offer)]
            case _Answer(node, exchange_id, room, theirs, sliced, give_only):
                mine = digest
                if sliced and theirs:
                    # Only the buckets the offer spans are comparable this round.
                    low, high = min(theirs), max(theirs)
                    mine = {b: v for b, v in digest.items() if low <= b <= high}
                buckets = differing(mine, theirs)[:DIGEST_BUCKETS_MAX]
                return [SendPeer(node, DigestDiff(exchange_id, room, buckets, give_only))]
        return []

    def ids_loaded(self, token: int, ids: list[str], more: bool) -> list[Effect]:
        match self._tokens.pop(token, None):
            case _Page(node, room, bucket, after, give_only):
                return [SendPeer(node, IdPage(room, bucket, after, ids, more, give_only))]
            case _Compare(node, room, bucket, theirs, next_after, give_only):
                mine = set(ids)
                effects: list[Effect] = []
                lacking_there, cut = self._within_budget([] if give_only else sorted(mine - theirs))
                if cut:
                    next_after = ""
                if lacking_there:
                    effects.append(LoadMessages(self._token(_SendTo(node)), room, lacking_there))
                lacking_here = sorted(theirs - mine)
                if lacking_here or next_after:
                    effects.append(SendPeer(node, Want(room, bucket, lacking_here, next_after)))
                return effects
        return []

    def messages_loaded(self, token: int, messages: list[RoomMessage]) -> list[Effect]:
        match self._tokens.pop(token, None):
            case _SendTo(node):
                self.stats.messages_sent += len(messages)
                return [SendPeer(node, Replicate(0, message)) for message in messages]
        return []

    def handle(
        self, sender: str, message: DigestOffer | DigestDiff | IdPage | Want
    ) -> list[Effect]:
        match message:
            case DigestOffer(exchange_id, room, buckets, give_only):
                theirs = {b.bucket: (b.count, b.total) for b in buckets}
                sliced = len(buckets) >= DIGEST_BUCKETS_MAX or give_only
                purpose = _Answer(sender, exchange_id, room, theirs, sliced, give_only)
                return [LoadDigest(self._token(purpose), room)]
            case DigestDiff(_, room, buckets, give_only):
                effects: list[Effect] = []
                for bucket in buckets[:BUCKETS_PER_ROUND]:
                    self.stats.buckets_compared += 1
                    start = bucket_bounds(bucket)[0]
                    effects.append(self._load_page(sender, room, bucket, start, give_only))
                return effects
            case IdPage(room, bucket, after, ids, more, give_only):
                upper = bucket_bounds(bucket)[1]
                if more and ids:
                    upper = ids[-1] + "~"  # "~" sorts after every id character
                next_after = ids[-1] if more else ""
                compare = _Compare(sender, room, bucket, frozenset(ids), next_after, give_only)
                # Twice the page: ours may hold more in the same range than theirs did.
                return [LoadIds(self._token(compare), room, after, upper, 2 * ID_PAGE_MAX)]
            case Want(room, bucket, ids, next_after):
                effects = []
                sending, cut = self._within_budget(list(ids))
                if cut:
                    next_after = ""
                if sending:
                    effects.append(LoadMessages(self._token(_SendTo(sender)), room, sending))
                if next_after:
                    # Only a giver asks for the next page, and it keeps giving.
                    giving = not self.is_replica(room)
                    effects.append(self._load_page(sender, room, bucket, next_after, giving))
                return effects
        return []

    def _within_budget(self, ids: list[str]) -> tuple[list[str], bool]:
        """As many of `ids` as the budget allows (spending it), and whether it cut them
        short: the bucket's exchange then stops, and a later round finds the rest."""
        allowed = min(len(ids), int(self._allowance))
        self._allowance -= allowed
        self.stats.messages_deferred += len(ids) - allowed
        return ids[:allowed], allowed < len(ids)

    def _load_page(self, node: str, room: str, bucket: str, after: str, give_only: bool) -> LoadIds:
        purpose = _Page(node, room, bucket, after, give_only)
        return LoadIds(self._token(purpose), room, after, bucket_bounds(bucket)[1], ID_PAGE_MAX)

    def _token(self, purpose: _Purpose) -> int:
        token = next(self.numbers)
        self._tokens[token] = purpose
        return token
