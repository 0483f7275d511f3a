"""The chat tool as a person and a script use it: in a real terminal (tmux), and through a pipe."""

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Cluster, NodeProcess, meshchat_command, wait_for

pytestmark = pytest.mark.processes


@pytest.fixture
def node(cluster: Cluster) -> NodeProcess:
    node = cluster.add("n1").start()
    wait_for(node.accepts_clients, 10.0, node.log)
    return node


class Terminal:
    """A tmux server of our own (its own socket), with one window running a command."""

    def __init__(self, command: list[str]) -> None:
        self.socket = f"meshchat-test-{os.getpid()}-{time.monotonic_ns()}"
        self._tmux("new-session", "-d", "-s", "chat", "-x", "110", "-y", "30", " ".join(command))

    def _tmux(self, *arguments: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *arguments],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-t", "chat", "-p")

    def screen_with_colours(self) -> str:
        """The screen with its SGR escapes (colours, bold), as the terminal shows it."""
        return self._tmux("capture-pane", "-t", "chat", "-p", "-e")

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "chat", "-l", text)
        self._tmux("send-keys", "-t", "chat", "Enter")

    def keys(self, *keys: str) -> None:
        """tmux key names and text in one call, so they arrive as one burst ('/jo', 'Tab')."""
        self._tmux("send-keys", "-t", "chat", *keys)

    def alive(self) -> bool:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "has-session", "-t", "chat"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


def chat_command(
    node: NodeProcess, rooms: tuple[str, ...] = ("lobby",), config_home: Path | None = None
) -> list[str]:
    """`meshchat chat` for ann in `rooms` of `node`; with `config_home`, its keys.toml
    is looked for there (and not in the home of whoever runs the tests)."""
    environment = [] if config_home is None else ["env", f"XDG_CONFIG_HOME={config_home}"]
    return [
        *environment,
        *meshchat_command(),
        "chat",
        "--server",
        node.client_address,
        "--user",
        "ann",
        *(option for room in rooms for option in ("--room", room)),
    ]


def send_as_bob(node: NodeProcess, text: str, room: str = "lobby") -> None:
    command = ["send", "--server", node.client_address, "--user", "bob", room, text]
    subprocess.run([*meshchat_command(), *command], check=True, capture_output=True, timeout=20)


