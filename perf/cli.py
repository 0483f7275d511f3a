"""`meshchat perf run | sweep | compare`."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from perf.harness import RunOptions, print_summary, run
from perf.targets import TargetUnavailableError
from perf.workload import Workload


def add_perf_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    perf = commands.add_parser("perf", help="measure meshchat (and Redis, NATS) under load")
    actions = perf.add_subparsers(dest="perf_command", required=True)
    for name, text in (
        ("run", "one run"),
        ("sweep", "raise the rate to the highest that keeps p99 delivery under a bound"),
        ("compare", "the same workload against several targets"),
    ):
        action = actions.add_parser(name, help=text)
        if name == "compare":
            action.add_argument(
                "--targets",
                default="meshchat,redis,nats",
                help="comma-separated (default %(default)s)",
            )
        else:
            action.add_argument(
                "--target", choices=["meshchat", "redis", "nats"], default="meshchat"
            )
        group = action.add_mutually_exclusive_group()
        group.add_argument("--nodes", type=int, default=1, help="local meshchat nodes to start")
        group.add_argument("--servers", help="use running meshchat nodes: HOST:PORT,...")
        action.add_argument("--clients", type=int, default=8)
        action.add_argument("--rooms", type=int, default=2)
        action.add_argument("--rate", type=float, default=200.0, help="messages/s in all")
        action.add_argument("--duration", type=float, default=10.0, metavar="S")
        action.add_argument("--warmup", type=float, default=1.0, metavar="S")
        action.add_argument("--body-size", type=int, default=64, metavar="B")
        action.add_argument("--workers", type=int, help="load processes (default: cores)")
        action.add_argument("--out", type=Path, default=Path("perf-results"), metavar="DIR")
        if name == "run":
            action.add_argument("--kill-node-at", type=float, metavar="S")
            action.add_argument("--restart-at", type=float, metavar="S")
        if name == "sweep":
            action.add_argument("--p99-bound-ms", type=float, default=50.0)
            action.add_argument(
                "--step",
                type=float,
                default=1.5,
                help="rate multiplier per step (default %(default)s)",
            )
            action.add_argument("--max-steps", type=int, default=12)


def _workload(args: argparse.Namespace, target: str) -> Workload:
    if target not in ("meshchat", "redis", "nats"):
        raise ValueError(f"unknown target {target!r}: meshchat, redis or nats")
    return Workload(
        target=target,  # type: ignore[arg-type]  # checked just above
        clients=args.clients,
        rooms=args.rooms,
        rate=args.rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        body_size=args.body_size,
    )


def _options(args: argparse.Namespace, out: Path, **extra: Any) -> RunOptions:
    servers = args.servers.split(",") if args.servers else None
    return RunOptions(nodes=args.nodes, servers=servers, workers=args.workers, out_dir=out, **extra)


def run_perf(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    # Piped into a file, keep the tables one row per line.
    out = Console(width=None if sys.stdout.isatty() else 160)
    try:
        match args.perf_command:
            case "run":
                summary = run(
                    _workload(args, args.target),
                    _options(
                        args,
                        args.out,
                        kill_node_at_s=args.kill_node_at,
                        restart_at_s=args.restart_at,
                    ),
                    console,
                )
                print_summary(summary, out)
            case "sweep":
                _sweep(args, console, out)
            case "compare":
                _compare(args, console, out)
    except TargetUnavailableError as error:
        console.print(f"[red]{error}[/red]")
        return 3
    return 0


def _sweep(args: argparse.Namespace, console: Console, out: Console) -> None:
    workload = _workload(args, args.target)
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for step in range(args.max_steps):
        summary = run(workload, _options(args, args.out / f"rate-{workload.rate:g}"), console)
        p99 = summary["delivery_latency_ms"]["p99"]
        achieved = summary["totals"]["acknowledged_per_s"]
        keeps_up = achieved >= 0.95 * workload.rate and summary["totals"]["lost"] == 0
        ok = p99 is not None and p99 <= args.p99_bound_ms and keeps_up
        steps.append(
            {
                "rate": workload.rate,
                "achieved_per_s": achieved,
                "delivery_p99_ms": p99,
                "delivery_p50_ms": summary["delivery_latency_ms"]["p50"],
                "ok": ok,
            }
        )
        console.print(
            f"step {step + 1}: {workload.rate:g}/s -> {achieved:g}/s, p99 {p99} ms"
            f" {'ok' if ok else 'over the bound'}"
        )
        if not ok:
            break
        best = steps[-1]
        workload = replace_rate(workload, workload.rate * args.step)
    document = {
        "target": args.target,
        "p99_bound_ms": args.p99_bound_ms,
        "steps": steps,
        "highest_sustainable_rate": best["rate"] if best else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(document, indent=2))
    _plot_sweep(steps, args.out / "sweep.png", args.p99_bound_ms)
    out.print(
        f"highest rate with p99 delivery <= {args.p99_bound_ms:g} ms: "
        f"{document['highest_sustainable_rate']} msg/s ({args.out / 'sweep.json'})"
    )


def replace_rate(workload: Workload, rate: float) -> Workload:
    return msgspec.structs.replace(workload, rate=round(rate, 1))


def _plot_sweep(steps: list[dict[str, Any]], path: Path, bound_ms: float) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    figure, axis = pyplot.subplots(figsize=(8, 5))
    achieved = [step["achieved_per_s"] for step in steps]
    axis.plot(achieved, [step["delivery_p99_ms"] for step in steps], marker="o", label="p99")
    axis.plot(achieved, [step["delivery_p50_ms"] for step in steps], marker="o", label="p50")
    axis.axhline(bound_ms, color="red", linestyle="--", label=f"bound {bound_ms:g} ms")
    axis.set_xlabel("acknowledged sends/s")
    axis.set_ylabel("delivery latency, ms")
    axis.set_yscale("log")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _compare(args: argparse.Namespace, console: Console, out: Console) -> None:
    summaries = []
    for target in args.targets.split(","):
        summary = run(_workload(args, target.strip()), _options(args, args.out / target), console)
        summaries.append(summary)
    base = summaries[0]
    table = Table(
        title=f"same workload: {args.clients} clients, {args.rooms} rooms, "
        f"{args.rate:g} msg/s, {args.duration:g} s"
    )
    for column in (
        "target",
        "acks/s",
        "deliveries/s",
        "delivery p50 ms",
        "delivery p99 ms",
        "lost",
        f"p99 vs {base['target']['name']}",
    ):
        table.add_column(column, justify="right")
    rows = []
    for summary in summaries:
        p99 = summary["delivery_latency_ms"]["p99"]
        base_p99 = base["delivery_latency_ms"]["p99"]
        ratio = f"{p99 / base_p99:.2f}x" if p99 and base_p99 else "-"
        row = [
            summary["target"]["label"],
            f"{summary['totals']['acknowledged_per_s']:,}",
            f"{summary['totals']['deliveries_per_s']:,}",
            str(summary["delivery_latency_ms"]["p50"]),
            str(p99),
            str(summary["totals"]["lost"]),
            ratio,
        ]
        table.add_row(*row)
        rows.append(row)
    out.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = [
        {
            "target": summary["target"]["label"],
            "acknowledged_per_s": summary["totals"]["acknowledged_per_s"],
            "deliveries_per_s": summary["totals"]["deliveries_per_s"],
            "delivery_latency_ms": summary["delivery_latency_ms"],
            "lost": summary["totals"]["lost"],
            "duplicated": summary["totals"]["duplicated"],
        }
        for summary in summaries
    ]
    document = {"workload": msgspec.to_builtins(_workload(args, "meshchat")), "rows": figures}
    (args.out / "compare.json").write_text(json.dumps(document, indent=2))
