"""Who may do what in a room: the state its state events make, as every replica folds it.

Theory of operation. A room's log holds, beside messages and their relations, state
events: `create`, `set_policy`, `set_role`, `invite`, `kick`, `ban`, `unban` and
`set_topic`. Replicas receive them late, twice and in any order, so the state is not
built in arrival order: it is the fold of the room's state events sorted by (time_ms,
id), each one checked against the state the events before it made, and skipped when its
sender had no right to it then. The same set of events gives the same state on every
replica, whatever order it came in.

- A room with no `create` is open and has no owner: anyone may join, read and post,
  and nobody moderates it. The first valid `create` makes its sender the owner.
- Roles rank owner > moderator > member; a user with none ranks below every role. An
  invitation in an invite-only room admits a user as a member would be.
- A moderator or owner may invite, kick, ban, unban and set the topic and the policy;
  kicking, banning or setting the role of a user needs a rank above that user's (or the
  user's own, going down), and a role can be given only up to one's own.
- Policies: `open` (anyone not banned), `invite` (members and the invited only),
  `read_only` (anyone not banned reads; moderators and owners post).
- A ban lasts from its time to an unban's. A message whose sender was banned at the
  message's time is hidden: a ban on one side of a partition also hides what the banned
  user wrote on the other side after it, once the sides meet.
"""

import bisect
import sys
from collections.abc import Iterable
from typing import Final, Literal, Protocol, get_args

import msgspec

from router.records import RoomMessage

Policy = Literal["open", "invite", "read_only"]
Role = Literal["owner", "moderator", "member"]
StateKind = Literal[
    "create", "set_policy", "set_role", "invite", "kick", "ban", "unban", "set_topic"
]
# What a user asks to do in a room; a state event is checked by its own kind.
Action = Literal["read", "post"]

POLICIES: Final[frozenset[str]] = frozenset(get_args(Policy))
ROLES: Final[frozenset[str]] = frozenset(get_args(Role))
STATE_KINDS: Final[frozenset[str]] = frozenset(get_args(StateKind))
# State events about one user name that user as the event's `subject`.
SUBJECT_KINDS: Final[frozenset[str]] = frozenset({"set_role", "invite", "kick", "ban", "unban"})
# State events whose body is their value (a policy, a role, a topic).
VALUE_KINDS: Final[frozenset[str]] = frozenset({"create", "set_policy", "set_role", "set_topic"})
TOPIC_CHARS_MAX: Final = 512
# State events one room's state is folded from, at most: past it a coordinator takes no
# more (router/room_states.py), so every replica folds the same ones.
ROOM_STATE_EVENTS_MAX: Final = 20_000

_RANK: Final[dict[str | None, int]] = {None: 0, "member": 1, "moderator": 2, "owner": 3}
_MODERATOR: Final = 2


class BanSpan(msgspec.Struct, frozen=True, array_like=True):
    """A ban from `from_ms` until `until_ms` (None: it stands)."""

    from_ms: int
    until_ms: int | None = None

    def covers(self, time_ms: int) -> bool:
        return self.from_ms <= time_ms and (self.until_ms is None or time_ms < self.until_ms)


class RoomStateView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A room's state as readers see it; equal states give equal views."""

    room: str
    created: bool = False
    created_by: str | None = None
    policy: Policy = "open"
    topic: str = ""
    roles: dict[str, Role] = {}
    invited: list[str] = []
    banned: list[str] = []
    bans: dict[str, list[BanSpan]] = {}  # every ban's span, standing or lifted
    last_event: str | None = None  # the newest state event folded in


