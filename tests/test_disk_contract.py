"""One contract for both disks: the node's SQLite storage and the simulator's memory store.

The simulator's disk stands in for mesh/node/storage.py in every simulated run, so what it
does must be what the node does: twins, repeats, refused ids, late arrivals, pages cut by
count and by bytes, anti-entropy reads, hints and their bounds, room memberships, and what
stays after a restart. Each test runs once per disk, through an adapter that gives both the
same asynchronous interface and reports a stored copy as the node's disk reports it to the
engine (mesh/node/sqlite_disk.py).
"""

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec
import pytest

from mesh.node.late_rows import WINDOW_MS as LATE_WINDOW_MS
from mesh.node.storage import IdConflictError, Storage
from router.digest import Digest, digest_of
from router.event_rules import Relations
from router.message_ids import ORIGIN, MessageId
from router.page_bytes import LATE_PAGE_BYTES_MAX, READ_PAGE_BYTES_MAX, message_bytes
from router.records import MembershipChange, ReadMarker, RoomMessage
from tests.sim.memory_store import MemoryStore, hint_bytes

ROOM: Final = "lobby"
# Message times in ms: ids made of them fall in one digest bucket (2**16 ms) unless a
# test moves a message a bucket further on purpose.
BASE_MS: Final = 0x1000_0000
BUCKET_MS: Final = 1 << 16
# Sorts after every message id (hex digits and '.'): "up to everything" for late arrivals.
AFTER_EVERY_ID: Final = "~"
# Bounds no test comes near: more bytes of hints, and more messages or hints, than any holds.
HINT_BYTES_UNBOUNDED: Final = 1 << 30
COUNT_UNBOUNDED: Final = 1_000


