"""`meshchat up`'s options, its examples, and what it tells a person to try once the mesh runs."""

import argparse
import shlex
from pathlib import Path

from mesh.cli import node_options
from mesh.cli.client_options import DEFAULT_SERVER
from mesh.local.launcher import LocalNode

UP_EXAMPLES = """examples:
  meshchat up                          3 nodes on ports 7100-7102, data in .meshchat
  meshchat up --nodes 5 --data /tmp/m  5 nodes, data in /tmp/m/n1 ... /tmp/m/n5
  meshchat up --tls                    clients on TLS, with a local CA made in DATA/tls
  meshchat up --no-restart             a node that dies stays down (to test failover)
"""


def try_lines(first: LocalNode, ca_file: Path | None, secret_file: Path | None) -> list[str]:
    """The commands a person can paste into two more terminals to chat through the mesh."""
    connect: list[str] = []
    server = f"{first.host}:{first.client_port}"
    if server != DEFAULT_SERVER:
        connect += ["--server", server]
    if ca_file is not None:
        connect += ["--tls", "--ca-file", str(ca_file)]

    def command(verb: str, user: str) -> str:
        line = shlex.join(["meshchat", verb, *connect, "--user", user])
        if secret_file is not None:
            issue = shlex.join(["meshchat", "token", "--secret-file", str(secret_file)])
            line += f' --token "$({issue} --user {user})"'
        return line

    return [
        "now try, in two more terminals:",
        f"  {command('chat', 'ann')}",
        f"  {command('send', 'bob')} lobby 'hello, ann'",
    ]


def add_up_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    up = commands.add_parser(
        "up",
        help="run a local mesh in the foreground, restarting nodes that die",
        epilog=UP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    up.add_argument(
        "--base-port",
        type=int,
        default=7100,
        help="node i's client port is BASE+i-1, peer port BASE+100+i-1, HTTP BASE+200+i-1 "
        "(default 7100)",
    )
    up.add_argument(
        "--data",
        type=Path,
        default=Path(".meshchat"),
        help="node i keeps its data in DATA/n<i> (default .meshchat)",
    )
    up.add_argument("--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1)")
    up.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING"],
        help="the nodes' log level (default INFO)",
    )
    up.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        help="leave a node that dies stopped (by default it is started again, after 1 s, "
        "then twice as long each time it dies within a minute, up to 30 s)",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="serve clients on TLS with a local CA and node certificates kept in DATA/tls",
    )
    node_options.add_node_options(up)
