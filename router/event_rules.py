"""Room events and the rules that fold them into one message's current view.

Theory of operation. A room log holds events, each with its own id: `message`, and the
relations `edit`, `delete`, `reaction` and `unreaction` that name a target message.
Replicas receive the same events late, twice and in any order, so every rule here is a
join: applying an event twice changes nothing, and any two orders of the same events end
in the same state.

- An edit is valid only from the target's sender and never of a relation; the latest
  valid edit by (time_ms, id) gives the body.
- A delete is valid only from the target's sender. It is final: the body, every edit and
  every reaction are dropped, and any that arrive later are dropped on arrival. The
  tombstone keeps who deleted the message and when (the earliest valid delete).
- A reaction or unreaction counts once per (sender, key): the later one by (time_ms, id)
  says whether the sender's reaction stands.
- A relation whose target has not arrived waits in the target's state and is folded in,
  in id order, when it does; if the target turns out to be a relation, they are dropped.

The rules are pure: a shell keeps a `MessageState` per id wherever it likes (in memory,
or beside the event in SQLite), calls `arrive` for every event under its own id and
`relate` for a relation under its target's, and erases from disk what a step reports.
"""

from typing import Annotated, Final

import msgspec

from router.records import (
    REACTION_KEY_BYTES_MAX,
    TIME_MS_MAX,
    Body,
    EventKind,
    MessageIdText,
    ReactionKey,
    RoomMessage,
    UserName,
)

# Relations one target holds before it arrives: the ones with the smallest ids, whatever
# the order they came in, so replicas past the bound still agree; the others are not
# held (counted by the view), and the target's view goes without them.
PENDING_PER_TARGET_MAX: Final = 1024
# (key, sender) pairs one message keeps reactions for: the smallest ones, so replicas
# agree past the bound; it keeps a message's view a few hundred KB at most.
REACTION_MARKS_MAX: Final = 1024

TimeMs = Annotated[int, msgspec.Meta(ge=0, le=TIME_MS_MAX)]

RELATION_KINDS: Final[frozenset[EventKind]] = frozenset(
    {"edit", "delete", "reaction", "unreaction"}
)


# Every event is stored and carried as the room log's record.
RoomEvent = RoomMessage


class Tombstone(msgspec.Struct, frozen=True):
    by: UserName
    at_ms: TimeMs
    event_id: MessageIdText

    @property
    def order(self) -> tuple[int, str]:
        return (self.at_ms, self.event_id)


class LatestEdit(msgspec.Struct, frozen=True):
    at_ms: TimeMs
    event_id: MessageIdText
    body: Body

    @property
    def order(self) -> tuple[int, str]:
        return (self.at_ms, self.event_id)


class ReactionMark(msgspec.Struct, frozen=True, array_like=True):
    at_ms: TimeMs
    event_id: MessageIdText
    stands: bool  # a reaction; an unreaction took it back

    @property
    def order(self) -> tuple[int, str]:
        return (self.at_ms, self.event_id)


class MessageState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What is known of one target id: its event once it has arrived, and what the
    relations made of it. `reactions` maps key -> sender -> the sender's latest mark."""

    event: RoomEvent | None = None
    edit: LatestEdit | None = None
    tombstone: Tombstone | None = None
    reactions: dict[str, dict[str, ReactionMark]] = {}
    pending: tuple[RoomEvent, ...] = ()  # relations that came before the target, by id


Reactions = Annotated[
    dict[
        ReactionKey,
        Annotated[dict[UserName, ReactionMark], msgspec.Meta(max_length=REACTION_MARKS_MAX)],
    ],
    msgspec.Meta(max_length=REACTION_MARKS_MAX),
]


