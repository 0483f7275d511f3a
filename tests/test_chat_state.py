"""The chat tool's state, driven directly: ordering, unread counts, pending sends, completion."""

from pathlib import Path

import msgspec
import pytest

from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeError
from mesh.client.rejoin import RejoinRefused, refused_rejoin
from mesh.wire.errors import ErrorCode
from mesh.wire.names import is_room_name
from mesh.wire.protocol import Deletion, ErrorReply, Message, RelationEvent
from tools.chat_direct import direct_room_name
from tools.chat_keys import bound_keys, config_path, default_key_map, key_problem, load_key_map
from tools.chat_render import (
    HIGHLIGHT_STYLE,
    NEW_MESSAGES_MARKER,
    line_text,
    room_label,
    room_text,
    status_line,
)
from tools.chat_state import (
    ChatState,
    Command,
    Delivery,
    client_msg_id_of,
    colour_of,
    mentions,
    parse_command,
)


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


def test_a_message_naming_the_user_is_highlighted_and_marks_its_room_elsewhere() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.open_room("random")
    for n, room, sender, body in (
        (1, "random", "bob", "ANN, lunch?"),  # any case, at the start
        (2, "random", "bob", "the annex is closed"),  # part of a word: no
        (3, "lobby", "bob", "thanks @ann"),  # the current room: no mark on its tab
        (4, "random", "ann", "ann here"),  # our own: never
    ):
        state.add_message(msgspec.structs.replace(message(n, room, sender), body=body))
    highlighted = {line.body: line.highlight for line in state.rooms["random"].lines.values()}
    assert highlighted == {"ANN, lunch?": True, "the annex is closed": False, "ann here": False}
    assert state.rooms["lobby"].lines[message(3).id].highlight
    assert (state.rooms["random"].highlighted, state.rooms["lobby"].highlighted) == (True, False)
    assert room_label(state, state.rooms["random"], 2).plain == " 2 random (2) !"
    (line,) = [line for line in state.rooms["random"].lines.values() if line.highlight]
    assert any(span.style == HIGHLIGHT_STYLE for span in line_text(line).spans)
    state.leave_view()
    state.switch_to("random")
    assert not state.rooms["random"].highlighted
    assert room_label(state, state.rooms["random"], 2).plain == ">2 random"


def test_mentions_match_whole_names_in_any_case() -> None:
    assert mentions("hi Ann!", "ann") and mentions("ann: x", "ann") and mentions("(ann)", "ann")
    assert not mentions("annex", "ann") and not mentions("joanne", "ann")
    assert mentions("ping [/]mallory now", "[/]mallory")  # a name with markup characters


def test_a_message_ends_its_sender_s_typing_line_at_once() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.typing("lobby", "bob", now_s=10.0)
    state.typing("lobby", "cy", now_s=10.0)
    state.add_message(message(1, sender="bob"))
    assert state.typing_line(10.5) == "cy is typing…"


def test_retry_takes_the_newest_failed_send_once() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.open_room("random")
    state.add_pending("lobby", "c1", "first", now_ms=1)
    state.add_pending("random", "c2", "second", now_ms=2, reply_to=message(1).id)
    state.add_pending("lobby", "c3", "fine", now_ms=3)
    state.fail("c1", "forbidden: read-only")
    state.fail("c2", "forbidden: read-only")
    room, line = state.take_last_failed() or ("", None)
    assert (room, line and line.body, line and line.reply_to) == ("random", "second", message(1).id)
    assert bodies(state, "random") == []  # taken off the screen: the resend shows instead
    assert (state.take_last_failed() or ("", None))[0] == "lobby"
    assert state.take_last_failed() is None


def test_a_failed_send_stored_after_all_replaces_its_failed_line_and_retries_under_its_id() -> None:
    state = ChatState("ann")
    state.add_pending("lobby", "c1", "maybe stored", now_ms=1)
    state.fail("c1", "no reply within 10s")
    stored = message(5, sender="ann", client_msg_id="c1")
    late = msgspec.structs.replace(stored, body="maybe stored")
    state.add_message(late)  # the node had stored it: its copy arrives
    assert bodies(state, "lobby") == ["maybe stored"] and state.take_last_failed() is None
    state.add_pending("lobby", "c2", "lost", now_ms=2)
    state.fail("c2", "no reply within 10s")
    _, line = state.take_last_failed() or ("", None)
    assert line is not None and client_msg_id_of(line.key) == "c2"


