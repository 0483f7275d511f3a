"""The asyncio shell around the room engine: it carries out the engine's effects.

Peer messages go out on the transport, copies go to storage, pages come back from it,
and requests of this node's clients become futures that the engine's completions resolve.
The engine decides; this module only moves bytes and waits on the disk.
"""

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from mesh.storage import SendResult, Storage, StorageError
from router.effects import (
    Acked,
    Complete,
    DeleteHint,
    DeliverEvent,
    DeliverMessage,
    Effect,
    ExpireHints,
    ListRooms,
    Load,
    LoadDigest,
    LoadHints,
    LoadIds,
    LoadMemberships,
    LoadMessages,
    Outcome,
    Page,
    Ready,
    Refusal,
    Refused,
    Rooms,
    SendPeer,
    Store,
    StoreHint,
    StoreMembership,
    Users,
    Warn,
)
from router.engine import Health, RoomEngine
from router.page_bytes import LATE_PAGE_BYTES_MAX, READ_PAGE_BYTES_MAX
from router.records import MembershipChange, RoomMessage
from router.wire import LATE_MESSAGES_MAX, PresenceChanged, RouterMessage, TypingNotice
from router.writes import SendRequest

log = logging.getLogger(__name__)


class RoomUnavailableError(Exception):
    """The mesh could not serve the request now (too few replicas); retrying is safe."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


# Peers whose first refused message is logged; members are bounded, so this is plenty.
REFUSALS_LOGGED_MAX = 256


class LocalRooms(Protocol):
    """Where the engine's deliveries go: this node's sessions."""

    def deliver_message(self, message: RoomMessage) -> None: ...

    def deliver_event(self, event: PresenceChanged | TypingNotice) -> None: ...


class RoomRouter:
    def __init__(
        self,
        engine: RoomEngine,
        storage: Storage,
        send_to_node: Callable[[str, RouterMessage], None],
    ) -> None:
        self.engine = engine
        self.storage = storage
        self._send_to_node = send_to_node
        self._local: LocalRooms | None = None
        self._tickets = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Outcome]] = {}
        self._loads: set[asyncio.Task[None]] = set()
        self.copies_stored = 0
        self._refusals_logged: set[str] = set()

    def attach(self, local: LocalRooms) -> None:
        self._local = local

    # ---- requests ----

    def send(
        self, room: str, sender: str, client_msg_id: str, body: str
    ) -> "asyncio.Future[SendResult]":
        """The future resolves once W replicas hold the message (or fails with
        RoomUnavailableError); it never blocks the caller."""
        ticket, outcome = self._open()
        result: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()

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
                        "send acknowledged by the room's replicas", extra=_trace(answer.message)
                    )
                result.set_result(SendResult(answer.message, answer.duplicate))
            else:
                result.set_exception(_error(answer))

        outcome.add_done_callback(settle)
        request = SendRequest(room, sender, client_msg_id, body)
        self.apply(self.engine.send(ticket, request, time.monotonic()))
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
        """A page of history from R replicas, within `bytes_max` (router/page_bytes.py
        message_bytes) when given; a page cut short by bytes says there is more."""
        ticket, outcome = self._open()
        now = time.monotonic()
        effects = self.engine.read(
            ticket, room, before=before, after=after, limit=limit, now=now, bytes_max=bytes_max
        )
        self.apply(effects)
        answer = await outcome
        if not isinstance(answer, Page):
            raise _error(answer)
        return answer.messages, answer.more

    async def resume(self, room: str, after: str, limit: int, *, first: bool) -> Page:
        """A page of a session's replay (RoomEngine.resume): `first` brings the late
        arrivals too."""
        ticket, outcome = self._open()
        self.apply(self.engine.resume(ticket, room, after, limit, time.monotonic(), first=first))
        answer = await outcome
        if not isinstance(answer, Page):
            raise _error(answer)
        return answer

    async def subscribe(self, room: str) -> None:
        ticket, outcome = self._open()
        self.apply(self.engine.subscribe(ticket, room, time.monotonic()))
        answer = await outcome
        if not isinstance(answer, Ready):
            raise _error(answer)

    def unsubscribe(self, room: str) -> None:
        self.apply(self.engine.unsubscribe(room, time.monotonic()))

    def announce(self, event: PresenceChanged | TypingNotice) -> None:
        self.apply(self.engine.announce(event, time.monotonic()))

    async def who(self, room: str) -> list[str]:
        ticket, outcome = self._open()
        self.apply(self.engine.who(ticket, room, time.monotonic()))
        answer = await outcome
        return answer.users if isinstance(answer, Users) else []

    async def record_membership(self, change: MembershipChange) -> None:
        """Keep a join or leave here and with the user's nodes; returns once on disk."""
        ticket, outcome = self._open()
        self.apply(self.engine.record_membership(ticket, change, time.monotonic()))
        answer = await outcome
        if not isinstance(answer, Ready):
            raise _error(answer)

    async def rooms_of(self, user: str) -> list[str]:
        """The user's rooms, whichever nodes they joined through."""
        ticket, outcome = self._open()
        self.apply(self.engine.rooms_of(ticket, user, time.monotonic()))
        answer = await outcome
        return answer.rooms if isinstance(answer, Rooms) else []

    def _open(self) -> tuple[int, "asyncio.Future[Outcome]"]:
        ticket = next(self._tickets)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[ticket] = future
        return ticket, future

    # ---- events from the node ----

    def handle(self, sender: str, message: RouterMessage) -> None:
        self.apply(self.engine.handle(sender, message, time.monotonic()))

    def tick(self) -> None:
        self.apply(self.engine.tick(time.monotonic()))

    def set_members(self, members: dict[str, Health]) -> None:
        self.apply(self.engine.set_members(members, time.monotonic()))

    async def close(self) -> None:
        for task in list(self._loads):
            task.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.set_result(Refused("unavailable", "the node is stopping"))
        self._waiting.clear()

    # ---- effects ----

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case SendPeer(node, message):
                    self._send_to_node(node, message)
                case Store(token, message, late_at_ms):
                    self._store(token, message, late_at_ms=late_at_ms)
                case StoreHint(token, owner, message):
                    self._store(token, message, hint_for=owner)
                case DeleteHint(owner, message_id):
                    self.storage.delete_hint(owner, message_id).add_done_callback(_log_failure)
                case LoadHints() | ExpireHints():
                    self._read(self._hint_work(effect))
                case Load():
                    self._read(self._load(effect))
                case ListRooms() | LoadDigest() | LoadIds() | LoadMessages():
                    self._read(self._anti_entropy_read(effect))
                case StoreMembership(token, change):
                    self._store_membership(token, change)
                case LoadMemberships():
                    self._read(self._load_memberships(effect))
                case DeliverMessage(message):
                    if self._local is not None:
                        self._local.deliver_message(message)
                case DeliverEvent(event):
                    if self._local is not None:
                        self._local.deliver_event(event)
                case Complete(ticket, outcome):
                    future = self._waiting.pop(ticket, None)
                    if future is not None and not future.done():
                        future.set_result(outcome)
                case Warn(text):
                    log.warning("rooms: %s", text)
                case Refusal(sender, reason):
                    self._log_refusal(sender, reason)

    def _log_refusal(self, sender: str, reason: str) -> None:
        """The first refusal per peer is logged; the rest are only counted."""
        if sender in self._refusals_logged or len(self._refusals_logged) >= REFUSALS_LOGGED_MAX:
            return
        self._refusals_logged.add(sender)
        log.warning("rooms: refused from %s: %s (further ones are only counted)", sender, reason)

    def _store(
        self,
        token: int,
        message: RoomMessage,
        hint_for: str = "",
        late_at_ms: int | None = None,
    ) -> None:
        try:
            if hint_for:
                future = self.storage.add_hint(hint_for, message, int(time.time() * 1000))
            else:
                future = self.storage.append(message, late_at_ms)
        except StorageError as error:
            log.warning("rooms: could not queue a copy of %s: %s", message.id, error)
            self.apply(self.engine.stored(token, None, False, time.monotonic()))
            return

        def stored(done: "asyncio.Future[SendResult]") -> None:
            if done.cancelled():
                return
            if done.exception() is not None:
                self.apply(self.engine.stored(token, None, False, time.monotonic()))
                return
            result = done.result()
            if not result.duplicate:
                self.copies_stored += 1
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("copy stored", extra=_trace(result.message))
            now = time.monotonic()
            # A copy that replaced its twin (same send, larger id) is no news: the room
            # has had the message under the twin's id.
            known = result.duplicate or result.replaced is not None
            self.apply(self.engine.stored(token, result.message, known, now))

        future.add_done_callback(stored)

    def _store_membership(self, token: int, change: MembershipChange) -> None:
        try:
            future = self.storage.set_membership(
                change.user, change.room, joined=change.joined, time_ms=change.time_ms
            )
        except StorageError as error:
            log.warning("rooms: could not queue a room membership: %s", error)
            self.apply(self.engine.membership_stored(token, False))
            return

        def stored(done: "asyncio.Future[None]") -> None:
            if not done.cancelled():
                self.apply(self.engine.membership_stored(token, done.exception() is None))

        future.add_done_callback(stored)

    async def _load_memberships(self, effect: LoadMemberships) -> None:
        try:
            changes = await self.storage.memberships_of(effect.user)
        except StorageError as error:
            log.warning("rooms: reading room memberships failed: %s", error)
            self.apply(self.engine.memberships_loaded(effect.token, None))
            return
        self.apply(self.engine.memberships_loaded(effect.token, changes))

    async def _hint_work(self, effect: LoadHints | ExpireHints) -> None:
        try:
            match effect:
                case LoadHints(token, owner, limit, after):
                    hints = await self.storage.hints_for(owner, limit, after)
                    self.apply(self.engine.hints_loaded(token, hints, time.monotonic()))
                case ExpireHints(token, older_than_ms, count_max, bytes_max):
                    expiring = self.storage.expire_hints(older_than_ms, count_max, bytes_max)
                    self.apply(self.engine.hints_expired(token, await expiring))
        except StorageError as error:
            log.warning("rooms: hint storage failed: %s", error)

    def _read(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def _anti_entropy_read(
        self, effect: ListRooms | LoadDigest | LoadIds | LoadMessages
    ) -> None:
        storage = self.storage
        try:
            match effect:
                case ListRooms(token):
                    rooms = await storage.room_names()
                    self.apply(self.engine.rooms_listed(token, rooms))
                case LoadDigest(token, room):
                    digest = await storage.digest(room)
                    self.apply(self.engine.digest_loaded(token, digest))
                case LoadIds(token, room, after, before, limit):
                    ids, more = await storage.ids_between(room, after, before, limit)
                    self.apply(self.engine.ids_loaded(token, ids, more))
                case LoadMessages(token, room, ids):
                    messages = await storage.messages(room, ids)
                    self.apply(self.engine.loaded(token, messages, False, time.monotonic()))
        except StorageError as error:
            # The round is abandoned; the next one compares the room again.
            log.warning("rooms: an anti-entropy read failed: %s", error)

    async def _load(self, load: Load) -> None:
        token, room, after = load.token, load.room, load.after
        late: list[RoomMessage] = []
        try:
            messages, more = await self.storage.history(
                room,
                before=load.before,
                after=after,
                limit=load.limit,
                bytes_max=READ_PAGE_BYTES_MAX,
            )
            if load.late_since_ms is not None and after is not None:
                late = await self.storage.late_arrivals(
                    room,
                    since_ms=load.late_since_ms,
                    up_to=after,
                    limit=LATE_MESSAGES_MAX,
                    bytes_max=LATE_PAGE_BYTES_MAX,
                )
        except StorageError as error:
            log.warning("rooms: a read of %s failed: %s", room, error)
            self.apply(self.engine.loaded(token, None, False, time.monotonic()))
            return
        self.apply(self.engine.loaded(token, messages, more, time.monotonic(), late))


def _log_failure(done: "asyncio.Future[None]") -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("rooms: deleting a delivered hint failed: %s", done.exception())


def _error(outcome: Outcome) -> RoomUnavailableError:
    if isinstance(outcome, Refused):
        return RoomUnavailableError(outcome.code, outcome.reason)
    return RoomUnavailableError("internal", f"unexpected outcome {outcome!r}")


def _trace(message: RoomMessage) -> dict[str, str]:
    return {"trace_id": message.id, "room": message.room, "sender": message.sender}
