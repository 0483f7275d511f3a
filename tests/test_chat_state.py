"""The chat tool's state, driven directly: ordering, unread counts, pending sends, completion."""

import msgspec

from mesh.wire.protocol import Deletion, Message, RelationEvent
from tools.chat_render import NEW_MESSAGES_MARKER, room_text
from tools.chat_state import ChatState, Command, Delivery, colour_of, parse_command


def message(n: int, room: str = "lobby", sender: str = "bob", client_msg_id: str = "") -> Message:
    return Message(
        id=f"{n:016x}.n1",
        room=room,
        sender=sender,
        time_ms=n,
        body=f"m{n}",
        client_msg_id=client_msg_id or f"c{n}",
    )


def bodies(state: ChatState, room: str = "lobby") -> list[str]:
    return [line.body for line in state.rooms[room].lines.values()]


def test_messages_are_shown_in_id_order_once() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    for n in (3, 1, 2, 3, 1):
        state.add_message(message(n))
    assert bodies(state) == ["m1", "m2", "m3"]


def test_unread_counts_grow_elsewhere_and_clear_on_switch_with_a_marker() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.open_room("random")
    state.add_message(message(1, room="random"))
    state.add_message(message(2, room="random"))
    state.add_message(message(3, room="lobby"))
    assert (state.rooms["random"].unread, state.rooms["lobby"].unread) == (2, 0)
    state.leave_view()
    state.switch_to("random")
    assert state.rooms["random"].unread == 0
    shown = room_text(state.rooms["random"]).plain.splitlines()
    assert shown[0] == NEW_MESSAGES_MARKER
    # Our own messages never count as unread.
    state.add_message(message(4, room="lobby", sender="ann"))
    assert state.rooms["lobby"].unread == 0


def test_a_pending_send_is_replaced_by_its_stored_message() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.add_pending("lobby", "c9", "hello", now_ms=100)
    (pending,) = state.rooms["lobby"].lines.values()
    assert pending.delivery is Delivery.PENDING
    # The echo may come before or after the acknowledgement; either way, one line.
    state.add_message(message(9, sender="ann", client_msg_id="c9"))
    state.confirm("c9", message(9, sender="ann", client_msg_id="c9"))
    assert [line.delivery for line in state.rooms["lobby"].lines.values()] == [Delivery.CONFIRMED]


def test_a_failed_send_stays_visible_with_its_error() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.add_pending("lobby", "c1", "too long", now_ms=1)
    state.fail("c1", "too_large: body of 20000 bytes")
    (line,) = state.rooms["lobby"].lines.values()
    assert line.delivery is Delivery.FAILED and "too_large" in line.error
    assert "not sent: too_large" in room_text(state.rooms["lobby"]).plain


def test_history_pages_prepend_and_know_when_the_room_begins() -> None:
    state = ChatState("ann")
    state.add_message(message(10))
    assert state.add_history("lobby", [message(8), message(9)], more=True) == 2
    assert state.rooms["lobby"].oldest_loaded == message(8).id
    assert state.add_history("lobby", [message(7)], more=False) == 1
    assert state.rooms["lobby"].history_exhausted
    assert bodies(state) == ["m7", "m8", "m9", "m10"]


def test_rooms_switch_forward_backward_and_by_number() -> None:
    state = ChatState("ann")
    for name in ("a", "b", "c"):
        state.open_room(name)
    assert state.current == "a"
    assert state.step(1) == "b" and state.step(1) == "c" and state.step(1) == "a"
    assert state.step(-1) == "c"
    assert state.jump(2) == "b" and state.jump(9) is None
    state.close_room("b")
    assert state.current == "c"


def test_tab_completes_commands_rooms_and_members() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.open_room("lounge")
    state.set_members("lobby", ["ann", "bob", "bernard"])
    assert state.complete("/jo") == "/join "
    assert state.complete("/join lou") == "/join lounge "
    assert state.complete("/join lo") == "/join lo"  # ambiguous: lobby, lounge
    assert state.complete("/h") == "/h"  # help and history share only "h"
    assert state.complete("/he") == "/help "
    assert state.complete("bo") == "bob: "
    assert state.complete("hi be") == "hi bernard "
    assert state.complete("b") == "b"  # bob and bernard


def test_typing_shows_for_a_while_and_never_for_ourselves() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.typing("lobby", "bob", now_s=10.0)
    state.typing("lobby", "ann", now_s=10.0)
    assert state.typing_line(11.0) == "bob is typing…"
    state.typing("lobby", "cy", now_s=11.0)
    assert state.typing_line(12.0) == "bob and cy are typing…"
    assert state.typing_line(20.0) == ""


def test_commands_parse_and_double_slash_escapes() -> None:
    assert parse_command("/join lobby") == Command("join", "lobby")
    assert parse_command("/ME  waves ") == Command("me", "waves")
    assert parse_command("hello") is None
    assert parse_command("//not a command") is None


