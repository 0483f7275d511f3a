"""Helpers for tests that run real node processes on 127.0.0.1.

Nodes are started through the `meshchat` command line, as an operator would; every
process a test starts is stopped by the fixture that made it, whatever the outcome.
"""

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from zmq.auth import load_certificate

from mesh.client import runtime
from mesh.client.status import fetch_status
from mesh.local.launcher import plan_mesh
from mesh.wire.protocol import StatusReply
from peers.keys import create_key_pair

T = TypeVar("T")

HOST = "127.0.0.1"
# Fast membership timing so detection tests take seconds, not minutes.
FAST_TIMING = ["--heartbeat-interval", "0.1", "--suspect-after", "0.5", "--dead-after", "1.0"]
DEAD_AFTER_S = 1.0
# A node alone on its address takes the ports operators open (docs/deploy.md).
OWN_HOST_PORTS = (7200, 7100, 7300)
# How long a node process may take to start on a busy machine before its first words.
NODE_START_S = 20.0


def meshchat_command() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("meshchat")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mesh"]


# Ports for test nodes come from below the kernel's ephemeral range (32768 and up on
# Linux): a port the kernel handed out for bind(0) may be taken again by any outgoing
# connection (a peer's DEALER, a client) before the node binds it, or while a killed node
# restarts on it. Each pytest-xdist worker takes its own slice, so workers never collide.
PORTS_FIRST = 20_000
PORTS_PER_WORKER = 3_000
_next_port: dict[str, int] = {}


