"""What the engine's roles ask of each other: returned beside effects, routed by the engine.

No role calls another. A role that needs another's work returns one of these, and
RoomEngine hands it on: a forward to coordinate here, a settled write to publish, a
publication for this node's sessions, a read wanted and its outcome, a copy to repair.
"""

from dataclasses import dataclass

from router.effects import Effect, Outcome
from router.records import RoomMessage
from router.wire import RoomEvent
from router.writes import Origin, SendRequest


@dataclass(frozen=True, slots=True)
class Coordinate:
    """Carry out a send as the room's coordinator (forwarding → coordinator)."""

    origin: Origin
    request: SendRequest


@dataclass(frozen=True, slots=True)
class Publish:
    """Push an event to every node interested in its room (→ fan-out)."""

    event: RoomEvent


@dataclass(frozen=True, slots=True)
class DeliverHere:
    """Hand an event to this node's sessions in its room (→ subscriptions); a catch-up's
    own pages pass the pushes it holds back."""

    event: RoomEvent
    caught_up: bool = False


@dataclass(frozen=True, slots=True)
class Repair:
    """Give `node` these copies, which it lacks or holds under a twin's larger id
    (→ replica, which stores its own and sends the others')."""

    node: str
    messages: tuple[RoomMessage, ...]


@dataclass(frozen=True, slots=True)
class AnnounceLate:
    """A recent message reached this replica only by repair: have it pushed (→ fan-out)."""

    message: RoomMessage


@dataclass(frozen=True, slots=True)
class ClientRead:
    """A read of this node's client; a resume's replay began at `resume_since`."""

    ticket: int
    room: str
    resume_since: str | None = None


@dataclass(frozen=True, slots=True)
class CatchUpRead:
    """A page of a room's catch-up, from `after`."""

    room: str
    after: str


Reader = ClientRead | CatchUpRead


@dataclass(frozen=True, slots=True)
class ReadWanted:
    """A page from R replicas (→ quorum reads)."""

    reader: Reader
    room: str
    before: str | None
    after: str | None
    limit: int
    quorum: int | None = None
    late_since_ms: int | None = None
    bytes_max: int | None = None


@dataclass(frozen=True, slots=True)
class ReadDone:
    """The outcome of a ReadWanted (→ the client, or subscriptions for a catch-up)."""

    reader: Reader
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class RegisterHere:
    """This node wants the room's pushes from itself as a replica (→ fan-out)."""

    room: str


@dataclass(frozen=True, slots=True)
class WithdrawHere:
    room: str


InternalEvent = (
    Coordinate
    | Publish
    | DeliverHere
    | Repair
    | AnnounceLate
    | ReadWanted
    | ReadDone
    | RegisterHere
    | WithdrawHere
)

# What a role returns: effects for the shell, and internal events for the engine to route.
Step = Effect | InternalEvent