def test_a_user_has_the_same_colour_everywhere() -> None:
    assert colour_of("ann") == colour_of("ann")
    assert len({colour_of(name) for name in ("ann", "bob", "cy", "dee", "eve", "fay")}) > 1


def relation(n: int, kind: str, target: int, sender: str = "bob", **fields: str) -> RelationEvent:
    return RelationEvent(
        id=f"{n:016x}.n1",
        room="lobby",
        kind=kind,  # type: ignore[arg-type]
        target=f"{target:016x}.n1",
        sender=sender,
        time_ms=n,
        **fields,
    )


def test_live_edits_deletes_and_reactions_fold_by_the_room_s_rules() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.add_message(message(1))
    state.add_message(message(2))
    assert state.apply_relation(relation(5, "edit", 1, body="second"))
    assert state.apply_relation(relation(4, "edit", 1, body="first"))  # older: not shown
    state.apply_relation(relation(6, "edit", 1, sender="cat", body="not cat's"))
    assert bodies(state)[0] == "second"
    state.apply_relation(relation(7, "reaction", 1, key="+1"))
    state.apply_relation(relation(8, "reaction", 1, sender="cat", key="+1"))
    state.apply_relation(relation(9, "unreaction", 1, sender="cat", key="+1"))
    state.apply_relation(relation(3, "reaction", 1, sender="cat", key="+1"))  # older than 9
    state.apply_relation(relation(10, "delete", 2, sender="cat"))  # not cat's
    shown = room_text(state.rooms["lobby"]).plain.splitlines()
    assert shown[0].endswith("bob: second (edited)  [+1 1]")
    assert shown[1].endswith("bob: m2")
    state.apply_relation(relation(11, "delete", 2))
    state.apply_relation(relation(12, "edit", 2, body="after the delete"))
    assert room_text(state.rooms["lobby"]).plain.splitlines()[1].endswith("bob: (deleted)")
    assert not state.apply_relation(relation(13, "edit", 99, body="not on screen"))


def test_history_views_show_edits_deletes_reactions_and_reply_quotes() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    edited = msgspec.structs.replace(
        message(1), body="fixed", edited_at_ms=5, reactions={"ok": ["ann", "bob"]}
    )
    gone = msgspec.structs.replace(message(2), body="", deleted=Deletion(by="bob", at_ms=6))
    answer = msgspec.structs.replace(message(3, sender="ann"), reply_to=message(1).id)
    state.add_history("lobby", [edited, gone, answer], more=False)
    lines = room_text(state.rooms["lobby"]).plain.splitlines()
    assert lines[2] == "      ↳ bob: fixed"
    lines = room_text(state.rooms["lobby"]).plain.splitlines()
    assert lines[0].endswith("bob: fixed (edited)  [ok 2]")
    assert lines[1].endswith("bob: (deleted)")
    assert lines[3].endswith("ann: m3")
    # Taking a reaction back live moves the count the history page gave.
    state.apply_relation(relation(7, "unreaction", 1, sender="ann", key="ok"))
    assert room_text(state.rooms["lobby"]).plain.splitlines()[0].endswith("[ok 1]")
    assert state.last_message("lobby", own=True) is state.rooms["lobby"].lines[message(3).id]
    assert state.last_message("lobby") is state.rooms["lobby"].lines[message(3).id]


def test_the_node_s_count_replaces_ours_and_a_replayed_backlog_is_not_counted_twice() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.open_room("random")
    for n in (1, 2, 3):
        state.add_history("random", [message(n, room="random")], more=True)
    # The node counted 5 after message 1 (two of them not here yet), reading up to 6.
    state.apply_read_marker("random", message(1).id, 5, False, message(6).id)
    view = state.rooms["random"]
    assert (view.unread, view.first_unread) == (5, message(2).id)
    for n in (4, 5, 6):  # the replay after a reconnect: in the node's count already
        state.add_message(message(n, room="random"))
    state.add_message(message(7, room="random"))  # live, after what the node read
    state.add_message(message(8, room="random", sender="ann"))  # our own: never unread
    assert view.unread == 6
    text = room_text(view).plain.splitlines()
    assert text[text.index(NEW_MESSAGES_MARKER) + 1].endswith("m2")

    # Another device read up to 7: the count and the line follow; an older word is ignored.
    state.apply_read_marker("random", message(7).id, 0, False, message(8).id)
    state.apply_read_marker("random", message(3).id, 4, False, message(8).id)
    assert (view.unread, view.read_up_to, view.first_unread) == (0, message(7).id, None)
    state.apply_read_marker("random", message(7).id, 1000, True, message(8).id)
    assert (view.unread, view.unread_capped) == (1000, True)
    state.switch_to("random")
    assert (view.unread, view.unread_capped) == (0, False)
