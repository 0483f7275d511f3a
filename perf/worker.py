"""One load-generator process: its share of the users, sending open-loop and counting every
message it receives.

Sends leave on a fixed schedule whatever the answers; a latency is measured from the
moment its message was due, so a stall shows as latency, not as a quietly lower rate (no
coordinated omission). Messages due during the warm-up count for loss and duplicates but
not for throughput or latency.
"""

import asyncio
import collections
import contextlib
import itertools
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import redis.exceptions
from hdrh.histogram import HdrHistogram

from mesh.client import runtime
from mesh.client.connection import NodeError
from mesh.client.tls import client_context
from perf.drivers import Driver, driver_for
from perf.workload import Workload, decode_payload, encode_payload

# Sends one process keeps outstanding; past it, a due send is shed and counted.
IN_FLIGHT_MAX = 20_000
LATENCY_US_MAX = 120_000_000  # two minutes: anything slower is recorded at the cap
# After the last send: wait for answers, then until deliveries stop arriving.
ANSWER_WAIT_S = 60.0
QUIET_FOR_S = 1.0
DELIVERY_WAIT_S = 20.0
DRIVER_ERRORS = (
    NodeError,
    ConnectionError,
    TimeoutError,
    OSError,
    redis.exceptions.RedisError,
    nats.errors.Error,
)


def histogram() -> HdrHistogram:
    return HdrHistogram(1, LATENCY_US_MAX, 3)


class _Second:
    __slots__ = ("ack", "acks", "deliveries", "delivery")

    def __init__(self) -> None:
        self.acks = 0
        self.deliveries = 0
        self.ack = histogram()
        self.delivery = histogram()


class WorkerState:
    def __init__(self, workload: Workload, clients: list[int]) -> None:
        self.workload = workload
        self.clients = clients
        self.start_ns = 0
        self.measure_from_ns = 0
        self.seconds: dict[int, _Second] = collections.defaultdict(_Second)
        self.errors: collections.Counter[str] = collections.Counter()
        self.acked: list[tuple[int, int]] = []
        self.received: dict[int, collections.Counter[tuple[int, int]]] = {
            client: collections.Counter() for client in clients
        }
        self.last_delivery_ns = 0
        self.in_flight: set[asyncio.Task[None]] = set()
        self.sent = 0  # sends started, shed ones not counted

    def second_of(self, moment_ns: int) -> int:
        return (moment_ns - self.start_ns) // 1_000_000_000

    def on_payload(self, receiver: int, text: str) -> None:
        now = time.monotonic_ns()
        try:
            sender, sequence, due = decode_payload(text)
        except ValueError:
            self.errors["foreign_payload"] += 1
            return
        if due < 0:
            due = self.workload.due_ns(self.start_ns, sender, sequence)
        self.received[receiver][(sender, sequence)] += 1
        self.last_delivery_ns = now
        if due >= self.measure_from_ns:
            bucket = self.seconds[self.second_of(now)]
            bucket.deliveries += 1
            self.seconds[self.second_of(due)].delivery.record_value(
                min(LATENCY_US_MAX, max(1, (now - due) // 1000))
            )

    async def send_one(self, driver: Driver, client: int, sequence: int, due: int) -> None:
        body = encode_payload(client, sequence, due, self.workload.body_size)
        try:
            await driver.publish(self.workload.room_of(client), body)
        except NodeError as error:
            self.errors[str(error.code)] += 1
            return
        except DRIVER_ERRORS as error:
            self.errors[type(error).__name__] += 1
            return
        now = time.monotonic_ns()
        self.acked.append((client, sequence))
        if due >= self.measure_from_ns:
            self.seconds[self.second_of(now)].acks += 1
            self.seconds[self.second_of(due)].ack.record_value(
                min(LATENCY_US_MAX, max(1, (now - due) // 1000))
            )

    async def send_loop(self, driver: Driver, client: int, end_ns: int) -> None:
        for sequence in itertools.count():
            due = self.workload.due_ns(self.start_ns, client, sequence)
            if due >= end_ns:
                return
            delay_s = (due - time.monotonic_ns()) / 1e9
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            if len(self.in_flight) >= IN_FLIGHT_MAX:
                self.errors["shed_by_generator"] += 1
                continue
            task = asyncio.create_task(self.send_one(driver, client, sequence, due))
            self.sent += 1
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    def progress(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "acks": sum(b.acks for b in self.seconds.values()),
            "deliveries": sum(b.deliveries for b in self.seconds.values()),
            "errors": sum(self.errors.values()),
        }

    def result(self) -> dict[str, Any]:
        return {
            "acked": self.acked,
            "received": {c: list(counts.items()) for c, counts in self.received.items()},
            "errors": dict(self.errors),
            "seconds": {
                second: {
                    "acks": bucket.acks,
                    "deliveries": bucket.deliveries,
                    "ack": bucket.ack.encode(),
                    "delivery": bucket.delivery.encode(),
                }
                for second, bucket in self.seconds.items()
            },
        }


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    clients: list[int]
    workload_json: bytes
    endpoints: list[str]
    ca_file: str | None = None  # set: clients connect on TLS and verify nodes with this CA


async def _run(
    plan: WorkerPlan, start_at: "Synchronized[int]", go: Event, results: "Queue[Any]"
) -> None:
    workload = msgspec.json.decode(plan.workload_json, type=Workload)
    index, clients, endpoints = plan.index, plan.clients, plan.endpoints
    state = WorkerState(workload, clients)
    # One context for all of this process's clients: it holds the loaded CA.
    tls = None if plan.ca_file is None else client_context(Path(plan.ca_file))
    drivers: dict[int, Driver] = {
        c: driver_for(workload.target, endpoints, c, tls) for c in clients
    }
    try:
        for client, driver in drivers.items():
            await driver.connect()
            await driver.subscribe(
                workload.room_of(client),
                lambda text, client=client: state.on_payload(client, text),  # type: ignore[misc]
            )
        results.put(("ready", index, None))
        await asyncio.to_thread(go.wait)
        state.start_ns = start_at.value
        state.measure_from_ns = state.start_ns + int(workload.warmup_s * 1e9)
        end_ns = state.measure_from_ns + int(workload.duration_s * 1e9)

        async def report_progress() -> None:
            while True:
                await asyncio.sleep(1.0)
                results.put(("progress", index, state.progress()))

        reporter = asyncio.create_task(report_progress())
        await asyncio.gather(*(state.send_loop(d, c, end_ns) for c, d in drivers.items()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ANSWER_WAIT_S):
                while state.in_flight:
                    await asyncio.gather(*list(state.in_flight))
        deadline = time.monotonic() + DELIVERY_WAIT_S
        while time.monotonic() < deadline:
            if time.monotonic_ns() - state.last_delivery_ns > QUIET_FOR_S * 1e9:
                break
            await asyncio.sleep(0.1)
        reporter.cancel()
        for task in list(state.in_flight):
            task.cancel()
        results.put(("done", index, state.result()))
    finally:
        for driver in drivers.values():
            with contextlib.suppress(*DRIVER_ERRORS):
                await driver.close()


def worker_main(
    plan: WorkerPlan, start_at: "Synchronized[int]", go: Event, results: "Queue[Any]"
) -> None:
    runtime.run(_run(plan, start_at, go, results))