def message(
    number: int,
    *,
    node: str = "n1",
    room: str = ROOM,
    sender: str = "ann",
    client_msg_id: str | None = None,
    body: str | None = None,
) -> RoomMessage:
    """Message `number` of a test: its id's time is BASE_MS + number."""
    time_ms = BASE_MS + number
    return RoomMessage(
        id=str(MessageId(time_ms, 0, node)),
        room=room,
        sender=sender,
        client_msg_id=client_msg_id or f"c{number}",
        time_ms=time_ms,
        body=f"body {number}" if body is None else body,
    )


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored copy as the engine hears of it: the copy on disk, and whether the send was
    held already (under this id, or a twin's that this copy replaced or lost to)."""

    kept: RoomMessage
    known: bool


class Disk(Protocol):
    """What the contract asks of a disk; a copy whose id holds another message raises
    IdConflictError."""

    async def append(self, message: RoomMessage, late_at_ms: int | None = None) -> Stored: ...
    async def history(
        self,
        room: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
        bytes_max: int = READ_PAGE_BYTES_MAX,
    ) -> tuple[list[RoomMessage], bool]: ...
    async def late_arrivals(
        self,
        room: str,
        *,
        since_ms: int,
        up_to: str,
        limit: int,
        bytes_max: int = LATE_PAGE_BYTES_MAX,
    ) -> list[RoomMessage]: ...
    async def ids_between(
        self, room: str, after: str, before: str, limit: int
    ) -> tuple[list[str], bool]: ...
    async def messages(self, room: str, ids: list[str]) -> list[RoomMessage]: ...
    async def digest(self, room: str) -> Digest: ...
    async def room_names(self) -> list[str]: ...
    async def highest_id(self) -> str: ...
    # Hints: True from add_hint when the hint was held already.
    async def add_hint(self, owner: str, message: RoomMessage, now_ms: int) -> bool: ...
    async def hints_for(self, owner: str, limit: int, after: str = "") -> list[RoomMessage]: ...
    async def hint_summary(self) -> dict[str, tuple[int, int]]: ...
    async def delete_hint(self, owner: str, message_id: str) -> None: ...
    async def expire_hints(
        self, older_than_ms: int, count_max: int, bytes_max: int
    ) -> dict[str, int]: ...
    # Room memberships.
    async def set_membership(self, user: str, room: str, *, joined: bool, time_ms: int) -> None: ...
    async def memberships_of(self, user: str) -> list[MembershipChange]: ...
    async def rooms_of(self, user: str) -> list[str]: ...
    async def set_read_marker(self, user: str, room: str, up_to: str) -> None: ...
    async def read_markers_of(self, user: str) -> list[ReadMarker]: ...
    # A reader's page: messages alone, with what relations made of them.
    async def messages_page(
        self, room: str, after: str, limit: int
    ) -> tuple[list[RoomMessage], bool, list[Relations]]: ...
    # The node stops and starts again on the same disk.
    async def restart(self) -> None: ...
    async def close(self) -> None: ...


class SqliteDisk:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.storage = Storage(data_dir)

    async def append(self, message: RoomMessage, late_at_ms: int | None = None) -> Stored:
        result = await self.storage.append(message, late_at_ms)
        # As the node's shell: a copy that replaced its twin is no news to the room.
        return Stored(result.message, result.duplicate or result.replaced is not None)

    async def history(
        self,
        room: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
        bytes_max: int = READ_PAGE_BYTES_MAX,
    ) -> tuple[list[RoomMessage], bool]:
        return await self.storage.history(
            room, before=before, after=after, limit=limit, bytes_max=bytes_max
        )

    async def late_arrivals(
        self,
        room: str,
        *,
        since_ms: int,
        up_to: str,
        limit: int,
        bytes_max: int = LATE_PAGE_BYTES_MAX,
    ) -> list[RoomMessage]:
        return await self.storage.late_arrivals(
            room, since_ms=since_ms, up_to=up_to, limit=limit, bytes_max=bytes_max
        )

    async def ids_between(
        self, room: str, after: str, before: str, limit: int
    ) -> tuple[list[str], bool]:
        return await self.storage.ids_between(room, after, before, limit)

    async def messages(self, room: str, ids: list[str]) -> list[RoomMessage]:
        return await self.storage.messages(room, ids)

    async def digest(self, room: str) -> Digest:
        return await self.storage.digest(room)

    async def room_names(self) -> list[str]:
        return await self.storage.room_names()

    async def highest_id(self) -> str:
        return self.storage.highest_id

    async def add_hint(self, owner: str, message: RoomMessage, now_ms: int) -> bool:
        return (await self.storage.add_hint(owner, message, now_ms)).duplicate

    async def hints_for(self, owner: str, limit: int, after: str = "") -> list[RoomMessage]:
        return await self.storage.hints_for(owner, limit, after)

    async def hint_summary(self) -> dict[str, tuple[int, int]]:
        return await self.storage.hint_summary()

    async def delete_hint(self, owner: str, message_id: str) -> None:
        await self.storage.delete_hint(owner, message_id)

    async def expire_hints(
        self, older_than_ms: int, count_max: int, bytes_max: int
    ) -> dict[str, int]:
        return await self.storage.expire_hints(older_than_ms, count_max, bytes_max)

    async def set_membership(self, user: str, room: str, *, joined: bool, time_ms: int) -> None:
        await self.storage.set_membership(user, room, joined=joined, time_ms=time_ms)

    async def memberships_of(self, user: str) -> list[MembershipChange]:
        return await self.storage.memberships_of(user)

    async def rooms_of(self, user: str) -> list[str]:
        return await self.storage.rooms_of(user)

    async def set_read_marker(self, user: str, room: str, up_to: str) -> None:
        await self.storage.set_read_marker(user, room, up_to)

    async def read_markers_of(self, user: str) -> list[ReadMarker]:
        return await self.storage.read_markers_of(user)

    async def messages_page(
        self, room: str, after: str, limit: int
    ) -> tuple[list[RoomMessage], bool, list[Relations]]:
        page = await self.storage.page(room, after=after, limit=limit, messages_only=True)
        return list(page.messages), page.more, page.relations

    async def restart(self) -> None:
        await self.storage.close()
        self.storage = Storage(self.data_dir)
        await self.storage.open()

    async def close(self) -> None:
        await self.storage.close()


class MemoryDisk:
    def __init__(self) -> None:
        self.store = MemoryStore()

    async def append(self, message: RoomMessage, late_at_ms: int | None = None) -> Stored:
        kept, known = self.store.store(message, late_at_ms)
        return Stored(kept, known)

    async def history(
        self,
        room: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
        bytes_max: int = READ_PAGE_BYTES_MAX,
    ) -> tuple[list[RoomMessage], bool]:
        return self.store.history(room, before, after, limit, bytes_max)

    async def late_arrivals(
        self,
        room: str,
        *,
        since_ms: int,
        up_to: str,
        limit: int,
        bytes_max: int = LATE_PAGE_BYTES_MAX,
    ) -> list[RoomMessage]:
        return self.store.late_arrivals(room, since_ms, up_to, limit, bytes_max)

    async def ids_between(
        self, room: str, after: str, before: str, limit: int
    ) -> tuple[list[str], bool]:
        return self.store.ids_between(room, after, before, limit)

    async def messages(self, room: str, ids: list[str]) -> list[RoomMessage]:
        return self.store.messages(room, ids)

    async def digest(self, room: str) -> Digest:
        return self.store.digest(room)

    async def room_names(self) -> list[str]:
        return self.store.room_names()

    async def highest_id(self) -> str:
        return self.store.highest_id

    async def add_hint(self, owner: str, message: RoomMessage, now_ms: int) -> bool:
        return self.store.store_hint(owner, message, now_ms)

    async def hints_for(self, owner: str, limit: int, after: str = "") -> list[RoomMessage]:
        return self.store.hints_for(owner, limit, after)

    async def hint_summary(self) -> dict[str, tuple[int, int]]:
        return self.store.hint_summary()

    async def delete_hint(self, owner: str, message_id: str) -> None:
        self.store.delete_hint(owner, message_id)

    async def expire_hints(
        self, older_than_ms: int, count_max: int, bytes_max: int
    ) -> dict[str, int]:
        return self.store.expire_hints(older_than_ms, count_max, bytes_max)

    async def set_membership(self, user: str, room: str, *, joined: bool, time_ms: int) -> None:
        self.store.set_membership(user, room, joined=joined, time_ms=time_ms)

    async def memberships_of(self, user: str) -> list[MembershipChange]:
        return self.store.memberships_of(user)

    async def rooms_of(self, user: str) -> list[str]:
        return self.store.rooms_of(user)

    async def set_read_marker(self, user: str, room: str, up_to: str) -> None:
        self.store.set_read_marker(user, room, up_to)

    async def read_markers_of(self, user: str) -> list[ReadMarker]:
        return self.store.read_markers_of(user)

    async def messages_page(
        self, room: str, after: str, limit: int
    ) -> tuple[list[RoomMessage], bool, list[Relations]]:
        messages, more = self.store.history(room, None, after, limit, messages_only=True)
        return messages, more, self.store.relations_for(room, messages)

    async def restart(self) -> None:
        """The store is the disk: it outlives the node's crash as it is."""

    async def close(self) -> None:
        """Nothing is open."""


DISK_KINDS: Final = ("sqlite", "memory")
Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    # One loop for a whole test: Storage binds its futures to the loop it opened on.
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture
def run(runner: asyncio.Runner) -> Run:
    def run_scenario(scenario: Coroutine[Any, Any, None]) -> None:
        runner.run(scenario)

    return run_scenario


@pytest.fixture(params=DISK_KINDS)
def open_disk(
    request: pytest.FixtureRequest, runner: asyncio.Runner, tmp_path: Path
) -> Iterator[Callable[[], Disk]]:
    """Opens disks of one kind (each its own data dir); all are closed after the test."""
    opened: list[Disk] = []

    def open_one() -> Disk:
        disk: Disk
        if request.param == "sqlite":
            sqlite_disk = SqliteDisk(tmp_path / f"disk{len(opened)}")
            runner.run(sqlite_disk.storage.open())
            disk = sqlite_disk
        else:
            disk = MemoryDisk()
        opened.append(disk)
        return disk

    yield open_one
    for disk in opened:
        runner.run(disk.close())


@pytest.fixture
def disk(open_disk: Callable[[], Disk]) -> Disk:
    return open_disk()


@pytest.fixture
def second_disk(open_disk: Callable[[], Disk]) -> Disk:
    return open_disk()


async def room_of(disk: Disk, room: str = ROOM) -> list[RoomMessage]:
    page, more = await disk.history(room, after=ORIGIN, limit=COUNT_UNBOUNDED)
    assert not more
    return page


# ---- copies: repeats, twins, refused ids ----


def test_a_copy_stored_twice_is_a_repeat_and_held_once(disk: Disk, run: Run) -> None:
    async def scenario() -> None:
        first = message(1)
        assert await disk.append(first) == Stored(first, known=False)
        assert await disk.append(first) == Stored(first, known=True)
        # The same send under the same id is a repeat even if its body differs: the held
        # copy is the answer.
        altered = RoomMessage(first.id, ROOM, first.sender, first.client_msg_id, 0, "other")
        assert await disk.append(altered) == Stored(first, known=True)
        assert await room_of(disk) == [first]

    run(scenario())


@pytest.mark.parametrize("smaller_first", [True, False], ids=["smaller-first", "larger-first"])
def test_twins_keep_the_smaller_id_whichever_arrives_first(
    disk: Disk, run: Run, smaller_first: bool
) -> None:
    # One send that reached two coordinators: the same sender and client message id.
    smaller = message(5, node="n1", client_msg_id="retried")
    larger = message(7, node="n2", client_msg_id="retried")

    async def scenario() -> None:
        if smaller_first:
            assert await disk.append(smaller) == Stored(smaller, known=False)
            assert await disk.append(larger) == Stored(smaller, known=True)
        else:
            assert await disk.append(larger) == Stored(larger, known=False)
            # Replacing its twin is no news: the room has had the send under the twin's id.
            assert await disk.append(smaller) == Stored(smaller, known=True)
        assert await room_of(disk) == [smaller]
        assert await disk.messages(ROOM, [larger.id]) == []
        assert await disk.append(larger) == Stored(smaller, known=True)
        assert await disk.append(smaller) == Stored(smaller, known=True)
        assert await disk.digest(ROOM) == digest_of([smaller.id])

    run(scenario())


def test_a_reused_id_is_refused_and_the_held_message_stays(disk: Disk, run: Run) -> None:
    async def scenario() -> None:
        held = message(1)
        await disk.append(held)
        impostor = RoomMessage(held.id, ROOM, "mallory", "m1", held.time_ms, "not it")
        with pytest.raises(IdConflictError):
            await disk.append(impostor)
        # The refusal is that copy's alone: the disk takes the next one.
        neighbour = message(2)
        assert await disk.append(neighbour) == Stored(neighbour, known=False)
        assert await room_of(disk) == [held, neighbour]
        assert await disk.append(held) == Stored(held, known=True)

    run(scenario())


# ---- late arrivals ----


def test_late_arrivals_are_recorded_for_copies_new_here(disk: Disk, run: Run) -> None:
    on_time = message(1)
    late = message(2)
    larger_twin = message(9, node="n2", client_msg_id="twin")
    smaller_twin = message(3, node="n1", client_msg_id="twin")

    async def scenario() -> None:
        await disk.append(on_time)
        await disk.append(late, late_at_ms=100)
        await disk.append(late, late_at_ms=200)  # a repeat: its first record stays
        await disk.append(larger_twin)
        await disk.append(smaller_twin, late_at_ms=300)  # replaces its twin: recorded
        await disk.append(on_time, late_at_ms=400)  # held already: not recorded

        async def arrivals(since_ms: int, up_to: str = AFTER_EVERY_ID) -> list[RoomMessage]:
            return await disk.late_arrivals(ROOM, since_ms=since_ms, up_to=up_to, limit=10)

        assert await arrivals(0) == [late, smaller_twin]
        assert await arrivals(100) == [late, smaller_twin]
        assert await arrivals(101) == [smaller_twin]
        assert await arrivals(301) == []
        assert await arrivals(0, up_to=late.id) == [late]
        assert await disk.late_arrivals("elsewhere", since_ms=0, up_to="~", limit=10) == []

    run(scenario())


def test_late_arrivals_keep_the_most_recent_within_limit_and_bytes_by_id(
    disk: Disk, run: Run
) -> None:
    # Messages 3, 1, 4, 2 arrive late in that order, each later than the one before.
    arrivals = [(3, 1_000), (1, 2_000), (4, 3_000), (2, 4_000)]
    copies = {n: message(n, body="x" * 1000) for n, _ in arrivals}
    one_bytes = message_bytes(copies[1])

    async def scenario() -> None:
        for n, at_ms in arrivals:
            await disk.append(copies[n], late_at_ms=at_ms)

        async def numbers(limit: int, bytes_max: int, up_to: str = AFTER_EVERY_ID) -> list[int]:
            found = await disk.late_arrivals(
                ROOM, since_ms=0, up_to=up_to, limit=limit, bytes_max=bytes_max
            )
            return [m.time_ms - BASE_MS for m in found]

        assert await numbers(10, LATE_PAGE_BYTES_MAX) == [1, 2, 3, 4]
        assert await numbers(2, LATE_PAGE_BYTES_MAX) == [2, 4]
        assert await numbers(2, LATE_PAGE_BYTES_MAX, up_to=copies[3].id) == [1, 2]
        assert await numbers(10, 2 * one_bytes) == [2, 4]
        assert await numbers(10, 2 * one_bytes - 1) == [2]
        assert await numbers(10, 1) == [2]  # a lone message always fits

    run(scenario())


def test_late_records_older_than_the_window_go_with_a_newer_one(disk: Disk, run: Run) -> None:
    early = message(1)
    later = message(2, room="elsewhere")

    async def scenario() -> None:
        await disk.append(early, late_at_ms=1_000)

        async def early_arrivals() -> list[RoomMessage]:
            return await disk.late_arrivals(ROOM, since_ms=0, up_to=AFTER_EVERY_ID, limit=10)

        assert await early_arrivals() == [early]
        # Still within the window of the newer record: kept.
        await disk.append(message(3, room="elsewhere"), late_at_ms=1_000 + LATE_WINDOW_MS)
        assert await early_arrivals() == [early]
        # Any room's newer record takes every room's expired ones; the message stays.
        await disk.append(later, late_at_ms=1_001 + LATE_WINDOW_MS)
        assert await early_arrivals() == []
        assert await room_of(disk) == [early]

    run(scenario())


# ---- history pages ----


def test_history_pages_run_backward_and_forward_and_say_more(disk: Disk, run: Run) -> None:
    m = [message(n) for n in range(1, 6)]

    async def scenario() -> None:
        assert await disk.history(ROOM) == ([], False)
        for copy in [m[2], m[0], m[4], m[1], m[3]]:
            await disk.append(copy)
        await disk.append(message(9, room="elsewhere"))
        assert await disk.history(ROOM) == (m, False)
        assert await disk.history(ROOM, limit=2) == (m[3:], True)
        assert await disk.history(ROOM, before=m[3].id, limit=2) == (m[1:3], True)
        assert await disk.history(ROOM, before=m[2].id, limit=2) == (m[:2], False)
        assert await disk.history(ROOM, before=m[0].id) == ([], False)
        assert await disk.history(ROOM, after=ORIGIN, limit=2) == (m[:2], True)
        assert await disk.history(ROOM, after=m[0].id, limit=2) == (m[1:3], True)
        assert await disk.history(ROOM, after=m[2].id, limit=2) == (m[3:], False)
        assert await disk.history(ROOM, after=m[4].id) == ([], False)
        # With both bounds the page runs forward from `after`, below `before`.
        assert await disk.history(ROOM, after=m[0].id, before=m[4].id) == (m[1:4], False)
        assert await disk.history(ROOM, after=m[0].id, before=m[4].id, limit=2) == (
            m[1:3],
            True,
        )
        assert await disk.history(ROOM, after=m[0].id, before=m[3].id, limit=2) == (
            m[1:3],
            False,
        )

    run(scenario())


def test_a_page_cut_by_bytes_says_more_and_holds_at_least_one(disk: Disk, run: Run) -> None:
    m = [message(n, body="é" * 500) for n in range(1, 6)]  # 1000 UTF-8 bytes each
    one_bytes = message_bytes(m[0])

    async def scenario() -> None:
        lone = message(1, room="alone", client_msg_id="lone", body="x" * 1000)
        await disk.append(lone)
        assert await disk.history("alone", bytes_max=1) == ([lone], False)
        for copy in m:
            await disk.append(copy)
        assert await disk.history(ROOM, bytes_max=5 * one_bytes) == (m, False)
        # Backward pages keep their newest messages, forward pages their oldest.
        assert await disk.history(ROOM, bytes_max=2 * one_bytes + 1) == (m[3:], True)
        assert await disk.history(ROOM, bytes_max=1) == (m[4:], True)
        assert await disk.history(ROOM, after=ORIGIN, bytes_max=2 * one_bytes) == (m[:2], True)
        assert await disk.history(ROOM, after=ORIGIN, bytes_max=1) == (m[:1], True)
        assert await disk.history(ROOM, before=m[2].id, bytes_max=1) == (m[1:2], True)
        # The last page of a walk: cut neither by count nor by bytes.
        assert await disk.history(ROOM, after=m[2].id, bytes_max=2 * one_bytes) == (m[3:], False)

    run(scenario())


# ---- anti-entropy reads ----


def test_ids_between_are_strictly_between_and_say_more(disk: Disk, run: Run) -> None:
    m = [message(n) for n in range(1, 6)]

    async def scenario() -> None:
        for copy in m:
            await disk.append(copy)
        await disk.append(message(3, room="elsewhere", client_msg_id="other"))
        ids = [copy.id for copy in m]
        assert await disk.ids_between(ROOM, ORIGIN, AFTER_EVERY_ID, 10) == (ids, False)
        assert await disk.ids_between(ROOM, ids[0], ids[4], 10) == (ids[1:4], False)
        assert await disk.ids_between(ROOM, ids[0], ids[4], 2) == (ids[1:3], True)
        assert await disk.ids_between(ROOM, ids[0], ids[4], 3) == (ids[1:4], False)
        assert await disk.ids_between(ROOM, ids[1], ids[2], 10) == ([], False)
        assert await disk.ids_between("nowhere", ORIGIN, AFTER_EVERY_ID, 10) == ([], False)

    run(scenario())


def test_messages_are_the_held_ones_of_the_room_in_id_order(disk: Disk, run: Run) -> None:
    m = [message(n) for n in range(1, 4)]
    elsewhere = message(4, room="elsewhere")

    async def scenario() -> None:
        for copy in [*m, elsewhere]:
            await disk.append(copy)
        missing = message(8).id
        asked = [m[2].id, missing, m[0].id, m[0].id, elsewhere.id]
        assert await disk.messages(ROOM, asked) == [m[0], m[2]]
        assert await disk.messages(ROOM, []) == []
        assert await disk.messages("elsewhere", [elsewhere.id]) == [elsewhere]

    run(scenario())


def test_equal_sets_have_equal_digests_however_they_arrived(
    disk: Disk, second_disk: Disk, run: Run
) -> None:
    # Two buckets' worth: the digest sums per bucket of id time.
    m = [message(n) for n in (1, 2, BUCKET_MS + 1, BUCKET_MS + 2)]
    larger_twin = message(2 * BUCKET_MS, node="n2", client_msg_id=m[0].client_msg_id)

    async def scenario() -> None:
        assert await disk.digest(ROOM) == {}
        for copy in m:
            await disk.append(copy)
        # Another order, repeats, and a twin in a bucket of its own that loses its place.
        for copy in [m[3], larger_twin, m[1], m[0], m[1], m[2], larger_twin]:
            await second_disk.append(copy)
        ids = [copy.id for copy in m]
        assert await disk.digest(ROOM) == await second_disk.digest(ROOM) == digest_of(ids)
        assert len(await disk.digest(ROOM)) == 2
        await second_disk.append(message(3))
        assert await disk.digest(ROOM) != await second_disk.digest(ROOM)

    run(scenario())


def test_room_names_are_the_rooms_holding_messages(disk: Disk, run: Run) -> None:
    async def scenario() -> None:
        assert await disk.room_names() == []
        await disk.add_hint("n2", message(1, room="hinted"), now_ms=100)
        await disk.set_membership("ann", "joined", joined=True, time_ms=100)
        assert await disk.room_names() == []
        for number, room in enumerate(["zebra", ROOM, "attic", ROOM]):
            await disk.append(message(number, room=room))
        assert await disk.room_names() == ["attic", ROOM, "zebra"]

    run(scenario())


# ---- hints ----


def test_hints_are_held_once_per_owner_in_id_order_until_deleted(disk: Disk, run: Run) -> None:
    h = [message(n) for n in range(1, 4)]

    async def scenario() -> None:
        for copy, at_ms in [(h[2], 300), (h[0], 100), (h[1], 200)]:
            assert await disk.add_hint("n2", copy, at_ms) is False
        assert await disk.add_hint("n3", h[0], 50) is False
        assert await disk.add_hint("n2", h[0], 400) is True  # a retried replication
        assert await disk.hints_for("n2", 10) == h
        assert await disk.hints_for("n2", 2) == h[:2]
        assert await disk.hints_for("n2", 10, after=h[0].id) == h[1:]
        assert await disk.hints_for("n3", 10) == [h[0]]
        assert await disk.hints_for("n9", 10) == []
        assert await disk.hint_summary() == {"n2": (3, 100), "n3": (1, 50)}
        await disk.delete_hint("n2", h[1].id)
        await disk.delete_hint("n2", message(8).id)  # not held: nothing happens
        await disk.delete_hint("n9", h[0].id)
        assert await disk.hints_for("n2", 10) == [h[0], h[2]]
        await disk.delete_hint("n3", h[0].id)
        assert await disk.hint_summary() == {"n2": (2, 100)}
        # Hints are not the room's messages.
        assert await disk.history(ROOM) == ([], False)
        assert await disk.highest_id() == ""

    run(scenario())


def test_hints_past_the_window_expire(disk: Disk, run: Run) -> None:
    h = [message(n) for n in range(1, 4)]

    async def scenario() -> None:
        for copy, at_ms in zip(h, [100, 200, 300], strict=True):
            await disk.add_hint("n2", copy, at_ms)
        await disk.add_hint("n3", h[0], 100)
        await disk.delete_hint("n3", h[0].id)  # an owner with no hints left is not listed
        assert await disk.expire_hints(200, COUNT_UNBOUNDED, HINT_BYTES_UNBOUNDED) == {"n2": 1}
        assert await disk.hints_for("n2", 10) == h[1:]
        assert await disk.expire_hints(200, COUNT_UNBOUNDED, HINT_BYTES_UNBOUNDED) == {"n2": 0}
        assert await disk.expire_hints(301, COUNT_UNBOUNDED, HINT_BYTES_UNBOUNDED) == {"n2": 2}
        assert await disk.hints_for("n2", 10) == []
        assert await disk.expire_hints(301, COUNT_UNBOUNDED, HINT_BYTES_UNBOUNDED) == {}

    run(scenario())


def test_hints_beyond_the_count_bound_expire_oldest_first(disk: Disk, run: Run) -> None:
    h = [message(n) for n in range(1, 6)]

    async def scenario() -> None:
        # Stored at 100, 200, 300 and (h[3], h[4]) both at 400: ids order a tie.
        for copy, at_ms in zip(h, [300, 100, 200, 400, 400], strict=True):
            await disk.add_hint("n2", copy, at_ms)
        await disk.add_hint("n3", h[0], 100)
        assert await disk.expire_hints(0, 2, HINT_BYTES_UNBOUNDED) == {"n2": 3, "n3": 0}
        assert await disk.hints_for("n2", 10) == h[3:]
        assert await disk.expire_hints(0, 1, HINT_BYTES_UNBOUNDED) == {"n2": 1, "n3": 0}
        assert await disk.hints_for("n2", 10) == [h[4]]
        assert await disk.hints_for("n3", 10) == [h[0]]

    run(scenario())


def test_hints_beyond_the_byte_bound_expire_oldest_first(disk: Disk, run: Run) -> None:
    # Bodies of two-byte characters: the bound counts UTF-8 bytes.
    h = [message(n, body="é" * 100 * n) for n in range(1, 5)]

    async def scenario() -> None:
        for copy, at_ms in zip(h, [100, 200, 300, 400], strict=True):
            await disk.add_hint("n2", copy, at_ms)
        newest_two_bytes = hint_bytes(h[3]) + hint_bytes(h[2])
        assert await disk.expire_hints(0, COUNT_UNBOUNDED, newest_two_bytes) == {"n2": 2}
        assert await disk.hints_for("n2", 10) == h[2:]
        assert await disk.expire_hints(0, COUNT_UNBOUNDED, newest_two_bytes - 1) == {"n2": 1}
        assert await disk.hints_for("n2", 10) == [h[3]]
        # Unlike a page, a hint queue may be cut to nothing.
        assert await disk.expire_hints(0, COUNT_UNBOUNDED, hint_bytes(h[3]) - 1) == {"n2": 1}
        assert await disk.hints_for("n2", 10) == []

    run(scenario())


# ---- room memberships ----


def test_a_join_then_a_leave_is_kept_as_the_latest_change(disk: Disk, run: Run) -> None:
    async def scenario() -> None:
        assert await disk.rooms_of("ann") == []
        assert await disk.memberships_of("ann") == []
        await disk.set_membership("ann", ROOM, joined=True, time_ms=100)
        await disk.set_membership("ann", "attic", joined=True, time_ms=150)
        await disk.set_membership("bob", "zebra", joined=True, time_ms=100)
        assert await disk.rooms_of("ann") == ["attic", ROOM]
        assert await disk.memberships_of("ann") == [
            MembershipChange("ann", "attic", True, 150),
            MembershipChange("ann", ROOM, True, 100),
        ]
        await disk.set_membership("ann", ROOM, joined=False, time_ms=200)
        assert await disk.rooms_of("ann") == ["attic"]
        # Leaves are kept, so that a later merge elsewhere knows of them.
        assert await disk.memberships_of("ann") == [
            MembershipChange("ann", "attic", True, 150),
            MembershipChange("ann", ROOM, False, 200),
        ]
        assert await disk.rooms_of("bob") == ["zebra"]

    run(scenario())


def test_the_later_membership_change_wins_and_a_join_at_the_same_ms(disk: Disk, run: Run) -> None:
    async def scenario() -> None:
        async def latest() -> list[MembershipChange]:
            return await disk.memberships_of("ann")

        await disk.set_membership("ann", ROOM, joined=False, time_ms=200)
        await disk.set_membership("ann", ROOM, joined=True, time_ms=100)  # older: loses
        assert await latest() == [MembershipChange("ann", ROOM, False, 200)]
        await disk.set_membership("ann", ROOM, joined=True, time_ms=200)  # same ms: joins win
        assert await latest() == [MembershipChange("ann", ROOM, True, 200)]
        await disk.set_membership("ann", ROOM, joined=False, time_ms=200)
        assert await latest() == [MembershipChange("ann", ROOM, True, 200)]
        assert await disk.rooms_of("ann") == [ROOM]
        await disk.set_membership("ann", ROOM, joined=False, time_ms=201)
        assert await latest() == [MembershipChange("ann", ROOM, False, 201)]
        assert await disk.rooms_of("ann") == []

    run(scenario())


# ---- what a restart finds ----


def test_the_highest_id_counts_every_copy_given_even_a_losing_twin(disk: Disk, run: Run) -> None:
    held = message(1, client_msg_id="retried")
    losing_twin = message(5, node="n2", client_msg_id="retried")

    async def scenario() -> None:
        assert await disk.highest_id() == ""
        await disk.append(held)
        assert await disk.highest_id() == held.id
        # A restarted node's clock must run past every id it was given, stored or not.
        assert await disk.append(losing_twin) == Stored(held, known=True)
        assert await disk.highest_id() == losing_twin.id
        await disk.add_hint("n2", message(9), now_ms=100)  # another node's copy
        assert await disk.highest_id() == losing_twin.id
        with pytest.raises(IdConflictError):
            await disk.append(RoomMessage(held.id, ROOM, "mallory", "m1", 0, "not it"))
        assert await disk.highest_id() == losing_twin.id

    run(scenario())


def relation(
    number: int, kind: str, target: RoomMessage, *, body: str = "", key: str | None = None
) -> RoomMessage:
    return msgspec.structs.replace(
        message(number, body=body), kind=kind, target=target.id, reaction_key=key
    )


@pytest.mark.parametrize("order", ["as_made", "reversed"])
def test_relations_fold_into_pages_and_a_delete_erases_from_the_disk(
    disk: Disk, run: Run, order: str
) -> None:
    kept, doomed = message(1), message(2, body="a secret")
    events = [
        kept,
        doomed,
        relation(3, "edit", kept, body="kept, edited"),
        relation(4, "reaction", kept, key="+1"),
        relation(5, "edit", doomed, body="a worse secret"),
        relation(6, "delete", doomed),
    ]

    async def scenario() -> None:
        # Reversed, every relation comes before its target and the delete before all.
        for event in events if order == "as_made" else events[::-1]:
            await disk.append(event)
        shown, more, relations = await disk.messages_page(ROOM, ORIGIN, 10)
        assert ([m.id for m in shown], more) == ([kept.id, doomed.id], False)
        made = {item.id: item for item in relations}
        edit = made[kept.id].edit
        assert edit is not None and edit.body == "kept, edited"
        assert list(made[kept.id].reactions) == ["+1"]
        assert made[doomed.id].tombstone is not None
        # Nothing of the deleted message is left: not its body, not its edit's.
        on_disk = {m.id: m.body for m in await room_of(disk)}
        assert on_disk[doomed.id] == "" and on_disk[events[4].id] == ""
        assert on_disk[kept.id] == "body 1" and on_disk[events[2].id] == "kept, edited"

    run(scenario())


def test_a_read_marker_only_moves_forward(disk: Disk, run: Run) -> None:
    first, later = message(1).id, message(2).id

    async def scenario() -> None:
        await disk.set_read_marker("ann", ROOM, later)
        await disk.set_read_marker("ann", ROOM, first)
        await disk.set_read_marker("ann", "attic", first)
        await disk.set_read_marker("bob", ROOM, first)
        assert await disk.read_markers_of("ann") == [
            ReadMarker("ann", "attic", first),
            ReadMarker("ann", ROOM, later),
        ]
        await disk.restart()
        assert await disk.read_markers_of("bob") == [ReadMarker("bob", ROOM, first)]

    run(scenario())


def test_everything_stored_is_there_after_a_restart(disk: Disk, run: Run) -> None:
    m = [message(n) for n in range(1, 4)]
    hint = message(7, room="hinted")

    async def scenario() -> None:
        await disk.append(m[0])
        await disk.append(m[1], late_at_ms=500)
        await disk.append(m[2])
        await disk.add_hint("n2", hint, 100)
        await disk.set_membership("ann", ROOM, joined=True, time_ms=100)
        await disk.restart()
        assert await room_of(disk) == m
        assert await disk.highest_id() == m[2].id
        assert await disk.room_names() == [ROOM]
        assert await disk.digest(ROOM) == digest_of([copy.id for copy in m])
        arrivals = await disk.late_arrivals(ROOM, since_ms=0, up_to=AFTER_EVERY_ID, limit=10)
        assert arrivals == [m[1]]
        assert await disk.hints_for("n2", 10) == [hint]
        assert await disk.add_hint("n2", hint, 200) is True
        assert await disk.memberships_of("ann") == [MembershipChange("ann", ROOM, True, 100)]
        # A retried send after the restart is still a repeat.
        assert await disk.append(m[0]) == Stored(m[0], known=True)

    run(scenario())
