"""Pages bounded in bytes as well as in count: the size estimate, the cut, the merge of
replica pages cut short by bytes, a replica's read reply within the peer frame, and the
storage page queries (SQLite and the simulator's disk alike)."""

import asyncio
from pathlib import Path
from typing import NamedTuple

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.node.doors.chat import to_wire
from mesh.node.peer_codec import encode_peer_frame
from mesh.node.storage import Storage, StoredMessage
from mesh.wire import protocol
from peers.limits import PEER_FRAME_BYTES_MAX
from router.config import RouterConfig
from router.effects import Load, SendPeer
from router.engine import RoomEngine
from router.event_rules import Relations, Tombstone
from router.events import Loaded, PeerMessage, StorageDone
from router.page_bytes import (
    LATE_PAGE_BYTES_MAX,
    MESSAGE_BYTES_MAX,
    READ_PAGE_BYTES_MAX,
    cut_page,
    cut_to_bytes,
    message_bytes,
)
from router.reads import ReplicaPage, merge_pages
from router.records import (
    BODY_CHARS_MAX,
    CLIENT_MSG_ID_MAX,
    ROOM_NAME_MAX,
    USER_NAME_MAX,
    RoomMessage,
)
from router.wire import LATE_MESSAGES_MAX, READ_MESSAGES_MAX, ReadReply, ReadRequest
from tests.sim.memory_store import MemoryStore

BIG_BODY_BYTES = 64 * 1024


def message(number: int, body_bytes: int = 10, sender: str = "ann") -> RoomMessage:
    return RoomMessage(
        id=f"{number:012x}0000.n1",
        room="lobby",
        sender=sender,
        client_msg_id=f"c{number}",
        time_ms=number,
        body="x" * body_bytes,
    )


# ---- the estimate and the cut ----

texts = st.text(max_size=40)


@given(texts, texts, texts, texts, st.integers(0, 2**63 - 1))
def test_the_estimate_is_never_below_either_wire_encoding(
    room: str, sender: str, client_msg_id: str, body: str, time_ms: int
) -> None:
    held = RoomMessage("0" * 81, room or "r", sender or "s", client_msg_id or "c", time_ms, body)
    peer_bytes = len(msgspec.msgpack.encode(held))
    shown = to_wire(held)
    assert shown is not None
    client_bytes = len(protocol.encode(protocol.MessageEvent(message=shown)))
    assert max(peer_bytes, client_bytes) <= message_bytes(held)


def test_the_largest_message_peers_accept_fits_every_replica_page() -> None:
    widest = "\U0001f600"  # 4 bytes in UTF-8
    largest = RoomMessage(
        "0" * 81,
        widest * ROOM_NAME_MAX,
        widest * USER_NAME_MAX,
        widest * CLIENT_MSG_ID_MAX,
        2**63 - 1,
        widest * BODY_CHARS_MAX,
    )
    assert len(msgspec.msgpack.encode(largest)) <= message_bytes(largest) <= MESSAGE_BYTES_MAX
    assert MESSAGE_BYTES_MAX <= LATE_PAGE_BYTES_MAX <= READ_PAGE_BYTES_MAX
    # A whole read reply, page and late arrivals at their budgets, leaves a margin.
    assert READ_PAGE_BYTES_MAX + LATE_PAGE_BYTES_MAX <= PEER_FRAME_BYTES_MAX * 3 // 4


@given(st.lists(st.integers(1, 100), max_size=30), st.integers(1, 400), st.booleans())
def test_a_cut_keeps_the_longest_run_that_fits_and_never_less_than_one(
    sizes: list[int], bytes_max: int, keep_oldest: bool
) -> None:
    items = list(enumerate(sizes))
    kept, cut = cut_to_bytes(items, bytes_max, lambda item: item[1], keep_oldest=keep_oldest)
    assert cut == (len(kept) < len(items))
    if items:
        assert kept, "a page always holds at least one item"
    assert kept == (items[: len(kept)] if keep_oldest else items[len(items) - len(kept) :])
    total = sum(size for _, size in kept)
    assert total <= bytes_max or len(kept) == 1
    if cut:
        following = items[len(kept)] if keep_oldest else items[-len(kept) - 1]
        assert total + following[1] > bytes_max, "the next one would not have fitted"


