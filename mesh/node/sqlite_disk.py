"""The node's disk for the room driver: storage effects carried out on SQLite.

Writes are queued in the order the engine asked for them (mesh/node/storage.py commits them in
batches, in that order); reads run as tasks this adapter owns. Each effect ends in one
result: a StorageError is its failure, and so is anything unexpected (logged with its
traceback, since that is a bug), so no request waits on a token for good.
"""

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from mesh.node.storage import SendResult, Storage, StorageError
from router.effects import (
    DeleteHint,
    ExpireHints,
    ListRooms,
    Load,
    LoadDigest,
    LoadHints,
    LoadIds,
    LoadMemberships,
    LoadMessages,
    Store,
    StoreHint,
    StoreMembership,
    StoreReadMarker,
)
from router.events import (
    DigestLoaded,
    Done,
    HintsExpired,
    HintsLoaded,
    IdsLoaded,
    Loaded,
    MembershipsLoaded,
    RoomsListed,
    StorageEffect,
    StorageFailed,
    StorageResult,
    Stored,
)
from router.page_bytes import LATE_PAGE_BYTES_MAX, READ_PAGE_BYTES_MAX
from router.wire import LATE_MESSAGES_MAX

log = logging.getLogger(__name__)

OnDone = Callable[[StorageResult], None]
STOPPING = StorageFailed("the node is stopping")


class SqliteDisk:
    def __init__(self, storage: Storage, wall_clock_ms: Callable[[], int]) -> None:
        self.storage = storage
        self._wall_clock_ms = wall_clock_ms
        self._reads: set[asyncio.Task[None]] = set()

    def perform(self, effect: StorageEffect, done: OnDone) -> None:
        storage = self.storage
        try:
            match effect:
                case Store(_, message, late_at_ms):
                    self._await_write(storage.append(message, late_at_ms), _stored, done)
                case StoreHint(_, owner, message):
                    written = storage.add_hint(owner, message, self._wall_clock_ms())
                    self._await_write(written, _stored, done)
                case DeleteHint(owner, message_id):
                    self._await_write(storage.delete_hint(owner, message_id), _done, done)
                case ExpireHints(_, older_than_ms, count_max, bytes_max):
                    expiring = storage.expire_hints(older_than_ms, count_max, bytes_max)
                    self._await_write(expiring, HintsExpired, done)
                case StoreMembership(_, change):
                    kept = storage.set_membership(
                        change.user, change.room, joined=change.joined, time_ms=change.time_ms
                    )
                    self._await_write(kept, _done, done)
                case StoreReadMarker(_, marker):
                    kept = storage.set_read_marker(marker.user, marker.room, marker.up_to)
                    self._await_write(kept, _done, done)
                case _:
                    self._start_read(self._read(effect), done)
        except StorageError as error:  # refused before it was queued (overloaded, lost)
            done(StorageFailed(str(error)))

    def _await_write(
        self, written: "asyncio.Future[Any]", result: Callable[[Any], StorageResult], done: OnDone
    ) -> None:
        def committed(future: "asyncio.Future[Any]") -> None:
            if future.cancelled():
                done(STOPPING)
            elif (error := future.exception()) is not None:
                done(StorageFailed(str(error)))
            else:
                done(result(future.result()))

        written.add_done_callback(committed)

    def _start_read(self, work: Coroutine[Any, Any, StorageResult], done: OnDone) -> None:
        async def run() -> None:
            try:
                result = await work
            except StorageError as error:
                result = StorageFailed(str(error))
            except asyncio.CancelledError:
                done(STOPPING)
                raise
            except Exception as error:
                log.exception("rooms: a storage read broke")
                result = StorageFailed(f"internal error: {error!r}")
            done(result)

        task = asyncio.create_task(run())
        self._reads.add(task)
        task.add_done_callback(self._read_ended)

    def _read_ended(self, task: "asyncio.Task[None]") -> None:
        self._reads.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # Raised by what the result was handed to: the engine, a bug to see.
            log.error("rooms: handling a storage result broke", exc_info=error)

    async def _read(self, effect: StorageEffect) -> StorageResult:
        storage = self.storage
        match effect:
            case Load():
                return await self._load(effect)
            case LoadMessages(_, room, ids):
                return Loaded(await storage.messages(room, ids))
            case LoadHints(_, owner, limit, after):
                return HintsLoaded(await storage.hints_for(owner, limit, after))
            case ListRooms():
                return RoomsListed(await storage.room_names())
            case LoadDigest(_, room):
                return DigestLoaded(await storage.digest(room))
            case LoadIds(_, room, after, before, limit):
                ids, more = await storage.ids_between(room, after, before, limit)
                return IdsLoaded(ids, more)
            case LoadMemberships(_, user):
                changes = await storage.memberships_of(user)
                return MembershipsLoaded(changes, await storage.read_markers_of(user))
        raise AssertionError(f"not a read: {effect!r}")

    async def _load(self, load: Load) -> Loaded:
        page = await self.storage.page(
            load.room,
            before=load.before,
            after=load.after,
            limit=load.limit,
            bytes_max=READ_PAGE_BYTES_MAX,
            messages_only=load.messages_only,
            state_only=load.state_only,
        )
        late = []
        if load.late_since_ms is not None and load.after is not None:
            late = await self.storage.late_arrivals(
                load.room,
                since_ms=load.late_since_ms,
                up_to=load.after,
                limit=LATE_MESSAGES_MAX,
                bytes_max=LATE_PAGE_BYTES_MAX,
            )
        return Loaded(page.messages, page.more, late, page.relations)

    async def close(self) -> None:
        """Stop the reads still running (each ends as a failure: the node is stopping)."""
        for task in list(self._reads):
            task.cancel()
        await asyncio.gather(*self._reads, return_exceptions=True)


def _stored(result: SendResult) -> Stored:
    # A copy that replaced its twin (same send, larger id) is no news: the room has had
    # the message under the twin's id.
    return Stored(result.message, result.duplicate or result.replaced is not None)


def _done(_: object) -> Done:
    return Done()