class Relations(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What relations made of one message, as a replica tells a reader: the message's
    state without the message (which the page carries) and without waiting relations."""

    id: MessageIdText
    edit: LatestEdit | None = None
    tombstone: Tombstone | None = None
    reactions: Reactions = {}


def relations_of(message_id: str, state: MessageState) -> Relations | None:
    """None when relations made nothing of the message: it is its own view."""
    if state.edit is None and state.tombstone is None and not state.reactions:
        return None
    return Relations(
        id=message_id, edit=state.edit, tombstone=state.tombstone, reactions=state.reactions
    )


def state_of(event: RoomEvent, relations: Relations | None) -> MessageState:
    """A message's state from the message and what a replica said relations made of it."""
    if relations is None:
        return MessageState(event=event)
    state = MessageState(
        event=event,
        edit=relations.edit,
        tombstone=relations.tombstone,
        reactions=_capped(relations.reactions),
    )
    if state.tombstone is not None:
        return MessageState(
            event=msgspec.structs.replace(event, body=""), tombstone=state.tombstone
        )
    return state


class Folded(msgspec.Struct, frozen=True):
    state: MessageState
    changed: bool  # the view of the message moved
    erase: bool  # the target's content and every relation's content go from disk
    held: bool = True  # False: a relation that could not wait (PENDING_PER_TARGET_MAX)


def arrive(state: MessageState, event: RoomEvent) -> Folded:
    """The state of `event.id` once the event itself is here: a message folds in the
    relations that waited for it; any other kind ends them (a relation of a relation)."""
    if state.event is not None:
        return _same(state)  # a repeat
    if event.kind != "message":
        return Folded(MessageState(event=event), changed=False, erase=False)
    arrived = MessageState(event=event)
    erase = False
    for relation in state.pending:
        folded = relate(arrived, relation)
        arrived, erase = folded.state, erase or folded.erase
    return Folded(arrived, changed=True, erase=erase)


def relate(state: MessageState, event: RoomEvent) -> Folded:
    """The state of `event.target` after the relation `event`."""
    assert event.kind in RELATION_KINDS and event.target is not None
    if state.event is None:
        return _wait(state, event)
    return _relate(state, event)


def _wait(state: MessageState, event: RoomEvent) -> Folded:
    if any(waiting.id == event.id for waiting in state.pending):
        return Folded(state, changed=False, erase=False)
    pending = sorted((*state.pending, event), key=lambda waiting: waiting.id)
    held = len(pending) <= PENDING_PER_TARGET_MAX
    kept = tuple(pending[:PENDING_PER_TARGET_MAX])
    return Folded(msgspec.structs.replace(state, pending=kept), False, False, held)


def _relate(state: MessageState, event: RoomEvent) -> Folded:
    target = state.event
    assert target is not None
    if target.kind != "message":
        return Folded(state, changed=False, erase=False)  # a relation of a relation
    if state.tombstone is not None:
        # Final: a later delete may only move the tombstone to an earlier one.
        if event.kind == "delete" and event.sender == target.sender:
            return _delete(state, event)
        return Folded(state, changed=False, erase=True)
    match event.kind:
        case "edit":
            return _edit(state, event, target)
        case "delete":
            return _delete(state, event) if event.sender == target.sender else _same(state)
        case _:
            return _react(state, event)


def _same(state: MessageState) -> Folded:
    return Folded(state, changed=False, erase=False)


def _edit(state: MessageState, event: RoomEvent, target: RoomEvent) -> Folded:
    if event.sender != target.sender:
        return _same(state)
    if state.edit is not None and state.edit.order >= event.order:
        return _same(state)
    edit = LatestEdit(event.time_ms, event.id, event.body)
    return Folded(msgspec.structs.replace(state, edit=edit), changed=True, erase=False)


def _delete(state: MessageState, event: RoomEvent) -> Folded:
    tombstone = Tombstone(event.sender, event.time_ms, event.id)
    if state.tombstone is not None and state.tombstone.order <= tombstone.order:
        return Folded(state, changed=False, erase=True)
    assert state.event is not None
    # The body goes with the rest: a deleted message's state holds none.
    deleted = MessageState(event=msgspec.structs.replace(state.event, body=""), tombstone=tombstone)
    return Folded(deleted, changed=True, erase=True)


def _react(state: MessageState, event: RoomEvent) -> Folded:
    key = event.reaction_key
    if key is None or len(key.encode()) > REACTION_KEY_BYTES_MAX:
        return _same(state)
    marks = state.reactions.get(key, {})
    held = marks.get(event.sender)
    if held is not None and held.order >= event.order:
        return _same(state)
    mark = ReactionMark(event.time_ms, event.id, event.kind == "reaction")
    reactions = {**state.reactions, key: {**marks, event.sender: mark}}
    if held is None:
        reactions = _capped(reactions)
        if event.sender not in reactions.get(key, {}):
            return _same(state)  # past REACTION_MARKS_MAX, and not among the smallest
    return Folded(msgspec.structs.replace(state, reactions=reactions), changed=True, erase=False)


def _capped(reactions: dict[str, dict[str, ReactionMark]]) -> dict[str, dict[str, ReactionMark]]:
    """The marks of the REACTION_MARKS_MAX smallest (key, sender) pairs. The smallest of
    a union are the smallest of each side's smallest, so this commutes with merging."""
    if sum(len(marks) for marks in reactions.values()) <= REACTION_MARKS_MAX:
        return reactions
    pairs = sorted((key, sender) for key, marks in reactions.items() for sender in marks)
    kept: dict[str, dict[str, ReactionMark]] = {}
    for key, sender in pairs[:REACTION_MARKS_MAX]:
        kept.setdefault(key, {})[sender] = reactions[key][sender]
    return kept


def merge(one: MessageState, other: MessageState) -> MessageState:
    """The state two replicas' states of one id come to together: what folding the union
    of their events gives, whichever is `one` (a quorum read merges replicas with it)."""
    if one.event is None and other.event is None:
        waiting = {relation.id: relation for relation in (*one.pending, *other.pending)}
        kept = sorted(waiting.values(), key=lambda relation: relation.id)
        return MessageState(pending=tuple(kept[:PENDING_PER_TARGET_MAX]))
    if one.event is None:
        one, other = other, one
    assert one.event is not None
    if other.event is None:
        for relation in other.pending:
            one = relate(one, relation).state
        return one
    return _merge_arrived(one, other)


def _merge_arrived(one: MessageState, other: MessageState) -> MessageState:
    assert one.event is not None and other.event is not None
    # The same id names the same event; a peer that says otherwise still gets one answer.
    event = min(one.event, other.event, key=msgspec.msgpack.encode)
    if event.kind != "message":
        return MessageState(event=event)
    tombstones = [state.tombstone for state in (one, other) if state.tombstone is not None]
    if tombstones:
        earliest = min(tombstones, key=lambda tombstone: tombstone.order)
        return MessageState(event=msgspec.structs.replace(event, body=""), tombstone=earliest)
    edits = [state.edit for state in (one, other) if state.edit is not None]
    latest = max(edits, key=lambda edit: edit.order) if edits else None
    reactions: dict[str, dict[str, ReactionMark]] = {}
    for state in (one, other):
        for key, marks in state.reactions.items():
            merged = reactions.setdefault(key, {})
            for sender, mark in marks.items():
                held = merged.get(sender)
                if held is None or held.order < mark.order:
                    merged[sender] = mark
    return MessageState(event=event, edit=latest, reactions=_capped(reactions))
