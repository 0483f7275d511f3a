"""The command line a person learns from its own help: every option explained with its
default, every command ending with examples, shell completion, and tables on a terminal
that stay plain lines in a pipe."""

import argparse
import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest
from rich.console import Console

from mesh.cli.help_format import EXAMPLES_HEADING, command_parsers
from mesh.cli.main import build_parser
from mesh.cli.tables import history_table
from mesh.wire.protocol import Message
from tests.chat_helpers import wait_serving
from tests.processes import Cluster, NodeProcess, meshchat_command, run_async, run_cli, wait_for

# Options that are switches: off unless given, so they have no default to print.
SWITCHES = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._CountAction,
    argparse._VersionAction,
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# An SGR sequence that sets a foreground colour: 30-37, 90-97 or 38;5;N / 38;2;R;G;B.
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-7]|9[0-7]|38;[25];[0-9;]+)m")
TERMINAL_COLUMNS = 150
TERMINAL_READ_S = 20.0


COMMANDS = list(command_parsers(build_parser()))
COMMAND_IDS = ["-".join(path) or "meshchat" for path, _ in COMMANDS]


def command_name(path: tuple[str, ...]) -> str:
    return " ".join(("meshchat", *path))


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=COMMAND_IDS)
def test_every_option_is_explained_with_its_default_and_no_none(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{command_name(path)} {choice.dest}: no help"
            continue
        assert action.help and action.help != argparse.SUPPRESS, f"{name}: no help"
        if not action.option_strings or action.required or isinstance(action, SWITCHES):
            continue
        shown = formatter._expand_help(action)
        assert "default" in shown or "required" in shown, f"{name}: no default: {shown}"
    text = parser.format_help()
    assert not re.search(r"\bNone\b", text), text


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=COMMAND_IDS)
def test_every_command_s_help_ends_with_examples(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    last_block = parser.format_help().rstrip("\n").split("\n\n")[-1].splitlines()
    assert last_block[0] == EXAMPLES_HEADING, parser.format_help()
    lines = last_block[1:]
    assert 2 <= len(lines) <= 4, lines
    for line in lines:
        assert line.startswith("  ") and "meshchat" in line, line


def test_help_through_the_command_line_ends_with_examples() -> None:
    shown = run_cli("history", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "--limit N" in shown.stdout or "--limit LIMIT" in shown.stdout
    assert "how many messages, at most (default 50)" in " ".join(shown.stdout.split())
    assert shown.stdout.rstrip().splitlines()[-4] == EXAMPLES_HEADING


def test_bash_completion_registers_and_completes_commands_and_options() -> None:
    meshchat = " ".join(meshchat_command())
    script = (
        f"source <({meshchat} completion bash) && complete -p meshchat && "
        'COMP_WORDS=(meshchat sta); COMP_CWORD=1; _shtab_meshchat; echo "${COMPREPLY[@]}"; '
        "COMP_WORDS=(meshchat history --li); COMP_CWORD=2; _shtab_meshchat; "
        'echo "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    registered, commands_shown, options_shown = done.stdout.splitlines()
    assert registered.endswith(" meshchat") and "-F _shtab_meshchat" in registered
    assert commands_shown.split() == ["status"]
    assert options_shown.split() == ["--limit"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_completion_scripts_name_the_commands(shell: str) -> None:
    done = run_cli("completion", shell)
    assert done.returncode == 0, done.stderr
    for command in ("status", "where", "history", "send", "room", "completion"):
        assert command in done.stdout, command
    assert "--server" in done.stdout


def test_completion_for_an_unknown_shell_is_a_usage_error() -> None:
    done = run_cli("completion", "powershell")
    assert done.returncode == 2
    assert "invalid choice: 'powershell'" in done.stderr and done.stdout == ""


def message(sender: str, body: str, **fields: object) -> Message:
    return Message(
        id=f"0193a5c2e4f8000{len(body) % 10}.n1",
        room="lobby",
        sender=sender,
        time_ms=1_733_240_000_000,
        body=body,
        **fields,  # type: ignore[arg-type]
    )


def test_a_history_table_shows_markup_and_control_characters_as_text() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, color_system="standard", width=100)
    table = history_table([message("ann", "[red]not red[/red] \x1b[2J"), message("bob", "hi")])
    console.print(table)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    plain = ANSI.sub("", shown)
    assert "[red]not red[/red] \\x1b[2J" in plain  # escaped by display_text, not styled
    assert "\x1b[2J" not in shown
    assert "ann" in plain and "bob" in plain and COLOUR.search(shown)


def run_in_terminal(*arguments: str, no_color: bool = False) -> str:
    """Run one command with its stdout on a pseudo-terminal of TERMINAL_COLUMNS; what it
    wrote there, with the terminal's \\r\\n as \\n."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, TERMINAL_COLUMNS, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update({"TERM": "xterm-256color", "COLUMNS": str(TERMINAL_COLUMNS)})
    if no_color:
        env["NO_COLOR"] = "1"
    process = subprocess.Popen(
        [*meshchat_command(), *arguments],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(follower)
    written = bytearray()
    deadline = time.monotonic() + TERMINAL_READ_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the follower side is closed, the command is done
                break
            if not chunk:
                break
            written += chunk
    finally:
        os.close(leader)
        process.wait(timeout=10)
    assert process.stderr is not None
    assert process.returncode == 0, process.stderr.read()
    return written.decode().replace("\r\n", "\n")


def table_rows(shown: str) -> list[str]:
    """The lines of a rich table (its box drawing), colours taken out."""
    return [line for line in ANSI.sub("", shown).splitlines() if line[:1] in "┏┃┡│└"]


def assert_aligned(shown: str) -> list[str]:
    rows = table_rows(shown)
    assert len(rows) >= 4, shown
    assert len({len(row) for row in rows}) == 1, "\n".join(rows)
    return rows


@pytest.fixture
def node(cluster: Cluster) -> NodeProcess:
    started = cluster.add("n1").start()
    wait_for(started.accepts_clients, 20.0, started.log)
    run_async(wait_serving(started))
    return started


@pytest.mark.processes
def test_status_where_and_history_are_coloured_tables_on_a_terminal_and_lines_in_a_pipe(
    node: NodeProcess,
) -> None:
    server = ("--server", node.client_address)
    for body in ("hello [bold]there[/bold]", "second"):
        sent = run_cli("send", "lobby", body, *server, "--user", "ann")
        assert sent.returncode == 0, sent.stderr

    status = run_in_terminal("status", *server)
    rows = assert_aligned(status)
    assert "ID" in rows[1] and "INCARNATION" in rows[1]
    assert any("n1" in row and "alive" in row for row in rows)
    assert "\x1b[32malive" in status or re.search(r"\x1b\[[0-9;]*32m\s*alive", status), status
    piped = run_cli("status", *server)
    assert piped.stdout.splitlines()[:2] == [
        "node n1 sees 1 member(s)",
        f"{'ID':<12} {'ADDRESS':<22} {'STATE':<8} {'INCARNATION':>14} {'HEARD':>8} "
        f"{'DROPPED':>8} {'HINTS':>7} {'OLDEST':>8}",
    ]
    assert piped.stdout.splitlines()[2].split()[:3] == ["n1", node.peer_address, "alive"]
    assert "\x1b" not in piped.stdout

    where = run_in_terminal("where", "lobby", *server)
    rows = assert_aligned(where)
    assert any("n1" in row and "coordinator" in row for row in rows)
    assert COLOUR.search(where)
    assert run_cli("where", "lobby", *server).stdout.splitlines() == [
        "room lobby: 1 of 3 replicas, coordinator n1",
        "  1. n1           alive",
    ]

    history = run_in_terminal("history", "lobby", *server, "--user", "ann")
    rows = assert_aligned(history)
    assert any("hello [bold]there[/bold]" in row for row in rows), history
    assert COLOUR.search(history)
    piped_history = run_cli("history", "lobby", *server, "--user", "ann").stdout.splitlines()
    assert [re.sub(r"^\S+ \S+ ", "", line) for line in piped_history] == [
        "ann: hello [bold]there[/bold]",
        "ann: second",
    ]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ann: ", line) for line in piped_history)
    as_json = run_in_terminal("history", "lobby", *server, "--user", "ann", "--json")
    assert as_json.count('"sender": "ann"') == 2 and not table_rows(as_json)

    plain_terminal = run_in_terminal("status", *server, no_color=True)
    assert_aligned(plain_terminal)
    assert not COLOUR.search(plain_terminal), repr(plain_terminal)
