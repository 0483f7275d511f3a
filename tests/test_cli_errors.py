"""The chat commands as a person meets them: fast, worded failures with distinct exit
codes, defaults that need no flags, `send -` streaming from a live pipe, `tail -n`."""

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mesh.cli.exit_codes import (
    EXIT_REFUSED,
    EXIT_UNAUTHORIZED,
    EXIT_UNREACHABLE,
)
from mesh.node.doors.auth import issue_token
from tests.processes import (
    HOST,
    Cluster,
    NodeProcess,
    free_ports,
    meshchat_command,
    run_cli,
    wait_for,
)

pytestmark = pytest.mark.processes

FAST_SENDS = ["--sends-per-s", "100000", "--send-burst", "100000"]
SECRET = b"cli-errors-secret-" + b"s" * 32
# An unreachable node is reported within this, however many servers are named.
FAIL_FAST_S = 2.0
# A line on the pipe is acknowledged (its id printed) well within this.
LINE_ACK_TIMEOUT_S = 10.0


@pytest.fixture
def node(cluster: Cluster) -> NodeProcess:
    started = cluster.add("n1", options=FAST_SENDS, http=True).start()
    wait_for(started.accepts_clients, 20.0, started.log)
    return started


def timed_cli(*arguments: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """The command's result and how long it took beyond the command line's own start-up
    (a `--version` run's time, measured beside it: a busy machine slows both)."""
    started = time.monotonic()
    run_cli("--version")
    start_up_s = time.monotonic() - started
    started = time.monotonic()
    result = run_cli(*arguments)
    return result, time.monotonic() - started - start_up_s


def history_bodies(node: NodeProcess, room: str) -> list[str]:
    result = run_cli(
        "history", room, "--limit", "1000", "--server", node.client_address, "--user", "reader"
    )
    assert result.returncode == 0, result.stderr
    return [line.split(": ", 1)[1] for line in result.stdout.splitlines()]


def test_nothing_listening_is_reported_at_once_for_every_server_tried() -> None:
    first, second = free_ports(2)
    servers = f"{HOST}:{first},{HOST}:{second}"
    for command in (["send", "lobby", "hi"], ["history", "lobby"], ["tail", "lobby"]):
        result, took_s = timed_cli(*command, "--server", servers, "--user", "ann")
        assert result.returncode == EXIT_UNREACHABLE, result.stderr
        assert took_s < FAIL_FAST_S, took_s
        lines = result.stderr.splitlines()
        assert lines[0] == f"meshchat {command[0]}: no node could be reached:"
        assert f"{HOST}:{first}: connection refused" in lines[1]
        assert f"{HOST}:{second}: connection refused" in lines[2]
    status = run_cli("status", "--server", f"{HOST}:{first}")
    assert status.returncode == EXIT_UNREACHABLE and "connection refused" in status.stderr


def test_a_peer_or_http_port_is_named_as_such(node: NodeProcess) -> None:
    for port, kind in ((node.peer_port, "peer port"), (node.http_port, "HTTP port")):
        result, took_s = timed_cli(
            "send", "lobby", "hi", "--server", f"{HOST}:{port}", "--user", "ann"
        )
        assert result.returncode == EXIT_UNREACHABLE, result.stderr
        assert f"node's {kind}" in result.stderr and "not" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert took_s < FAIL_FAST_S, took_s
    # Named with a client port, the wrong one is passed over.
    both = f"{HOST}:{node.peer_port},{node.client_address}"
    sent = run_cli("send", "lobby", "through the right port", "--server", both, "--user", "ann")
    assert sent.returncode == 0, sent.stderr


def test_an_oversize_or_empty_body_is_refused_once_with_its_code(node: NodeProcess) -> None:
    server = ["--server", node.client_address, "--user", "ann"]
    large, took_s = timed_cli("send", "lobby", "x" * (16 * 1024 + 1), *server)
    assert large.returncode == EXIT_REFUSED, large.stderr
    assert large.stderr.startswith("meshchat send: too_large: the message is 16385 bytes")
    assert large.stderr.rstrip().endswith("; send less, or split it"), large.stderr
    assert took_s < FAIL_FAST_S, took_s  # refused, never resent
    for body in ("", "   "):
        empty = run_cli("send", "lobby", body, *server)
        assert empty.returncode == EXIT_REFUSED, empty.stderr
        assert "bad_request: the message is empty" in empty.stderr
    assert history_bodies(node, "lobby") == []


def test_the_server_and_user_default_from_the_environment(node: NodeProcess) -> None:
    environment = {**os.environ, "MESHCHAT_SERVER": node.client_address, "MESHCHAT_USER": "cat"}
    result = subprocess.run(
        [*meshchat_command(), "send", "lobby", "no flags needed"],
        capture_output=True,
        text=True,
        timeout=20.0,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    shown = run_cli("history", "lobby", "--server", node.client_address, "--user", "x")
    assert shown.stdout.rstrip().endswith("cat: no flags needed"), shown.stdout


def test_the_tokens_user_wins_and_a_different_user_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    node = cluster.add("n1", options=["--secret-file", str(secret)]).start()
    node.status_token = issue_token(SECRET, "tester", 600, time.time())
    wait_for(node.accepts_clients, 20.0, node.log)
    ann = issue_token(SECRET, "ann", 600, time.time())
    server = ["--server", node.client_address]

    as_bob = run_cli("send", "lobby", "posing", *server, "--token", ann, "--user", "bob")
    assert as_bob.returncode == EXIT_UNAUTHORIZED, as_bob.stderr
    assert "unauthorized: the token is ann's, not bob's" in as_bob.stderr
    no_token = run_cli("send", "lobby", "hi", *server, "--user", "bob")
    assert no_token.returncode == EXIT_UNAUTHORIZED, no_token.stderr
    assert "it is not a signed token" in no_token.stderr
    assert len(no_token.stderr.splitlines()) == 1, no_token.stderr  # said once

    as_ann = run_cli("send", "lobby", "as myself", *server, "--token", ann)
    assert as_ann.returncode == 0, as_ann.stderr
    shown = run_cli("history", "lobby", *server, "--token", ann)
    assert shown.stdout.rstrip().endswith("ann: as myself"), shown.stdout


def test_version_names_the_protocol() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("meshchat ") and "client protocol 1." in result.stdout


def test_tail_n_prints_the_last_lines_then_follows(node: NodeProcess) -> None:
    server = ["--server", node.client_address, "--user", "ann"]
    for body in ("one", "two", "three"):
        assert run_cli("send", "lobby", body, *server).returncode == 0
    with LineProcess([*meshchat_command(), "tail", "lobby", "-n", "2", *server]) as tail:
        assert tail.next_line().endswith("ann: two")
        assert tail.next_line().endswith("ann: three")
        assert run_cli("send", "lobby", "four", *server).returncode == 0
        assert tail.next_line().endswith("ann: four")


def test_send_dash_acknowledges_each_line_of_a_slow_pipe_before_the_next(
    node: NodeProcess,
) -> None:
    server = ["--server", node.client_address, "--user", "ann"]
    with LineProcess([*meshchat_command(), "send", "lobby", "-", *server]) as send:
        ids = []
        for index in range(5):
            send.write(f"line {index}\n")  # the next is written only once this one is stored
            ids.append(send.next_line())
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert history_bodies(node, "lobby") == [f"line {i}" for i in range(5)]
        send.write("last line\n")
        assert send.next_line() > ids[-1]
        send.close_stdin()
        assert send.wait() == 0, send.stderr()
    assert history_bodies(node, "lobby")[-1] == "last line"


def test_ctrl_c_during_send_dash_sends_what_was_read_and_exits_cleanly(
    node: NodeProcess,
) -> None:
    server = ["--server", node.client_address, "--user", "ann"]
    burst = [f"line {index}" for index in range(200)]
    with LineProcess([*meshchat_command(), "send", "lobby", "-", *server]) as send:
        send.write("".join(f"{line}\n" for line in burst))  # one write: one read of it
        ids = [send.next_line()]  # reading has begun; most of the burst is in flight
        send.interrupt()
        assert send.wait() == 0, send.stderr()
        ids += send.remaining_lines()
        assert "Traceback" not in send.stderr() and "never retrieved" not in send.stderr()
    assert len(ids) == len(burst), send.stderr()
    assert history_bodies(node, "lobby") == burst


def test_a_refused_line_stops_the_stream_and_the_exit_code_says_so(node: NodeProcess) -> None:
    server = ["--server", node.client_address, "--user", "ann"]
    with LineProcess([*meshchat_command(), "send", "lobby", "-", *server]) as send:
        send.write("fine\n")
        send.next_line()
        send.write("y" * (16 * 1024 + 1) + "\n")
        assert send.wait() == EXIT_REFUSED
        assert "too_large" in send.stderr()
        assert "1 of 2 lines read were not acknowledged" in send.stderr()
    assert history_bodies(node, "lobby") == ["fine"]


class LineProcess:
    """A command whose stdout is read line by line as it comes, its stdin written by the test."""

    def __init__(self, command: list[str]) -> None:
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr = ""

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))

    def __enter__(self) -> "LineProcess":
        return self

    def __exit__(self, *_: object) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()

    def write(self, text: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(text)
        self._process.stdin.flush()

    def next_line(self) -> str:
        try:
            return self._lines.get(timeout=LINE_ACK_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no line within {LINE_ACK_TIMEOUT_S}s: {self.stderr()}") from None

    def remaining_lines(self) -> list[str]:
        """Every line the process printed and the test did not take yet (after its exit)."""
        self._reader.join(timeout=LINE_ACK_TIMEOUT_S)
        lines = []
        while not self._lines.empty():
            lines.append(self._lines.get_nowait())
        return lines

    def close_stdin(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()

    def interrupt(self) -> None:
        self._process.send_signal(signal.SIGINT)

    def wait(self) -> int:
        return self._process.wait(timeout=LINE_ACK_TIMEOUT_S * 2)

    def stderr(self) -> str:
        if self._process.poll() is not None and self._process.stderr is not None:
            self._stderr += self._process.stderr.read()
        return self._stderr
