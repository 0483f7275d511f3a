"""The options of `meshchat node` (and those `up` shares): their flags, the file and
variables they settle from (node_config.py), and the NodeConfig they make."""

import argparse
import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from mesh.cli import keys as cli_keys
from mesh.cli import node_config
from mesh.node.config import ClientLimits, NodeConfig
from mesh.node.doors.auth import load_secret
from mesh.node.doors.error_docs import ERRORS_DOCS_PATH
from mesh.node.tls import server_context
from mesh.wire.tls import CertificateFiles
from peers.membership import MembershipConfig
from router.config import RouterConfig

TIMING_OPTIONS = (
    # (option, field, help)
    ("--heartbeat-interval", "heartbeat_interval_s", "seconds between heartbeats"),
    ("--suspect-after", "suspect_after_s", "silence before a peer is suspect"),
    ("--dead-after", "dead_after_s", "silence before a peer is dead"),
)


def add_membership_options(parser: argparse.ArgumentParser) -> None:
    defaults = MembershipConfig()
    group = parser.add_argument_group("membership timing")
    for option, name, text in TIMING_OPTIONS:
        group.add_argument(
            option,
            type=float,
            metavar="S",
            default=getattr(defaults, name),
            help=f"{text} (default %(default)s)",
        )


LIMIT_OPTIONS = (
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


def add_tls_server_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS for the client port and the HTTP API")
    group.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="PEM certificate (chain) (default: none, clients and HTTP on plaintext)",
    )
    group.add_argument(
        "--tls-key",
        type=Path,
        metavar="FILE",
        help="its PEM private key (required with --tls-cert)",
    )


