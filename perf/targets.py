"""The servers a run talks to: a local meshchat mesh it starts, or Redis or NATS from the
OS packages, each on a free loopback port and stopped afterwards."""

import asyncio
import dataclasses
import datetime
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mesh.client.connection import NodeConnection, NodeError
from mesh.client.tls import client_context
from mesh.local.certificates import prepare_local_tls
from mesh.local.launcher import LocalNode, node_command, with_peer_keys
from mesh.wire.protocol import StatusReply, StatusRequest

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 15.0
# Raised so the node's per-session rate limit never brakes a benchmark.
UNLIMITED = [
    "--sends-per-s",
    "10000000",
    "--send-burst",
    "10000000",
    "--session-queue-max",
    "65536",
    "--log-level",
    "WARNING",
]


class TargetUnavailableError(RuntimeError):
    """The target cannot be run here: its server is not installed, or it cannot do what
    was asked (faults in a server the harness did not start)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TargetUnavailableError(f"nothing listens on {LOOPBACK}:{port} after {timeout_s}s")


class LocalMesh:
    """K meshchat nodes in a temp dir; can kill -9 and restart one of them.

    Peer links are on CURVE unless `insecure_peers`; with `tls` the client ports are on
    TLS, with a local CA made in the temp dir (`ca_file`, for the clients to verify with).
    """

    name = "meshchat"

    def __init__(self, nodes: int, *, insecure_peers: bool = False, tls: bool = False) -> None:
        self._data = tempfile.TemporaryDirectory(prefix="meshchat-perf-")
        root = Path(self._data.name)
        self.nodes = [
            LocalNode(f"n{i}", LOOPBACK, free_port(), free_port(), root / f"n{i}")
            for i in range(1, nodes + 1)
        ]
        self._options = list(UNLIMITED)
        if insecure_peers:
            self._options.append("--insecure-peers")
        else:
            self.nodes = with_peer_keys(root, self.nodes)
        self.ca_file: Path | None = None
        self._client_tls: ssl.SSLContext | None = None
        if tls:
            self._use_tls(root / "tls")
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def _use_tls(self, directory: Path) -> None:
        now = datetime.datetime.now(datetime.UTC)
        node_ids = [node.node_id for node in self.nodes]
        ca, certificates = prepare_local_tls(directory, node_ids, LOOPBACK, now)
        self.nodes = [
            dataclasses.replace(node, tls=certificates[node.node_id]) for node in self.nodes
        ]
        self.ca_file = ca.cert
        self._client_tls = client_context(ca.cert)

    @property
    def endpoints(self) -> list[str]:
        return [f"{node.host}:{node.client_port}" for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            self._start(node)
        for node in self.nodes:
            wait_listening(node.client_port)
        if len(self.nodes) > 1:
            # A node serves rooms once it has heard from its peers; measure a formed mesh.
            asyncio.run(self._wait_formed(START_TIMEOUT_S))

    async def _wait_formed(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            while True:
                alive = await _alive_members(node, self._client_tls)
                if alive == len(self.nodes):
                    break
                if time.monotonic() > deadline:
                    raise TargetUnavailableError(
                        f"{node.node_id} sees {alive} of {len(self.nodes)} nodes alive "
                        f"after {timeout_s}s"
                    )
                await asyncio.sleep(0.1)

    def _start(self, node: LocalNode) -> None:
        command = node_command(node, self.nodes, self._options)
        command[0:3] = [sys.executable, "-m", "mesh"]
        self._processes[node.node_id] = subprocess.Popen(command, stderr=subprocess.DEVNULL)

    def pids(self) -> list[int]:
        return [process.pid for process in self._processes.values()]

    def kill_node(self) -> str:
        victim = self.nodes[-1]
        process = self._processes[victim.node_id]
        process.send_signal(signal.SIGKILL)
        process.wait()
        return victim.node_id

    def restart_node(self) -> str:
        victim = self.nodes[-1]
        self._start(victim)
        return victim.node_id

    def stop(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self._processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._data.cleanup()


async def _alive_members(node: LocalNode, ssl_context: ssl.SSLContext | None) -> int:
    """How many members (itself included) a node sees alive; 0 if it cannot say."""
    try:
        connection = await NodeConnection.open(
            node.host, node.client_port, token="perf", ssl_context=ssl_context
        )
    except (OSError, NodeError):
        return 0
    try:
        reply = await connection.request(lambda i: StatusRequest(request_id=i))
    except (OSError, NodeError, TimeoutError):
        return 0
    finally:
        await connection.close()
    if not isinstance(reply, StatusReply):
        return 0
    return sum(member.state == "alive" for member in reply.members)


class ExternalMesh:
    """A mesh someone else runs (`--servers`); faults cannot be injected into it."""

    name = "meshchat"
    ca_file: Path | None = None

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def kill_node(self) -> str:
        raise TargetUnavailableError("--kill-node-at needs a mesh started by the harness (--nodes)")

    def restart_node(self) -> str:
        raise TargetUnavailableError("--restart-at needs a mesh started by the harness (--nodes)")


class OsServer:
    """redis-server or nats-server from the OS packages, on a free loopback port."""

    ca_file: Path | None = None

    def __init__(self, name: str) -> None:
        self.name = name
        binary = "redis-server" if name == "redis" else "nats-server"
        path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
        if path is None:
            raise TargetUnavailableError(
                f"{binary} is not installed; install it with: apt-get install {binary}"
            )
        self.port = free_port()
        if name == "redis":
            self.command = [
                path,
                "--port",
                str(self.port),
                "--bind",
                LOOPBACK,
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ]
        else:
            self.command = [path, "-a", LOOPBACK, "-p", str(self.port)]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoints(self) -> list[str]:
        return [f"{LOOPBACK}:{self.port}"]

    def start(self) -> None:
        self._process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_listening(self.port)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def kill_node(self) -> str:
        raise TargetUnavailableError(f"faults are injected into meshchat only, not {self.name}")

    restart_node = kill_node


Target = LocalMesh | ExternalMesh | OsServer
