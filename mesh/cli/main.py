"""The `meshchat` command line."""

import argparse
import asyncio
import datetime
import importlib.metadata
import json
import logging
import os
import re
import signal
import ssl
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import msgspec

from mesh.cli import chat as cli_chat
from mesh.cli import client_options, node_config, node_ops, node_options
from mesh.cli import events as cli_events
from mesh.cli import keys as cli_keys
from mesh.cli import room as cli_room
from mesh.cli import token as cli_token
from mesh.cli import unread as cli_unread
from mesh.cli.exit_codes import (
    EXIT_DATA_DIR_LOST,
    EXIT_UNAVAILABLE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_code_of,
)
from mesh.client import runtime
from mesh.client.connection import NodeError, parse_servers
from mesh.client.reach import UnreachableError
from mesh.client.status import ask_first, fetch_status
from mesh.local.certificates import prepare_local_tls
from mesh.local.launcher import (
    LocalNode,
    check_data_dirs_free,
    plan_mesh,
    run_mesh,
    with_peer_keys,
)
from mesh.node.allocator import bound_allocator_growth
from mesh.node.collector import tune_collector
from mesh.node.data_lock import DataDirInUseError, DataDirLock
from mesh.node.doors.auth import load_secret
from mesh.node.doors.token_keys import read_key_set
from mesh.node.identity import IdentityError
from mesh.node.logs import configure_logging
from mesh.node.node import Node
from mesh.node.peer_security import parse_seed
from mesh.node.storage import StorageError, StorageLostError
from mesh.wire.protocol import PROTOCOL_MINOR, PROTOCOL_VERSION, Placement, Where
from peers.keys import NodeKeyError
from peers.limits import NODE_ID_LENGTH_MAX
from peers.records import NODE_ID_PATTERN
from peers.transport import PortInUseError


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _fail(command: str, message: str, code: int) -> int:
    sys.stderr.write(f"meshchat {command}: {message}\n")
    return code


def _add_operator_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that ask one node a question (status, where)."""
    parser.add_argument("--server", required=True, metavar="HOST:PORT[,HOST:PORT...]")
    parser.add_argument(
        "--token",
        default=os.environ.get("MESHCHAT_TOKEN", "operator"),
        help="token or, without a cluster secret, user name",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S")
    client_options.add_tls_client_options(parser)


def version_line() -> str:
    """This installation's version and the client protocol it speaks."""
    try:
        installed = importlib.metadata.version("meshchat")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        installed = "unknown"
    return f"meshchat {installed} (client protocol {PROTOCOL_VERSION}.{PROTOCOL_MINOR})"


def _run_config(args: argparse.Namespace, arguments: Sequence[str]) -> int:
    if args.config_command == "show":
        # Parsed as `node` parses them: the options may begin with --config.
        settled = node_options.settled_node_args(arguments[2:])
        _out(node_config.show(settled, node_config.options_of(node_options.node_parser())))
        return 0
    problems = node_config.check(node_options.node_parser(), args.file, os.environ)
    if problems:
        return _problems("config", problems)
    _out(f"{args.file}: ok")
    return 0


def _problems(command: str, lines: list[str]) -> int:
    for line in lines:
        sys.stderr.write(f"meshchat {command}: {line}\n")
    return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshchat", description="A fault-tolerant chat mesh of equal nodes."
    )
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True)

    node = commands.add_parser("node", help="run one node in the foreground", allow_abbrev=False)
    node_options.add_node_command_options(node)
    config = commands.add_parser("config", help="check a node's configuration, or show it")
    config_actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_actions.add_parser("check", help="check a TOML file of node options")
    check.add_argument("file", type=Path)
    show = config_actions.add_parser(
        "show", help="print the effective configuration of `meshchat node` with these options"
    )
    show.add_argument("node_arguments", nargs=argparse.REMAINDER, metavar="NODE OPTIONS")

    up = commands.add_parser("up", help="run a local mesh in the foreground")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--base-port", type=int, default=7100)
    up.add_argument("--data", type=Path, default=Path(".meshchat"))
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    up.add_argument(
        "--tls",
        action="store_true",
        help="serve clients on TLS with a local CA and node certificates kept in DATA/tls",
    )
    node_options.add_node_options(up)

    status = commands.add_parser("status", help="show the membership as one node sees it")
    _add_operator_options(status)

    where = commands.add_parser("where", help="which nodes hold a room, and which are alive")
    where.add_argument("room")
    _add_operator_options(where)

    cli_token.add_token_command(commands)
    cli_chat.add_chat_commands(commands)
    cli_events.add_event_commands(commands)
    cli_unread.add_unread_commands(commands)
    cli_room.add_room_commands(commands)
    cli_keys.add_keys_command(commands)
    node_ops.add_node_ops_commands(commands)
    _add_perf_commands(commands)
    return parser


