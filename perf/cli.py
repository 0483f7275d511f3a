"""`meshchat perf run | sweep | compare`."""

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console

from perf.compare import add_fanout, compare, compare_table
from perf.fanout import FanoutWorkload, fanout_line, fanout_table, run_fanout, write_fanout
from perf.harness import RunOptions, print_summary, run
from perf.idle_memory import idle_line, run_idle
from perf.rebuild import rebuild_line, run_rebuild
from perf.sweep import SweepPlan, sweep, write_sweep
from perf.targets import TargetUnavailableError
from perf.workload import TARGET_NAMES, TargetName, Workload

# What `compare` runs unless told: meshchat beside the in-memory brokers.
COMPARE_TARGETS_DEFAULT = "meshchat,redis,nats"


def examples(*lines: str) -> str:
    """An epilog of example lines, as mesh/cli/help_format.py writes them (perf/ may not
    import mesh/cli/: tests/test_architecture.py)."""
    return "\n".join(["examples:", *(f"  {line}" for line in lines)])


PERF_EXAMPLES = {
    "run": (
        "meshchat perf run --nodes 3 --clients 16 --rate 1000 --duration 30",
        "meshchat perf run --nodes 3 --kill-node-at 5 --restart-at 10   # a node dies",
        "meshchat perf run --servers 10.0.0.1:7100,10.0.0.2:7100 --rate 500",
        "meshchat perf run --target nats --rate 5000",
    ),
    "sweep": (
        "meshchat perf sweep --nodes 3 --rate 500 --p99-bound-ms 50",
        "meshchat perf sweep --rate 100 --step 2 --max-steps 8 --duration 5",
    ),
    "compare": (
        "meshchat perf compare",
        "meshchat perf compare --targets meshchat,meshchat-plain --rate 500",
        "meshchat perf compare --sweep --fanout --out perf-results/compare",
    ),
}


def add_perf_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    perf = commands.add_parser(
        "perf",
        help="measure meshchat (and Redis, NATS) under load",
        epilog=examples(
            "meshchat perf run --nodes 3 --rate 1000",
            "meshchat perf sweep --nodes 3 --p99-bound-ms 50",
            "meshchat perf compare --targets meshchat,redis,nats",
        ),
    )
    actions = perf.add_subparsers(
        dest="perf_command", required=True, metavar="ACTION", help="what to measure"
    )
    for name, text in (
        ("run", "one run"),
        ("sweep", "raise the rate to the highest that keeps p99 delivery under a bound"),
        ("compare", "the same workload against several targets"),
    ):
        action = actions.add_parser(name, help=text, epilog=examples(*PERF_EXAMPLES[name]))
        _add_load_options(action, name)
    _add_fanout_command(actions)
    _add_idle_and_rebuild_commands(actions)


def _add_target_options(action: argparse.ArgumentParser) -> None:
    group = action.add_mutually_exclusive_group()
    group.add_argument("--nodes", type=int, default=1, help="local meshchat nodes to start")
    group.add_argument(
        "--servers",
        metavar="HOST:PORT,...",
        help="use running meshchat nodes (default: start --nodes local ones)",
    )


def _add_workers_and_out(action: argparse.ArgumentParser, workers: str) -> None:
    action.add_argument(
        "--workers", type=int, help=f"{workers} (default: one per core, at most one per client)"
    )
    _add_out(action)


def _add_out(action: argparse.ArgumentParser) -> None:
    action.add_argument(
        "--out",
        type=Path,
        default=Path("perf-results"),
        metavar="DIR",
        help="where the results and plots are written",
    )


