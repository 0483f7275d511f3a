"""`meshchat up` keeps its nodes running: it says the mesh runs once every node is ready,
restarts a node that dies (after a doubling wait), and stops them all on Ctrl-C."""

import ctypes
import http.client
import logging
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from mesh.local.launcher import LocalNode, node_command, stop_all

log = logging.getLogger(__name__)

RESTART_DELAY_FIRST_S = 1.0
RESTART_DELAY_MAX_S = 30.0
# A node that ran this long before it died starts again after the first delay, not a longer one.
RESTART_STABLE_AFTER_S = 60.0
# How long to wait for every node's /v1/ready before saying which are late (then waiting on).
READY_WARN_AFTER_S = 30.0
READY_PROBE_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.2
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class _Child:
    node: LocalNode
    command: list[str]
    process: "subprocess.Popen[bytes] | None" = None
    started_at: float = 0.0
    ready: bool = False
    restarts: int = 0
    delay_s: float = RESTART_DELAY_FIRST_S
    restart_at: float | None = None  # set while dead and waiting to be started again

    def start(self, now: float) -> None:
        # Its own session: the terminal's Ctrl-C reaches `up` alone, which stops the nodes;
        # and a SIGTERM when `up` dies without stopping them (killed), never an orphan.
        self.process = subprocess.Popen(
            self.command,
            start_new_session=True,
            preexec_fn=_stop_with_parent,  # noqa: PLW1509 - `up` runs no threads
        )
        self.started_at, self.ready, self.restart_at = now, False, None


@dataclass
class Supervisor:
    mesh: list[LocalNode]
    extra: list[str]
    out: Callable[[str], None]
    restart: bool = True
    hints: list[str] = field(default_factory=list)  # the "now try:" lines
    # Exit codes a restart cannot mend (a bad command line, a data dir taken away).
    permanent_exits: frozenset[int] = frozenset()
    _stopping: bool = False

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._request_stop)
        children = [_Child(node, node_command(node, self.mesh, self.extra)) for node in self.mesh]
        now = time.monotonic()
        try:
            for child in children:
                child.node.data_dir.mkdir(parents=True, exist_ok=True)
                child.start(now)
            code = self._start_all(children)
            if code is None:
                self._announce(children)
                code = self._supervise(children)
        finally:
            stop_all([c.process for c in children if c.process is not None])
        return code

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self._stopping = True

    def _start_all(self, children: list[_Child]) -> int | None:
        """Wait until every node is ready; the exit code if one failed to start, or if
        `up` was stopped first (0); None once the mesh runs."""
        began = time.monotonic()
        warned = False
        while not self._stopping:
            for child in children:
                assert child.process is not None
                code = child.process.poll()
                if code is not None:
                    log.error(
                        "node %s exited with code %d while starting (its log is above); "
                        "stopping the mesh",
                        child.node.node_id,
                        code,
                    )
                    return shell_status(code) or 1
                child.ready = child.ready or node_ready(child.node)
            if all(child.ready for child in children):
                return None
            if not warned and time.monotonic() - began > READY_WARN_AFTER_S:
                late = ", ".join(c.node.node_id for c in children if not c.ready)
                log.warning("still waiting for %s to be ready (GET /v1/ready)", late)
                warned = True
            time.sleep(POLL_INTERVAL_S)
        return 0

    def _announce(self, children: list[_Child]) -> None:
        for child in children:
            node = child.node
            assert child.process is not None
            scheme = "http" if node.tls is None else "https"
            self.out(
                f"{node.node_id}  client {node.host}:{node.client_port}  "
                f"peer {node.host}:{node.peer_port}  "
                f"http {scheme}://{node.host}:{node.http_port}  "
                f"data {node.data_dir}  pid {child.process.pid}"
            )
        restarts = "restarts a node that dies" if self.restart else "does not restart nodes"
        self.out(f"mesh of {len(children)} node(s) running; it {restarts}; Ctrl-C stops it")
        for hint in self.hints:
            self.out(hint)

    def _supervise(self, children: list[_Child]) -> int:
        """Watch the running mesh until stopped, or until every node is gone for good."""
        exit_code = 0
        while not self._stopping:
            now = time.monotonic()
            for child in children:
                if child.restart_at is not None and now >= child.restart_at:
                    child.restarts += 1
                    child.start(now)
                    assert child.process is not None
                    log.info(
                        "node %s started again (pid %d, restart %d)",
                        child.node.node_id,
                        child.process.pid,
                        child.restarts,
                    )
                elif child.process is not None and (code := child.process.poll()) is not None:
                    exit_code = self._died(child, code, now) or exit_code
            if all(c.process is None and c.restart_at is None for c in children):
                log.error("every node has stopped; so does the mesh")
                return exit_code or 1
            time.sleep(POLL_INTERVAL_S)
        return 0

    def _died(self, child: _Child, code: int, now: float) -> int:
        """A node's process ended: schedule its restart, or say why not. Its exit code."""
        node_id, ran_s = child.node.node_id, now - child.started_at
        child.process = None
        if code == 0:
            log.info("node %s stopped cleanly; not restarted", node_id)
            return 0
        if not self.restart or code in self.permanent_exits:
            why = "--no-restart" if not self.restart else "a restart cannot mend this"
            log.error("node %s exited with code %d; not restarted (%s)", node_id, code, why)
            return shell_status(code)
        if ran_s >= RESTART_STABLE_AFTER_S:
            child.delay_s = RESTART_DELAY_FIRST_S
        log.warning(
            "node %s exited with code %d after %.1fs; starting it again in %.1fs",
            node_id,
            code,
            ran_s,
            child.delay_s,
        )
        child.restart_at = now + child.delay_s
        child.delay_s = min(RESTART_DELAY_MAX_S, child.delay_s * 2)
        return 0


def shell_status(returncode: int) -> int:
    """A child's status as a shell gives it: 128 + the signal for one killed by a signal."""
    return 128 - returncode if returncode < 0 else returncode


def _stop_with_parent() -> None:
    """In the child, before exec: SIGTERM it when `up` dies (Linux's PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def node_ready(node: LocalNode) -> bool:
    """Does the node answer GET /v1/ready with 200 (it serves clients)?"""
    if node.http_port is None:
        return True
    if node.tls is None:
        connection: http.client.HTTPConnection = http.client.HTTPConnection(
            node.host, node.http_port, timeout=READY_PROBE_TIMEOUT_S
        )
    else:
        # Our own child on a known port, asked only whether it is ready: nothing to protect.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(
            node.host, node.http_port, timeout=READY_PROBE_TIMEOUT_S, context=context
        )
    try:
        connection.request("GET", "/v1/ready")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
