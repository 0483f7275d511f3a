"""`meshchat perf sweep` and `compare --sweep`: raise the rate step by step until p99
delivery goes over a bound, the target falls behind the schedule or loses a message; the
last step before that is the highest sustainable rate.

Several targets are swept together, one rate at a time: each rate runs against every
target still under the bound before the next rate starts, so a change in the machine's
background load during a long sweep falls on all of them alike rather than on the last.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console

from perf.workload import TargetName, Workload

# A step keeps up when at least this share of its scheduled sends were acknowledged in the
# measured window; the rest is slack for sends still in flight as the window closes.
KEEP_UP_SHARE = 0.95
RATE_DECIMALS = 1  # rates are rounded at each step, so steps have short, stable names

RunStep = Callable[[Workload], dict[str, Any]]


@dataclass(frozen=True)
class SweepPlan:
    p99_bound_ms: float
    step: float  # the rate is multiplied by this from one step to the next
    steps_max: int

    def __post_init__(self) -> None:
        if self.p99_bound_ms <= 0 or self.step <= 1 or self.steps_max < 1:
            raise ValueError("need --p99-bound-ms > 0, --step > 1 and --max-steps >= 1")


@dataclass
class TargetSweep:
    """One target's steps so far; `summaries` holds each step's full run summary."""

    target: TargetName
    steps: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    highest_sustainable_rate: float | None = None
    over_the_bound: bool = False

    def record(self, rate: float, summary: dict[str, Any], bound_ms: float) -> dict[str, Any]:
        p99 = summary["delivery_latency_ms"]["p99"]
        achieved = summary["totals"]["acknowledged_per_s"]
        keeps_up = achieved >= KEEP_UP_SHARE * rate and summary["totals"]["lost"] == 0
        ok = p99 is not None and p99 <= bound_ms and keeps_up
        step = {
            "rate": rate,
            "achieved_per_s": achieved,
            "delivery_p99_ms": p99,
            "delivery_p50_ms": summary["delivery_latency_ms"]["p50"],
            "ok": ok,
        }
        self.steps.append(step)
        self.summaries.append(summary)
        if ok:
            self.highest_sustainable_rate = rate
        else:
            self.over_the_bound = True
        return step

    def document(self, bound_ms: float) -> dict[str, Any]:
        return {
            "target": self.target,
            "p99_bound_ms": bound_ms,
            "steps": self.steps,
            "highest_sustainable_rate": self.highest_sustainable_rate,
        }


def replace_rate(workload: Workload, rate: float) -> Workload:
    return msgspec.structs.replace(workload, rate=round(rate, RATE_DECIMALS))


def sweep(
    workloads: list[Workload], plan: SweepPlan, run_step: RunStep, console: Console
) -> list[TargetSweep]:
    """Sweep every workload's target from its rate up, interleaved by rate (see above)."""
    assert workloads
    sweeps = [TargetSweep(workload.target) for workload in workloads]
    current = list(workloads)
    for step_number in range(1, plan.steps_max + 1):
        active = [i for i, target in enumerate(sweeps) if not target.over_the_bound]
        if not active:
            break
        for i in active:
            workload = current[i]
            step = sweeps[i].record(workload.rate, run_step(workload), plan.p99_bound_ms)
            console.print(
                f"{workload.target} step {step_number}: {workload.rate:g}/s -> "
                f"{step['achieved_per_s']:g}/s, p99 {step['delivery_p99_ms']} ms"
                f" {'ok' if step['ok'] else 'over the bound'}"
            )
            current[i] = replace_rate(workload, workload.rate * plan.step)
    return sweeps


def write_sweep(target: TargetSweep, bound_ms: float, out_dir: Path) -> Path:
    """OUT/sweep.json and OUT/sweep.png; returns the JSON's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "sweep.json"
    path.write_text(json.dumps(target.document(bound_ms), indent=2))
    plot_sweeps({target.target: target.steps}, out_dir / "sweep.png", bound_ms)
    return path


def plot_sweeps(series: dict[str, list[dict[str, Any]]], path: Path, bound_ms: float) -> None:
    """Delivery p50 and p99 against the achieved rate, one pair of lines per target."""
    import matplotlib  # noqa: PLC0415 - heavy, and only needed when writing the plot

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    figure, axis = pyplot.subplots(figsize=(8, 5))
    for name, steps in series.items():
        prefix = f"{name} " if len(series) > 1 else ""
        achieved = [step["achieved_per_s"] for step in steps]
        for key, percentile in (("delivery_p99_ms", "p99"), ("delivery_p50_ms", "p50")):
            axis.plot(
                achieved, [step[key] for step in steps], marker="o", label=prefix + percentile
            )
    axis.axhline(bound_ms, color="red", linestyle="--", label=f"bound {bound_ms:g} ms")
    axis.set_xlabel("acknowledged sends/s")
    axis.set_ylabel("delivery latency, ms")
    axis.set_yscale("log")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
