"""What the engine's roles ask of each other: returned beside effects, routed by the engine.

No role calls another. A role that needs another's work returns one of these, and
RoomEngine hands it on: a forward to coordinate here, a settled write to publish, a
publication for this node's sessions, a read wanted and its outcome, a copy to repair.
"""

import msgspec

from router.effects import Effect, Outcome
from router.records import RoomMessage
from router.wire import RoomEvent
from router.writes import Origin, SendRequest


class Coordinate(msgspec.Struct, frozen=True):
    """Carry out a send as the room's coordinator (forwarding → coordinator)."""

    origin: Origin
    request: SendRequest


class Publish(msgspec.Struct, frozen=True):
    """Push an event to every node interested in its room (→ fan-out)."""

    event: RoomEvent


class DeliverHere(msgspec.Struct, frozen=True):
    """Hand an event to this node's sessions in its room (→ subscriptions); a catch-up's
    own pages pass the pushes it holds back."""

    event: RoomEvent
    caught_up: bool = False


class Repair(msgspec.Struct, frozen=True):
    """Give `node` these copies, which it lacks or holds under a twin's larger id
    (→ replica, which stores its own and sends the others')."""

    node: str
    messages: tuple[RoomMessage, ...]


class StateAcknowledged(msgspec.Struct, frozen=True):
    """A room state event this node coordinated reached its write quorum (→ room states):
    folded in at once, as the next write of the room may come before this node's own
    copy is on disk (W copies may be made elsewhere first)."""

    message: RoomMessage


class AnnounceLate(msgspec.Struct, frozen=True):
    """A recent message reached this replica only by repair: have it pushed (→ fan-out)."""

    message: RoomMessage


class ClientRead(msgspec.Struct, frozen=True):
    """A read of this node's client; a resume's replay began at `resume_since`."""

    ticket: int
    room: str
    resume_since: str | None = None


class CatchUpRead(msgspec.Struct, frozen=True):
    """A page of a room's catch-up, from `after`, for the room's subscription numbered
    `subscription` on this node (a read that outlives it is dropped)."""

    room: str
    after: str
    subscription: int


Reader = ClientRead | CatchUpRead


class ReadWanted(msgspec.Struct, frozen=True):
    """A page from R replicas (→ quorum reads)."""

    reader: Reader
    room: str
    before: str | None
    after: str | None
    limit: int
    quorum: int | None = None
    late_since_ms: int | None = None
    bytes_max: int | None = None
    messages_only: bool = False
    state_only: bool = False


class ReadDone(msgspec.Struct, frozen=True):
    """The outcome of a ReadWanted (→ the client, or subscriptions for a catch-up)."""

    reader: Reader
    outcome: Outcome


class RegisterHere(msgspec.Struct, frozen=True):
    """This node wants the room's pushes from itself as a replica (→ fan-out)."""

    room: str


class WithdrawHere(msgspec.Struct, frozen=True):
    room: str


InternalEvent = (
    Coordinate
    | Publish
    | DeliverHere
    | Repair
    | AnnounceLate
    | StateAcknowledged
    | ReadWanted
    | ReadDone
    | RegisterHere
    | WithdrawHere
)

# What a role returns: effects for the shell, and internal events for the engine to route.
Step = Effect | InternalEvent
