"""`meshchat perf fanout`: rooms of members, and one publisher bursting with a window.

R rooms of M members, one subscriber connection per member, spread over worker processes;
one publisher (a process of its own) sends `messages` messages round-robin over the
rooms, keeping `window` sends in flight: the next leaves as soon as one is taken (for
meshchat: acknowledged on disk by W replicas). What counts is what arrives: deliveries
per second, and per subscriber every message missing, repeated or out of order (the
publisher's sequence numbers must rise within each room).
"""

import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import statistics
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from mesh.client import runtime
from mesh.client.tls import client_context
from perf.drivers import Driver, driver_for
from perf.harness import RunOptions, make_target
from perf.worker import DRIVER_ERRORS
from perf.workload import PAYLOAD_HEADER_MAX, TargetName, decode_payload, encode_payload

READY_TIMEOUT_S = 120.0
# After the last send is taken: deliveries stop when none came for QUIET_FOR_S.
QUIET_FOR_S = 2.0
DELIVERY_WAIT_S = 120.0
PUBLISH_WAIT_S = 1_800.0  # the whole burst taken: a slow target at 100,000 messages
PUBLISHER = 0  # the client number in payloads; subscribers are 1..R*M
FAULTS = ("missing", "duplicates", "out_of_order")  # per delivery, summed over subscribers
FIGURES = ("deliveries", "duplicates", "out_of_order")


class FanoutWorkload(msgspec.Struct, frozen=True, kw_only=True):
    target: TargetName = "meshchat"
    rooms: int = 10
    members: int = 5
    messages: int = 100_000
    window: int = 1_000
    body_size: int = 100

    def __post_init__(self) -> None:
        if min(self.rooms, self.members, self.messages, self.window) < 1:
            raise ValueError("rooms, members, messages and window must be at least 1")
        if self.body_size < PAYLOAD_HEADER_MAX:
            raise ValueError(f"body size must be at least {PAYLOAD_HEADER_MAX} bytes")

    def room_of(self, sequence: int) -> str:
        return f"fanout-{sequence % self.rooms}"

    @property
    def subscribers(self) -> list[tuple[int, str]]:
        """(client number, room) of every member."""
        return [
            (1 + room * self.members + member, f"fanout-{room}")
            for room in range(self.rooms)
            for member in range(self.members)
        ]