# ---- merging replica pages cut short by bytes ----


def page_of(
    held: dict[int, int], *, after: int | None, before: int | None, limit: int, bytes_max: int
) -> ReplicaPage:
    """What a replica holding `held` (number -> body bytes) answers, as storage does."""
    numbers = sorted(
        n for n in held if (after is None or n > after) and (before is None or n < before)
    )
    forward = after is not None
    chosen = numbers[:limit] if forward else numbers[-limit:]
    messages = [message(n, held[n]) for n in chosen]
    fitted, cut = cut_page(messages, bytes_max, keep_oldest=forward)
    return ReplicaPage(fitted, cut or len(numbers) > limit)


def walk(
    held: list[dict[int, int]], *, forward: bool, limit: int, replica_bytes: int, page_bytes: int
) -> list[list[int]]:
    """Every merged page of a walk over the room, by cursor, as a client would walk it."""
    pages: list[list[int]] = []
    cursor: int | None = 0 if forward else None
    for _ in range(1000):
        answers = {
            f"r{i}": page_of(
                h,
                after=cursor if forward else None,
                before=None if forward else cursor,
                limit=limit,
                bytes_max=replica_bytes,
            )
            for i, h in enumerate(held)
        }
        merged = merge_pages(answers, forward=forward, limit=limit, bytes_max=page_bytes)
        shown = merged.messages
        assert len(shown) <= limit
        assert sum(map(message_bytes, shown)) <= page_bytes or len(shown) == 1
        pages.append([m.time_ms for m in shown])
        if not merged.more:
            return pages
        assert shown, "a page cut short always holds a message, so its cursor advances"
        cursor = shown[-1].time_ms if forward else shown[0].time_ms
    raise AssertionError("the walk did not end")


holdings = st.lists(
    st.dictionaries(st.integers(1, 60), st.sampled_from([10, 500, 2000, 6000]), max_size=40),
    min_size=1,
    max_size=3,
)


@settings(max_examples=300)
@given(holdings, st.booleans(), st.integers(1, 12), st.integers(1, 20_000), st.integers(1, 20_000))
def test_walking_pages_cut_by_bytes_returns_the_whole_union_once_in_order(
    held: list[dict[int, int]], forward: bool, limit: int, replica_bytes: int, page_bytes: int
) -> None:
    pages = walk(
        held, forward=forward, limit=limit, replica_bytes=replica_bytes, page_bytes=page_bytes
    )
    walked = [n for page in (pages if forward else reversed(pages)) for n in page]
    assert walked == sorted({n for h in held for n in h})


def test_a_replica_cut_short_by_bytes_bounds_the_merged_page_at_its_last_id() -> None:
    # a holds 1..10 with big bodies and answered up to 3; b holds 1..10 small, all of them.
    big = page_of(
        dict.fromkeys(range(1, 11), 4000), after=0, before=None, limit=10, bytes_max=13_000
    )
    assert [m.time_ms for m in big.messages] == [1, 2, 3] and big.more
    small = page_of(
        dict.fromkeys([1, 2, 3, 5, 8], 10), after=0, before=None, limit=10, bytes_max=13_000
    )
    merged = merge_pages({"a": big, "b": small}, forward=True, limit=10)
    # Past 3, `a` did not say what it holds: 4 may be there, so the page ends at 3.
    assert [m.time_ms for m in merged.messages] == [1, 2, 3] and merged.more
    assert merged.repairs == {}

    backward = page_of(
        dict.fromkeys(range(1, 11), 4000), after=None, before=None, limit=10, bytes_max=13_000
    )
    assert [m.time_ms for m in backward.messages] == [8, 9, 10] and backward.more
    older = page_of(
        dict.fromkeys([2, 6, 9], 10), after=None, before=None, limit=10, bytes_max=13_000
    )
    merged = merge_pages({"a": backward, "b": older}, forward=False, limit=10)
    assert [m.time_ms for m in merged.messages] == [8, 9, 10] and merged.more


