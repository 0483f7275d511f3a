"""Other users' text as printed: one line, no character that steers a terminal, JSON exact."""

import json
import os
import select
import signal
import subprocess
import time
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.cli.chat import format_message as cli_line
from mesh.wire.display_text import LINE_BREAK_MARK, json_safe, terminal_safe
from mesh.wire.protocol import Message
from tests.chat_helpers import client_for
from tests.processes import Cluster, NodeProcess, meshchat_command, run_async, wait_for
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


# ---- end to end: a hostile body through a real node, printed by the command line ----


@pytest.fixture
def node(cluster: Cluster) -> NodeProcess:
    node = cluster.add("n1").start()
    wait_for(node.accepts_clients, 10.0, node.log)
    return node


def meshchat(node: NodeProcess, *arguments: str) -> list[str]:
    return [*meshchat_command(), arguments[0], "--server", node.client_address, *arguments[1:]]


def read_lines(process: "subprocess.Popen[bytes]", count: int, timeout_s: float) -> list[bytes]:
    """The first `count` lines a running process prints, read with a deadline."""
    assert process.stdout is not None
    received = b""
    deadline = time.monotonic() + timeout_s
    while received.count(b"\n") < count:
        left_s = deadline - time.monotonic()
        readable, _, _ = select.select([process.stdout], [], [], max(0.0, left_s))
        if not readable:
            raise AssertionError(f"{count} lines not within {timeout_s}s: {received!r}")
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            raise AssertionError(f"the process ended after {received!r}")
        received += chunk
    return received.split(b"\n")[:count]


def assert_printable(line: bytes) -> None:
    assert not any(byte < 0x20 or byte == 0x7F for byte in line), line
    text = line.decode()
    assert not any(unsafe(character) for character in text), ascii(text)


@pytest.mark.processes
def test_history_and_tail_print_a_hostile_body_escaped(node: NodeProcess) -> None:
    async def send_hostile() -> str:
        async with client_for(node, user="bob") as bob:
            return (await bob.send("lobby", HOSTILE)).id

    message_id = run_async(send_hostile())
    tail = subprocess.Popen(
        meshchat(node, "tail", "--user", "ann", "lobby", "--since", "0000000000000000.0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        (tailed,) = read_lines(tail, 1, timeout_s=15.0)
    finally:
        tail.send_signal(signal.SIGINT)
        try:
            tail.wait(timeout=5)
        except subprocess.TimeoutExpired:
            tail.kill()
            tail.wait()
    history = subprocess.run(
        meshchat(node, "history", "--user", "ann", "lobby"),
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    as_json = subprocess.run(
        meshchat(node, "history", "--user", "ann", "lobby", "--json"),
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    for printed in (tailed, history, as_json):
        lines = printed.rstrip(b"\n").split(b"\n")
        assert len(lines) == 1, printed  # one message, one line
        assert_printable(lines[0])
    assert b"bob: hi\\x1b[2J\\x1b]0;owned\\x07\xe2\x8f\x8esecond line" in history
    assert tailed == history.rstrip(b"\n")
    document = json.loads(as_json)
    assert (document["id"], document["body"]) == (message_id, HOSTILE)
