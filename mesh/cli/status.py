"""`meshchat status` and `meshchat where`: ask one node what it sees of the mesh (the
first of --server that answers), and print it as JSON, a table or plain lines."""

import argparse
import json
import logging
import os
import sys

import msgspec

from mesh.cli import client_options, tables
from mesh.cli.chat import node_error_text
from mesh.cli.exit_codes import EXIT_UNAVAILABLE, EXIT_UNREACHABLE, exit_code_of
from mesh.cli.help_format import examples
from mesh.client import runtime
from mesh.client.connection import NodeError, parse_servers
from mesh.client.reach import UnreachableError
from mesh.client.status import ask_first, fetch_status
from mesh.wire.protocol import Placement, Where


def add_status_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    status = commands.add_parser(
        "status",
        help="show the membership as one node sees it",
        epilog=examples(
            "meshchat status --server 127.0.0.1:7100",
            'meshchat status --server 10.0.0.1:7100,10.0.0.2:7100 --token "$OPS_TOKEN"',
            "meshchat status --server 127.0.0.1:7100 --json | jq -r '.members[].state'",
        ),
    )
    _add_operator_options(status)

    where = commands.add_parser(
        "where",
        help="which nodes hold a room, and which are alive",
        epilog=examples(
            "meshchat where lobby --server 127.0.0.1:7100",
            "meshchat where lobby --server 127.0.0.1:7100 --json | jq -r .coordinator",
        ),
    )
    where.add_argument("room", help="the room's name")
    _add_operator_options(where)


def _add_operator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        required=True,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="nodes' client ports: the first that answers is asked",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("MESHCHAT_TOKEN", "operator"),
        help="token or, without a cluster secret, user name "
        "(default $MESHCHAT_TOKEN, else operator)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON (default: a table, or lines when piped)"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for an answer"
    )
    client_options.add_tls_client_options(parser)


def report_unreachable(command: str, error: UnreachableError) -> int:
    """Each server's reason on its own line (the client commands report it so too)."""
    sys.stderr.write(f"meshchat {command}: no node could be reached:\n")
    for address, reason in error.reasons.items():
        sys.stderr.write(f"  {address}: {reason}\n")
    return EXIT_UNREACHABLE


def _fail(command: str, message: str, code: int) -> int:
    sys.stderr.write(f"meshchat {command}: {message}\n")
    return code


def _print_json(document: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def run_where(args: argparse.Namespace) -> int:
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
        return report_unreachable("where", error)
    except (ConnectionError, TimeoutError) as error:
        return _fail("where", str(error) or type(error).__name__, EXIT_UNAVAILABLE)
    except NodeError as error:
        return _fail("where", node_error_text(error), exit_code_of(error.code))
    assert isinstance(reply, Placement)
    if args.json:
        _print_json(
            {
                "room": reply.room,
                "replicas_wanted": reply.replicas_wanted,
                "coordinator": reply.coordinator,
                "replicas": msgspec.to_builtins(reply.replicas),
            }
        )
        return 0
    tables.print_where(reply)
    return 0


def run_status(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    servers = parse_servers(args.server)
    try:
        tls = client_options.tls_client_context(args)
        reply = runtime.run(fetch_status(servers, args.token, args.timeout, tls))
    except UnreachableError as error:
        return report_unreachable("status", error)
    except (ConnectionError, TimeoutError) as error:
        return _fail("status", str(error) or type(error).__name__, EXIT_UNAVAILABLE)
    except NodeError as error:
        return _fail("status", node_error_text(error), exit_code_of(error.code))
    if args.json:
        _print_json(
            {
                "node": reply.node,
                "members": msgspec.to_builtins(reply.members),
                "counters": reply.counters,
            }
        )
        return 0
    tables.print_status(reply)
    return 0
