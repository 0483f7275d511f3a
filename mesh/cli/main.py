"""The `meshchat` command line."""

import argparse
import asyncio
import datetime
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
from mesh.cli import events as cli_events
from mesh.cli import keys as cli_keys
from mesh.cli import node_config
from mesh.cli import room as cli_room
from mesh.cli import token as cli_token
from mesh.cli import unread as cli_unread
from mesh.client import runtime
from mesh.client.connection import NodeError, parse_servers
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
from mesh.node.config import ClientLimits, NodeConfig
from mesh.node.data_lock import DataDirInUseError, DataDirLock
from mesh.node.doors.auth import load_secret
from mesh.node.doors.token_keys import read_key_set
from mesh.node.identity import IdentityError
from mesh.node.logs import configure_logging
from mesh.node.node import Node
from mesh.node.peer_security import parse_seed
from mesh.node.storage import StorageError, StorageLostError
from mesh.node.tls import server_context
from mesh.wire.errors import ErrorCode
from mesh.wire.protocol import (
    Placement,
    Where,
)
from mesh.wire.tls import CertificateFiles
from peers.keys import NodeKeyError
from peers.limits import NODE_ID_LENGTH_MAX
from peers.membership import MembershipConfig
from peers.records import NODE_ID_PATTERN
from peers.transport import PortInUseError
from router.config import RouterConfig

# The node refused the request itself (forbidden, not_found, conflict, ...): a retry
# would be refused too.
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
# What EXIT_UNAVAILABLE means: the mesh could not do it now; the same command may later.
RETRY_LATER_CODES = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL})
# A node whose database was deleted or replaced under it stopped rather than acknowledge.
EXIT_DATA_DIR_LOST = 4


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _fail(command: str, message: str, code: int) -> int:
    sys.stderr.write(f"meshchat {command}: {message}\n")
    return code


_TIMING_OPTIONS = (
    # (option, field, help)
    ("--heartbeat-interval", "heartbeat_interval_s", "seconds between heartbeats"),
    ("--suspect-after", "suspect_after_s", "silence before a peer is suspect"),
    ("--dead-after", "dead_after_s", "silence before a peer is dead"),
)


def _add_membership_options(parser: argparse.ArgumentParser) -> None:
    defaults = MembershipConfig()
    group = parser.add_argument_group("membership timing")
    for option, name, text in _TIMING_OPTIONS:
        group.add_argument(
            option,
            type=float,
            metavar="S",
            default=getattr(defaults, name),
            help=f"{text} (default %(default)s)",
        )


_LIMIT_OPTIONS = (
    # (option, field, type, help)
    ("--frame-bytes-max", "frame_bytes_max", int, "largest client frame"),
    ("--body-bytes-max", "body_bytes_max", int, "largest message body in bytes"),
    ("--rooms-per-session-max", "rooms_per_session_max", int, "rooms one session may join"),
    ("--sends-per-s", "sends_per_s", float, "sends per second per user (TCP and HTTP)"),
    ("--send-burst", "send_burst", int, "sends allowed at once above that rate"),
    ("--session-queue-max", "session_queue_max", int, "frames queued to one client"),
    ("--sessions-max", "sessions_max", int, "sessions at once"),
    ("--sends-in-flight-max", "sends_in_flight_max", int, "sends in flight on the node"),
    ("--send-wait-max-s", "send_wait_max_s", float, "wait for room before unavailable"),
)


def _add_tls_server_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS for the client port and the HTTP API")
    group.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate (chain)")
    group.add_argument("--tls-key", type=Path, metavar="FILE", help="its PEM private key")


