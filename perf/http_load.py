"""Open-loop load on one node's HTTP API: POST messages or GET history pages at a set rate.

    python -m perf.http_load --url http://127.0.0.1:7200 --kind post --rate 500 --duration 10

Requests leave on a fixed schedule whatever the answers (open loop), and each latency is
measured from the moment its request was due, so a stalled server shows up as latency
rather than as a quietly lower rate. Reports the rate achieved, errors by status, and
latency percentiles. Without a cluster secret the token is the user name.
"""

import argparse
import asyncio
import collections
import json
import statistics
import sys
import time

import httpx

IN_FLIGHT_MAX = 2000  # requests outstanding at once; past it, due requests count as shed


def _percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(share * len(sorted_values)))
    return sorted_values[index]


async def run(
    url: str, *, kind: str, rate: float, duration_s: float, token: str, room: str
) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    shed = 0
    in_flight: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30
    ) as client:
        # One message, so history pages are never empty.
        await client.post(f"/v1/rooms/{room}/messages", json={"body": "warm-up"})

        async def one(due: float, sequence: int) -> None:
            if kind == "post":
                response = await client.post(
                    f"/v1/rooms/{room}/messages", json={"body": f"load {sequence}"}
                )
            else:
                response = await client.get(f"/v1/rooms/{room}/messages?limit=50")
            statuses[response.status_code] += 1
            latencies.append(time.perf_counter() - due)

        started = time.perf_counter()
        total = int(rate * duration_s)
        for sequence in range(total):
            due = started + sequence / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= IN_FLIGHT_MAX:
                shed += 1
                continue
            task = asyncio.create_task(one(due, sequence))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    ok = sum(count for status, count in statuses.items() if status < 300)
    return {
        "kind": kind,
        "target_rate": rate,
        "duration_s": round(elapsed, 2),
        "completed": len(latencies),
        "ok": ok,
        "achieved_per_s": round(ok / elapsed, 1),
        "statuses": dict(statuses),
        "shed": shed,
        "latency_ms": {
            "p50": round(_percentile(ordered, 0.50) * 1000, 2),
            "p90": round(_percentile(ordered, 0.90) * 1000, 2),
            "p99": round(_percentile(ordered, 0.99) * 1000, 2),
            "max": round(ordered[-1] * 1000, 2) if ordered else None,
            "mean": round(statistics.fmean(ordered) * 1000, 2) if ordered else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the node's HTTP base URL")
    parser.add_argument("--kind", choices=["post", "history"], default="post")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--token", default="loadtest")
    parser.add_argument("--room", default="load")
    args = parser.parse_args(argv)
    result = asyncio.run(
        run(
            args.url,
            kind=args.kind,
            rate=args.rate,
            duration_s=args.duration,
            token=args.token,
            room=args.room,
        )
    )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