@pytest.fixture
def terminal(node: NodeProcess, tmp_path: Path) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    session = Terminal(chat_command(node, ("lobby",), tmp_path))
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def two_rooms(node: NodeProcess, tmp_path: Path) -> Iterator[Terminal]:
    """ann's chat tool in the lobby and random, after bob wrote 60 lines to the lobby."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    lines = "".join(f"line {n:03d}\n" for n in range(60))
    command = ["send", "--server", node.client_address, "--user", "bob", "lobby", "-"]
    subprocess.run([*meshchat_command(), *command], input=lines, text=True, check=True, timeout=30)
    session = Terminal(chat_command(node, ("lobby", "random"), tmp_path))
    try:
        wait_for(lambda: "line 059" in session.screen(), 15.0, session.screen)
        yield session
    finally:
        session.close()


def _body_style(screen: str, body: str) -> str:
    """The SGR escapes just before `body` on its line: how the terminal colours it."""
    (line,) = [line for line in screen.splitlines() if body in line]
    escapes = re.findall(r"((?:\x1b\[[0-9;]*m)+)" + re.escape(body), line)
    return escapes[0] if escapes else ""


def test_a_mention_is_highlighted_and_marks_its_room(
    two_rooms: Terminal, node: NodeProcess
) -> None:
    terminal = two_rooms
    send_as_bob(node, "ann, are you there?", room="random")
    wait_for(lambda: "random (1) !" in terminal.screen(), 10.0, terminal.screen)
    send_as_bob(node, "hey ann, look")
    send_as_bob(node, "no mention here")
    wait_for(lambda: "bob: no mention here" in terminal.screen(), 10.0, terminal.screen)
    coloured = terminal.screen_with_colours()
    highlighted = _body_style(coloured, ": hey ann, look")
    plain = _body_style(coloured, ": no mention here")
    assert "48;" in highlighted and highlighted != plain, (highlighted, plain)
    terminal.keys("M-2")  # tmux sends ESC 2: the tab is read, its mark goes
    wait_for(lambda: ">2 random" in terminal.screen(), 10.0, terminal.screen)
    assert " !" not in terminal.screen().split("random", 1)[1].splitlines()[0]


def test_keys_scroll_the_log_switch_rooms_and_complete_in_a_burst(two_rooms: Terminal) -> None:
    terminal = two_rooms
    terminal.keys("PageUp")
    wait_for(
        lambda: "line 059" not in terminal.screen() and "line 030" in terminal.screen(),
        10.0,
        terminal.screen,
    )
    terminal.keys("End")  # on an empty line: back to the newest
    wait_for(lambda: "line 059" in terminal.screen(), 10.0, terminal.screen)
    terminal.keys("C-Home")
    wait_for(
        lambda: "line 000" in terminal.screen() and "line 059" not in terminal.screen(),
        10.0,
        terminal.screen,
    )
    terminal.keys("PageDown")
    wait_for(lambda: "line 000" not in terminal.screen(), 10.0, terminal.screen)
    terminal.keys("C-End")
    wait_for(lambda: "line 059" in terminal.screen(), 10.0, terminal.screen)
    for key, current in (("M-2", ">2 random"), ("M-1", ">1 lobby"), ("C-p", ">2 random")):
        terminal.keys(key)  # Alt-N arrives as ESC N under tmux
        wait_for(lambda: current in terminal.screen(), 10.0, terminal.screen)  # noqa: B023
    terminal.keys("M-Left")
    wait_for(lambda: ">1 lobby" in terminal.screen(), 10.0, terminal.screen)
    terminal.keys("/jo", "Tab", "ran", "Tab")  # one burst
    wait_for(lambda: "/join random" in terminal.screen(), 10.0, terminal.screen)
    terminal.keys("Enter")
    wait_for(lambda: ">2 random" in terminal.screen(), 10.0, terminal.screen)
    terminal.keys("F1")
    wait_for(lambda: "Esc closes this" in terminal.screen(), 10.0, terminal.screen)
    terminal.keys("Escape")
    wait_for(lambda: "Esc closes this" not in terminal.screen(), 10.0, terminal.screen)


def test_msg_opens_a_direct_room_in_a_real_terminal(terminal: Terminal, node: NodeProcess) -> None:
    wait_for(lambda: "connected" in terminal.screen(), 15.0, terminal.screen)
    terminal.type("/msg bob hi bob, just us")
    wait_for(
        lambda: (
            "dm#ann#bob" in terminal.screen()
            and "ann: hi bob, just us" in terminal.screen()
            and "sending" not in terminal.screen()
        ),
        15.0,
        terminal.screen,
    )
    history = subprocess.run(
        [
            *meshchat_command(),
            *("history", "--server", node.client_address, "--user", "bob", "dm#ann#bob"),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert history.stdout.rstrip().endswith("ann: hi bob, just us"), history.stdout
    send_as_bob(node, "hi ann", room="dm#ann#bob")
    wait_for(lambda: "bob: hi ann" in terminal.screen(), 10.0, terminal.screen)


def test_the_chat_tool_in_a_real_terminal(terminal: Terminal, node: NodeProcess) -> None:
    wait_for(
        lambda: "ann @ n1" in terminal.screen() and "connected" in terminal.screen(),
        15.0,
        terminal.screen,
    )
    terminal.type("hello from a real terminal")
    wait_for(
        lambda: (
            "ann: hello from a real terminal" in terminal.screen()
            and "sending" not in terminal.screen()
        ),
        10.0,
        terminal.screen,
    )
    send_as_bob(node, "hi ann, from the shell")
    wait_for(lambda: "bob: hi ann, from the shell" in terminal.screen(), 10.0, terminal.screen)
    terminal.type("/me waves")
    wait_for(lambda: "* ann waves" in terminal.screen(), 10.0, terminal.screen)
    terminal.type("/react 👍")
    wait_for(lambda: "[👍 1]" in terminal.screen(), 10.0, terminal.screen)
    terminal.type("/reply nice to see you")
    wait_for(lambda: "↳ * ann waves" in terminal.screen(), 10.0, terminal.screen)
    terminal.type("/edit glad you came")
    wait_for(lambda: "ann: glad you came (edited)" in terminal.screen(), 10.0, terminal.screen)
    terminal.type("/delete")
    wait_for(lambda: "ann: (deleted)" in terminal.screen(), 10.0, terminal.screen)
    terminal.type("/quit")
    wait_for(lambda: not terminal.alive(), 10.0, terminal.screen)


def test_plain_mode_through_a_pipe(node: NodeProcess) -> None:
    send_as_bob(node, "already here")
    result = subprocess.run(
        [*chat_command(node), "--plain"],
        input="hello\n/me waves\n/who\n//slash at the start\n/bogus\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "-- joined lobby"
    shown = [line.split(" ", 2)[-1] if line.startswith("[lobby] ") else line for line in lines]
    assert "bob: already here" in shown
    assert "ann: hello" in shown
    assert "* ann waves" in shown
    assert "ann: /slash at the start" in shown
    assert "-- in lobby: ann" in lines
    assert any(line.startswith("! not a command: /bogus") for line in lines)
    assert shown.count("ann: hello") == 1


def test_plain_mode_prints_a_hostile_body_escaped_on_one_line(node: NodeProcess) -> None:
    send_as_bob(node, "hi\x1b[2J\x1b]0;owned\x07\nsecond\r\nline\u202eevil\x9b31m")
    result = subprocess.run(
        [*chat_command(node), "--plain"],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    (shown,) = [line for line in lines if "bob: hi" in line]
    assert shown.endswith("bob: hi\\x1b[2J\\x1b]0;owned\\x07⏎second⏎line\\u202eevil\\x9b31m")
    assert not any(byte < 0x20 and byte != 0x0A for byte in result.stdout), result.stdout
    assert not any(0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in result.stdout.decode())