def _tls_files(args: argparse.Namespace) -> CertificateFiles | None:
    """--tls-cert and --tls-key, checked now: a bad file is one line and exit 2."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert is None:
        return None
    files = CertificateFiles(args.tls_cert.resolve(), args.tls_key.resolve())
    server_context(files.cert, files.key)  # raises TlsError, a ValueError
    return files


_REPLICATION_OPTIONS: tuple[tuple[str, type[int] | type[float], float, str, str], ...] = (
    # (option, type, default, metavar, help), in the order --help lists them
    ("--replicas", int, 3, "N", "nodes that hold each room (default %(default)s)"),
    (
        "--write-quorum",
        int,
        2,
        "W",
        "copies on disk before a send is acknowledged (default %(default)s)",
    ),
    (
        "--hint-window",
        float,
        3 * 3600.0,
        "S",
        "hints older than this are dropped, left to anti-entropy (default 3 h)",
    ),
    (
        "--hint-replay-rate",
        float,
        1000.0,
        "PER_S",
        "hints handed back to a returning node per second (default %(default)s)",
    ),
    (
        "--anti-entropy-interval",
        float,
        1.0,
        "S",
        "one room compared with another replica this often (default %(default)s s); "
        "larger leaves more of the node to live traffic",
    ),
    (
        "--anti-entropy-rate",
        float,
        2000.0,
        "PER_S",
        "messages anti-entropy sends per second at most, its share next to live "
        "traffic (default %(default)s)",
    ),
    ("--read-quorum", int, 1, "R", "replicas asked for each history page (default %(default)s)"),
)


def _add_replication_options(parser: argparse.ArgumentParser) -> None:
    for option, kind, default, metavar, text in _REPLICATION_OPTIONS:
        parser.add_argument(option, type=kind, default=default, metavar=metavar, help=text)


def _add_client_limit_options(parser: argparse.ArgumentParser) -> None:
    defaults = ClientLimits()
    group = parser.add_argument_group("client limits")
    for option, name, kind, text in _LIMIT_OPTIONS:
        group.add_argument(
            option,
            type=kind,
            default=getattr(defaults, name),
            metavar="N",
            help=f"{text} (default %(default)s)",
        )


def _add_node_options(parser: argparse.ArgumentParser) -> None:
    """The options `node` and `up` share: membership timing, peer keys, TLS, logging,
    replication and client limits."""
    _add_membership_options(parser)
    cli_keys.add_peer_options(parser)
    _add_tls_server_options(parser)
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log lines as text or one JSON object each (default text)",
    )
    _add_replication_options(parser)
    parser.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="cluster secret: clients then need signed tokens (meshchat token)",
    )
    parser.add_argument(
        "--token-keys",
        type=Path,
        metavar="FILE",
        help="a JWK Set of keys tokens may be signed with, by kid (re-read when it changes)",
    )
    parser.add_argument("--token-audience", metavar="NAME", help="tokens' aud must name this")
    parser.add_argument("--token-issuer", metavar="NAME", help="tokens' iss must be this")
    _add_client_limit_options(parser)


def _client_limits(args: argparse.Namespace) -> ClientLimits:
    return ClientLimits(**{name: getattr(args, name) for _, name, _, _ in _LIMIT_OPTIONS})


def _membership_config(args: argparse.Namespace) -> MembershipConfig:
    return MembershipConfig(
        heartbeat_interval_s=args.heartbeat_interval,
        suspect_after_s=args.suspect_after,
        dead_after_s=args.dead_after,
        clock_skew_max_s=args.clock_skew_max,
    )


def _node_arguments(args: argparse.Namespace) -> list[str]:
    """The node options of `up`, to pass on to each node it starts."""
    arguments = [
        *("--heartbeat-interval", str(args.heartbeat_interval)),
        *("--suspect-after", str(args.suspect_after)),
        *("--dead-after", str(args.dead_after)),
        *("--log-level", args.log_level),
        *("--log-format", args.log_format),
        *("--replicas", str(args.replicas)),
        *("--write-quorum", str(args.write_quorum)),
        *("--read-quorum", str(args.read_quorum)),
        *("--hint-window", str(args.hint_window)),
        *("--hint-replay-rate", str(args.hint_replay_rate)),
        *("--anti-entropy-interval", str(args.anti_entropy_interval)),
        *("--anti-entropy-rate", str(args.anti_entropy_rate)),
    ]
    for option, name, _, _ in _LIMIT_OPTIONS:
        arguments += [option, str(getattr(args, name))]
    if args.secret_file is not None:
        arguments += ["--secret-file", str(args.secret_file.resolve())]
    if args.token_keys is not None:
        arguments += ["--token-keys", str(args.token_keys.resolve())]
    if args.token_audience is not None:
        arguments += ["--token-audience", args.token_audience]
    if args.token_issuer is not None:
        arguments += ["--token-issuer", args.token_issuer]
    return arguments + cli_keys.peer_arguments(args)


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
    cli_chat.add_tls_client_options(parser)


def _add_node_command_options(node: argparse.ArgumentParser) -> None:
    node.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=None,
        help="a TOML file of these options (docs/deploy.md); MESHCHAT_* variables and flags "
        "override it (default $MESHCHAT_CONFIG)",
    )
    # Required wherever they come from: checked once the file and the variables are read.
    node.add_argument("--id", help="this node's id, unique in the mesh (required)")
    node.add_argument("--host", default="127.0.0.1", help="address to bind and advertise")
    node.add_argument("--peer-port", type=int, help="ZeroMQ port for peers (required)")
    node.add_argument("--client-port", type=int, help="TCP port for clients (required)")
    node.add_argument("--data", type=Path, help="this node's data directory (required)")
    node.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="HOST:PEER_PORT",
        help="a node to join through (repeatable)",
    )
    node.add_argument("--http-port", type=int, help="HTTP API port (default: no HTTP API)")
    node.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    _add_node_options(node)


def _node_parser() -> argparse.ArgumentParser:
    """`meshchat node` on its own: what a configuration is settled with."""
    parser = argparse.ArgumentParser(prog="meshchat node", allow_abbrev=False)
    _add_node_command_options(parser)
    return parser


def _settled_node_args(arguments: Sequence[str]) -> argparse.Namespace:
    """`node`'s options from --config (or $MESHCHAT_CONFIG), MESHCHAT_* and the flags."""
    parser = _node_parser()
    config = parser.parse_args(arguments).config or os.environ.get("MESHCHAT_CONFIG")
    return node_config.settle(
        parser, arguments, os.environ, None if config is None else Path(config)
    )


