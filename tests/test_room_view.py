"""A room's read model: the rules that combine events, and that they do not depend on
order, repeats or where the view was built."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.event_rules import PENDING_PER_TARGET_MAX, RoomEvent, Tombstone, merge
from router.records import EventKind
from router.room_view import UNREAD_COUNTED_MAX, RoomView


def event_id(time_ms: int, node: str = "n1") -> str:
    return f"{time_ms:012x}0000.{node}"


def event(
    time_ms: int,
    sender: str,
    kind: EventKind = "message",
    *,
    body: str = "",
    target: int | None = None,
    key: str | None = None,
    reply_to: int | None = None,
) -> RoomEvent:
    return RoomEvent(
        id=event_id(time_ms),
        room="lobby",
        sender=sender,
        client_msg_id=f"c{time_ms}",
        time_ms=time_ms,
        kind=kind,
        body=body,
        target=None if target is None else event_id(target),
        reaction_key=key,
        reply_to=None if reply_to is None else event_id(reply_to),
    )


def built(*events: RoomEvent) -> RoomView:
    return RoomView.rebuild("lobby", events)


def test_the_latest_edit_by_the_sender_gives_the_body() -> None:
    view = built(
        event(1, "ann", body="helo"),
        event(3, "ann", "edit", target=1, body="hello!"),
        event(2, "ann", "edit", target=1, body="hello"),  # older: loses to the one at 3
        event(4, "bob", "edit", target=1, body="bob was here"),  # not his message
        event(5, "ann", "edit", target=3, body="an edit of an edit"),
    )
    shown = view.view(event_id(1))
    assert shown is not None
    assert (shown.body, shown.edited_at_ms) == ("hello!", 3)
    assert view.view(event_id(3)) is None  # an edit is not a message of its own


def test_a_delete_by_the_sender_is_final_and_erases_content() -> None:
    view = built(
        event(1, "ann", body="oops"),
        event(2, "bob", "reaction", target=1, key="👍"),
        event(3, "ann", "edit", target=1, body="oops!"),
    )
    assert not view.apply(event(4, "bob", "delete", target=1)).erase  # not his to delete
    deleting = view.apply(event(5, "ann", "delete", target=1))
    assert deleting.changed == (event_id(1),) and deleting.erase == (event_id(1),)
    shown = view.view(event_id(1))
    assert shown is not None
    assert (shown.body, shown.reactions, shown.edited_at_ms) == ("", {}, None)
    assert shown.deleted == Tombstone("ann", 5, event_id(5))
    # What arrives later is dropped on arrival, and its content goes from disk too.
    late_edit = view.apply(event(6, "ann", "edit", target=1, body="back"))
    assert late_edit.changed == () and late_edit.erase == (event_id(1),)
    assert view.view(event_id(1)) == shown


def test_of_two_deletes_the_earlier_is_the_tombstone_in_either_order() -> None:
    message, early, late = (
        event(1, "ann", body="x"),
        event(2, "ann", "delete", target=1),
        event(3, "ann", "delete", target=1),
    )
    for order in ((message, early, late), (message, late, early), (late, message, early)):
        shown = built(*order).view(event_id(1))
        assert shown is not None and shown.deleted == Tombstone("ann", 2, event_id(2))


def test_a_reaction_counts_once_per_sender_and_key_and_the_latest_mark_stands() -> None:
    view = built(
        event(1, "ann", body="lunch?"),
        event(2, "bob", "reaction", target=1, key="🍕"),
        event(3, "bob", "reaction", target=1, key="🍕"),
        event(4, "cy", "reaction", target=1, key="🍕"),
        event(6, "cy", "unreaction", target=1, key="🍕"),
        event(5, "cy", "reaction", target=1, key="🍕"),  # older than the unreaction
        event(7, "ann", "reaction", target=1, key="👍"),
        event(8, "ann", "reaction", target=1, key="x" * 65),  # too long a key
        event(9, "ann", "reaction", target=1, key="🍕" * 17),  # 17 chars, 68 bytes
    )
    shown = view.view(event_id(1))
    assert shown is not None
    assert shown.reactions == {"👍": ["ann"], "🍕": ["bob"]}


def test_relations_before_their_target_wait_and_apply_when_it_arrives() -> None:
    view = built(
        event(2, "ann", "edit", target=1, body="second thoughts"),
        event(3, "bob", "reaction", target=1, key="👍"),
    )
    assert view.view(event_id(1)) is None
    arrived = view.apply(event(1, "ann", body="first", reply_to=0))
    assert arrived.changed == (event_id(1),)
    shown = view.view(event_id(1))
    assert shown is not None
    assert (shown.body, shown.reactions, shown.reply_to) == (
        "second thoughts",
        {"👍": ["bob"]},
        event_id(0),
    )


def test_a_target_holds_a_bounded_number_of_waiting_relations_the_same_on_every_replica() -> None:
    waiting = [
        event(10 + n, f"u{n}", "reaction", target=1, key="👍")
        for n in range(PENDING_PER_TARGET_MAX + 1)
    ]
    in_order, reversed_order = RoomView("lobby"), RoomView("lobby")
    assert all(in_order.apply(relation).held for relation in waiting[:-1])
    assert not in_order.apply(waiting[-1]).held  # the largest id is the one left out
    assert reversed_order.apply(waiting[-1]).held  # it still fits, at first
    for relation in reversed(waiting[:-1]):
        reversed_order.apply(relation)
    assert reversed_order.relations_not_held == 1 and in_order.relations_not_held == 1
    for view in (in_order, reversed_order):
        view.apply(event(1, "ann", body="popular"))
    assert in_order.snapshot() == reversed_order.snapshot()
    shown = in_order.view(event_id(1))
    assert shown is not None and len(shown.reactions["👍"]) == PENDING_PER_TARGET_MAX


def test_unread_counts_skip_own_and_deleted_messages_and_stop_counting_at_a_bound() -> None:
    view = built(
        event(1, "ann", body="a"),
        event(2, "bob", body="b"),
        event(3, "ann", body="c"),
        event(4, "bob", body="d"),
        event(5, "bob", "delete", target=4),
    )
    assert str(view.unread("ann", "")) == "1"  # bob's first; his second is deleted
    assert str(view.unread("bob", "")) == "2"
    assert str(view.unread("bob", event_id(1))) == "1"
    assert str(view.unread("cy", event_id(3))) == "0"
    for n in range(UNREAD_COUNTED_MAX + 1):
        view.apply(event(100 + n, "bob", body="flood"))
    assert str(view.unread("ann", "")) == "1000+"
    assert str(view.unread("ann", event_id(101))) == "999"


# ---- any order, any repeats, any replica ----

SENDERS = ("ann", "bob", "cy")
KINDS: tuple[EventKind, ...] = ("message", "edit", "delete", "reaction", "unreaction")


@st.composite
def room_logs(
    draw: st.DrawFn, targets: int = 6, senders: tuple[str, ...] = SENDERS
) -> list[RoomEvent]:
    """Up to 40 events at distinct times; relations name one of the first few times,
    earlier or later than their own, so some name relations, some messages yet to
    come, some nothing at all, and many name the same target."""
    count = draw(st.integers(1, 40))
    times = draw(st.lists(st.integers(1, 200), min_size=count, max_size=count, unique=True))
    log = []
    for time_ms in times:
        kind = draw(st.sampled_from(KINDS))
        sender = draw(st.sampled_from(senders))
        if kind == "message":
            reply = draw(st.none() | st.sampled_from(times))
            log.append(event(time_ms, sender, body=f"m{time_ms}", reply_to=reply))
            continue
        target = draw(st.sampled_from(times[:targets]))  # few targets, so relations meet
        key = draw(st.sampled_from(("👍", "🍕"))) if kind in ("reaction", "unreaction") else None
        log.append(event(time_ms, sender, kind, target=target, key=key, body=f"e{time_ms}"))
    return log


def unread_table(view: RoomView, log: list[RoomEvent]) -> list[str]:
    markers = ["", *sorted(e.id for e in log)]
    return [str(view.unread(user, marker)) for user in SENDERS for marker in markers]


@settings(max_examples=300, deadline=None)
@given(room_logs(), st.randoms(use_true_random=False))
def test_replicas_that_saw_the_same_events_in_any_order_hold_identical_views(
    log: list[RoomEvent], shuffler: random.Random
) -> None:
    in_log_order = built(*sorted(log, key=lambda e: e.id))
    for _ in range(3):
        delivered = log + shuffler.sample(log, k=len(log) // 2)  # some twice
        shuffler.shuffle(delivered)
        replica = RoomView("lobby")
        for received in delivered:
            replica.apply(received)
        assert replica.snapshot() == in_log_order.snapshot()
        assert unread_table(replica, log) == unread_table(in_log_order, log)


@pytest.mark.parametrize("seed", range(3))
def test_a_rebuild_from_the_log_equals_the_view_kept_step_by_step(seed: int) -> None:
    shuffler = random.Random(seed)
    log = [event(n, shuffler.choice(SENDERS), body=f"m{n}") for n in range(1, 300)]
    for n in range(300, 600):
        kind = shuffler.choice(KINDS[1:])
        key = "👍" if kind in ("reaction", "unreaction") else None
        log.append(
            event(
                n,
                shuffler.choice(SENDERS),
                kind,
                target=shuffler.randrange(1, 600),
                key=key,
                body="e",
            )
        )
    kept = RoomView("lobby")
    for received in shuffler.sample(log, k=len(log)):
        kept.apply(received)
    assert kept.snapshot() == RoomView.rebuild("lobby", log).snapshot()


@settings(max_examples=500, deadline=None)
@given(room_logs(targets=2, senders=("ann", "bob")), st.randoms(use_true_random=False))
def test_two_replicas_states_merged_are_the_state_of_all_their_events(
    log: list[RoomEvent], shuffler: random.Random
) -> None:
    """A quorum read merges what replicas hold: any two that saw every event between
    them, some of them both, merged in either order, give what one with all of them
    holds."""
    seen_by_one = shuffler.sample(log, k=shuffler.randint(0, len(log)))
    rest = [e for e in log if e not in seen_by_one]
    seen_by_other = rest + shuffler.sample(seen_by_one, k=len(seen_by_one) // 2)
    whole, one, other = built(*log), built(*seen_by_one), built(*seen_by_other)
    for message_id in whole.ids():
        merged = merge(one.state(message_id), other.state(message_id))
        assert merged == merge(other.state(message_id), one.state(message_id))
        assert merged == whole.state(message_id), message_id


def test_merging_keeps_the_earliest_delete_the_latest_edit_and_each_sender_s_latest_mark() -> None:
    posted = event(1, "ann", body="x")
    first_delete, second_delete = (event(n, "ann", "delete", target=1) for n in (5, 6))
    both_deleted = (built(posted, first_delete), built(posted, second_delete))
    for one, other in (both_deleted, both_deleted[::-1]):
        merged = merge(one.state(event_id(1)), other.state(event_id(1)))
        assert merged.tombstone == Tombstone("ann", 5, event_id(5))
    edits = [event(n, "ann", "edit", target=1, body=f"v{n}") for n in (2, 3)]
    marks = [
        event(4, "bob", "reaction", target=1, key="👍"),
        event(7, "bob", "unreaction", target=1, key="👍"),
    ]
    one, other = built(posted, edits[1], marks[1]), built(posted, edits[0], marks[0])
    for merged in (
        merge(one.state(event_id(1)), other.state(event_id(1))),
        merge(other.state(event_id(1)), one.state(event_id(1))),
    ):
        assert merged.edit is not None and merged.edit.body == "v3"
        assert not merged.reactions["👍"]["bob"].stands
