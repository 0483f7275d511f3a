"""A room's read model: each message's current view and who has unread messages.

Derived only from the room's events (router/event_rules.py), so replicas that saw the
same events in any order hold the same view, and rebuilding it from the log gives the
one kept step by step. The simulator keeps one per replica; a node keeps the same states
beside the events on disk.
"""

from collections.abc import Iterable
from typing import Final

import msgspec
from sortedcontainers import SortedList

from router.event_rules import (
    RELATION_KINDS,
    Folded,
    MessageState,
    RoomEvent,
    Tombstone,
    arrive,
    relate,
)

# Unread messages are counted exactly up to here; past it a client shows "1000+".
UNREAD_COUNTED_MAX: Final = 1000


class MessageView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A message as readers see it now. A deleted one keeps only its tombstone."""

    id: str
    sender: str
    time_ms: int
    client_msg_id: str
    body: str = ""
    reply_to: str | None = None
    edited_at_ms: int | None = None
    deleted: Tombstone | None = None
    reactions: dict[str, list[str]] = {}  # key -> the users whose reaction stands, sorted


class UnreadCount(msgspec.Struct, frozen=True):
    count: int  # at most UNREAD_COUNTED_MAX
    more: bool  # there are more than UNREAD_COUNTED_MAX

    def __str__(self) -> str:
        return f"{self.count}+" if self.more else str(self.count)


class Applied(msgspec.Struct, frozen=True):
    changed: tuple[str, ...]  # messages whose view moved (for live updates)
    erase: tuple[str, ...]  # targets whose content, and their relations', go from disk
    held: bool = True  # False: a relation before its target past the pending bound


class RoomView:
    def __init__(self, room: str) -> None:
        self.room = room
        self._states: dict[str, MessageState] = {}
        self._live = SortedList()  # ids of messages that are not deleted
        self._live_by_sender: dict[str, SortedList] = {}
        self.relations_not_held = 0

    @classmethod
    def rebuild(cls, room: str, events: Iterable[RoomEvent]) -> "RoomView":
        view = cls(room)
        for event in events:
            view.apply(event)
        return view

    def apply(self, event: RoomEvent) -> Applied:
        assert event.room == self.room
        changed: list[str] = []
        erase: list[str] = []
        held = self._step(event.id, arrive(self._state(event.id), event), changed, erase)
        if event.kind in RELATION_KINDS and event.target is not None:
            related = relate(self._state(event.target), event)
            held = self._step(event.target, related, changed, erase) and held
        if not held:
            self.relations_not_held += 1
        return Applied(tuple(changed), tuple(erase), held)

    def view(self, message_id: str) -> MessageView | None:
        state = self._states.get(message_id)
        if state is None or state.event is None or state.event.kind != "message":
            return None
        return view_of(state, state.event)

    def state(self, message_id: str) -> MessageState:
        """What the rules hold for an id (router/event_rules.py), empty when unknown."""
        return self._state(message_id)

    def ids(self) -> list[str]:
        """Every id an event or a relation has named, sorted."""
        return sorted(self._states)

    def unread(self, user: str, read_through: str) -> UnreadCount:
        """Messages after `read_through` (a message id, "" for none) that `user` did not
        send and that are not deleted."""
        after = len(self._live) - self._live.bisect_right(read_through)
        own = self._live_by_sender.get(user)
        if own is not None:
            after -= len(own) - own.bisect_right(read_through)
        return UnreadCount(min(after, UNREAD_COUNTED_MAX), after > UNREAD_COUNTED_MAX)

    def snapshot(self) -> bytes:
        """Every message's view in id order, encoded: equal bytes, equal views."""
        views = [self.view(message_id) for message_id in sorted(self._states)]
        return msgspec.json.encode([view for view in views if view is not None])

    def _state(self, message_id: str) -> MessageState:
        return self._states.get(message_id) or MessageState()

    def _step(self, message_id: str, folded: Folded, changed: list[str], erase: list[str]) -> bool:
        before = self._states.get(message_id)
        self._states[message_id] = folded.state
        self._track_live(message_id, before, folded.state)
        if folded.changed:
            changed.append(message_id)
        if folded.erase:
            erase.append(message_id)
        return folded.held

    def _track_live(
        self, message_id: str, before: MessageState | None, after: MessageState
    ) -> None:
        was = before is not None and _is_live(before)
        now = _is_live(after)
        if was == now or after.event is None:
            return
        sender = after.event.sender
        own = self._live_by_sender.setdefault(sender, SortedList())
        if now:
            self._live.add(message_id)
            own.add(message_id)
        else:
            self._live.discard(message_id)
            own.discard(message_id)


def _is_live(state: MessageState) -> bool:
    return state.event is not None and state.event.kind == "message" and state.tombstone is None


def view_of(state: MessageState, event: RoomEvent) -> MessageView:
    """A message's view from its state (`event` is the message: state.event)."""
    if state.tombstone is not None:
        return MessageView(
            id=event.id,
            sender=event.sender,
            time_ms=event.time_ms,
            client_msg_id=event.client_msg_id,
            deleted=state.tombstone,
        )
    reactions = {
        key: sorted(user for user, mark in marks.items() if mark.stands)
        for key, marks in sorted(state.reactions.items())
    }
    return MessageView(
        id=event.id,
        sender=event.sender,
        time_ms=event.time_ms,
        client_msg_id=event.client_msg_id,
        body=state.edit.body if state.edit is not None else event.body,
        reply_to=event.reply_to,
        edited_at_ms=state.edit.at_ms if state.edit is not None else None,
        reactions={key: users for key, users in reactions.items() if users},
    )