class Received:
    """What one subscriber got: each sequence number's count, and how often one came
    after a higher one (out of order)."""

    __slots__ = ("counts", "highest", "last_ns", "out_of_order", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.highest = -1
        self.out_of_order = 0
        self.last_ns = 0

    def take(self, text: str) -> None:
        try:
            _, sequence, _ = decode_payload(text)
        except ValueError:
            return  # not the publisher's: the room is this run's own
        seen = self.counts.get(sequence, 0)
        self.counts[sequence] = seen + 1
        self.total += 1
        if not seen and sequence < self.highest:
            self.out_of_order += 1
        self.highest = max(self.highest, sequence)
        self.last_ns = time.monotonic_ns()


@dataclass(frozen=True)
class Plan:
    index: int
    workload_json: bytes
    endpoints: list[str]
    members: list[tuple[int, str]]  # for a subscriber process; empty for the publisher
    ca_file: str | None = None  # set: connect on TLS and verify the nodes with this CA


def _workload(plan: Plan) -> FanoutWorkload:
    return msgspec.json.decode(plan.workload_json, type=FanoutWorkload)


def _driver(plan: Plan, workload: FanoutWorkload, client: int) -> Driver:
    tls = None if plan.ca_file is None else client_context(Path(plan.ca_file))
    return driver_for(workload.target, plan.endpoints, client, tls)


async def _subscribe(plan: Plan, stop: Event, results: "Queue[Any]") -> None:
    workload = _workload(plan)
    received = {client: Received() for client, _ in plan.members}
    drivers: dict[int, Driver] = {}
    try:
        for client, room in plan.members:
            driver = drivers[client] = _driver(plan, workload, client)
            await driver.connect()
            await driver.subscribe(room, received[client].take)
        results.put(("ready", None))
        while not stop.is_set():
            await asyncio.sleep(0.25)
            count = sum(r.total for r in received.values())
            last_ns = max(r.last_ns for r in received.values())
            results.put(("progress", (plan.index, count, last_ns)))
        results.put(("done", _report(workload, plan.members, received)))
    finally:
        for driver in drivers.values():
            with contextlib.suppress(*DRIVER_ERRORS):
                await driver.close()


def _report(
    workload: FanoutWorkload, members: list[tuple[int, str]], received: dict[int, Received]
) -> dict[str, Any]:
    """Totals, and each sequence number some subscriber never got, with how many: the
    parent leaves out sends that failed (a failed send may or may not be stored)."""
    totals: dict[str, Any] = {"deliveries": 0, "duplicates": 0, "out_of_order": 0}
    missing: dict[int, int] = {}
    for client, room in members:
        got = received[client]
        for sequence in range(workload.messages):
            if workload.room_of(sequence) == room and sequence not in got.counts:
                missing[sequence] = missing.get(sequence, 0) + 1
        totals["deliveries"] += got.total
        totals["duplicates"] += sum(count - 1 for count in got.counts.values())
        totals["out_of_order"] += got.out_of_order
    totals["missing_by_sequence"] = missing
    return totals


async def _publish(plan: Plan, go: Event, results: "Queue[Any]") -> None:
    workload = _workload(plan)
    driver = _driver(plan, workload, PUBLISHER)
    await driver.connect()
    errors: dict[str, int] = {}
    failed: list[int] = []
    try:
        results.put(("ready", None))
        await asyncio.to_thread(go.wait)
        window = asyncio.Semaphore(workload.window)
        started_ns = time.monotonic_ns()

        async def send(sequence: int) -> None:
            body = encode_payload(PUBLISHER, sequence, time.monotonic_ns(), workload.body_size)
            try:
                await driver.publish(workload.room_of(sequence), body)
            except DRIVER_ERRORS as error:
                name = str(getattr(error, "code", "")) or type(error).__name__
                errors[name] = errors.get(name, 0) + 1
                failed.append(sequence)
            finally:
                window.release()

        async with asyncio.TaskGroup() as sends:
            for sequence in range(workload.messages):
                await window.acquire()
                sends.create_task(send(sequence))
        taken_ns = time.monotonic_ns()
        sent = {"started_ns": started_ns, "taken_ns": taken_ns, "errors": errors, "failed": failed}
        results.put(("sent", sent))
    finally:
        with contextlib.suppress(*DRIVER_ERRORS):
            await driver.close()


def subscriber_main(plan: Plan, stop: Event, results: "Queue[Any]") -> None:
    runtime.run(_subscribe(plan, stop, results))


def publisher_main(plan: Plan, go: Event, results: "Queue[Any]") -> None:
    runtime.run(_publish(plan, go, results))


def run_fanout(
    workload: FanoutWorkload, options: RunOptions, console: Console | None = None
) -> dict[str, Any]:
    console = console or Console(stderr=True)
    target, description = make_target(workload.target, options)
    context = multiprocessing.get_context("spawn")
    subscriber_results: Any = context.Queue()
    publisher_results: Any = context.Queue()
    go, stop = context.Event(), context.Event()
    processes: list[BaseProcess] = []
    target.start()
    try:
        encoded = msgspec.json.encode(workload)
        members = workload.subscribers
        count = max(1, min(len(members), options.workers or os.cpu_count() or 2))
        ca_file = None if target.ca_file is None else str(target.ca_file)
        for index in range(count):
            plan = Plan(index, encoded, target.endpoints, members[index::count], ca_file)
            processes.append(
                context.Process(
                    target=subscriber_main, args=(plan, stop, subscriber_results), daemon=True
                )
            )
        publisher = Plan(count, encoded, target.endpoints, [], ca_file)
        processes.append(
            context.Process(
                target=publisher_main, args=(publisher, go, publisher_results), daemon=True
            )
        )
        for process in processes:
            process.start()
        _expect(subscriber_results, "ready", count, READY_TIMEOUT_S, processes)
        _expect(publisher_results, "ready", 1, READY_TIMEOUT_S, processes)
        console.print(
            f"fan-out: {len(members)} subscribers ready; publishing {workload.messages:,}"
        )
        go.set()
        (sent,) = _expect(publisher_results, "sent", 1, PUBLISH_WAIT_S, processes)
        last_ns = _until_quiet(subscriber_results, count, workload.messages * workload.members)
        stop.set()
        reports = _expect(subscriber_results, "done", count, READY_TIMEOUT_S, processes)
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        target.stop()
    return _summary(workload, description, sent, last_ns, reports)


def _expect(
    results: Any, kind: str, count: int, timeout_s: float, processes: list[BaseProcess]
) -> list[Any]:
    """The payloads of the next `count` messages of `kind` (others are skipped); a
    process that ended early ends the wait."""
    found: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count - len(found)} process(es) did not report {kind}")
        ended = [process.exitcode for process in processes if process.exitcode not in (None, 0)]
        if ended:
            raise RuntimeError(f"a load process exited with {ended[0]} before {kind}")
        try:
            got, payload = results.get(timeout=0.5)
        except queue.Empty:
            continue
        if got == kind:
            found.append(payload)
    return found