def test_a_merged_page_is_cut_to_its_own_budget_keeping_the_side_it_pages_from() -> None:
    full = ReplicaPage([message(n, 1000) for n in range(1, 6)], more=False)
    forward = merge_pages({"a": full}, forward=True, limit=10, bytes_max=2500)
    assert [m.time_ms for m in forward.messages] == [1, 2] and forward.more
    backward = merge_pages({"a": full}, forward=False, limit=10, bytes_max=2500)
    assert [m.time_ms for m in backward.messages] == [4, 5] and backward.more
    lone = merge_pages({"a": full}, forward=True, limit=10, bytes_max=1)
    assert [m.time_ms for m in lone.messages] == [1] and lone.more


# ---- a replica's answer within the peer frame ----


def replica_engine() -> RoomEngine:
    return RoomEngine(
        "n2", RouterConfig(), epoch=1, wall_offset_ms=0, local_users=lambda room: [], alone=True
    )


@pytest.mark.parametrize("forward", [True, False])
def test_a_replica_cuts_its_read_reply_to_fit_the_peer_frame(forward: bool) -> None:
    engine = replica_engine()
    after = f"{0:012x}0000.n1" if forward else None
    request = ReadRequest(7, "lobby", after=after, limit=READ_MESSAGES_MAX, late_since_ms=0)
    (load,) = engine.handle(PeerMessage("n1", request), 1.0)
    assert isinstance(load, Load)
    # A full page and a full late list of the largest bodies: 96 MB unbounded.
    page = [message(n, BIG_BODY_BYTES) for n in range(1, READ_MESSAGES_MAX + 1)]
    late = [message(n, BIG_BODY_BYTES, sender="bob") for n in range(1, LATE_MESSAGES_MAX + 1)]
    (effect,) = engine.handle(StorageDone(load, Loaded(page, False, late)), 1.0)
    assert isinstance(effect, SendPeer) and isinstance(effect.message, ReadReply)
    reply = effect.message
    assert len(encode_peer_frame(reply)) < PEER_FRAME_BYTES_MAX
    assert reply.more, "a page cut short by bytes says so"
    assert 1 <= len(reply.messages) < len(page)
    expected = page[: len(reply.messages)] if forward else page[-len(reply.messages) :]
    assert reply.messages == expected
    assert reply.late == late[-len(reply.late) :] and 1 <= len(reply.late) < len(late)


def test_a_replica_page_that_fits_goes_out_whole() -> None:
    engine = replica_engine()
    (load,) = engine.handle(PeerMessage("n1", ReadRequest(8, "lobby", limit=5)), 1.0)
    assert isinstance(load, Load)
    page = [message(n, 100) for n in range(1, 6)]
    (effect,) = engine.handle(StorageDone(load, Loaded(page, True)), 1.0)
    assert isinstance(effect, SendPeer)
    assert effect.message == ReadReply(8, page, True)


# ---- storage page queries: SQLite and the simulator's disk ----


def stored(n: int, body_bytes: int) -> StoredMessage:
    return message(n, body_bytes)


# Body bytes of messages 1..8; each message takes about 125 bytes more.
SIZES = [100, 3000, 50, 5000, 200, 4000, 10, 8000]


class Query(NamedTuple):
    after: int | None
    before: int | None
    limit: int
    bytes_max: int
    page: list[int]  # what the page holds
    more: bool


