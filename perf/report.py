"""Turning the workers' raw counts into the figures: totals, percentiles, loss, duplicates,
a per-second timeline, results.json, a PNG plot and a summary table."""

import collections
import importlib.metadata
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from perf.worker import histogram
from perf.workload import Workload

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def _ms(value_us: float) -> float:
    return round(value_us / 1000, 3)


def _percentiles(hist: Any) -> dict[str, float | None]:
    if hist.get_total_count() == 0:
        return {**{f"p{p:g}": None for p in PERCENTILES}, "max": None}
    figures: dict[str, float | None] = {
        f"p{p:g}": _ms(hist.get_value_at_percentile(p)) for p in PERCENTILES
    }
    figures["max"] = _ms(hist.get_max_value())
    return figures


def machine() -> dict[str, Any]:
    memory_kb = None
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    versions: dict[str, str | None] = {}
    for package in ("meshchat", "msgspec", "pyzmq", "uvloop", "redis", "nats-py", "hdrhistogram"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1) if memory_kb else None,
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "packages": versions,
    }


@dataclass
class _Merged:
    """The workers' results added up: what they counted per second, and what each sent and
    each received."""

    timeline: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    acked: list[tuple[int, int]] = field(default_factory=list)
    # receiver -> (sender, sequence) -> copies received
    received: dict[int, dict[tuple[int, int], int]] = field(default_factory=dict)


def _merge(results: list[dict[str, Any]]) -> _Merged:
    merged = _Merged()
    for result in results:
        merged.errors.update(result["errors"])
        merged.acked.extend(tuple(pair) for pair in result["acked"])
        for receiver, counts in result["received"].items():
            merged.received[int(receiver)] = {tuple(key): count for key, count in counts}
        for second, bucket in result["seconds"].items():
            row = merged.timeline.setdefault(
                int(second),
                {"acks": 0, "deliveries": 0, "ack": histogram(), "delivery": histogram()},
            )
            row["acks"] += bucket["acks"]
            row["deliveries"] += bucket["deliveries"]
            row["ack"].decode_and_add(bucket["ack"])
            row["delivery"].decode_and_add(bucket["delivery"])
    return merged


def _delivery_counts(workload: Workload, merged: _Merged) -> dict[str, int]:
    """Each acknowledged message against each member of its room: delivered once, not at
    all (lost) or more than once (duplicated)."""
    lost = duplicated = expected = delivered = 0
    members = {
        room: workload.members(room)
        for room in {workload.room_of(c) for c in range(workload.clients)}
    }
    for sender, sequence in merged.acked:
        for member in members[workload.room_of(sender)]:
            count = merged.received.get(member, {}).get((sender, sequence), 0)
            expected += 1
            delivered += min(count, 1)
            lost += count == 0
            duplicated += max(0, count - 1)
    return {
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": lost,
        "duplicated": duplicated,
    }


def _timeline_rows(workload: Workload, timeline: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per second, counted from the end of the warm-up."""
    rows = []
    for second, row in sorted(timeline.items()):
        ack, delivery = _percentiles(row["ack"]), _percentiles(row["delivery"])
        rows.append(
            {
                "second": second - int(workload.warmup_s),
                "acks": row["acks"],
                "deliveries": row["deliveries"],
                "ack_p50_ms": ack["p50"],
                "ack_p99_ms": ack["p99"],
                "delivery_p50_ms": delivery["p50"],
                "delivery_p99_ms": delivery["p99"],
            }
        )
    return rows


def summarize(
    workload: Workload,
    target: dict[str, Any],
    results: list[dict[str, Any]],
    faults: list[dict[str, Any]],
) -> dict[str, Any]:
    merged = _merge(results)
    ack_total, delivery_total = histogram(), histogram()
    for row in merged.timeline.values():
        ack_total.add(row["ack"])
        delivery_total.add(row["delivery"])
    counts = _delivery_counts(workload, merged)
    measured_acks = sum(row["acks"] for row in merged.timeline.values())
    measured_deliveries = sum(row["deliveries"] for row in merged.timeline.values())
    return {
        "workload": msgspec.to_builtins(workload),
        "target": target,
        "machine": machine(),
        "totals": {
            "acknowledged": len(merged.acked),
            "acknowledged_per_s": round(measured_acks / workload.duration_s, 1),
            "deliveries_per_s": round(measured_deliveries / workload.duration_s, 1),
            **counts,
            "errors": dict(merged.errors),
        },
        "ack_latency_ms": _percentiles(ack_total),
        "delivery_latency_ms": _percentiles(delivery_total),
        "faults": faults,
        "timeline": _timeline_rows(workload, merged.timeline),
    }


def write(summary: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results.json"
    results.write_text(json.dumps(summary, indent=2))
    plot = out_dir / "plot.png"
    _plot(summary, plot)
    return results, plot


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - heavy, and only needed when writing the plot

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    # Whole seconds of the measured window only: the warm-up and the partial last second
    # would draw misleading dips.
    duration = summary["workload"]["duration_s"]
    rows = [row for row in summary["timeline"] if 0 <= row["second"] < int(duration)]
    seconds = [row["second"] for row in rows]
    figure, (rate, latency) = pyplot.subplots(2, 1, figsize=(10, 7), sharex=True)
    rate.plot(seconds, [row["acks"] for row in rows], label="acknowledged sends/s")
    rate.plot(seconds, [row["deliveries"] for row in rows], label="deliveries/s")
    rate.set_ylabel("per second")
    rate.legend(loc="lower right")
    for key, label in (
        ("delivery_p50_ms", "delivery p50"),
        ("delivery_p99_ms", "delivery p99"),
        ("ack_p99_ms", "ack p99"),
    ):
        latency.plot(seconds, [row[key] for row in rows], label=label)
    latency.set_yscale("log")
    latency.set_ylabel("latency, ms")
    latency.set_xlabel("seconds since measuring began")
    latency.legend(loc="upper right")
    for fault in summary["faults"]:
        for axis in (rate, latency):
            axis.axvline(fault["second"], color="red", linestyle="--")
        rate.annotate(
            fault["event"],
            (fault["second"], 0),
            color="red",
            rotation=90,
            xycoords=("data", "axes fraction"),
            va="bottom",
        )
    workload = summary["workload"]
    figure.suptitle(
        f"{summary['target']['name']}: {workload['clients']} clients, "
        f"{workload['rooms']} rooms, {workload['rate']:g} msg/s target"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def table_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    totals = summary["totals"]
    ack, delivery = summary["ack_latency_ms"], summary["delivery_latency_ms"]

    def latency(figures: dict[str, float | None]) -> str:
        return " / ".join(
            "-" if figures[k] is None else f"{figures[k]:g}"
            for k in ("p50", "p90", "p99", "p99.9", "max")
        )

    return [
        ("target", summary["target"]["description"]),
        ("acknowledged sends/s", f"{totals['acknowledged_per_s']:,}"),
        ("deliveries/s", f"{totals['deliveries_per_s']:,}"),
        ("ack latency ms p50/p90/p99/p99.9/max", latency(ack)),
        ("delivery latency ms p50/p90/p99/p99.9/max", latency(delivery)),
        ("delivered / expected", f"{totals['delivered']:,} / {totals['expected_deliveries']:,}"),
        ("lost", str(totals["lost"])),
        ("duplicated", str(totals["duplicated"])),
        ("errors", json.dumps(totals["errors"]) if totals["errors"] else "none"),
    ]
