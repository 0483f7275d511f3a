"""`meshchat perf run`: start the target, spread users over worker processes, inject faults,
show progress, and write the report."""

import contextlib
import multiprocessing
import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from perf.invite_rooms import prepare_invite_rooms
from perf.progress import ProgressLine
from perf.report import summarize, table_rows, write
from perf.targets import ExternalMesh, LocalMesh, OsServer, Target, TargetUnavailableError
from perf.worker import WorkerPlan, worker_main
from perf.workload import MESHCHAT_TARGETS, RELATION_SHARE, TargetName, Workload

READY_TIMEOUT_S = 90.0
# Time the run may take beyond its schedule: answers, late deliveries, slow exits.
OVERRUN_S = 120.0
# The figures each worker reports once a second (worker.py), in ProgressLine.update's order.
PROGRESS_KEYS = ("sent", "acks", "errors")


@dataclass(frozen=True)
class RunOptions:
    nodes: int = 1
    servers: list[str] | None = None
    workers: int | None = None
    kill_node_at_s: float | None = None
    restart_at_s: float | None = None
    out_dir: Path = Path("perf-results")
    live: bool = True
    insecure_peers: bool = False  # plaintext peer links: the baseline CURVE is measured against


# What each meshchat target secures: (peer links on CURVE, client ports on TLS).
MESHCHAT_SECURITY = {
    "meshchat": (True, False),
    "meshchat-plain": (False, False),
    "meshchat-tls": (True, True),
    "meshchat-relations": (True, False),
    "meshchat-invite": (True, False),
}


def make_target(name: TargetName, options: RunOptions) -> tuple[Target, dict[str, Any]]:
    if name in MESHCHAT_TARGETS:
        return _make_mesh(name, options)
    server = OsServer(name)
    kind = "pub/sub" if name == "redis" else "core subjects"
    return server, {
        "name": name,
        "label": f"{name} (in memory)",
        "description": f"{name} {kind}, in memory, not durable",
    }


def _make_mesh(name: str, options: RunOptions) -> tuple[Target, dict[str, Any]]:
    if options.servers:
        if name != "meshchat":
            raise TargetUnavailableError(
                f"{name} sets up the nodes' security itself: it needs --nodes, not --servers"
            )
        return ExternalMesh(options.servers), {
            "name": name,
            "label": "meshchat (external)",
            "servers": options.servers,
            "description": f"meshchat at {', '.join(options.servers)}",
        }
    curve, tls = MESHCHAT_SECURITY[name]
    curve = curve and not options.insecure_peers
    words = ("CURVE" if curve else "plaintext peers") + (" + TLS clients" if tls else "")
    if name == "meshchat-relations":
        words += f" + {RELATION_SHARE:.0%} edits/reactions"
    if name == "meshchat-invite":
        words += " + invite-only rooms"
    mesh = LocalMesh(options.nodes, insecure_peers=not curve, tls=tls)
    return mesh, {
        "name": name,
        "label": f"meshchat x{options.nodes} {words}",
        "nodes": options.nodes,
        "curve_peers": curve,
        "tls_clients": tls,
        "description": (
            f"meshchat, {options.nodes} local node(s), acks durable (fsync)"
            + (", N=3, W=2" if options.nodes >= 3 else f", N=W={options.nodes}")
            + (", peer links on CURVE" if curve else ", plaintext unauthenticated peer links")
            + (", clients on TLS" if tls else ", plaintext clients")
            + (
                f", {RELATION_SHARE:.0%} of writes edits of or reactions to the sender's"
                " previous message"
                if name == "meshchat-relations"
                else ""
            )
            + (", invite-only rooms, every sender invited" if name == "meshchat-invite" else "")
        ),
    }


def run(workload: Workload, options: RunOptions, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    target, description = make_target(workload.target, options)
    worker_count = options.workers or max(1, min(workload.clients, (os.cpu_count() or 2)))
    shares = [list(range(i, workload.clients, worker_count)) for i in range(worker_count)]
    shares = [share for share in shares if share]
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    start_at = context.Value("q", 0)
    go = context.Event()
    processes = []
    target.start()
    try:
        endpoints = target.endpoints
        if workload.target == "meshchat-invite":
            prepare_invite_rooms(workload, endpoints)
        for index, clients in enumerate(shares):
            ca_file = None if target.ca_file is None else str(target.ca_file)
            plan = WorkerPlan(index, clients, msgspec.json.encode(workload), endpoints, ca_file)
            process = context.Process(
                target=worker_main, args=(plan, start_at, go, results), daemon=True
            )
            process.start()
            processes.append(process)
        _wait_ready(results, len(processes))
        start_ns = time.monotonic_ns() + 200_000_000
        start_at.value = start_ns
        go.set()
        faults, finished = _follow(
            workload, options, target, results, len(processes), start_ns, console
        )
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        target.stop()
    summary = summarize(workload, description, finished, faults)
    summary["out"] = {
        "results": str(options.out_dir / "results.json"),
        "plot": str(options.out_dir / "plot.png"),
    }
    write(summary, options.out_dir)
    return summary


def _wait_ready(results: Any, expected: int) -> None:
    ready = 0
    deadline = time.monotonic() + READY_TIMEOUT_S
    while ready < expected:
        try:
            kind, _, _ = results.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"{expected - ready} worker(s) never connected") from None
        ready += kind == "ready"


def _follow(  # noqa: PLR0917 - the run's parts, each used once
    workload: Workload,
    options: RunOptions,
    target: Target,
    results: Any,
    workers: int,
    start_ns: int,
    console: Console,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Collect progress and results, firing the faults on time."""
    measure_from = start_ns + workload.warmup_s * 1e9
    pending_faults = []
    if options.kill_node_at_s is not None:
        pending_faults.append((options.kill_node_at_s, "kill"))
    if options.restart_at_s is not None:
        pending_faults.append((options.restart_at_s, "restart"))
    pending_faults.sort()
    faults: list[dict[str, Any]] = []
    progress: dict[int, dict[str, int]] = {}
    finished: list[dict[str, Any]] = []
    deadline = time.monotonic() + workload.warmup_s + workload.duration_s + OVERRUN_S
    line = ProgressLine(
        console.file, f"{workload.target} {workload.rate:g}/s", on_terminal=console.is_terminal
    )
    try:
        while len(finished) < workers:
            if time.monotonic() > deadline:
                raise TimeoutError("the run took too long; workers did not finish")
            elapsed = (time.monotonic_ns() - measure_from) / 1e9
            while pending_faults and elapsed >= pending_faults[0][0]:
                at, action = pending_faults.pop(0)
                node = target.kill_node() if action == "kill" else target.restart_node()
                faults.append({"second": at, "event": f"{action} {node}"})
            with contextlib.suppress(queue.Empty):
                kind, index, payload = results.get(timeout=0.2)
                if kind == "progress":
                    progress[index] = payload
                elif kind == "done":
                    finished.append(payload)
            if options.live:
                sent, acknowledged, errors = (
                    sum(p.get(key, 0) for p in progress.values()) for key in PROGRESS_KEYS
                )
                since_start_s = (time.monotonic_ns() - start_ns) / 1e9
                line.update(max(0.0, since_start_s), sent, acknowledged, errors)
    finally:
        line.close()
    return faults, finished


def print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="meshchat perf run")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in table_rows(summary):
        table.add_row(name, value)
    console.print(table)
    console.print(f"results: {summary['out']['results']}  plot: {summary['out']['plot']}")
