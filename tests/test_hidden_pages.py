"""History pages around what a banned user wrote while banned (written on the other side
of a partition, so stored): hidden from readers, and never the end of a reader's paging."""

import asyncio
from typing import Any, cast

from mesh.node.doors.chat import HIDDEN_PAGES_SKIPPED_MAX, ChatService
from mesh.node.doors.rooms import RoomHub
from mesh.node.room_requests import RoomRequests
from router.effects import Page
from router.message_ids import MessageId
from router.records import EventKind, RoomMessage
from router.room_state import STATE_KINDS

ROOM = "club"


def event(
    time_ms: int, sender: str, kind: EventKind = "message", body: str = "", **fields: Any
) -> RoomMessage:
    message_id = str(MessageId(time_ms, 0, "n1"))
    return RoomMessage(message_id, ROOM, sender, f"c{time_ms}", time_ms, body, kind, **fields)


class StoredRoom:
    """The one room's log as the replicas would page it."""

    def __init__(self, log: list[RoomMessage]) -> None:
        self.log = sorted(log, key=lambda held: held.id)

    async def page(
        self,
        room: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
        state_only: bool = False,
        **_: Any,
    ) -> Page:
        held = [e for e in self.log if (e.kind in STATE_KINDS) == state_only]
        if after is not None:
            later = [e for e in held if e.id > after]
            return Page(later[:limit], more=len(later) > limit)
        earlier = [e for e in held if before is None or e.id < before]
        return Page(earlier[-limit:], more=len(earlier) > limit)


def reader_pages(log: list[RoomMessage], *, forward: bool) -> list[list[str]]:
    """Every page a reader gets, paging as clients do (the cursor is a message shown)."""
    chat = ChatService("n1", cast(RoomRequests, StoredRoom(log)), RoomHub(), lambda: 0)

    async def read() -> list[list[str]]:
        pages: list[list[str]] = []
        cursor: str | None = None
        while True:
            if forward:
                page = await chat.history(ROOM, "ann", after=cursor or "0" * 16 + ".a", limit=5)
            else:
                page = await chat.history(ROOM, "ann", before=cursor, limit=5)
            pages.append([message.sender for message in page.messages])
            if not page.more or not page.messages:
                return pages
            cursor = page.messages[-1 if forward else 0].id

    return asyncio.run(read())


def test_a_run_of_hidden_messages_longer_than_a_page_does_not_end_the_paging() -> None:
    # mallory banned from t=100 to t=500, writing all along on the far side of a partition.
    log = [
        event(1, "ann", "create", body="open"),
        event(100, "ann", "ban", subject="mallory"),
        event(500, "ann", "unban", subject="mallory"),
        *(event(10 + t, "bob") for t in range(3)),
        *(event(200 + t, "mallory") for t in range(12)),
        *(event(600 + t, "bob") for t in range(3)),
    ]
    for forward in (True, False):
        senders = [sender for page in reader_pages(log, forward=forward) for sender in page]
        assert senders.count("bob") == 6, (forward, senders)
        assert "mallory" not in senders


def test_the_read_past_hidden_pages_is_bounded() -> None:
    hidden = 5 * (HIDDEN_PAGES_SKIPPED_MAX + 2)
    log = [
        event(1, "ann", "create", body="open"),
        event(100, "ann", "ban", subject="mallory"),
        *(event(200 + t, "mallory") for t in range(hidden)),
        event(5_000, "bob"),
    ]
    pages = reader_pages(log, forward=True)
    assert pages == [[]], pages  # past the bound: an empty page, which ends the paging
