"""The bookkeeping of one send: at the gateway (a forward) and at the coordinator (a write).

A write collects acknowledgements from its replicas; once W copies are on disk it is
acknowledged to everyone who asked for it. Each replica reports the id it stored the
message under: a retry that reached another coordinator may have met an older copy of the
same (sender, client message id), and the smallest id wins everywhere, so a send never
becomes two messages.
"""

from dataclasses import dataclass, field

import msgspec

from router.effects import Acked, Outcome, Refused
from router.error_codes import ErrorCode
from router.message_ids import MessageId
from router.records import REACTION_KEY_BYTES_MAX, EventKind, RoomMessage
from router.room_state import STATE_KINDS, state_problem


class LocalOrigin(msgspec.Struct, frozen=True):
    ticket: int  # a request of this node's own shell


class RemoteOrigin(msgspec.Struct, frozen=True):
    node: str  # a gateway that forwarded the send
    forward_id: int


Origin = LocalOrigin | RemoteOrigin


class SendRequest(msgspec.Struct, frozen=True):
    """A client's send, as it enters the mesh: a message, or a relation of `target`
    (router/event_rules.py)."""

    room: str
    sender: str
    client_msg_id: str
    body: str
    kind: EventKind = "message"
    target: str | None = None
    reaction_key: str | None = None
    reply_to: str | None = None
    subject: str | None = None  # the user a state event is about (router/room_state.py)


def request_problem(request: SendRequest) -> str | None:
    """Why a request's fields do not make one event of its kind (a peer's may not)."""
    if request.kind in STATE_KINDS:
        return state_problem(request)
    if request.subject is not None:
        return "only a state event names a user"
    relation = request.kind != "message"
    if relation != (request.target is not None):
        return "a relation, and only a relation, names a target"
    if (request.kind in {"reaction", "unreaction"}) != (request.reaction_key is not None):
        return "a reaction, and only a reaction, has a key"
    if relation and request.reply_to is not None:
        return "only a message replies to another"
    if request.kind not in {"message", "edit"} and request.body:
        return "only a message or an edit has a body"
    key = request.reaction_key
    if key is not None and len(key.encode()) > REACTION_KEY_BYTES_MAX:
        return f"a reaction key is at most {REACTION_KEY_BYTES_MAX} bytes"
    return None


def same_event(one: RoomMessage, other: RoomMessage) -> bool:
    """Two copies of one send are one event: in one room, of one kind, target and key."""
    return (one.room, one.kind, one.target, one.reaction_key) == (
        other.room,
        other.kind,
        other.target,
        other.reaction_key,
    )


@dataclass(slots=True)
class PendingForward:
    """A send this node, as gateway, handed to the room's coordinator."""

    ticket: int
    request: SendRequest
    deadline: float
    target: str
    sent_at: float


@dataclass(slots=True)
class Write:
    write_id: int
    message: RoomMessage  # as assigned by this coordinator
    targets: list[str]  # the other replicas written to
    wanted: int  # W for this room and mesh size
    deadline: float
    origins: list[Origin]
    sent_at: float
    kept: dict[str, str] = field(default_factory=dict)  # replica -> id stored under
    failed: set[str] = field(default_factory=set)  # replicas whose store failed
    duplicate: bool = False  # this coordinator already held the message
    hints: dict[str, str] = field(default_factory=dict)  # stand-in -> the replica it covers
    outcome: Outcome | None = None
    drained: bool = False  # its turn in the room's fan-out order has come
    opened_at: float = 0.0  # when this coordinator opened it (sent_at moves on retries)

    def attach(self, origin: Origin) -> bool:
        """Add someone waiting for this write; False when they were already waiting."""
        if origin in self.origins:
            return False
        self.origins.append(origin)
        return True

    def record(self, replica: str, kept_id: str | None) -> None:
        if kept_id:
            self.kept[replica] = kept_id
        else:
            self.failed.add(replica)

    @property
    def quorum_reached(self) -> bool:
        return len(self.kept) >= self.wanted

    @property
    def hopeless(self) -> bool:
        """Too many replicas failed to store it for W copies ever to exist."""
        return len(self.failed) > len(self.targets) + 1 - self.wanted

    @property
    def waiting_on(self) -> list[str]:
        return [node for node in self.targets if node not in self.kept and node not in self.failed]

    def settle(self) -> Acked:
        """The acknowledged message: under the smallest id any replica stored it as."""
        smallest = min(self.kept.values())
        message = self.under(smallest)
        outcome = Acked(message, self.duplicate or smallest != self.message.id)
        self.outcome = outcome
        return outcome

    def under(self, message_id: str) -> RoomMessage:
        """The message as stored under `message_id` (an older twin's id, perhaps)."""
        if message_id == self.message.id:
            return self.message
        time_ms = MessageId.parse(message_id).time_ms
        return msgspec.structs.replace(self.message, id=message_id, time_ms=time_ms)

    def visible_copy(self, node: str) -> RoomMessage | None:
        """What history shows of this write: the acknowledged message, or for a failed
        one the copy `node` itself stored (it is in that node's history all the same)."""
        if isinstance(self.outcome, Acked):
            return self.outcome.message
        kept = self.kept.get(node)
        return None if kept is None else self.under(kept)

    def give_up(self, reason: str, code: ErrorCode = ErrorCode.UNAVAILABLE) -> Refused:
        outcome = Refused(code, reason)
        self.outcome = outcome
        return outcome

    @property
    def finished(self) -> bool:
        """Nothing left to do: settled and every target answered."""
        return self.outcome is not None and not self.waiting_on