def test_notices_without_a_room_are_kept_for_the_screen() -> None:
    state = ChatState("ann")
    state.notice(None, "not a room name: 'bad room!'", now_ms=1)
    assert "bad room!" in room_text(state.no_room).plain


def test_direct_room_names_are_one_per_pair_and_valid_room_names() -> None:
    assert direct_room_name("bob", "ann") == direct_room_name("ann", "bob") == "dm#ann#bob"
    long_name = "x" * 64
    for pair in (("ann", long_name), ("ann", "björn"), ("a#b", "c"), ("ann", "[/]mallory")):
        name = direct_room_name(*pair)
        assert is_room_name(name) and name.startswith("dm##") and len(name) == 36, name
        assert name == direct_room_name(*reversed(pair))
    # Names that would read alike joined by a separator stay apart.
    assert direct_room_name("a", "b c") != direct_room_name("a b", "c")
    assert direct_room_name("a.b", "c") != direct_room_name("a", "b.c")


def test_tab_completes_a_user_after_msg() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.set_members("lobby", ["ann", "bob"])
    assert state.complete("/msg b") == "/msg bob "
    assert state.complete("/msg a") == "/msg a"  # not ourselves


def test_a_keys_file_maps_actions_and_tells_its_mistakes_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    assert load_key_map(path) == default_key_map()  # no file: the defaults, no word
    path.write_text('next_room = "ctrl+b"\nprevious_room = ["ctrl+o", "alt+left"]\n')
    assert load_key_map(path).keys["next_room"] == ("ctrl+b",)
    assert load_key_map(path).problem is None
    path.write_text('bogus = "x"\nquit = "ctrl+"\nhelp = 3\nnext_room = "ctrl+b"\n')
    loaded = load_key_map(path)
    assert loaded.keys["quit"] == ("ctrl+q",) and loaded.keys["next_room"] == ("ctrl+b",)
    assert loaded.problem is not None and "\n" not in loaded.problem
    for said in ("unknown action 'bogus'", "quit: 'ctrl+'", "help: give a key"):
        assert said in loaded.problem
    path.write_text("next_room = [")
    broken = load_key_map(path)
    assert broken.keys == default_key_map().keys and "not read" in (broken.problem or "")
    assert key_problem("ctrl+shift+pageup") is None and key_problem("slash") is None
    assert key_problem("hyper+zz") and key_problem("cmd+a")


def test_the_keys_file_lives_in_the_xdg_config_home() -> None:
    assert config_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/meshchat/keys.toml")
    assert config_path({"HOME": "/home/ann"}) == Path("/home/ann/.config/meshchat/keys.toml")


def test_alt_digits_are_bound_as_tmux_sends_them_too() -> None:
    # tmux sends Alt-1 as ESC 1, which Textual reads as the key for "¡".
    assert bound_keys(("alt+1",)).split(",") == ["alt+1", "inverted_exclamation_mark"]
    assert bound_keys(("ctrl+n",)) == "ctrl+n"


def test_a_rejoin_refused_for_good_is_news_and_one_that_may_pass_reconnects() -> None:
    for code in (ErrorCode.BAD_REQUEST, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND):
        refused = refused_rejoin("club", ErrorReply(code=code, message="no", request_id=7))
        assert refused == RejoinRefused("club", code, "no")
    with pytest.raises(NodeError, match="unavailable"):
        refused_rejoin("club", ErrorReply(code=ErrorCode.UNAVAILABLE, message="settling"))


def test_the_status_line_says_why_not_connected_and_when_it_retries() -> None:
    client = ChatClient([("127.0.0.1", 1)], token="ann")
    assert status_line("ann", client, 0.0) == "ann · connecting…"
    reasons = client.attempts.start_round()
    reasons["127.0.0.1:1"] = "connection refused: nothing listens on that port"
    client.attempts.retry_at_monotonic_s = 12.5
    shown = status_line("ann", client, 10.0)
    assert shown == (
        "ann · not connected: connection refused: nothing listens on that port · retrying in 2s"
    )
    assert "retrying in 0.5s" in status_line("ann", client, 12.0)
    assert "trying again now" in status_line("ann", client, 13.0)
    client.attempts.refused["127.0.0.1:2"] = "unavailable: this node is still joining the mesh"
    assert "127.0.0.1:2: unavailable" in status_line("ann", client, 13.0)
    gave_up = status_line("ann", client, 13.0, given_up="unauthorized: bad token")
    assert gave_up == "ann · not connected: unauthorized: bad token · not retrying"