def _run_config(args: argparse.Namespace, arguments: Sequence[str]) -> int:
    if args.config_command == "show":
        # Parsed as `node` parses them: the options may begin with --config.
        settled = _settled_node_args(arguments[2:])
        _out(node_config.show(settled, node_config.options_of(_node_parser())))
        return 0
    problems = node_config.check(_node_parser(), args.file, os.environ)
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
    commands = parser.add_subparsers(dest="command", required=True)

    node = commands.add_parser("node", help="run one node in the foreground", allow_abbrev=False)
    _add_node_command_options(node)
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
    _add_node_options(up)

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
                return _run_node(_settled_node_args(arguments[1:]))
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


def _router_config(args: argparse.Namespace) -> RouterConfig:
    return RouterConfig(
        replicas=args.replicas,
        write_quorum=args.write_quorum,
        read_quorum=args.read_quorum,
        hint_window_s=args.hint_window,
        hint_replay_per_s=args.hint_replay_rate,
        anti_entropy_interval_s=args.anti_entropy_interval,
        anti_entropy_messages_per_s=args.anti_entropy_rate,
        clock_skew_max_ms=int(args.clock_skew_max * 1000),
    )


def _node_config(args: argparse.Namespace) -> NodeConfig:
    """`node`'s options as a NodeConfig; reads the secret file and checks the TLS files."""
    return NodeConfig(
        node_id=args.id,
        host=args.host,
        peer_port=args.peer_port,
        client_port=args.client_port,
        data_dir=args.data,
        seeds=tuple(args.seed),
        membership=_membership_config(args),
        client_limits=_client_limits(args),
        secret=None if args.secret_file is None else load_secret(args.secret_file),
        token_keys=args.token_keys,
        token_audience=args.token_audience,
        token_issuer=args.token_issuer,
        http_port=args.http_port,
        tls=_tls_files(args),
        node_key=args.node_key,
        trusted_keys=args.trusted_keys,
        insecure_peers=args.insecure_peers,
        router=_router_config(args),
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
    config = _node_config(args)
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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
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
    except NodeError as error:
        sys.stderr.write(cli_chat.report_node_error(args.command, error) + "\n")
        return EXIT_UNAVAILABLE if error.code in RETRY_LATER_CODES else EXIT_REFUSED
    except ssl.SSLCertVerificationError as error:
        message = f"the node's certificate is not trusted: {error.verify_message}"
        return _fail(args.command, message, EXIT_USAGE)
    except (ConnectionError, TimeoutError) as error:
        return _fail(
            args.command, f"no node answered: {error or type(error).__name__}", EXIT_UNAVAILABLE
        )


def _run_up(args: argparse.Namespace) -> int:
    configure_logging("up", args.log_level)
    _membership_config(args)  # validate before starting anything
    _client_limits(args)
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
    return run_mesh(_with_tls(args, mesh), _node_arguments(args), _out)


def _with_tls(args: argparse.Namespace, mesh: list[LocalNode]) -> list[LocalNode]:
    """`up`'s nodes with their certificates: made and kept by --tls, or --tls-cert/--tls-key
    for every node."""
    files = _tls_files(args)
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
    tls = cli_chat.tls_client_context(args)
    try:
        reply = runtime.run(
            ask_first(
                servers, args.token, args.timeout, lambda i: Where(request_id=i, room=room), tls
            )
        )
    except (ConnectionError, TimeoutError, NodeError) as error:
        return _fail("where", str(error), EXIT_UNAVAILABLE)
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
        tls = cli_chat.tls_client_context(args)
        reply = runtime.run(fetch_status(servers, args.token, args.timeout, tls))
    except (ConnectionError, TimeoutError) as error:
        return _fail("status", str(error), EXIT_UNAVAILABLE)
    except NodeError as error:
        return _fail("status", str(error), EXIT_UNAVAILABLE)
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
