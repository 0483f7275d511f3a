"""How fast a local mesh converges, and how fast it notices a kill -9.

    python -m perf.membership --nodes 3 --runs 5 \\
        --heartbeat-interval 0.5 --suspect-after 2 --dead-after 5

Each run starts a fresh mesh of real node processes (the `meshchat up` layout) in a temp
dir, polls every node's status every 10 ms, and records:
- converge: from launching the processes until every node has heard every other directly;
- detect: from SIGKILL of the last node until every survivor reports it dead.
"""

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mesh.client import runtime
from mesh.client.status import fetch_status
from mesh.local.launcher import LocalNode, node_command, plan_mesh, with_peer_keys

POLL_INTERVAL_S = 0.01
PHASE_TIMEOUT_S = 60.0


def _states(node: LocalNode) -> dict[str, str] | None:
    try:
        reply = runtime.run(fetch_status([(node.host, node.client_port)], "perf", 1.0))
    except (OSError, TimeoutError):
        return None
    return {
        member.id: "heard"
        if member.state == "alive" and member.last_heard_s is not None
        else member.state
        for member in reply.members
    }


def _wait(observers: list[LocalNode], wanted: dict[str, str]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < PHASE_TIMEOUT_S:
        views = [_states(node) for node in observers]
        if all(
            view is not None and all(view.get(i) == s for i, s in wanted.items()) for view in views
        ):
            return time.monotonic() - started
        time.sleep(POLL_INTERVAL_S)
    raise TimeoutError(f"mesh did not reach {wanted} in {PHASE_TIMEOUT_S}s")


def measure_once(nodes: int, base_port: int, timing: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as data:
        mesh = with_peer_keys(Path(data), plan_mesh(nodes, base_port, Path(data), "127.0.0.1"))
        processes = []
        try:
            started = time.monotonic()
            for node in mesh:
                command = [*node_command(node, mesh, timing), "--log-level", "WARNING"]
                processes.append(subprocess.Popen(command, stderr=subprocess.DEVNULL))
            everyone = {node.node_id: "heard" for node in mesh}
            _wait(mesh, everyone)
            converge_s = time.monotonic() - started
            victim, survivors = processes[-1], mesh[:-1]
            victim.send_signal(signal.SIGKILL)
            detect_s = _wait(survivors, {mesh[-1].node_id: "dead"})
            return converge_s, detect_s
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                process.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--base-port", type=int, default=17100)
    parser.add_argument("--heartbeat-interval", default="0.5")
    parser.add_argument("--suspect-after", default="2.0")
    parser.add_argument("--dead-after", default="5.0")
    args = parser.parse_args(argv)
    timing = [
        "--heartbeat-interval",
        args.heartbeat_interval,
        "--suspect-after",
        args.suspect_after,
        "--dead-after",
        args.dead_after,
    ]
    converge, detect = [], []
    for _ in range(args.runs):
        converge_s, detect_s = measure_once(args.nodes, args.base_port, timing)
        converge.append(converge_s)
        detect.append(detect_s)
    summary = {
        "nodes": args.nodes,
        "runs": args.runs,
        "timing": dict(zip(timing[::2], timing[1::2], strict=True)),
        "converge_s": {"median": statistics.median(converge), "max": max(converge)},
        "detect_kill9_s": {"median": statistics.median(detect), "max": max(detect)},
    }
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
