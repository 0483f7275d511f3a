"""`meshchat up` as a supervisor: it says the mesh runs only once every node is ready, with
what to try next; it starts a node that dies again (or, with --no-restart, leaves it);
a normal start and stop log no warnings."""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.local.launcher import plan_mesh
from tests.processes import HOST, free_base_port, meshchat_command, wait_for

pytestmark = pytest.mark.processes

TIMINGS = ["--heartbeat-interval", "0.1", "--suspect-after", "0.5", "--dead-after", "1"]
START_TIMEOUT_S = 40.0


class UpProcess:
    """`meshchat up` with its output lines collected as they come, and its log in a file."""

    def __init__(self, tmp_path: Path, base_port: int, *extra: str) -> None:
        self.log_path = tmp_path / "up.log"
        self.lines: list[str] = []
        self.pids: set[int] = set()
        command = [*meshchat_command(), "up", "--nodes", "2", "--base-port", str(base_port)]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [*command, "--data", str(tmp_path / "mesh"), *TIMINGS, *extra],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if " pid " in line:
                self.pids.add(int(line.rsplit(" pid ", 1)[1]))

    def line_with(self, text: str, timeout_s: float = START_TIMEOUT_S) -> str:
        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        return wait_for(found, timeout_s, lambda: f"no {text!r} in {self.lines}; {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def node_pid(self, node_id: str) -> int:
        line = self.line_with(f"{node_id}  client")
        return int(line.rsplit(" pid ", 1)[1])

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20.0)

    def clean_up(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.pids:  # nodes run in their own sessions: never leave one behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_up(tmp_path: Path, *extra: str) -> Iterator[tuple[UpProcess, int]]:
    base_port = free_base_port(2)
    up = UpProcess(tmp_path, base_port, *extra)
    try:
        yield up, base_port
    finally:
        up.clean_up()


def ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{http_port}/v1/ready", timeout=2.0) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_says_it_runs_once_every_node_is_ready_and_starts_a_dead_node_again(
    tmp_path: Path,
) -> None:
    with running_up(tmp_path) as (up, base_port):
        running = up.line_with("running")
        http_ports = [node.http_port for node in plan_mesh(2, base_port, tmp_path, HOST)]
        assert all(port is not None and ready(port) for port in http_ports), up.log()
        assert "restarts a node that dies" in running
        assert up.line_with("now try") and up.line_with("meshchat chat")
        send_hint = up.line_with("meshchat send")
        assert f"--server {HOST}:{base_port}" in send_hint  # not the default port 7100
        dead = up.node_pid("n2")
        os.kill(dead, signal.SIGKILL)
        wait_for(lambda: "node n2 started again" in up.log(), 20.0, up.log)
        assert "node n2 exited with code -9" in up.log()
        again = int(up.log().split("node n2 started again (pid ")[1].split(",")[0])
        up.pids.add(again)
        assert again != dead and pid_alive(again)
        n2_http = http_ports[1]
        assert n2_http is not None
        wait_for(lambda: ready(n2_http), 20.0, lambda: f"n2 never ready again; {up.log()}")
        assert up.stop() == 0
        assert not pid_alive(again) and not pid_alive(up.node_pid("n1"))


def test_a_normal_start_and_stop_log_no_warnings(tmp_path: Path) -> None:
    with running_up(tmp_path) as (up, _):
        up.line_with("now try")
        assert up.stop() == 0
        warnings = [line for line in up.log().splitlines() if "WARNING" in line]
        assert warnings == [], up.log()


def test_with_no_restart_a_dead_node_stays_down(tmp_path: Path) -> None:
    with running_up(tmp_path, "--no-restart") as (up, base_port):
        assert "does not restart nodes" in up.line_with("running")
        os.kill(up.node_pid("n2"), signal.SIGKILL)
        wait_for(lambda: "not restarted (--no-restart)" in up.log(), 20.0, up.log)
        http_port = plan_mesh(2, base_port, tmp_path, HOST)[1].http_port
        assert http_port is not None and not ready(http_port)
        assert "started again" not in up.log()
        assert up.process.poll() is None  # n1 still serves
        assert up.stop() == 0


def test_a_mesh_that_cannot_start_never_says_it_runs(tmp_path: Path) -> None:
    base_port = free_base_port(2)
    blocker = socket.socket()
    blocker.bind((HOST, base_port + 1))  # n2's client port
    blocker.listen()
    up = UpProcess(tmp_path, base_port)
    try:
        code = up.process.wait(timeout=START_TIMEOUT_S)
        up._reader.join(timeout=5.0)
        assert code != 0
        assert not any("running" in line for line in up.lines), up.lines
        assert "node n2 exited with code" in up.log() and "while starting" in up.log()
    finally:
        blocker.close()
        up.clean_up()


def test_a_killed_up_takes_its_nodes_with_it(tmp_path: Path) -> None:
    with running_up(tmp_path) as (up, _):
        up.line_with("now try")
        nodes = [up.node_pid("n1"), up.node_pid("n2")]
        up.process.kill()  # no chance to stop them itself
        up.process.wait(timeout=10.0)
        wait_for(
            lambda: not any(pid_alive(pid) for pid in nodes),
            20.0,
            lambda: f"nodes outlived up: {[pid for pid in nodes if pid_alive(pid)]}",
        )