def _until_quiet(results: Any, processes: int, expected: int) -> int:
    """Until every expected delivery came, or the count stood still for QUIET_FOR_S (by
    this process's clock, after reading every report waiting); the moment of the last
    delivery."""
    latest: dict[int, tuple[int, int]] = {}  # process -> (deliveries, last one's moment)
    deadline = time.monotonic() + DELIVERY_WAIT_S
    total, grew_at = -1, time.monotonic()
    while time.monotonic() < deadline:
        for kind, payload in _waiting(results):
            if kind == "progress":
                index, count, last = payload
                latest[index] = (count, last)
        now_total = sum(count for count, _ in latest.values())
        if now_total > total:
            total, grew_at = now_total, time.monotonic()
        if len(latest) == processes and (
            total >= expected or time.monotonic() - grew_at > QUIET_FOR_S
        ):
            break
    return max((last for _, last in latest.values()), default=0)


def _waiting(results: Any) -> list[tuple[str, Any]]:
    """The next report (waiting a little for one), and every other already there."""
    found: list[tuple[str, Any]] = []
    try:
        found.append(results.get(timeout=0.25))
        while True:
            found.append(results.get_nowait())
    except queue.Empty:
        return found


def _summary(
    workload: FanoutWorkload,
    description: dict[str, Any],
    sent: dict[str, Any],
    last_ns: int,
    reports: list[dict[str, Any]],
) -> dict[str, Any]:
    totals = {key: sum(report[key] for report in reports) for key in FIGURES}
    failed = set(sent["failed"])
    totals["missing"] = sum(
        count
        for report in reports
        for sequence, count in report["missing_by_sequence"].items()
        if sequence not in failed
    )
    started_ns, taken_ns = sent["started_ns"], sent["taken_ns"]
    delivering_s = max(1e-9, (max(last_ns, taken_ns) - started_ns) / 1e9)
    return {
        "workload": msgspec.to_builtins(workload),
        "target": description,
        "sends_per_s": round(workload.messages / max(1e-9, (taken_ns - started_ns) / 1e9)),
        "deliveries_per_s": round(totals["deliveries"] / delivering_s),
        "expected_deliveries": workload.messages * workload.members,
        "send_errors": sent["errors"],  # failed sends are not counted as missing
        **totals,
    }


def fanout_line(summary: dict[str, Any]) -> str:
    return (
        f"round {summary['round']} {summary['target']['label']}: "
        f"{summary['deliveries_per_s']:,} deliveries/s, {summary['sends_per_s']:,} sends/s; "
        f"{summary['deliveries']:,} of {summary['expected_deliveries']:,} delivered, "
        f"missing {summary['missing']:,}, duplicates {summary['duplicates']:,}, "
        f"out of order {summary['out_of_order']:,}, send errors {summary['send_errors'] or 0}"
    )


def fanout_table(results: list[dict[str, Any]]) -> Table:
    """Per target: the median over rounds, the ratio to NATS's median when it ran, and
    the worst round's missing, repeated and out-of-order deliveries."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for summary in results:
        by_target.setdefault(summary["target"]["label"], []).append(summary)
    medians = {
        label: float(statistics.median(s["deliveries_per_s"] for s in runs))
        for label, runs in by_target.items()
    }
    nats = [label for label, runs in by_target.items() if runs[0]["target"]["name"] == "nats"]
    table = Table(title="meshchat perf fanout (medians over rounds)")
    for column in ("target", "deliveries/s", "vs nats", "sends/s", *FAULTS):
        table.add_column(column, justify="right")
    for label, runs in by_target.items():
        ratio = f"{medians[label] / medians[nats[0]]:.2f}x" if nats else "-"
        sends = statistics.median(s["sends_per_s"] for s in runs)
        worst = [f"{max(s[key] for s in runs):,}" for key in FAULTS]
        table.add_row(label, f"{medians[label]:,.0f}", ratio, f"{sends:,.0f}", *worst)
    return table


def write_fanout(results: list[dict[str, Any]], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "fanout.json"
    path.write_text(json.dumps(results, indent=2))
    return path
