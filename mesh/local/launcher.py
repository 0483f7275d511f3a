"""`meshchat up`: the plan of a local mesh, its nodes' command lines and keys."""

import logging
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mesh.node.data_lock import DataDirLock
from mesh.wire.tls import CertificateFiles
from peers.keys import PUBLIC_SUFFIX, SECRET_SUFFIX, ensure_node_key

log = logging.getLogger(__name__)

# Where `up` keeps its nodes' key pairs and the directory of keys they all trust.
LOCAL_KEYS_DIR = "keys"
LOCAL_TRUSTED_DIR = "trusted"

STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class LocalNode:
    node_id: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    http_port: int | None = None
    tls: CertificateFiles | None = None  # the client port's and HTTP API's certificate
    node_key: Path | None = None  # the peer links' CURVE key; None: --insecure-peers
    trusted_keys: Path | None = None


def plan_mesh(nodes: int, base_port: int, data: Path, host: str) -> list[LocalNode]:
    """Node i (1-based) is n<i>: client port BASE+i-1, peer port BASE+100+i-1, HTTP port
    BASE+200+i-1, data dir DATA/n<i>."""
    if not 1 <= nodes <= 100:
        raise ValueError("--nodes must be 1 to 100: peer ports sit 100 above client ports")
    return [
        LocalNode(
            f"n{i}",
            host,
            base_port + i - 1,
            base_port + 100 + i - 1,
            data / f"n{i}",
            http_port=base_port + 200 + i - 1,
        )
        for i in range(1, nodes + 1)
    ]


def with_peer_keys(data: Path, mesh: list[LocalNode]) -> list[LocalNode]:
    """A local mesh's nodes with their CURVE keys: a pair per node in DATA/keys, made once
    and kept after, and one trusted directory DATA/trusted holding every public key."""
    keys_dir, trusted_dir = data / LOCAL_KEYS_DIR, data / LOCAL_TRUSTED_DIR
    trusted_dir.mkdir(parents=True, exist_ok=True)
    keyed = []
    for node in mesh:
        ensure_node_key(keys_dir, node.node_id)
        public = f"{node.node_id}{PUBLIC_SUFFIX}"
        shutil.copyfile(keys_dir / public, trusted_dir / public)
        secret = keys_dir / f"{node.node_id}{SECRET_SUFFIX}"
        keyed.append(replace(node, node_key=secret, trusted_keys=trusted_dir))
    return keyed


def check_data_dirs_free(mesh: list[LocalNode]) -> None:
    """Raise DataDirInUseError for the first node whose data dir a running process holds:
    before any node starts, so a second mesh on the same dirs starts nothing."""
    for node in mesh:
        DataDirLock.check_free(node.data_dir)


def node_command(node: LocalNode, mesh: list[LocalNode], extra: list[str]) -> list[str]:
    seeds = [
        f"{other.node_id}@{other.host}:{other.peer_port}" for other in mesh if other is not node
    ]
    command = [
        sys.executable,
        "-m",
        "mesh",
        "node",
        "--id",
        node.node_id,
        "--host",
        node.host,
        "--peer-port",
        str(node.peer_port),
        "--client-port",
        str(node.client_port),
        "--data",
        str(node.data_dir),
    ]
    for seed in seeds:
        command += ["--seed", seed]
    if node.http_port is not None:
        command += ["--http-port", str(node.http_port)]
    if node.node_key is not None and node.trusted_keys is not None:
        command += ["--node-key", str(node.node_key), "--trusted-keys", str(node.trusted_keys)]
    if node.tls is not None:
        command += ["--tls-cert", str(node.tls.cert), "--tls-key", str(node.tls.key)]
    return command + extra


def stop_all(processes: list["subprocess.Popen[bytes]"]) -> None:
    """SIGTERM to each; a process still running after STOP_TIMEOUT_S is killed."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop in %.0fs; killing it", process.pid, STOP_TIMEOUT_S)
            process.kill()
            process.wait()
