"""The chat tool as a person and a script use it: in a real terminal (tmux), and through a pipe."""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

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

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "chat", "-l", text)
        self._tmux("send-keys", "-t", "chat", "Enter")

    def alive(self) -> bool:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "has-session", "-t", "chat"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


def chat_command(node: NodeProcess) -> list[str]:
    """`meshchat chat` for ann in the lobby of `node`."""
    return [
        *meshchat_command(),
        "chat",
        "--server",
        node.client_address,
        "--user",
        "ann",
        "--room",
        "lobby",
    ]


def send_as_bob(node: NodeProcess, text: str) -> None:
    command = ["send", "--server", node.client_address, "--user", "bob", "lobby", text]
    subprocess.run([*meshchat_command(), *command], check=True, capture_output=True, timeout=20)


@pytest.fixture
def terminal(node: NodeProcess) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    session = Terminal(chat_command(node))
    try:
        yield session
    finally:
        session.close()


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