def _add_perf_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    try:
        from perf.cli import add_perf_commands  # noqa: PLC0415 - needs the `perf` extra
    except ImportError:
        perf = commands.add_parser("perf", help="measure meshchat (needs meshchat[perf])")
        perf.set_defaults(perf_missing=True)
        return
    add_perf_commands(commands)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:2] == ["config", "show"]:
        args, _ = build_parser().parse_known_args(arguments)
    else:
        args = build_parser().parse_args(arguments)
    try:
        match args.command:
            case "node":
                return _run_node(node_options.settled_node_args(arguments[1:]))
            case "config":
                return _run_config(args, arguments)
            case "up":
                return _run_up(args)
            case "status":
                return _run_status(args)
            case "where":
                return _run_where(args)
            case "keys":
                return cli_keys.run_keys(args)
            case "token":
                return cli_token.run_token(args)
            case "backup":
                return node_ops.run_backup(args)
            case "restore":
                return node_ops.run_restore(args)
            case "drain":
                return node_ops.run_drain(args)
            case (
                "send"
                | "history"
                | "tail"
                | "edit"
                | "delete"
                | "react"
                | "unread"
                | "mark-read"
                | "room"
            ):
                return _run_client_command(args)
            case "perf":
                if getattr(args, "perf_missing", False):
                    return _fail(
                        "perf", "install the perf extra: pip install 'meshchat[perf]'", EXIT_USAGE
                    )
                from perf.cli import run_perf  # noqa: PLC0415

                return run_perf(args)
            case "chat":
                logging.basicConfig(level=logging.CRITICAL)  # the screen is the chat's
                return cli_chat.run_chat(args)
    except node_config.ConfigError as error:
        return _problems(args.command, error.problems)
    except ValueError as error:
        return _fail(args.command, str(error), EXIT_USAGE)
    except OSError as error:
        return _fail(args.command, str(error), EXIT_USAGE)
    raise AssertionError(args.command)


def _check_seeds(args: argparse.Namespace) -> None:
    for seed in args.seed:
        node_id, _ = parse_seed(seed)  # raises ValueError for a malformed seed
        if node_id is None and not args.insecure_peers:
            raise ValueError(
                f"seed {seed}: with CURVE peer links a seed names its node, "
                "--seed ID@HOST:PORT (ID's public key is in the trusted directory)"
            )


def _run_node(args: argparse.Namespace) -> int:
    if not re.match(NODE_ID_PATTERN, args.id) or len(args.id) > NODE_ID_LENGTH_MAX:
        raise ValueError(f"--id must be 1-{NODE_ID_LENGTH_MAX} of A-Z a-z 0-9 _ . -")
    configure_logging(args.id, args.log_level, args.log_format)
    _check_seeds(args)
    # Before anything reads or writes the data dir or binds a port: a second process on
    # the dir leaves the owner and its mesh untouched. Held until the process exits.
    try:
        data_lock = DataDirLock.acquire(args.data)
    except DataDirInUseError as error:
        return _fail("node", str(error), EXIT_USAGE)
    config = node_options.make_node_config(args)
    # A write past a file size limit must fail as an error, not kill the node.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    bound_allocator_growth()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        node = Node(config, data_lock)
        tune_collector()
        await node.run(stop)

    try:
        runtime.run(serve())
    except PortInUseError as error:
        return _fail("node", error.strerror or str(error), EXIT_USAGE)
    except StorageLostError as error:
        return _fail("node", f"data dir {args.data} lost: {error}", EXIT_DATA_DIR_LOST)
    except (IdentityError, StorageError, NodeKeyError) as error:
        return _fail("node", str(error), EXIT_USAGE)
    return 0


def _run_client_command(args: argparse.Namespace) -> int:
    # The command reports its own failure in one line: the library's warnings would say
    # it a second time.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    commands = {
        "send": cli_chat.run_send,
        "history": cli_chat.run_history,
        "tail": cli_chat.run_tail,
        "edit": cli_events.run_edit,
        "delete": cli_events.run_delete,
        "react": cli_events.run_react,
        "unread": cli_unread.run_unread,
        "mark-read": cli_unread.run_mark_read,
        "room": cli_room.run_room,
    }
    try:
        return runtime.run(commands[args.command](args))
    except KeyboardInterrupt:
        return 0
    except UnreachableError as error:
        return _unreachable(args.command, error)
    except NodeError as error:
        sys.stderr.write(cli_chat.report_node_error(args.command, error) + "\n")
        return exit_code_of(error.code)
    except ssl.SSLCertVerificationError as error:
        message = f"the node's certificate is not trusted: {error.verify_message}"
        return _fail(args.command, message, EXIT_USAGE)
    except (ConnectionError, TimeoutError) as error:
        return _fail(
            args.command, f"no node answered: {error or type(error).__name__}", EXIT_UNAVAILABLE
        )


