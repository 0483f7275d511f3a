"""The `meshchat` command line."""

import argparse
import asyncio
import datetime
import importlib.metadata
import logging
import os
import re
import signal
import ssl
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from mesh.cli import chat as cli_chat
from mesh.cli import completion, node_config, node_ops, node_options
from mesh.cli import events as cli_events
from mesh.cli import keys as cli_keys
from mesh.cli import room as cli_room
from mesh.cli import status as cli_status
from mesh.cli import token as cli_token
from mesh.cli import unread as cli_unread
from mesh.cli import up as cli_up
from mesh.cli.exit_codes import (
    EXIT_DATA_DIR_LOST,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    exit_code_of,
)
from mesh.cli.help_format import CommandParser, examples
from mesh.cli.up import try_lines
from mesh.client import runtime
from mesh.client.connection import NodeError
from mesh.client.reach import UnreachableError
from mesh.local.certificates import prepare_local_tls
from mesh.local.launcher import (
    LocalNode,
    check_data_dirs_free,
    plan_mesh,
    with_peer_keys,
)
from mesh.local.supervisor import Supervisor
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
from mesh.wire.protocol import PROTOCOL_MINOR, PROTOCOL_VERSION
from peers.keys import NodeKeyError
from peers.limits import NODE_ID_LENGTH_MAX
from peers.records import NODE_ID_PATTERN
from peers.transport import PortInUseError


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _fail(command: str, message: str, code: int) -> int:
    sys.stderr.write(f"meshchat {command}: {message}\n")
    return code


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
    parser: argparse.ArgumentParser = CommandParser(
        prog="meshchat",
        description="A fault-tolerant chat mesh of equal nodes.",
        epilog=examples(
            "meshchat up                          # a local mesh of 3 nodes",
            "meshchat send lobby hello && meshchat history lobby",
            "meshchat status --server 127.0.0.1:7100",
            "meshchat COMMAND --help              # each command's options and examples",
        ),
    )
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do"
    )

    node = commands.add_parser(
        "node",
        help="run one node in the foreground",
        allow_abbrev=False,
        epilog=examples(
            "meshchat node --id n1 --peer-port 7200 --client-port 7100 --data /var/lib/meshchat",
            "meshchat node --id n2 --peer-port 7201 --client-port 7101 --data n2 "
            "--seed n1@127.0.0.1:7200",
            "meshchat node --config /etc/meshchat/node.toml",
        ),
    )
    node_options.add_node_command_options(node)
    node_config.add_config_command(commands)
    cli_up.add_up_command(commands)

    cli_status.add_status_commands(commands)
    cli_token.add_token_command(commands)
    cli_chat.add_chat_commands(commands)
    cli_events.add_event_commands(commands)
    cli_unread.add_unread_commands(commands)
    cli_room.add_room_commands(commands)
    cli_keys.add_keys_command(commands)
    node_ops.add_node_ops_commands(commands)
    _add_perf_commands(commands)
    completion.add_completion_command(commands)
    return parser


def _add_perf_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    try:
        from perf.cli import add_perf_commands  # noqa: PLC0415 - needs the `perf` extra
    except ImportError:
        perf = commands.add_parser(
            "perf",
            help="measure meshchat (needs meshchat[perf])",
            epilog=examples("pip install 'meshchat[perf]'", "meshchat perf run --help"),
        )
        perf.set_defaults(perf_missing=True)
        return
    add_perf_commands(commands)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if arguments[:2] == ["config", "show"]:
        args, _ = parser.parse_known_args(arguments)
    else:
        args = parser.parse_args(arguments)
    try:
        match args.command:
            case "node":
                return _run_node(node_options.settled_node_args(arguments[1:]))
            case "config":
                return _run_config(args, arguments)
            case "up":
                return _run_up(args)
            case "status":
                return cli_status.run_status(args)
            case "where":
                return cli_status.run_where(args)
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
            case "completion":
                _out(completion.completion_script(parser, args.shell).rstrip("\n"))
                return 0
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
        return cli_status.report_unreachable(args.command, error)
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
    mesh, ca_file = _with_tls(args, mesh)
    supervisor = Supervisor(
        mesh,
        node_options.node_arguments(args),
        _out,
        restart=args.restart,
        hints=try_lines(mesh[0], ca_file, args.secret_file),
        permanent_exits=frozenset({EXIT_USAGE, EXIT_DATA_DIR_LOST}),
    )
    return supervisor.run()


def _with_tls(
    args: argparse.Namespace, mesh: list[LocalNode]
) -> tuple[list[LocalNode], Path | None]:
    """`up`'s nodes with their certificates: made and kept by --tls, or --tls-cert/--tls-key
    for every node; and the CA file clients need, when `up` made it."""
    files = node_options.tls_files(args)
    if args.tls and files is not None:
        raise ValueError("--tls makes its own certificates: give --tls-cert/--tls-key or --tls")
    if not args.tls:
        return (mesh if files is None else [replace(node, tls=files) for node in mesh]), None
    now = datetime.datetime.now(datetime.UTC)
    node_ids = [node.node_id for node in mesh]
    ca, certificates = prepare_local_tls(args.data / "tls", node_ids, args.host, now)
    _out(f"TLS: clients need --ca-file {ca.cert}")
    return [replace(node, tls=certificates[node.node_id]) for node in mesh], ca.cert
