"""A node's disk in the simulator: the storage rules of mesh/storage.py, in memory.

It survives a simulated crash (it is the disk); writes land when their simulated commit
completes, so a crash before that loses them, as on a real node.
"""

from router.digest import Digest, digest_of
from router.page_bytes import LATE_PAGE_BYTES_MAX, READ_PAGE_BYTES_MAX, cut_page
from router.records import RoomMessage


class MemoryStore:
    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, RoomMessage]] = {}
        self.by_key: dict[tuple[str, str], RoomMessage] = {}
        # owner -> message id -> (message, stored at, wall ms)
        self.hints: dict[str, dict[str, tuple[RoomMessage, int]]] = {}
        # room -> message id -> when it arrived late (wall ms)
        self.late: dict[str, dict[str, int]] = {}

    def store_hint(self, owner: str, message: RoomMessage, now_ms: int) -> None:
        self.hints.setdefault(owner, {}).setdefault(message.id, (message, now_ms))

    def hints_for(self, owner: str, limit: int, after: str = "") -> list[RoomMessage]:
        held = self.hints.get(owner, {})
        return [held[i][0] for i in sorted(i for i in held if i > after)[:limit]]

    def delete_hint(self, owner: str, message_id: str) -> None:
        self.hints.get(owner, {}).pop(message_id, None)

    def expire_hints(self, older_than_ms: int, count_max: int) -> dict[str, int]:
        dropped: dict[str, int] = {}
        for owner, held in self.hints.items():
            ordered = sorted(held.items(), key=lambda item: (item[1][1], item[0]))
            doomed = [i for i, (_, at) in ordered if at < older_than_ms]
            kept = len(ordered) - len(doomed)
            doomed += [i for i, _ in ordered[len(doomed) :]][: max(0, kept - count_max)]
            for message_id in doomed:
                del held[message_id]
            dropped[owner] = len(doomed)
        return dropped

    def store(
        self, message: RoomMessage, late_at_ms: int | None = None
    ) -> tuple[RoomMessage, bool]:
        """(the copy kept, whether the send was held already, under this id or a twin's);
        a twin with a smaller id wins. As the node's shell reports it to the engine. A
        copy new here (or replacing its twin) with `late_at_ms` is recorded as a late
        arrival."""
        taken = self.rooms.get(message.room, {}).get(message.id)
        if taken is not None:
            # Only a broken peer reuses an id: the held message stays (storage.py refuses
            # the copy; here, as in the engine's view of a refusal, nothing changes).
            return taken, True
        held = self.by_key.get(message.key)
        if held is not None:
            if held.id <= message.id:
                return held, True
            del self.rooms[held.room][held.id]
        self.rooms.setdefault(message.room, {})[message.id] = message
        self.by_key[message.key] = message
        if late_at_ms is not None:
            self.late.setdefault(message.room, {})[message.id] = late_at_ms
        return message, held is not None

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
    ) -> tuple[list[RoomMessage], bool]:
        """As mesh/storage.py: at most `limit` messages within `bytes_max`, at least one."""
        ids = sorted(self.rooms.get(room, {}))
        if after is not None:
            chosen = [i for i in ids if i > after and (before is None or i < before)]
            page, more = chosen[:limit], len(chosen) > limit
        else:
            chosen = [i for i in ids if before is None or i < before]
            page, more = chosen[-limit:], len(chosen) > limit
        messages = self.rooms.get(room, {})
        forward = after is not None
        fitted, cut = cut_page([messages[i] for i in page], bytes_max, keep_oldest=forward)
        return fitted, more or cut

    def ids(self, room: str) -> list[str]:
        return sorted(self.rooms.get(room, {}))

    def ids_between(self, room: str, after: str, before: str, limit: int) -> tuple[list[str], bool]:
        chosen = [i for i in self.ids(room) if after < i < before]
        return chosen[:limit], len(chosen) > limit

    def messages(self, room: str, ids: list[str]) -> list[RoomMessage]:
        held = self.rooms.get(room, {})
        return [held[i] for i in ids if i in held]

    def digest(self, room: str) -> Digest:
        return digest_of(self.ids(room))

    def room_names(self) -> list[str]:
        return sorted(room for room, messages in self.rooms.items() if messages)

    @property
    def highest_id(self) -> str:
        return max((i for room in self.rooms.values() for i in room), default="")
