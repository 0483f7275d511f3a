"""SQLite room logs: migrations, batched durable commits, idempotency, paging."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mesh.node.storage import (
    DATABASE_FILE,
    MIGRATIONS,
    SCHEMA_VERSION,
    IdConflictError,
    Storage,
    StorageError,
    StoredMessage,
    migrate,
)
from router.digest import digest_of
from router.message_ids import HybridClock
from router.records import EventKind, MembershipChange


def message(clock: HybridClock, room: str, n: int, sender: str = "ann") -> StoredMessage:
    message_id = clock.next_id(1_000_000 + n)
    return StoredMessage(str(message_id), room, sender, f"c{n}", message_id.time_ms, f"body {n}")


async def opened(path: Path) -> Storage:
    storage = Storage(path)
    await storage.open()
    return storage


def test_a_new_database_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "db")
    assert migrate(connection) == 0
    assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert migrate(connection) == SCHEMA_VERSION  # a second run has nothing to do


def test_messages_stored_before_digests_existed_get_their_id_hashes(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / DATABASE_FILE)
    connection.executescript(MIGRATIONS[0] + ";PRAGMA user_version = 1;")
    ids = [f"{n:012x}0000.n1" for n in (1, 2, 70_000)]
    for message_id in ids:
        connection.execute(
            "INSERT INTO messages VALUES ('lobby', ?, 'ann', ?, 0, 'old')", (message_id, message_id)
        )
    connection.commit()
    connection.close()

    async def scenario() -> None:
        storage = await opened(tmp_path)
        try:
            assert await storage.digest("lobby") == digest_of(ids)
            assert await storage.room_names() == ["lobby"]
            assert await storage.ids_between("lobby", ids[0], "~", 1) == ([ids[1]], True)
            assert [m.id for m in await storage.messages("lobby", [ids[2], "nope"])] == [ids[2]]
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_a_database_from_a_newer_meshchat_is_refused(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / DATABASE_FILE)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()

    async def scenario() -> None:
        with pytest.raises(StorageError, match="newer"):
            await opened(tmp_path)

    asyncio.run(scenario())


def test_concurrent_sends_share_commits_and_keep_their_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = await opened(tmp_path)
        clock = HybridClock("n1")
        try:
            written = [message(clock, "lobby", n) for n in range(2000)]
            results = await asyncio.gather(*(storage.append(m) for m in written))
            assert [r.message for r in results] == written
            assert storage.stats.commits < len(written) / 10  # batched, not one per message
            page, more = await storage.history("lobby", limit=200)
            assert [m.id for m in page] == [m.id for m in written[-200:]]
            assert more
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_the_same_sender_and_client_msg_id_store_one_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = await opened(tmp_path)
        clock = HybridClock("n1")
        try:
            first = message(clock, "lobby", 1)
            retry = StoredMessage(
                str(clock.next_id(2_000_000)),
                "lobby",
                "ann",
                first.client_msg_id,
                2_000_000,
                first.body,
            )
            # In one batch and across batches.
            together = await asyncio.gather(storage.append(first), storage.append(retry))
            later = await storage.append(retry)
            assert [r.duplicate for r in together] == [False, True]
            assert later.duplicate and later.message == first
            assert together[1].message == first
            other_user = StoredMessage(
                str(clock.next_id(3_000_000)), "lobby", "bob", first.client_msg_id, 3_000_000, "x"
            )
            assert not (await storage.append(other_user)).duplicate
            page, _ = await storage.history("lobby")
            assert [m.sender for m in page] == ["ann", "bob"]
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_pages_walk_back_and_forth_without_gaps(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = await opened(tmp_path)
        clock = HybridClock("n1")
        try:
            written = [message(clock, "lobby", n) for n in range(123)]
            written += [message(clock, "other", n) for n in range(5)]
            await asyncio.gather(*(storage.append(m) for m in written))
            lobby = [m.id for m in written if m.room == "lobby"]
            seen: list[str] = []
            before = None
            while True:
                page, more = await storage.history("lobby", before=before, limit=50)
                seen[:0] = [m.id for m in page]
                if not more:
                    break
                before = page[0].id
            assert seen == lobby
            forward: list[str] = []
            after = lobby[9]
            while True:
                page, more = await storage.history("lobby", after=after, limit=50)
                forward += [m.id for m in page]
                if not more:
                    break
                after = page[-1].id
            assert forward == lobby[10:]
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_ids_continue_after_a_restart(tmp_path: Path) -> None:
    async def scenario() -> str:
        storage = await opened(tmp_path)
        clock = HybridClock("n1", time_ms=9_000_000_000_000)  # a clock far ahead
        try:
            await storage.append(message(clock, "lobby", 1))
        finally:
            await storage.close()
        reopened = await opened(tmp_path)
        await reopened.close()
        return reopened.highest_id

    assert asyncio.run(scenario()).startswith(f"{9_000_000_000_000:012x}")


def test_membership_is_kept(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = await opened(tmp_path)
        try:
            await storage.set_membership("ann", "b", joined=True, time_ms=1)
            await storage.set_membership("ann", "a", joined=True, time_ms=2)
            await storage.set_membership("ann", "b", joined=False, time_ms=3)
            await storage.set_membership("bob", "c", joined=True, time_ms=4)
            assert await storage.rooms_of("ann") == ["a"]
            # Changes arrive in any order from other nodes: the latest wins, and at the
            # same millisecond a join does.
            await storage.set_membership("ann", "a", joined=False, time_ms=1)
            await storage.set_membership("ann", "c", joined=False, time_ms=5)
            await storage.set_membership("ann", "c", joined=True, time_ms=5)
            await storage.set_membership("ann", "c", joined=False, time_ms=5)
            assert await storage.rooms_of("ann") == ["a", "c"]
            assert await storage.memberships_of("ann") == [
                MembershipChange("ann", "a", True, 2),
                MembershipChange("ann", "b", False, 3),
                MembershipChange("ann", "c", True, 5),
            ]
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_hints_are_kept_once_listed_oldest_first_and_expired_by_age_count_and_bytes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        storage = await opened(tmp_path)
        try:
            messages = [
                StoredMessage(f"{n:012x}0000.n1", "lobby", "ann", f"c{n}", n, "x" * 100)
                for n in range(1, 7)
            ]
            for at_ms, message in enumerate(messages, start=1000):
                assert not (await storage.add_hint("n3", message, at_ms)).duplicate
            assert (await storage.add_hint("n3", messages[0], 5000)).duplicate
            assert [m.id for m in await storage.hints_for("n3", 2)] == [m.id for m in messages[:2]]
            assert await storage.hint_summary() == {"n3": (6, 1000)}
            await storage.delete_hint("n3", messages[0].id)
            # Older than 1002 goes (one hint), then only the newest 3 may stay.
            assert await storage.expire_hints(1002, 3, 10**9) == {"n3": 2}
            assert [m.id for m in await storage.hints_for("n3", 10)] == [m.id for m in messages[3:]]
            # A byte bound keeps the newest that fit.
            assert await storage.expire_hints(0, 100, 250) == {"n3": 1}
            assert await storage.hint_summary() == {"n3": (2, 1004)}
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_late_arrivals_are_recorded_once_for_new_copies_and_found_by_arrival_and_id(
    tmp_path: Path,
) -> None:
    def late(n: int, sender: str = "ann", client: str = "") -> StoredMessage:
        return StoredMessage(f"{n:012x}0000.n1", "lobby", sender, client or f"c{n}", n, "late")

    async def scenario() -> None:
        storage = await opened(tmp_path)
        try:
            await storage.append(late(1), late_at_ms=5_000)
            await storage.append(late(2), late_at_ms=6_000)
            await storage.append(late(3))  # on time: no record
            await storage.append(late(4), late_at_ms=7_000)
            await storage.append(late(1), late_at_ms=9_000)  # held already: no news
            # A twin with a smaller id replaces c4's copy: recorded too, since a client may
            # have had neither (clients drop repeats by sender and client message id).
            await storage.append(late(0, client="c4"), late_at_ms=9_500)

            async def found(since_ms: int, up_to: int, limit: int = 10) -> list[int]:
                up_to_id = f"{up_to:012x}0000.n1"
                held = await storage.late_arrivals(
                    "lobby", since_ms=since_ms, up_to=up_to_id, limit=limit
                )
                return [m.time_ms for m in held]

            assert await found(0, 9) == [0, 1, 2]  # c4's late copy gave way to its twin
            assert await found(5_500, 9) == [0, 2]
            assert await found(0, 1) == [0, 1]
            assert await found(0, 9, limit=1) == [0]  # the most recent arrival
            # Records older than the window go when a newer one is written.
            await storage.append(late(5), late_at_ms=9_501 + 10 * 60 * 1000)
            assert await found(0, 9) == [5]
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_a_copy_whose_id_another_message_holds_fails_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = await opened(tmp_path)
        clock = HybridClock("n1")
        try:
            held = message(clock, "lobby", 1)
            await storage.append(held)
            impostor = StoredMessage(held.id, "lobby", "mallory", "m1", held.time_ms, "not it")
            neighbours = [message(clock, "lobby", n) for n in (2, 3)]
            results = await asyncio.gather(
                storage.append(neighbours[0]),
                storage.append(impostor),
                storage.append(neighbours[1]),
                return_exceptions=True,
            )
            assert isinstance(results[1], IdConflictError)
            assert [r.duplicate for r in (results[0], results[2])] == [False, False]  # type: ignore[union-attr]
            page, _ = await storage.history("lobby")
            assert page == [held, *neighbours]
            assert storage.stats.id_conflicts == 1
            again = await storage.append(held)  # the same message under its id is a repeat
            assert again.duplicate and again.message == held
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_one_commit_of_every_kind_of_write_gives_each_its_own_result(tmp_path: Path) -> None:
    """Plain appends around other writes, a repeat inside one run and a late copy, queued
    together (so usually in one commit): runs of new copies go in at once, and a run that
    meets a held copy is stored copy by copy, each with its own answer."""

    async def scenario() -> None:
        storage = await opened(tmp_path)
        clock = HybridClock("n1")
        try:
            first, second, third, fourth = (message(clock, "lobby", n) for n in range(4))
            retry = StoredMessage(
                str(clock.next_id(2_000_000)), "lobby", "ann", first.client_msg_id, 2, "again"
            )
            results = await asyncio.gather(
                storage.append(first),
                storage.append(second),
                storage.set_membership("ann", "lobby", joined=True, time_ms=1),
                storage.append(third, late_at_ms=5_000),
                storage.append(retry),
                storage.append(fourth),
            )
            assert [r.duplicate for r in results if r is not None] == [False] * 3 + [True, False]
            assert results[4] is not None and results[4].message == first
            page, _ = await storage.history("lobby")
            assert page == [first, second, third, fourth]
            assert storage.highest_id == max(retry.id, fourth.id)
            late = await storage.late_arrivals("lobby", since_ms=0, up_to=fourth.id, limit=10)
            assert late == [third]
            assert await storage.rooms_of("ann") == ["lobby"]
        finally:
            await storage.close()

    asyncio.run(scenario())


def relation(
    clock: HybridClock, target: StoredMessage, n: int, kind: EventKind, sender: str = "ann"
) -> StoredMessage:
    message_id = clock.next_id(1_000_000 + n)
    return StoredMessage(
        str(message_id),
        target.room,
        sender,
        f"r{n}",
        message_id.time_ms,
        f"edit {n}" if kind == "edit" else "",
        kind=kind,
        target=target.id,
        reaction_key="👍" if kind in ("reaction", "unreaction") else None,
    )


def test_events_keep_their_kind_and_their_target_s_view_in_the_same_commit(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        storage = await opened(tmp_path)
        clock = HybridClock("n1")
        try:
            first, second = message(clock, "lobby", 1), message(clock, "lobby", 2)
            edit = relation(clock, first, 3, "edit")
            liked = relation(clock, second, 4, "reaction", sender="bob")
            for event in (first, second, edit, liked):
                assert not (await storage.append(event)).duplicate
            assert (await storage.append(edit)).duplicate  # an event is stored once
            page, _ = await storage.history("lobby")
            assert page == [first, second, edit, liked]
            views = await storage.views("lobby", [first.id, second.id])
            edited = views[first.id].edit
            assert edited is not None and edited.body == "edit 3"
            assert views[second.id].reactions["👍"]["bob"].stands
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_relations_stored_before_their_target_are_folded_in_when_it_arrives_even_after_a_restart(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        clock = HybridClock("n1")
        target = message(clock, "lobby", 1)
        storage = await opened(tmp_path)
        try:
            await storage.append(relation(clock, target, 2, "edit"))
        finally:
            await storage.close()
        storage = await opened(tmp_path)
        try:
            # Many at once, as a catch-up delivers them: the target must not take the
            # fast path that ignores views.
            others = [message(clock, "lobby", n) for n in range(3, 40)]
            await asyncio.gather(*(storage.append(m) for m in [*others, target]))
            views = await storage.views("lobby", [target.id])
            assert views[target.id].event == target
            edited = views[target.id].edit
            assert edited is not None and edited.body == "edit 2"
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_a_delete_erases_the_body_of_the_message_and_of_its_edits_from_disk(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        storage = await opened(tmp_path)
        clock = HybridClock("n1")
        try:
            secret = StoredMessage(
                str(clock.next_id(1_000_001)), "lobby", "ann", "c1", 1_000_001, "my password"
            )
            edit = relation(clock, secret, 2, "edit")
            await storage.append(secret)
            await storage.append(edit)
            await storage.append(relation(clock, edit, 5, "reaction"))  # void, but a row
            await storage.add_hint("n3", edit, 5)
            await storage.append(relation(clock, secret, 3, "delete"))
            late_edit = relation(clock, secret, 4, "edit")  # after the delete: dropped too
            await storage.append(late_edit)
            views = await storage.views("lobby", [secret.id])
            assert views[secret.id].tombstone is not None
            kept = views[secret.id].event
            assert kept is not None and kept.body == ""
        finally:
            await storage.close()
        with sqlite3.connect(tmp_path / DATABASE_FILE) as connection:
            bodies = connection.execute("SELECT body FROM messages").fetchall()
            hinted = connection.execute("SELECT body FROM hints").fetchall()
            states = connection.execute("SELECT state FROM message_views").fetchall()
        assert bodies == [("",)] * 5 and hinted == [("",)]
        secrets = (b"password", b"edit 2", b"edit 4")
        assert not any(secret in state for (state,) in states for secret in secrets)

    asyncio.run(scenario())


def test_the_event_log_migration_keeps_the_messages_of_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_FILE
    with sqlite3.connect(path, isolation_level=None) as connection:
        connection.create_function("meshchat_id_hash", 1, lambda text: 0)
        for script in MIGRATIONS[:-1]:
            connection.executescript(script)
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
        connection.execute(
            "INSERT INTO messages (room, id, sender, client_msg_id, time_ms, body) "
            "VALUES ('lobby', '0000000000010000.n1', 'ann', 'c1', 1, 'kept')"
        )

    async def scenario() -> None:
        storage = await opened(tmp_path)
        try:
            page, _ = await storage.history("lobby")
            assert [(m.body, m.kind, m.target) for m in page] == [("kept", "message", None)]
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_a_relation_that_replaces_its_twin_takes_the_twin_s_mark_out_of_the_view(
    tmp_path: Path,
) -> None:
    """A retry of an edit stored under a smaller id by another coordinator replaces the
    first copy; the view is then what the stored events say, not what the lost copy did."""

    def edit(target: StoredMessage, time_ms: int, key: str, body: str) -> StoredMessage:
        return StoredMessage(
            f"{time_ms:012x}0000.n1",
            "lobby",
            "ann",
            key,
            time_ms,
            body,
            kind="edit",
            target=target.id,
        )

    async def scenario() -> None:
        storage = await opened(tmp_path)
        try:
            posted = StoredMessage(f"{100:012x}0000.n1", "lobby", "ann", "m", 100, "draft")
            await storage.append(posted)
            await storage.append(edit(posted, 300, "e1", "first"))
            await storage.append(edit(posted, 250, "e2", "second"))
            twin = await storage.append(edit(posted, 200, "e1", "first"))  # e1, retried
            assert twin.replaced == f"{300:012x}0000.n1"
            state = (await storage.views("lobby", [posted.id]))[posted.id]
            assert state.edit is not None and state.edit.body == "second"
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_a_state_that_does_not_decode_fails_its_batch_and_not_the_writer(tmp_path: Path) -> None:
    clock = HybridClock("n1")
    target = message(clock, "lobby", 1)

    async def store_target() -> None:
        storage = await opened(tmp_path)
        try:
            await storage.append(target)
        finally:
            await storage.close()

    asyncio.run(store_target())
    with sqlite3.connect(tmp_path / DATABASE_FILE) as connection:
        connection.execute("INSERT INTO message_views VALUES ('lobby', ?, 0, x'c1')", (target.id,))

    async def scenario() -> None:
        storage = await opened(tmp_path)
        try:
            with pytest.raises(StorageError):
                await storage.append(relation(clock, target, 2, "edit"))
            later = message(clock, "lobby", 3)
            assert not (await storage.append(later)).duplicate
        finally:
            await storage.close()

    asyncio.run(scenario())
