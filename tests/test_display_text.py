"""Other users' text as printed: one line, no character that steers a terminal, JSON exact."""

import json
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from mesh.cli_chat import format_message as cli_line
from mesh.display_text import LINE_BREAK_MARK, json_safe, terminal_safe
from mesh.protocol import Message
from tools.chat_plain import format_message as plain_line
from tools.chat_render import line_plain, room_label
from tools.chat_state import ChatState, Delivery, Line

BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
HOSTILE = "hi\x1b[2J\x1b]0;owned\x07\nsecond line\r\n\u202eevil\u2066\x9b31m\x7f\x00\u2028"


def unsafe(character: str) -> bool:
    code = ord(character)
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or character in BIDI_CONTROLS
        or character in "\u2028\u2029"
        or unicodedata.category(character) == "Cs"
    )


# Text weighted towards the characters that matter, with the rest of Unicode mixed in.
texts = st.text(
    st.sampled_from([*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), *BIDI_CONTROLS])
    | st.sampled_from(["\u2028", "\u2029", "\ud800", "\udfff", "\\", "⏎", "x"])
    | st.characters(codec=None)
)


@given(texts)
def test_the_output_is_one_line_without_any_unsafe_character(text: str) -> None:
    shown = terminal_safe(text)
    assert not any(unsafe(character) for character in shown), ascii(shown)
    assert len(shown.splitlines()) <= 1
    shown.encode()  # no lone surrogate left to fail on a UTF-8 terminal


@given(texts)
def test_safe_text_is_left_as_it_is(text: str) -> None:
    shown = terminal_safe(text)
    assert terminal_safe(shown) == shown
    if not any(unsafe(character) for character in text):
        assert shown == text


def test_each_kind_of_character_has_its_visible_form() -> None:
    assert terminal_safe("a\nb\r\nc") == f"a{LINE_BREAK_MARK}b{LINE_BREAK_MARK}c"
    assert terminal_safe("\t\r") == "\\t\\r"
    assert terminal_safe("\x1b[31m\x07\x00\x7f\x9b") == "\\x1b[31m\\x07\\x00\\x7f\\x9b"
    assert terminal_safe("\u202eabc\u2066\u200f") == "\\u202eabc\\u2066\\u200f"
    assert terminal_safe("héllo, 世界 👋🏽 👨‍👩‍👧") == "héllo, 世界 👋🏽 👨‍👩‍👧"


@given(st.dictionaries(st.sampled_from(["sender", "body", "room"]), texts))
def test_json_stays_exact_and_carries_no_unsafe_character(fields: dict[str, str]) -> None:
    document = json_safe(json.dumps(fields, ensure_ascii=False))
    assert json.loads(document) == fields
    assert not any(unsafe(character) for character in document)


def test_every_printer_of_the_cli_and_the_chat_tool_escapes_a_hostile_body() -> None:
    message = Message(
        id="0193a1b2c3d40000.n1",
        room="lobby",
        sender="b\x1bob",
        time_ms=1_700_000_000_000,
        body=HOSTILE,
        client_msg_id="c1",
    )
    state = ChatState("ann")
    state.add_message(message)
    state.add_message(
        Message(
            id="0193a1b2c3d40001.n1",
            room="lobby",
            sender="bob",
            time_ms=1_700_000_000_000,
            body="/me " + HOSTILE,
        )
    )
    state.notice("lobby", "bob\x1b[5m joined", 0)
    room = state.rooms["lobby"]
    shown = [
        cli_line(message, as_json=False),
        plain_line(message),
        *(line_plain(line) for line in room.lines.values()),
        room_label(state, room, 1).plain,
    ]
    for line in shown:
        assert not any(unsafe(character) for character in line), ascii(line)
        assert "\n" not in line
    assert "hi\\x1b[2J\\x1b]0;owned\\x07⏎second line⏎\\u202eevil" in shown[0]
    assert "b\\x1bob" in shown[0]
    as_json = cli_line(message, as_json=True)
    assert json.loads(as_json)["body"] == HOSTILE
    assert json.loads(as_json)["sender"] == "b\x1bob"
    assert not any(unsafe(character) for character in as_json)


def test_the_typing_line_escapes_names() -> None:
    state = ChatState("ann")
    state.open_room("lobby")
    state.typing("lobby", "b\u202eob", now_s=0.0)
    assert state.typing_line(1.0) == "b\\u202eob is typing…"


def test_a_failed_send_shows_the_error_escaped() -> None:
    line = Line("~1", "ann", 0, "hello", Delivery.FAILED, error="bad\x1b[0m")
    assert "bad\\x1b[0m" in line_plain(line)