def _unreachable(command: str, error: UnreachableError) -> int:
    sys.stderr.write(f"meshchat {command}: no node could be reached:\n")
    for address, reason in error.reasons.items():
        sys.stderr.write(f"  {address}: {reason}\n")
    return EXIT_UNREACHABLE


def _run_up(args: argparse.Namespace) -> int:
    configure_logging("up", args.log_level)
    node_options.membership_config(args)  # validate before starting anything
    node_options.client_limits(args)
    if args.secret_file is not None:
        load_secret(args.secret_file)
    if args.token_keys is not None:
        read_key_set(args.token_keys)
    mesh = plan_mesh(args.nodes, args.base_port, args.data, args.host)
    try:
        check_data_dirs_free(mesh)
    except DataDirInUseError as error:
        return _fail("up", str(error), EXIT_USAGE)
    if not args.insecure_peers:
        mesh = with_peer_keys(args.data, mesh)
    return run_mesh(_with_tls(args, mesh), node_options.node_arguments(args), _out)


def _with_tls(args: argparse.Namespace, mesh: list[LocalNode]) -> list[LocalNode]:
    """`up`'s nodes with their certificates: made and kept by --tls, or --tls-cert/--tls-key
    for every node."""
    files = node_options.tls_files(args)
    if args.tls and files is not None:
        raise ValueError("--tls makes its own certificates: give --tls-cert/--tls-key or --tls")
    if not args.tls:
        return mesh if files is None else [replace(node, tls=files) for node in mesh]
    now = datetime.datetime.now(datetime.UTC)
    node_ids = [node.node_id for node in mesh]
    ca, certificates = prepare_local_tls(args.data / "tls", node_ids, args.host, now)
    _out(f"TLS: clients need --ca-file {ca.cert}")
    return [replace(node, tls=certificates[node.node_id]) for node in mesh]


def _run_where(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    servers = parse_servers(args.server)
    room = args.room
    tls = client_options.tls_client_context(args)
    try:
        reply = runtime.run(
            ask_first(
                servers, args.token, args.timeout, lambda i: Where(request_id=i, room=room), tls
            )
        )
    except UnreachableError as error:
        return _unreachable("where", error)
    except (ConnectionError, TimeoutError) as error:
        return _fail("where", str(error) or type(error).__name__, EXIT_UNAVAILABLE)
    except NodeError as error:
        return _fail("where", cli_chat.node_error_text(error), exit_code_of(error.code))
    assert isinstance(reply, Placement)
    if args.json:
        document = {
            "room": reply.room,
            "replicas_wanted": reply.replicas_wanted,
            "coordinator": reply.coordinator,
            "replicas": msgspec.to_builtins(reply.replicas),
        }
        _out(json.dumps(document, indent=2))
        return 0
    _out(
        f"room {reply.room}: {len(reply.replicas)} of {reply.replicas_wanted} replicas, "
        f"coordinator {reply.coordinator or 'none alive'}"
    )
    for position, replica in enumerate(reply.replicas, start=1):
        _out(f"  {position}. {replica.id:<12} {replica.state}")
    return 0


def _run_status(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    servers = parse_servers(args.server)
    try:
        tls = client_options.tls_client_context(args)
        reply = runtime.run(fetch_status(servers, args.token, args.timeout, tls))
    except UnreachableError as error:
        return _unreachable("status", error)
    except (ConnectionError, TimeoutError) as error:
        return _fail("status", str(error) or type(error).__name__, EXIT_UNAVAILABLE)
    except NodeError as error:
        return _fail("status", cli_chat.node_error_text(error), exit_code_of(error.code))
    if args.json:
        document = {
            "node": reply.node,
            "members": msgspec.to_builtins(reply.members),
            "counters": reply.counters,
        }
        _out(json.dumps(document, indent=2))
        return 0
    _out(f"node {reply.node} sees {len(reply.members)} member(s)")
    _out(
        f"{'ID':<12} {'ADDRESS':<22} {'STATE':<8} {'INCARNATION':>14} {'HEARD':>8} "
        f"{'DROPPED':>8} {'HINTS':>7} {'OLDEST':>8}"
    )
    for member in reply.members:
        heard = "-" if member.last_heard_s is None else f"{member.last_heard_s:.1f}s"
        oldest = "-" if member.oldest_hint_s is None else f"{member.oldest_hint_s:.0f}s"
        _out(
            f"{member.id:<12} {member.address:<22} {member.state:<8} "
            f"{member.incarnation:>14} {heard:>8} {member.dropped:>8} "
            f"{member.hints:>7} {oldest:>8}"
        )
    return 0
