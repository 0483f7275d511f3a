"""The rules of room state (router/room_state.py): who may do what, and that replicas that
received the same state events in any order hold the same state."""

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from router.message_ids import MessageId
from router.records import EventKind, RoomMessage
from router.room_state import RoomState

ROOM = "club"


def state_event(
    kind: EventKind, sender: str, time_ms: int, subject: str | None = None, value: str = ""
) -> RoomMessage:
    return RoomMessage(
        id=str(MessageId(time_ms, 0, "n1")),
        room=ROOM,
        sender=sender,
        client_msg_id=f"{kind}-{sender}-{time_ms}",
        time_ms=time_ms,
        body=value,
        kind=kind,
        subject=subject,
    )


def message(sender: str, time_ms: int) -> RoomMessage:
    return RoomMessage(str(MessageId(time_ms, 0, "n2")), ROOM, sender, f"m{time_ms}", time_ms, "hi")


def test_a_room_nobody_created_is_open_and_nobody_moderates_it() -> None:
    state = RoomState.fold(ROOM, [state_event("ban", "mallory", 1, "ann")])
    assert state.refusal("ann", "post") is None
    assert state.view().banned == []
    assert state.event_refusal(state_event("invite", "ann", 2, "bob")) is not None


def test_an_invite_only_room_admits_the_invited_and_the_roles_only() -> None:
    state = RoomState.fold(
        ROOM,
        [
            state_event("create", "ann", 1, value="invite"),
            state_event("invite", "ann", 2, "bob"),
            state_event("set_role", "ann", 3, "mod", "moderator"),
        ],
    )
    assert state.refusal("ann", "post") is None
    assert state.refusal("bob", "read") is None
    assert state.refusal("eve", "read") == "club is invite-only and eve is not invited"
    # A moderator invites and kicks, but may not touch the owner or give roles above its own.
    assert state.event_refusal(state_event("invite", "mod", 4, "carol")) is None
    assert state.event_refusal(state_event("kick", "mod", 4, "ann")) is not None
    assert state.event_refusal(state_event("set_role", "mod", 4, "bob", "owner")) is not None
    assert state.event_refusal(state_event("invite", "bob", 4, "carol")) is not None
    state.apply(state_event("kick", "mod", 5, "bob"))
    assert state.refusal("bob", "read") is not None


def test_a_read_only_room_lets_everyone_read_and_moderators_post() -> None:
    state = RoomState.fold(
        ROOM,
        [
            state_event("create", "ann", 1, value="read_only"),
            state_event("set_role", "ann", 2, "mod", "moderator"),
            state_event("set_role", "ann", 3, "mem", "member"),
        ],
    )
    assert state.refusal("anyone", "read") is None
    assert state.refusal("mem", "post") == "only moderators post in club"
    assert state.refusal("mod", "post") is None


def test_a_ban_hides_what_its_user_wrote_while_banned_and_only_that() -> None:
    state = RoomState.fold(
        ROOM,
        [
            state_event("create", "ann", 1),
            state_event("ban", "ann", 10, "eve"),
            state_event("unban", "ann", 20, "eve"),
        ],
    )
    assert [state.hides(message("eve", at)) for at in (9, 10, 19, 20)] == [
        False,
        True,
        True,
        False,
    ]
    assert not state.hides(message("bob", 15))
    assert state.refusal("eve", "post") is None


def test_a_demotion_earlier_by_time_voids_a_ban_made_on_the_other_side_of_a_partition() -> None:
    create = state_event("create", "ann", 1)
    promote = state_event("set_role", "ann", 2, "mod", "moderator")
    demote = state_event("set_role", "ann", 5, "mod", "member")  # one side
    ban = state_event("ban", "mod", 6, "eve")  # the other side, later by time
    one_side = RoomState.fold(ROOM, [create, promote, ban])
    assert one_side.banned("eve")
    healed = RoomState.fold(ROOM, [create, promote, ban, demote])
    assert not healed.banned("eve") and healed.roles["mod"] == "member"


USERS = ("ann", "bob", "mod", "eve")
KINDS: tuple[EventKind, ...] = (
    "create",
    "set_policy",
    "set_role",
    "invite",
    "kick",
    "ban",
    "unban",
    "set_topic",
)
VALUES = {
    "create": ("open", "invite", "read_only"),
    "set_policy": ("open", "invite", "read_only"),
    "set_role": ("owner", "moderator", "member"),
    "set_topic": ("", "news", "other news"),
}


@st.composite
def state_events(draw: st.DrawFn) -> RoomMessage:
    kind = draw(st.sampled_from(KINDS))
    value = draw(st.sampled_from(VALUES[kind])) if kind in VALUES else ""
    subject = (
        draw(st.sampled_from(USERS)) if kind not in {"create", "set_policy", "set_topic"} else None
    )
    time_ms = draw(st.integers(1, 40))
    node = draw(st.sampled_from(("n1", "n2", "n3")))
    sender = draw(st.sampled_from(USERS))
    return RoomMessage(
        id=str(MessageId(time_ms, draw(st.integers(0, 3)), node)),
        room=ROOM,
        sender=sender,
        client_msg_id=f"c{time_ms}{node}",
        time_ms=time_ms,
        body=value,
        kind=kind,
        subject=subject,
    )


def _unique(events: list[RoomMessage]) -> list[RoomMessage]:
    return list({event.id: event for event in events}.values())  # one id names one event


@settings(max_examples=400, deadline=None)
@given(
    st.lists(state_events(), max_size=30).map(_unique),
    st.randoms(use_true_random=False),
)
def test_three_replicas_that_got_the_same_state_events_in_any_order_hold_the_same_state(
    events: list[RoomMessage], rng: object
) -> None:
    orders = []
    for _ in range(3):
        shuffled = list(events)
        rng.shuffle(shuffled)  # type: ignore[attr-defined]
        twice = shuffled + shuffled[: len(shuffled) // 2]  # repeats change nothing
        orders.append(twice)
    views = [msgspec.json.encode(RoomState.fold(ROOM, order).view()) for order in orders]
    assert views[0] == views[1] == views[2]
    incremental = RoomState(ROOM)
    for event in sorted(events, key=lambda event: event.order):
        incremental.apply(event)
    assert msgspec.json.encode(incremental.view()) == views[0]


def test_a_state_folded_from_events_read_back_encodes_as_the_one_folded_from_the_originals() -> (
    None
):
    # Replicas compare and clients read the encoded view: a policy decoded from disk or
    # the wire must be left out as the default exactly as the literal one is.
    events = [
        state_event("create", "ann", 1_000, value="open"),
        state_event("set_role", "ann", 2_000, "bob", "member"),
    ]
    read_back = msgspec.json.decode(msgspec.json.encode(events), type=list[RoomMessage])
    assert read_back[0].body is not "open"  # noqa: F632 - a fresh string, as from disk
    encoded = [
        msgspec.json.encode(RoomState.fold(ROOM, held).view()) for held in (events, read_back)
    ]
    assert encoded[0] == encoded[1]