def _add_fanout_command(actions: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    action = actions.add_parser(
        "fanout",
        help="rooms of members, one publisher bursting with a window of sends",
        epilog=examples(
            "meshchat perf fanout --rooms 10 --members 5 --messages 100000",
            "meshchat perf fanout --targets meshchat,nats --rounds 3",
            "meshchat perf fanout --nodes 3 --window 5000",
        ),
    )
    action.add_argument(
        "--targets",
        default="meshchat",
        help=f"comma-separated, of {', '.join(TARGET_NAMES)}; run in turn, each round "
        "(ratios are against nats when it is one of them)",
    )
    _add_target_options(action)
    action.add_argument("--rooms", type=int, default=10, help="rooms, one publisher each")
    action.add_argument("--members", type=int, default=5, help="subscriber connections per room")
    action.add_argument("--messages", type=int, default=100_000, help="messages in all")
    action.add_argument("--window", type=int, default=1_000, help="sends in flight")
    action.add_argument(
        "--body-size", type=int, default=100, metavar="B", help="bytes of each message body"
    )
    action.add_argument("--rounds", type=int, default=1, help="times each target is run")
    _add_workers_and_out(action, "subscriber processes")


def _add_sweep_options(action: argparse.ArgumentParser) -> None:
    action.add_argument(
        "--p99-bound-ms",
        type=float,
        default=50.0,
        metavar="MS",
        help="the highest p99 delivery latency a sustainable rate may have",
    )
    action.add_argument(
        "--step",
        type=float,
        default=1.5,
        help="rate multiplier per step (default %(default)s)",
    )
    action.add_argument(
        "--max-steps", type=int, default=12, help="steps at most, however low p99 stays"
    )


def _target_name(text: str) -> TargetName:
    for name in TARGET_NAMES:
        if text == name:
            return name
    raise ValueError(f"unknown target {text!r}: one of {', '.join(TARGET_NAMES)}")


def _workload(args: argparse.Namespace, target: str) -> Workload:
    return Workload(
        target=_target_name(target),
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
            case "fanout":
                _fanout(args, console, out)
            case "idle":
                result = run_idle(
                    args.connections, join=args.join, out_dir=args.out, console=console
                )
                out.print(idle_line(result))
            case "rebuild":
                out.print(rebuild_line(run_rebuild(args.events, args.seed, args.out)))
    except TargetUnavailableError as error:
        console.print(f"[red]{error}[/red]")
        return 3
    return 0


def _sweep_plan(args: argparse.Namespace) -> SweepPlan:
    return SweepPlan(p99_bound_ms=args.p99_bound_ms, step=args.step, steps_max=args.max_steps)


def _sweep(args: argparse.Namespace, console: Console, out: Console) -> None:
    plan = _sweep_plan(args)

    def run_step(workload: Workload) -> dict[str, Any]:
        return run(workload, _options(args, args.out / f"rate-{workload.rate:g}"), console)

    (target,) = sweep([_workload(args, args.target)], plan, run_step, console)
    path = write_sweep(target, plan.p99_bound_ms, args.out)
    out.print(
        f"highest rate with p99 delivery <= {plan.p99_bound_ms:g} ms: "
        f"{target.highest_sustainable_rate} msg/s ({path})"
    )


def _compare(args: argparse.Namespace, console: Console, out: Console) -> None:
    workloads = [_workload(args, text.strip()) for text in args.targets.split(",")]
    names = [workload.target for workload in workloads]
    if len(set(names)) != len(names):
        raise ValueError(f"--targets names a target twice: {args.targets}")
    plan = _sweep_plan(args) if args.sweep else None

    def run_step(workload: Workload) -> dict[str, Any]:
        out_dir = args.out / workload.target
        if plan is not None:
            out_dir /= f"rate-{workload.rate:g}"
        return run(workload, _options(args, out_dir), console)

    document = compare(workloads, run_step, plan, args.out, console)
    out.print(compare_table(document))
    if args.fanout:
        fanout = FanoutWorkload(target="meshchat", messages=args.fanout_messages)
        results = _run_fanouts(
            args, names, fanout, rounds=1, out_dir=args.out / "fanout", console=console, out=out
        )
        add_fanout(document, results, args.out)
        out.print(fanout_table(results))
    out.print(f"figures: {args.out / 'compare.json'}")


def _fanout(args: argparse.Namespace, console: Console, out: Console) -> None:
    targets = [_target_name(text.strip()) for text in args.targets.split(",")]
    workload = FanoutWorkload(
        target=targets[0],
        rooms=args.rooms,
        members=args.members,
        messages=args.messages,
        window=args.window,
        body_size=args.body_size,
    )
    results = _run_fanouts(
        args, targets, workload, rounds=args.rounds, out_dir=args.out, console=console, out=out
    )
    path = write_fanout(results, args.out)
    out.print(fanout_table(results))
    out.print(f"figures: {path}")


def _run_fanouts(
    args: argparse.Namespace,
    targets: list[TargetName],
    workload: FanoutWorkload,
    *,
    rounds: int,
    out_dir: Path,
    console: Console,
    out: Console,
) -> list[dict[str, Any]]:
    """`workload` against each target in turn, `rounds` times over."""
    results: list[dict[str, Any]] = []
    for round_number in range(1, rounds + 1):
        for target in targets:
            options = _options(args, out_dir / f"{target}-{round_number}")
            summary = run_fanout(msgspec.structs.replace(workload, target=target), options, console)
            summary["round"] = round_number
            results.append(summary)
            out.print(fanout_line(summary))
    return results


def _add_load_options(action: argparse.ArgumentParser, name: str) -> None:
    """The options of `perf run`, `sweep` and `compare`: the workload and its target."""
    if name == "compare":
        action.add_argument(
            "--targets",
            default=COMPARE_TARGETS_DEFAULT,
            help=f"comma-separated, of {', '.join(TARGET_NAMES)}; ratios are against "
            "the first (default %(default)s)",
        )
    else:
        action.add_argument(
            "--target", choices=TARGET_NAMES, default="meshchat", help="what to load"
        )
    _add_target_options(action)
    action.add_argument("--clients", type=int, default=8, help="client connections in all")
    action.add_argument("--rooms", type=int, default=2, help="rooms the clients share")
    action.add_argument("--rate", type=float, default=200.0, help="messages/s in all")
    action.add_argument(
        "--duration", type=float, default=10.0, metavar="S", help="seconds measured"
    )
    action.add_argument(
        "--warmup", type=float, default=1.0, metavar="S", help="seconds sent before that"
    )
    action.add_argument(
        "--body-size", type=int, default=64, metavar="B", help="bytes of each message body"
    )
    _add_workers_and_out(action, "load processes")
    if name == "run":
        action.add_argument(
            "--kill-node-at",
            type=float,
            metavar="S",
            help="kill a node this many seconds in (default: no node is killed)",
        )
        action.add_argument(
            "--restart-at",
            type=float,
            metavar="S",
            help="start it again this many seconds in (default: it stays down)",
        )
    if name == "compare":
        action.add_argument(
            "--sweep",
            action="store_true",
            help="also sweep every target from --rate up and compare the highest rates",
        )
        action.add_argument(
            "--fanout",
            action="store_true",
            help="also run the fan-out workload (as `perf fanout`) against every target",
        )
        action.add_argument(
            "--fanout-messages",
            type=int,
            default=100_000,
            metavar="N",
            help="messages of that fan-out run (default %(default)s)",
        )
    if name in ("sweep", "compare"):
        _add_sweep_options(action)


def _add_idle_and_rebuild_commands(
    actions: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> None:
    idle = actions.add_parser(
        "idle",
        help="memory a node spends per idle client connection",
        epilog=examples(
            "meshchat perf idle --connections 2000",
            "meshchat perf idle --connections 10000 --join --out perf-results/idle",
        ),
    )
    idle.add_argument("--connections", type=int, default=2_000, help="idle connections to open")
    idle.add_argument("--join", action="store_true", help="each connection joins a room")
    _add_out(idle)
    rebuild = actions.add_parser(
        "rebuild",
        help="time to rebuild a room's read model from a log of N events",
        epilog=examples(
            "meshchat perf rebuild --events 100000",
            "meshchat perf rebuild --events 1000000 --seed 7",
        ),
    )
    rebuild.add_argument("--events", type=int, default=100_000, help="events in the room's log")
    rebuild.add_argument("--seed", type=int, default=1, help="seed of the random events")
    _add_out(rebuild)
