"""A node's disk in the simulator: the storage rules of mesh/node/storage.py, in memory.

It survives a simulated crash (it is the disk); writes land when their simulated commit
completes, so a crash before that loses them, as on a real node. tests/test_disk_contract.py
runs the same contract against this disk and the SQLite one.
"""

import heapq

import msgspec

from mesh.node.late_rows import WINDOW_MS as LATE_WINDOW_MS
from mesh.node.storage import IDS_PER_QUERY, IdConflictError
from router.digest import Digest, digest_of
from router.event_rules import Relations, relations_of
from router.page_bytes import LATE_PAGE_BYTES_MAX, READ_PAGE_BYTES_MAX, cut_page
from router.records import MembershipChange, ReadMarker, RoomMessage
from router.room_state import STATE_KINDS
from router.room_view import RoomView


def hint_bytes(message: RoomMessage) -> int:
    """A hint's size against an owner's byte bound, as mesh/node/hint_rows.py counts it."""
    return len(message.body.encode()) + len(message.id) + len(message.room)


class MemoryStore:
    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, RoomMessage]] = {}
        # room -> its read model, as mesh/node/view_rows.py keeps one beside the events
        self.views: dict[str, RoomView] = {}
        self.by_key: dict[tuple[str, str], RoomMessage] = {}
        # owner -> message id -> (message, stored at, wall ms)
        self.hints: dict[str, dict[str, tuple[RoomMessage, int]]] = {}
        # room -> message id -> when it arrived late (wall ms)
        self.late: dict[str, dict[str, int]] = {}
        self._late_by_time: list[tuple[int, str, str]] = []  # (late_at_ms, room, id), a heap
        # (user, room) -> the latest join or leave
        self.memberships: dict[tuple[str, str], MembershipChange] = {}
        self.read_markers: dict[tuple[str, str], str] = {}  # (user, room) -> up to
        # The largest id of every copy stored or repeated, a twin that lost included: a
        # restarted node's clock runs past it (storage.py keeps it in its meta table).
        self._highest_id = ""

    def store_hint(self, owner: str, message: RoomMessage, now_ms: int) -> bool:
        """Keep a copy for `owner`; True when it was held already (a retried replication)."""
        held = self.hints.setdefault(owner, {})
        if message.id in held:
            return True
        held[message.id] = (message, now_ms)
        return False

    def hints_for(self, owner: str, limit: int, after: str = "") -> list[RoomMessage]:
        held = self.hints.get(owner, {})
        return [held[i][0] for i in sorted(i for i in held if i > after)[:limit]]

    def hint_summary(self) -> dict[str, tuple[int, int]]:
        """owner -> (hints held, when the oldest was stored, wall-clock ms)."""
        return {
            owner: (len(held), min(at for _, at in held.values()))
            for owner, held in self.hints.items()
            if held
        }

    def delete_hint(self, owner: str, message_id: str) -> None:
        self.hints.get(owner, {}).pop(message_id, None)

    def expire_hints(
        self, older_than_ms: int, count_max: int, bytes_max: int | None = None
    ) -> dict[str, int]:
        """Drop hints past the window, then the oldest beyond the count and byte bounds
        (no byte bound when None) of each owner holding any; how many went per owner."""
        dropped: dict[str, int] = {}
        for owner, held in self.hints.items():
            if not held:
                continue  # storage.py only sees owners with rows
            doomed = [i for i, (_, at) in held.items() if at < older_than_ms]
            for message_id in doomed:
                del held[message_id]
            newest_first = sorted(held.items(), key=lambda item: (item[1][1], item[0]))[::-1]
            kept_bytes = 0
            for index, (message_id, (message, _)) in enumerate(newest_first):
                kept_bytes += hint_bytes(message)
                if index >= count_max or (bytes_max is not None and kept_bytes > bytes_max):
                    doomed.append(message_id)
                    del held[message_id]
            dropped[owner] = len(doomed)
        return dropped

    def store(
        self, message: RoomMessage, late_at_ms: int | None = None
    ) -> tuple[RoomMessage, bool]:
        """(the copy kept, whether the send was held already, under this id or a twin's);
        a twin with a smaller id wins. As the node's shell reports it to the engine. A
        copy new here (or replacing its twin) with `late_at_ms` is recorded as a late
        arrival. A copy whose id holds another message raises IdConflictError and
        changes nothing, as storage.py refuses it."""
        taken = self.rooms.get(message.room, {}).get(message.id)
        if taken is not None and taken.key != message.key:
            raise IdConflictError(f"{message.room}: id {message.id} holds another message")
        self._highest_id = max(self._highest_id, message.id)
        if taken is not None:
            return taken, True
        held = self.by_key.get(message.key)
        if held is not None:
            if held.id <= message.id:
                return held, True
            del self.rooms[held.room][held.id]
        self.rooms.setdefault(message.room, {})[message.id] = message
        self.by_key[message.key] = message
        if late_at_ms is not None:
            self._record_late(message, late_at_ms)
        self._fold(message, replaced=held is not None)
        return message, held is not None

    def _fold(self, message: RoomMessage, *, replaced: bool) -> None:
        """The event into its room's read model; a delete's content goes from the disk.
        A copy that replaced its twin folds the room again from what is stored, as
        view_rows.py refolds the target."""
        room = message.room
        if replaced or room not in self.views:
            stored = sorted(self.rooms[room].values(), key=lambda event: event.id)
            view = self.views[room] = RoomView.rebuild(room, stored)
            erase = [i for i in view.ids() if view.state(i).tombstone is not None]
        else:
            erase = list(self.views[room].apply(message).erase)
        for target in erase:
            self._erase(room, target)

    def _erase(self, room: str, target: str) -> None:
        """The bodies of a deleted message and of every relation naming it, in the log
        and in hints."""

        def emptied(event: RoomMessage) -> RoomMessage:
            if event.body and target in (event.id, event.target):
                return msgspec.structs.replace(event, body="")
            return event

        held = self.rooms.get(room, {})
        for message_id, event in list(held.items()):
            held[message_id] = kept = emptied(event)
            if self.by_key.get(kept.key) is event:
                self.by_key[kept.key] = kept
        for hints in self.hints.values():
            for message_id, (event, at) in list(hints.items()):
                if event.room == room:
                    hints[message_id] = (emptied(event), at)

    def relations_for(self, room: str, messages: list[RoomMessage]) -> list[Relations]:
        """What relations made of these messages, for those they touched."""
        view = self.views.get(room)
        if view is None:
            return []
        made = [relations_of(message.id, view.state(message.id)) for message in messages]
        return [relations for relations in made if relations is not None]

    def _record_late(self, message: RoomMessage, late_at_ms: int) -> None:
        """As mesh/node/late_rows.py: the first record of an id stays, and any new record
        takes every room's records older than the late window with it."""
        recorded = self.late.setdefault(message.room, {})
        if message.id not in recorded:
            recorded[message.id] = late_at_ms
            heapq.heappush(self._late_by_time, (late_at_ms, message.room, message.id))
        horizon_ms = late_at_ms - LATE_WINDOW_MS
        while self._late_by_time and self._late_by_time[0][0] < horizon_ms:
            at_ms, room, message_id = heapq.heappop(self._late_by_time)
            if self.late[room].get(message_id) == at_ms:
                del self.late[room][message_id]

    def late_arrivals(
        self,
        room: str,
        since_ms: int,
        up_to: str,
        limit: int,
        bytes_max: int = LATE_PAGE_BYTES_MAX,
    ) -> list[RoomMessage]:
        """The most recent arrivals, at most `limit` and within `bytes_max`, by id."""
        held = self.rooms.get(room, {})
        recorded = self.late.get(room, {})
        chosen = [i for i, at in recorded.items() if at >= since_ms and i <= up_to and i in held]
        chosen.sort(key=lambda i: recorded[i], reverse=True)
        latest, _ = cut_page([held[i] for i in chosen[:limit]], bytes_max, keep_oldest=True)
        return sorted(latest, key=lambda message: message.id)

    def history(
        self,
        room: str,
        before: str | None,
        after: str | None,
        limit: int,
        bytes_max: int = READ_PAGE_BYTES_MAX,
        *,
        messages_only: bool = False,
        state_only: bool = False,
    ) -> tuple[list[RoomMessage], bool]:
        """As mesh/node/storage.py: at most `limit` messages within `bytes_max`, at least
        one; with `messages_only`, no relations (relations_for tells what they made)."""
        held = self.rooms.get(room, {})
        ids = sorted(i for i in held if not messages_only or held[i].kind == "message")
        if state_only:  # forward from the first, as the SQLite disk reads them
            ids = [i for i in ids if held[i].kind in STATE_KINDS]
            after = after or ""
        if after is not None:
            chosen = [i for i in ids if i > after and (before is None or i < before)]
            page, more = chosen[:limit], len(chosen) > limit
        else:
            chosen = [i for i in ids if before is None or i < before]
            page, more = chosen[-limit:], len(chosen) > limit
        chosen_messages = [held[i] for i in page]
        told = {}
        if messages_only:
            told = {made.id: made for made in self.relations_for(room, chosen_messages)}
        forward = after is not None
        fitted, cut = cut_page(chosen_messages, bytes_max, keep_oldest=forward, relations=told)
        return fitted, more or cut

    def ids(self, room: str) -> list[str]:
        return sorted(self.rooms.get(room, {}))

    def ids_between(self, room: str, after: str, before: str, limit: int) -> tuple[list[str], bool]:
        chosen = [i for i in self.ids(room) if after < i < before]
        return chosen[:limit], len(chosen) > limit

    def messages(self, room: str, ids: list[str]) -> list[RoomMessage]:
        """The held ones, in id order within each query's worth of ids, as storage.py
        answers them."""
        held = self.rooms.get(room, {})
        found: list[RoomMessage] = []
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = set(ids[start : start + IDS_PER_QUERY])
            found += [held[i] for i in sorted(chunk) if i in held]
        return found

    def digest(self, room: str) -> Digest:
        return digest_of(self.ids(room))

    def room_names(self) -> list[str]:
        return sorted(room for room, messages in self.rooms.items() if messages)

    @property
    def highest_id(self) -> str:
        return self._highest_id

    # ---- room memberships ----

    def set_membership(self, user: str, room: str, *, joined: bool, time_ms: int) -> None:
        """The later change of a (user, room) wins; at the same millisecond a join does."""
        change = MembershipChange(user, room, joined, time_ms)
        held = self.memberships.get((user, room))
        if held is None or change.order > held.order:
            self.memberships[(user, room)] = change

    def memberships_of(self, user: str) -> list[MembershipChange]:
        """The latest change of each room the user joined or left, leaves included."""
        return [self.memberships[key] for key in sorted(self.memberships) if key[0] == user]

    def set_read_marker(self, user: str, room: str, up_to: str) -> None:
        """A read marker only moves forward."""
        held = self.read_markers.get((user, room))
        if held is None or up_to > held:
            self.read_markers[(user, room)] = up_to

    def read_markers_of(self, user: str) -> list[ReadMarker]:
        return [
            ReadMarker(user, room, self.read_markers[(name, room)])
            for name, room in sorted(self.read_markers)
            if name == user
        ]

    def rooms_of(self, user: str) -> list[str]:
        return [change.room for change in self.memberships_of(user) if change.joined]
