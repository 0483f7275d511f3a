"""Requests of this node's clients to the rooms, as awaitables.

Each request gets a ticket and a future; the room driver hands the engine's outcome to
`PendingTickets.complete`, which resolves it. The gateway and the HTTP API await these and
never see the engine.
"""

import asyncio
import itertools
import logging

from mesh.node.room_driver import RoomDriver, trace
from mesh.node.storage import SendResult
from mesh.wire.errors import ErrorCode
from router.effects import Acked, Outcome, Page, Ready, Refused, Rooms, Users
from router.events import (
    AnnounceEvent,
    ReadPage,
    RecordMembership,
    RecordReadMarker,
    ResumeRoom,
    RoomsOf,
    SendMessage,
    Subscribe,
    Unsubscribe,
    WhoIsIn,
)
from router.records import MembershipChange, ReadMarker, RoomMessage
from router.wire import SessionEvent
from router.writes import SendRequest

log = logging.getLogger(__name__)


# Codes a refusal keeps on its way to a client: retrying would change nothing.
FINAL_CODES = frozenset(
    {
        ErrorCode.INTERNAL,
        ErrorCode.BAD_REQUEST,
        ErrorCode.CONFLICT,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_FOUND,
    }
)


class RoomUnavailableError(Exception):
    """The mesh could not serve the request now (too few replicas: retrying is safe), or
    would not: `code` says which (forbidden, conflict, bad_request are final)."""

    def __init__(self, code: ErrorCode, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.retry_after_s = retry_after_s  # when a retry may succeed, if the mesh said


class PendingTickets:
    """Requests waiting for their outcome, by ticket (the driver's Completions)."""

    def __init__(self) -> None:
        self._tickets = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Outcome]] = {}
        # Found once: get_running_loop() asks the OS for the pid each time, per request.
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> tuple[int, "asyncio.Future[Outcome]"]:
        ticket = next(self._tickets)
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = self._loop.create_future()
        self._waiting[ticket] = future
        return ticket, future

    def complete(self, ticket: int, outcome: Outcome) -> None:
        future = self._waiting.pop(ticket, None)
        if future is not None and not future.done():
            future.set_result(outcome)

    def close(self) -> None:
        """The node is stopping: every request still waiting is refused."""
        for future in self._waiting.values():
            if not future.done():
                future.set_result(Refused(ErrorCode.UNAVAILABLE, "the node is stopping"))
        self._waiting.clear()


class RoomRequests:
    def __init__(self, driver: RoomDriver, pending: PendingTickets) -> None:
        self._driver = driver
        self._pending = pending

    def send(
        self, room: str, sender: str, client_msg_id: str, body: str
    ) -> "asyncio.Future[SendResult]":
        """The future resolves once W replicas hold the message (or fails with
        RoomUnavailableError); it never blocks the caller."""
        return self.write(SendRequest(room, sender, client_msg_id, body))

    def write(self, request: SendRequest) -> "asyncio.Future[SendResult]":
        """As `send`, for an event of any kind (router/event_rules.py)."""
        ticket, outcome = self._pending.open()
        result: asyncio.Future[SendResult] = outcome.get_loop().create_future()

        def settle(done: "asyncio.Future[Outcome]") -> None:
            if result.done():
                return
            if done.cancelled():
                result.cancel()
                return
            answer = done.result()
            if isinstance(answer, Acked):
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "send acknowledged by the room's replicas", extra=trace(answer.message)
                    )
                result.set_result(SendResult(answer.message, answer.duplicate))
            else:
                result.set_exception(_error(answer))

        outcome.add_done_callback(settle)
        self._driver.handle(SendMessage(ticket, request))
        return result

    async def read(
        self,
        room: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
        bytes_max: int | None = None,
    ) -> tuple[list[RoomMessage], bool]:
        """A page of the log from R replicas, within `bytes_max` (router/page_bytes.py
        message_bytes) when given; a page cut short by bytes says there is more."""
        page = await self.page(room, before=before, after=after, limit=limit, bytes_max=bytes_max)
        return page.messages, page.more

    async def page(
        self,
        room: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
        bytes_max: int | None = None,
        messages_only: bool = False,
        overlapping: bool = False,
        state_only: bool = False,
    ) -> Page:
        """As `read`; with `messages_only`, the messages alone and what relations made of
        them (their bytes count against `bytes_max` too); with `overlapping`, from enough
        replicas to see every acknowledged write."""
        ticket, outcome = self._pending.open()
        read = ReadPage(
            ticket,
            room,
            before,
            after,
            limit,
            bytes_max=bytes_max,
            messages_only=messages_only,
            overlapping=overlapping,
            state_only=state_only,
        )
        self._driver.handle(read)
        answer = await outcome
        if not isinstance(answer, Page):
            raise _error(answer)
        return answer

    async def resume(self, room: str, after: str, limit: int, *, since: str) -> Page:
        """A page of a session's replay from `since`, now at `after`: the first brings
        the replicas' late arrivals, the last this node's own (RoomEngine)."""
        ticket, outcome = self._pending.open()
        self._driver.handle(ResumeRoom(ticket, room, after, limit, since))
        answer = await outcome
        if not isinstance(answer, Page):
            raise _error(answer)
        return answer

    async def subscribe(self, room: str) -> None:
        ticket, outcome = self._pending.open()
        self._driver.handle(Subscribe(ticket, room))
        answer = await outcome
        if not isinstance(answer, Ready):
            raise _error(answer)

    def unsubscribe(self, room: str) -> None:
        self._driver.handle(Unsubscribe(room))

    def announce(self, event: SessionEvent) -> None:
        self._driver.handle(AnnounceEvent(event))

    async def who(self, room: str) -> list[str]:
        ticket, outcome = self._pending.open()
        self._driver.handle(WhoIsIn(ticket, room))
        answer = await outcome
        return answer.users if isinstance(answer, Users) else []

    async def record_membership(self, change: MembershipChange) -> None:
        """Keep a join or leave here and with the user's nodes; returns once on disk."""
        ticket, outcome = self._pending.open()
        self._driver.handle(RecordMembership(ticket, change))
        answer = await outcome
        if not isinstance(answer, Ready):
            raise _error(answer)

    async def record_read_marker(self, marker: ReadMarker) -> None:
        """Keep a read marker here and with the user's nodes; returns once on disk."""
        ticket, outcome = self._pending.open()
        self._driver.handle(RecordReadMarker(ticket, marker))
        answer = await outcome
        if not isinstance(answer, Ready):
            raise _error(answer)

    async def rooms_of(self, user: str) -> list[str]:
        """The user's rooms, whichever nodes they joined through."""
        return (await self.user_rooms(user)).rooms

    async def user_rooms(self, user: str) -> Rooms:
        """The user's rooms and read markers, from this node and the user's live nodes."""
        ticket, outcome = self._pending.open()
        self._driver.handle(RoomsOf(ticket, user))
        answer = await outcome
        return answer if isinstance(answer, Rooms) else Rooms([], complete=False)


def _error(outcome: Outcome) -> RoomUnavailableError:
    if isinstance(outcome, Refused):
        return RoomUnavailableError(outcome.code, outcome.reason, outcome.retry_after_s)
    return RoomUnavailableError(ErrorCode.INTERNAL, f"unexpected outcome {outcome!r}")