def free_ports(count: int) -> list[int]:
    """`count` ports nothing listens on, from this test worker's own slice."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    first = PORTS_FIRST + (index % 4) * PORTS_PER_WORKER
    ports: list[int] = []
    for _ in range(PORTS_PER_WORKER):
        if len(ports) == count:
            break
        offset = _next_port.get(worker, 0)
        _next_port[worker] = (offset + 1) % PORTS_PER_WORKER
        port = first + offset
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue  # in use (a node still running, or another program)
        ports.append(port)
    if len(ports) < count:
        raise RuntimeError(f"no {count} free ports in {first}..{first + PORTS_PER_WORKER}")
    return ports


# `meshchat up` bases lie below the slices free_ports hands out, so the ports of a local
# mesh never collide with single test nodes of another worker.
UP_BASE_FIRST = 14_000
UP_BASE_LAST = 19_700
UP_BASE_STEP = 10


def free_base_port(nodes: int) -> int:
    """A `meshchat up --base-port` whose client, peer and HTTP ports are all free now."""
    span = (UP_BASE_LAST - UP_BASE_FIRST) // UP_BASE_STEP
    start = os.getpid() % span  # runs side by side start apart
    for step in range(span):
        base = UP_BASE_FIRST + ((start + step) % span) * UP_BASE_STEP
        planned = plan_mesh(nodes, base, Path("unused"), HOST)
        ports = [p for n in planned for p in (n.client_port, n.peer_port, n.http_port) if p]
        if all(_bindable(port) for port in ports):
            return base
    raise RuntimeError(f"no free base port in {UP_BASE_FIRST}..{UP_BASE_LAST}")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def holds_for(
    condition: Callable[[], object],
    duration_s: float,
    describe: Callable[[], str],
    interval_s: float = 0.05,
) -> None:
    """Poll `condition` for `duration_s` and fail the first time it is false: for what
    must stay true (a node stays out, a link stays up), not for waiting."""
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        if not condition():
            raise AssertionError(f"stopped holding within {duration_s}s: {describe()}")
        time.sleep(interval_s)


def run_cli(*arguments: str, timeout_s: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run one `meshchat` command to its end, as an operator would."""
    return subprocess.run(
        [*meshchat_command(), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def wait_for(
    condition: Callable[[], T | None],
    timeout_s: float,
    describe: Callable[[], str],
    interval_s: float = 0.05,
) -> T:
    """Poll until `condition` returns something truthy; fail with what was seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s}s: {describe()}")
        time.sleep(interval_s)


@dataclass
class NodeProcess:
    node_id: str
    peer_port: int
    client_port: int
    data_dir: Path
    log_path: Path
    seeds: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=lambda: list(FAST_TIMING))
    process: subprocess.Popen[bytes] | None = None
    preexec: Callable[[], None] | None = None  # runs in the child before exec (rlimits)
    http_port: int | None = None
    # CURVE: this node's secret certificate and the cluster's trusted directory.
    node_key: Path | None = None
    trusted_keys: Path | None = None
    seed_ids: dict[str, str] = field(default_factory=dict)  # seed address -> node id
    status_token: str = "tester"  # what status() asks with: a signed token where needed
    host: str = HOST  # the address it binds and advertises: its own on a host of tests/netns.py
    launcher: list[str] = field(default_factory=list)  # runs the command: `ip netns exec NS`
    program: list[str] | None = None  # the meshchat it runs, when not this one (an older)

    @property
    def http_url(self) -> str:
        assert self.http_port is not None, "started without --http-port"
        return f"http://{self.host}:{self.http_port}"

    @property
    def peer_address(self) -> str:
        return f"{self.host}:{self.peer_port}"

    @property
    def client_address(self) -> str:
        return f"{self.host}:{self.client_port}"

    def command(self) -> list[str]:
        command = [
            *self.launcher,
            *(self.program or meshchat_command()),
            "node",
            "--id",
            self.node_id,
            "--host",
            self.host,
            "--peer-port",
            str(self.peer_port),
            "--client-port",
            str(self.client_port),
            "--data",
            str(self.data_dir),
        ]
        secure = "--insecure-peers" not in self.extra
        for seed in self.seeds:
            node_id = self.seed_ids.get(seed)
            command += ["--seed", f"{node_id}@{seed}" if secure and node_id else seed]
        if secure and self.node_key is not None and self.trusted_keys is not None:
            command += ["--node-key", str(self.node_key), "--trusted-keys", str(self.trusted_keys)]
        return command + self.extra

    def start(self) -> "NodeProcess":
        assert self.process is None or self.process.poll() is not None
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it until it exits
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=self.preexec,  # noqa: PLW1509 - only sets resource limits
        )
        log.close()
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout_s: float = 5.0) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused node cannot act on SIGTERM
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def status(self) -> StatusReply | None:
        try:
            reply = fetch_status([(self.host, self.client_port)], self.status_token, 1.0)
            return runtime.run(reply)
        except (OSError, TimeoutError):
            return None

    def accepts_clients(self) -> bool:
        try:
            with socket.create_connection((self.host, self.client_port), timeout=1.0):
                return True
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def counters(node: NodeProcess) -> dict[str, int]:
    """The node's counters from `status`; fails with its log when it does not answer."""
    reply = node.status()
    assert reply is not None, node.log()
    return reply.counters


def _read_trusted_dir(node: NodeProcess) -> bool:
    """Has the node started (it reads its trusted dir before it says it is up)?"""
    return re.search(r"node up: ", node.log()) is not None


def _trusts(node: NodeProcess, node_id: str) -> bool:
    """Has the node said it trusts `node_id`: at start, or on re-reading its trusted dir?"""
    named = re.escape(node_id)
    started = rf"trusting \d+ peer\(s\) from \S+: (.*, )?{named}(,|$)"
    reloaded = rf"reloaded: (.*, )?{named}(,| added)"
    return re.search(f"{started}|{reloaded}", node.log(), re.MULTILINE) is not None


def run_async(scenario: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
    """Run a test's async scenario with a deadline."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await scenario

    return asyncio.run(bounded())


class Cluster:
    """A set of node processes in one temp dir; `close()` stops every one of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: dict[str, NodeProcess] = {}
        # Every node's key pair, and the one directory of public keys they all trust.
        self.keys_dir = root / "keys"
        self.trusted_dir = root / "trusted"
        self.trusted_dir.mkdir(parents=True, exist_ok=True)

    def _wait_trusted_by_running_nodes(self, node_id: str) -> None:
        """Running nodes re-read the trusted dir each second; a node they have not yet
        read the key of would be refused at its first connect."""
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                # A node still starting (slow on a busy machine) reads the dir when it does.
                wait_for(partial(_read_trusted_dir, node), NODE_START_S, node.log)
                wait_for(partial(_trusts, node, node_id), 5.0, node.log)

    def member_key(self, node_id: str) -> tuple[bytes, bytes]:
        """A new key pair that every node trusts as `node_id` (z85 public, secret): for
        tests that speak as a member. Nodes re-read the trusted dir within a second."""
        public_path, secret_path = create_key_pair(self.keys_dir, node_id)
        shutil.copyfile(public_path, self.trusted_dir / public_path.name)
        public, secret = load_certificate(secret_path)
        assert secret is not None
        return public, secret

    def server_key(self, node_id: str) -> bytes:
        """The z85 public key a node's peer port answers with."""
        public, _ = load_certificate(self.keys_dir / f"{node_id}.key")
        return public

    def add(
        self,
        node_id: str,
        seeds: list[str] | None = None,
        options: list[str] | None = None,
        preexec: Callable[[], None] | None = None,
        http: bool = False,
        *,
        host: tuple[str, list[str]] | None = None,
    ) -> NodeProcess:
        """A node on 127.0.0.1 and free ports, or on `host`: (its own address, the launcher
        that runs it there), where it has the ports of `meshchat up`'s first node."""
        peer_port, client_port, http_port = free_ports(3) if host is None else OWN_HOST_PORTS
        if http:
            options = [*(options or []), "--http-port", str(http_port)]
        if not (self.keys_dir / f"{node_id}.key_secret").exists():
            public_path, _ = create_key_pair(self.keys_dir, node_id)
            shutil.copyfile(public_path, self.trusted_dir / public_path.name)
            self._wait_trusted_by_running_nodes(node_id)
        node = NodeProcess(
            node_id,
            peer_port,
            client_port,
            data_dir=self.root / node_id,
            log_path=self.root / f"{node_id}.log",
            seeds=list(seeds or []),
            extra=[*FAST_TIMING, *(options or [])],
            preexec=preexec,
            http_port=http_port if http else None,
            node_key=self.keys_dir / f"{node_id}.key_secret",
            trusted_keys=self.trusted_dir,
            seed_ids={other.peer_address: other.node_id for other in self.nodes.values()},
        )
        if host is not None:
            node.host, node.launcher = host
        self.nodes[node_id] = node
        return node

    def states(self, observer: str) -> dict[str, tuple[str, int]] | None:
        """Each member's state and incarnation as `observer` sees it. A member known only
        by gossip, never heard directly, shows as "hearsay" rather than "alive"."""
        reply = self.nodes[observer].status()
        if reply is None:
            return None
        return {
            member.id: (
                "hearsay"
                if member.state == "alive" and member.last_heard_s is None
                else member.state,
                member.incarnation,
            )
            for member in reply.members
        }

    def wait_sees(self, observer: str, member: str, state: str, timeout_s: float = 5.0) -> None:
        wait_for(
            lambda: (self.states(observer) or {}).get(member, ("?",))[0] == state,
            timeout_s,
            self.describe,
        )

    def describe(self) -> str:
        lines = []
        for node_id, node in self.nodes.items():
            running = node.process is not None and node.process.poll() is None
            lines.append(
                f"{node_id} running={running} view={self.states(node_id) if running else '-'}"
            )
            lines.append("  log tail: " + " | ".join(node.log().splitlines()[-5:]))
        return "\n".join(lines)

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
