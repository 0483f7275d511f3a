"""`meshchat perf compare`: the same workload against several targets, each figure also as
a ratio against the first target (the baseline), in a table and in compare.json.

With a sweep, every target is also swept from the workload's rate up (perf/sweep.py), and
its highest sustainable rate is compared too; the sweep's first step, at the workload's
rate, is then the run the latency columns show.
"""

import json
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from perf.sweep import RunStep, SweepPlan, TargetSweep, plot_sweeps, sweep, write_sweep
from perf.workload import Workload

RATIO_DECIMALS = 3


def compare(
    workloads: list[Workload],
    run_step: RunStep,
    plan: SweepPlan | None,
    out_dir: Path,
    console: Console,
) -> dict[str, Any]:
    """Run (and with `plan`, sweep) every workload; write OUT/compare.json and return it."""
    assert workloads
    sweeps: list[TargetSweep] | None = None
    if plan is None:
        summaries = [run_step(workload) for workload in workloads]
    else:
        sweeps = sweep(workloads, plan, run_step, console)
        summaries = [target.summaries[0] for target in sweeps]
    rows = [_row(summary) for summary in summaries]
    _add_ratios(rows)
    if sweeps is not None and plan is not None:
        _add_sweeps(rows, sweeps, plan, out_dir)
    workload = msgspec.to_builtins(workloads[0])
    del workload["target"]  # each row names its own
    document: dict[str, Any] = {
        "workload": workload,
        "baseline": rows[0]["name"],
        "rows": rows,
    }
    if plan is not None:
        document["sweep"] = {
            "p99_bound_ms": plan.p99_bound_ms,
            "step": plan.step,
            "steps_max": plan.steps_max,
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(document, indent=2))
    return document


def add_fanout(document: dict[str, Any], results: list[dict[str, Any]], out_dir: Path) -> None:
    """Add the fan-out runs (one per target) to the comparison, deliveries/s also as a
    ratio against the baseline's, and write OUT/compare.json again."""
    base = next(
        (r["deliveries_per_s"] for r in results if r["target"]["name"] == document["baseline"]),
        None,
    )
    document["fanout"] = {
        "workload": {
            key: value for key, value in results[0]["workload"].items() if key != "target"
        },
        "rows": [
            {
                "name": summary["target"]["name"],
                "label": summary["target"]["label"],
                "deliveries_per_s": summary["deliveries_per_s"],
                "sends_per_s": summary["sends_per_s"],
                "deliveries_vs_baseline": _ratio(summary["deliveries_per_s"], base),
                **{key: summary[key] for key in ("missing", "duplicates", "out_of_order")},
                "send_errors": summary["send_errors"],
            }
            for summary in results
        ],
    }
    (out_dir / "compare.json").write_text(json.dumps(document, indent=2))


def _row(summary: dict[str, Any]) -> dict[str, Any]:
    totals = summary["totals"]
    return {
        "name": summary["target"]["name"],
        "target": summary["target"]["label"],
        "description": summary["target"]["description"],
        "acknowledged_per_s": totals["acknowledged_per_s"],
        "deliveries_per_s": totals["deliveries_per_s"],
        "delivery_latency_ms": summary["delivery_latency_ms"],
        "lost": totals["lost"],
        "duplicated": totals["duplicated"],
        "errors": totals["errors"],
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, RATIO_DECIMALS)


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    base = rows[0]["delivery_latency_ms"]
    for row in rows:
        latency = row["delivery_latency_ms"]
        row["delivery_p50_vs_baseline"] = _ratio(latency["p50"], base["p50"])
        row["delivery_p99_vs_baseline"] = _ratio(latency["p99"], base["p99"])


def _add_sweeps(
    rows: list[dict[str, Any]], sweeps: list[TargetSweep], plan: SweepPlan, out_dir: Path
) -> None:
    base_rate = sweeps[0].highest_sustainable_rate
    for row, target in zip(rows, sweeps, strict=True):
        row["highest_sustainable_rate"] = target.highest_sustainable_rate
        row["highest_rate_vs_baseline"] = _ratio(target.highest_sustainable_rate, base_rate)
        row["sweep"] = str(write_sweep(target, plan.p99_bound_ms, out_dir / target.target))
    series = {row["target"]: target.steps for row, target in zip(rows, sweeps, strict=True)}
    plot_sweeps(series, out_dir / "compare-sweep.png", plan.p99_bound_ms)


def compare_table(document: dict[str, Any]) -> Table:
    workload, rows = document["workload"], document["rows"]
    title = (
        f"same workload: {workload['clients']} clients, {workload['rooms']} rooms, "
        f"{workload['rate']:g} msg/s, {workload['duration_s']:g} s; "
        f"ratios against {rows[0]['target']}"
    )
    if "sweep" in document:
        title += f"; highest rate with p99 delivery <= {document['sweep']['p99_bound_ms']:g} ms"
    table = Table(title=title)
    table.add_column("target", no_wrap=True)
    columns = ["acks/s", "deliveries/s", "delivery p50 ms", "delivery p99 ms", "lost"]
    columns += ["p50 ratio", "p99 ratio"]
    if "sweep" in document:
        columns += ["highest msg/s", "rate ratio"]
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        latency = row["delivery_latency_ms"]
        cells = [
            row["target"],
            f"{row['acknowledged_per_s']:,}",
            f"{row['deliveries_per_s']:,}",
            str(latency["p50"]),
            str(latency["p99"]),
            str(row["lost"]),
            _times(row["delivery_p50_vs_baseline"]),
            _times(row["delivery_p99_vs_baseline"]),
        ]
        if "sweep" in document:
            rate = row["highest_sustainable_rate"]
            cells += [
                "none" if rate is None else f"{rate:,g}",
                _times(row["highest_rate_vs_baseline"]),
            ]
        table.add_row(*cells)
    return table


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"