class EventFields(Protocol):
    """What a state event's check reads: a stored event's fields, or a request's."""

    @property
    def sender(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def target(self) -> str | None: ...
    @property
    def reaction_key(self) -> str | None: ...
    @property
    def reply_to(self) -> str | None: ...


def state_problem(event: EventFields) -> str | None:
    """Why an event's fields do not make a state event of its kind (a peer's may not)."""
    kind = event.kind
    if kind not in STATE_KINDS:
        return f"{kind} is not a state event"
    if (kind in SUBJECT_KINDS) != (event.subject is not None):
        return "an event about a user, and only one, names the user"
    if event.target is not None or event.reaction_key is not None or event.reply_to is not None:
        return "a state event names no message and no reaction"
    if kind in {"create", "set_policy"} and event.body not in POLICIES and event.body:
        return f"a policy is one of {', '.join(sorted(POLICIES))}"
    if kind == "set_policy" and not event.body:
        return "set_policy names a policy"
    if kind == "set_role" and event.body not in ROLES:
        return f"a role is one of {', '.join(sorted(ROLES))}"
    if kind == "set_topic" and len(event.body) > TOPIC_CHARS_MAX:
        return f"a topic is at most {TOPIC_CHARS_MAX} characters"
    if kind not in VALUE_KINDS and event.body:
        return f"{kind} has no value"
    return None


class RoomState:
    """The fold of one room's state events (see the module's text)."""

    def __init__(self, room: str) -> None:
        self.room = room
        self._events: list[tuple[tuple[int, str], RoomMessage]] = []  # sorted by order
        self._ids: set[str] = set()
        self._reset()

    @classmethod
    def fold(cls, room: str, events: Iterable[RoomMessage]) -> "RoomState":
        state = cls(room)
        for event in events:
            state.apply(event)
        return state

    def _reset(self) -> None:
        self.created_by: str | None = None
        self.policy: Policy = "open"
        self.topic = ""
        self.roles: dict[str, Role] = {}
        self.invited: set[str] = set()
        self.bans: dict[str, list[BanSpan]] = {}

    def events(self) -> list[RoomMessage]:
        """Every state event folded in, valid or not, in (time_ms, id) order."""
        return [event for _, event in self._events]

    @property
    def event_count(self) -> int:
        return len(self._events)

    @property
    def last_event(self) -> str | None:
        return self._events[-1][1].id if self._events else None

    def apply(self, event: RoomMessage) -> bool:
        """Fold in a state event; True when it is new here (valid or not: an event its
        sender had no right to stays in the log, and counts as nothing)."""
        assert event.room == self.room and event.kind in STATE_KINDS
        if event.id in self._ids or state_problem(event) is not None:
            return False
        self._ids.add(event.id)
        entry = (event.order, event)
        if not self._events or self._events[-1][0] < entry[0]:
            self._events.append(entry)
            self._step(event)
            return True
        bisect.insort(self._events, entry, key=lambda held: held[0])
        self._reset()
        for _, held in self._events:
            self._step(held)
        return True

    # ---- what a user may do ----

    def rank(self, user: str) -> int:
        role = self.roles.get(user)
        if role is None and user in self.invited:
            role = "member"
        return _RANK[role]

    def banned(self, user: str) -> bool:
        spans = self.bans.get(user)
        return spans is not None and spans[-1].until_ms is None

    def refusal(self, user: str, action: Action) -> str | None:
        """Why `user` may not read or post in the room now; None when they may."""
        if self.banned(user):
            return f"{user} is banned from {self.room}"
        if self.policy == "invite" and self.rank(user) == 0:
            return f"{self.room} is invite-only and {user} is not invited"
        if action == "post" and self.policy == "read_only" and self.rank(user) < _MODERATOR:
            return f"only moderators post in {self.room}"
        return None

    def hides(self, message: RoomMessage) -> bool:
        """A message its sender wrote while banned (see the module's text)."""
        spans = self.bans.get(message.sender)
        return spans is not None and any(span.covers(message.time_ms) for span in spans)

    def event_refusal(self, event: EventFields) -> str | None:
        """Why the state now refuses `event` from its sender; None when it takes it."""
        if (problem := state_problem(event)) is not None:
            return problem
        return self._unauthorized(event)

    def view(self) -> RoomStateView:
        return RoomStateView(
            room=self.room,
            created=self.created_by is not None,
            created_by=self.created_by,
            policy=self.policy,
            topic=self.topic,
            roles=dict(sorted(self.roles.items())),
            invited=sorted(self.invited - self.roles.keys()),
            banned=sorted(user for user in self.bans if self.banned(user)),
            bans={user: list(spans) for user, spans in sorted(self.bans.items())},
            last_event=self.last_event,
        )

    # ---- the fold ----

    def _unauthorized(self, event: EventFields) -> str | None:
        actor, kind, subject = event.sender, event.kind, event.subject
        if kind == "create":
            return f"{self.room} was created already" if self.created_by is not None else None
        if self.created_by is None:
            return f"{self.room} has no owner: create it first"
        if self.banned(actor):
            return f"{actor} is banned from {self.room}"
        rank = self.rank(actor)
        if rank < _MODERATOR:
            return f"only moderators and owners may {kind.replace('_', ' ')} in {self.room}"
        if subject is None or kind in {"invite", "unban"}:
            return None
        if subject == actor and kind == "set_role":
            wanted = _RANK[event.body]
            return None if wanted <= rank else "nobody raises their own role"
        if self.rank(subject) >= rank:
            return f"{subject} ranks as high as {actor} in {self.room}"
        if kind == "set_role" and _RANK[event.body] > rank:
            return f"{actor} may give roles up to their own"
        return None

    def _step(self, event: RoomMessage) -> None:
        if self._unauthorized(event) is not None:
            return
        # Interned, so a policy or role read back from disk is the very constant the view
        # leaves out as its default: equal states encode alike on every replica.
        subject, value = event.subject, sys.intern(event.body)
        match event.kind:
            case "create":
                self.created_by = event.sender
                self.roles[event.sender] = "owner"
                self.policy = value or "open"  # type: ignore[assignment]
            case "set_policy":
                self.policy = value  # type: ignore[assignment]
            case "set_topic":
                self.topic = value
            case "set_role":
                assert subject is not None
                self.roles[subject] = value  # type: ignore[assignment]
            case "invite":
                assert subject is not None
                if not self.banned(subject):
                    self.invited.add(subject)
            case "kick" | "ban":
                assert subject is not None
                self.roles.pop(subject, None)
                self.invited.discard(subject)
                if event.kind == "ban" and not self.banned(subject):
                    self.bans.setdefault(subject, []).append(BanSpan(event.time_ms))
            case "unban":
                assert subject is not None
                spans = self.bans.get(subject)
                if spans and spans[-1].until_ms is None:
                    spans[-1] = BanSpan(spans[-1].from_ms, event.time_ms)