def tls_files(args: argparse.Namespace) -> CertificateFiles | None:
    """--tls-cert and --tls-key, checked now: a bad file is one line and exit 2."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert is None:
        return None
    files = CertificateFiles(args.tls_cert.resolve(), args.tls_key.resolve())
    server_context(files.cert, files.key)  # raises TlsError, a ValueError
    return files


REPLICATION_OPTIONS: tuple[tuple[str, type[int] | type[float], float, str, str], ...] = (
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


def add_replication_options(parser: argparse.ArgumentParser) -> None:
    for option, kind, default, metavar, text in REPLICATION_OPTIONS:
        parser.add_argument(option, type=kind, default=default, metavar=metavar, help=text)


def add_client_limit_options(parser: argparse.ArgumentParser) -> None:
    defaults = ClientLimits()
    group = parser.add_argument_group("client limits")
    for option, name, kind, text in LIMIT_OPTIONS:
        group.add_argument(
            option,
            type=kind,
            default=getattr(defaults, name),
            metavar="N",
            help=f"{text} (default %(default)s)",
        )


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """The options `node` and `up` share: membership timing, peer keys, TLS, logging,
    replication and client limits."""
    add_membership_options(parser)
    cli_keys.add_peer_options(parser)
    add_tls_server_options(parser)
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log lines as text or one JSON object each (default text)",
    )
    add_replication_options(parser)
    parser.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="cluster secret: clients then need signed tokens (meshchat token); "
        "default: none, and without --token-keys a user name is enough",
    )
    parser.add_argument(
        "--token-keys",
        type=Path,
        metavar="FILE",
        help="a JWK Set of keys tokens may be signed with, by kid (re-read when it changes; "
        "default: none, tokens naming a kid are refused)",
    )
    parser.add_argument(
        "--token-audience",
        metavar="NAME",
        help="tokens' aud must name this (default: aud is not checked)",
    )
    parser.add_argument(
        "--token-issuer",
        metavar="NAME",
        help="tokens' iss must be this (default: iss is not checked)",
    )
    parser.add_argument(
        "--errors-docs-url",
        type=docs_url,
        default=ERRORS_DOCS_PATH,
        metavar="URL",
        help="HTTP error bodies link to URL#CODE: your own copy of the error codes' page "
        f"(default {ERRORS_DOCS_PATH}, which the node serves itself)",
    )
    add_client_limit_options(parser)


def docs_url(text: str) -> str:
    """An error docs URL: absolute http(s), or a path on the node itself."""
    parts = urllib.parse.urlsplit(text)
    absolute = parts.scheme in {"http", "https"} and bool(parts.netloc)
    if not (absolute or (not parts.scheme and text.startswith("/"))) or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"not an http(s) URL or a path starting with /, without a #fragment: {text!r}"
        )
    return text


def client_limits(args: argparse.Namespace) -> ClientLimits:
    return ClientLimits(**{name: getattr(args, name) for _, name, _, _ in LIMIT_OPTIONS})


def membership_config(args: argparse.Namespace) -> MembershipConfig:
    return MembershipConfig(
        heartbeat_interval_s=args.heartbeat_interval,
        suspect_after_s=args.suspect_after,
        dead_after_s=args.dead_after,
        clock_skew_max_s=args.clock_skew_max,
    )


def node_arguments(args: argparse.Namespace) -> list[str]:
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
    for option, name, _, _ in LIMIT_OPTIONS:
        arguments += [option, str(getattr(args, name))]
    if args.secret_file is not None:
        arguments += ["--secret-file", str(args.secret_file.resolve())]
    if args.token_keys is not None:
        arguments += ["--token-keys", str(args.token_keys.resolve())]
    if args.token_audience is not None:
        arguments += ["--token-audience", args.token_audience]
    if args.token_issuer is not None:
        arguments += ["--token-issuer", args.token_issuer]
    arguments += ["--errors-docs-url", args.errors_docs_url]
    return arguments + cli_keys.peer_arguments(args)


def add_node_command_options(node: argparse.ArgumentParser) -> None:
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
    node.add_argument(
        "--bind",
        metavar="ADDRESS",
        help="address to bind instead of --host (0.0.0.0: all; default: --host)",
    )
    node.add_argument("--peer-port", type=int, help="ZeroMQ port for peers (required)")
    node.add_argument("--client-port", type=int, help="TCP port for clients (required)")
    node.add_argument("--data", type=Path, help="this node's data directory (required)")
    node.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="HOST:PEER_PORT",
        help="a node to join through (repeatable; default: none, a new mesh of one)",
    )
    node.add_argument("--http-port", type=int, help="HTTP API port (default: no HTTP API)")
    node.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING"],
        help="log this level and above to stderr",
    )
    add_node_options(node)


def node_parser() -> argparse.ArgumentParser:
    """`meshchat node` on its own: what a configuration is settled with."""
    parser = argparse.ArgumentParser(prog="meshchat node", allow_abbrev=False)
    add_node_command_options(parser)
    return parser


def settled_node_args(arguments: Sequence[str]) -> argparse.Namespace:
    """`node`'s options from --config (or $MESHCHAT_CONFIG), MESHCHAT_* and the flags."""
    parser = node_parser()
    config = parser.parse_args(arguments).config or os.environ.get("MESHCHAT_CONFIG")
    return node_config.settle(
        parser, arguments, os.environ, None if config is None else Path(config)
    )


def router_config(args: argparse.Namespace) -> RouterConfig:
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


def make_node_config(args: argparse.Namespace) -> NodeConfig:
    """`node`'s options as a NodeConfig; reads the secret file and checks the TLS files."""
    return NodeConfig(
        node_id=args.id,
        host=args.host,
        bind=args.bind,
        peer_port=args.peer_port,
        client_port=args.client_port,
        data_dir=args.data,
        seeds=tuple(args.seed),
        membership=membership_config(args),
        client_limits=client_limits(args),
        secret=None if args.secret_file is None else load_secret(args.secret_file),
        token_keys=args.token_keys,
        token_audience=args.token_audience,
        token_issuer=args.token_issuer,
        http_port=args.http_port,
        errors_docs_url=args.errors_docs_url,
        tls=tls_files(args),
        node_key=args.node_key,
        trusted_keys=args.trusted_keys,
        insecure_peers=args.insecure_peers,
        router=router_config(args),
    )