QUERIES = [
    Query(after=0, before=None, limit=8, bytes_max=8000, page=[1, 2, 3], more=True),
    Query(after=0, before=None, limit=2, bytes_max=8000, page=[1, 2], more=True),
    Query(after=3, before=8, limit=8, bytes_max=8000, page=[4, 5], more=True),
    Query(after=None, before=None, limit=8, bytes_max=8000, page=[8], more=True),  # a lone one
    Query(after=None, before=8, limit=8, bytes_max=8000, page=[5, 6, 7], more=True),
    Query(after=0, before=None, limit=8, bytes_max=1, page=[1], more=True),
    Query(after=None, before=None, limit=8, bytes_max=1, page=[8], more=True),
    Query(after=0, before=None, limit=8, bytes_max=10**9, page=list(range(1, 9)), more=False),
]


def id_of(number: int | None) -> str | None:
    return None if number is None else message(number).id


def test_storage_pages_are_cut_by_bytes_and_always_hold_a_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = Storage(tmp_path)
        await storage.open()
        try:
            for n, size in enumerate(SIZES, start=1):
                await storage.append(stored(n, size))
            for query in QUERIES:
                page, more = await storage.history(
                    "lobby",
                    after=id_of(query.after),
                    before=id_of(query.before),
                    limit=query.limit,
                    bytes_max=query.bytes_max,
                )
                assert ([m.time_ms for m in page], more) == (query.page, query.more), query
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_the_simulators_disk_cuts_pages_as_storage_does() -> None:
    store = MemoryStore()
    for n, size in enumerate(SIZES, start=1):
        store.store(stored(n, size))
    for query in QUERIES:
        page, more = store.history(
            "lobby", id_of(query.before), id_of(query.after), query.limit, query.bytes_max
        )
        assert ([m.time_ms for m in page], more) == (query.page, query.more), query


def test_late_arrivals_keep_the_most_recent_that_fit_on_both_disks(tmp_path: Path) -> None:
    # Arrivals in the order 3, 1, 4, 2 (each later than the one before), 4000 bytes each.
    arrivals = [(3, 1_000), (1, 2_000), (4, 3_000), (2, 4_000)]
    store = MemoryStore()
    for n, at_ms in arrivals:
        store.store(stored(n, 4000), late_at_ms=at_ms)
    up_to = message(9).id
    budget = 2 * message_bytes(stored(1, 4000))

    def numbers(messages: list[RoomMessage]) -> list[int]:
        return [m.time_ms for m in messages]

    # The two most recent arrivals (2, then 4) fit, oldest id first; a lone one always does.
    assert numbers(store.late_arrivals("lobby", 0, up_to, 10, budget)) == [2, 4]
    assert numbers(store.late_arrivals("lobby", 0, up_to, 10, 1)) == [2]

    async def scenario() -> None:
        storage = Storage(tmp_path)
        await storage.open()
        try:
            for n, at_ms in arrivals:
                await storage.append(stored(n, 4000), late_at_ms=at_ms)

            async def found(bytes_max: int) -> list[int]:
                return numbers(
                    await storage.late_arrivals(
                        "lobby", since_ms=0, up_to=up_to, limit=10, bytes_max=bytes_max
                    )
                )

            assert await found(budget) == [2, 4]
            assert await found(1) == [2]
            assert await found(LATE_PAGE_BYTES_MAX) == [1, 2, 3, 4]
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_a_page_merged_from_replicas_shows_a_deleted_message_erased_with_its_tombstone() -> None:
    message = RoomMessage("0000000000000001.n1", "lobby", "ann", "c1", 1, "a secret")
    erased = msgspec.structs.replace(message, body="")
    tombstone = Tombstone("ann", 2, "0000000000000002.n1")
    told = Relations(id=message.id, tombstone=tombstone)
    behind = ReplicaPage([message], more=False)  # the delete has not reached it yet
    ahead = ReplicaPage([erased], more=False, relations=[told])
    for pages in ({"a": behind, "b": ahead}, {"b": ahead, "a": behind}):
        merged = merge_pages(pages, forward=True, limit=10)
        assert [m.body for m in merged.messages] == [""]
        assert merged.relations[message.id].tombstone == tombstone
