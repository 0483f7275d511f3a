"""What `meshchat up` tells a person: its examples, and what to try once the mesh runs."""

import shlex
from pathlib import Path

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
