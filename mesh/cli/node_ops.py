"""`meshchat backup`, `restore` and `drain`: what an operator does to one node.

    meshchat backup --server 10.0.0.1:7300 --token "$OPS_TOKEN" --out n1.sqlite3
    meshchat restore n1.sqlite3 --data /var/lib/meshchat
    meshchat drain --server 10.0.0.1:7300 --token "$OPS_TOKEN" --over 10

`backup` asks the node's HTTP API for a copy (GET /v1/node/backup, a token whose `ops`
name `operate`), writes it next to FILE, checks it, and only then moves it to FILE. A node
started on a restored dir serves what the copy held and rejoins its mesh; anti-entropy
brings it what was written after the copy. `drain` makes a node take no new client
sessions and hand the ones it has to other nodes, spread over `--over` seconds, before a
restart; it returns once they are gone.
"""

import argparse
import http.client
import json
import os
import shutil
import sys
from http import HTTPStatus
from pathlib import Path

from mesh.cli.client_options import add_tls_client_options, tls_client_context
from mesh.cli.exit_codes import EXIT_REFUSED, EXIT_UNAUTHORIZED, EXIT_UNAVAILABLE, EXIT_USAGE
from mesh.cli.help_format import examples
from mesh.client.connection import parse_servers
from mesh.node.backup import BackupError, BackupSummary, restore, summarize

COPY_CHUNK_BYTES = 1 << 20
BACKUP_TIMEOUT_S = 600.0  # a large database takes a while to copy and to send
DRAIN_ANSWER_MARGIN_S = 60.0  # past the drain's window: its sessions' last goodbyes


def add_node_ops_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    backup = commands.add_parser(
        "backup",
        help="copy a running node's database (a consistent snapshot) to a file",
        epilog=examples(
            'meshchat backup --server 10.0.0.1:7300 --token "$OPS_TOKEN" --out n1.sqlite3',
            "meshchat backup --out n1-$(date +%F).sqlite3   # a local mesh's first node",
        ),
    )
    _add_http_options(backup)
    backup.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the copy (replaced if there)"
    )
    drain = commands.add_parser(
        "drain",
        help="hand a node's client sessions to other nodes and take no new ones (before a restart)",
        epilog=examples(
            'meshchat drain --server 10.0.0.1:7300 --token "$OPS_TOKEN" --over 10',
            "meshchat drain --server 10.0.0.1:7300 && systemctl restart meshchat",
        ),
    )
    _add_http_options(drain)
    drain.add_argument(
        "--over",
        type=float,
        default=5.0,
        metavar="S",
        help="spread the sessions' ends over this many seconds (default %(default)s)",
    )
    restore_command = commands.add_parser(
        "restore",
        help="put a backup in place as a data dir's database (the node stopped)",
        epilog=examples(
            "meshchat restore n1.sqlite3 --data /var/lib/meshchat",
            "meshchat restore n1-2026-01-31.sqlite3 --data .meshchat/n1",
        ),
    )
    restore_command.add_argument("file", type=Path, help="a file `meshchat backup` wrote")
    restore_command.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="the node's data dir"
    )


def _add_http_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default="127.0.0.1:7300",
        metavar="HOST:PORT",
        help="the node's HTTP API (default %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("MESHCHAT_TOKEN", "operator"),
        help="a token whose ops name operate (default $MESHCHAT_TOKEN, else operator)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=BACKUP_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for the node's answer",
    )
    add_tls_client_options(parser)


def _connection(args: argparse.Namespace, timeout_s: float) -> http.client.HTTPConnection:
    (host, port), *_ = parse_servers(args.server)
    context = tls_client_context(args)
    if context is None:
        return http.client.HTTPConnection(host, port, timeout=timeout_s)
    return http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context)


def _authorization(args: argparse.Namespace) -> dict[str, str]:
    return {"Authorization": f"Bearer {args.token}"}


def run_drain(args: argparse.Namespace) -> int:
    # The node answers once the window is over and its sessions are gone.
    connection = _connection(args, max(args.timeout, args.over + DRAIN_ANSWER_MARGIN_S))
    try:
        path = f"/v1/node/drain?over={args.over}"
        connection.request("POST", path, headers=_authorization(args))
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as error:
        return _say("drain", f"no whole answer from {args.server}: {error!r}", EXIT_UNAVAILABLE)
    finally:
        connection.close()
    if response.status != 200:
        return _refused("drain", response.status, body)
    outcome = json.loads(body)
    sys.stdout.write(
        f"{outcome['node']}: {outcome['handed_off']} sessions handed to other nodes in "
        f"{outcome['took_s']:.1f} s ({outcome['remaining']} still open); it takes no new "
        "sessions until it restarts\n"
    )
    return 0 if outcome["remaining"] == 0 else EXIT_UNAVAILABLE


def run_backup(args: argparse.Namespace) -> int:
    connection = _connection(args, args.timeout)
    partial = args.out.with_name(args.out.name + ".partial")
    try:
        connection.request("GET", "/v1/node/backup", headers=_authorization(args))
        response = connection.getresponse()
        if response.status != 200:
            return _refused("backup", response.status, response.read())
        with open(partial, "wb") as file:
            shutil.copyfileobj(response, file, COPY_CHUNK_BYTES)
            file.flush()
            os.fsync(file.fileno())
    except (OSError, http.client.HTTPException) as error:
        partial.unlink(missing_ok=True)
        return _say("backup", f"no whole answer from {args.server}: {error!r}", EXIT_UNAVAILABLE)
    finally:
        connection.close()
    try:
        summary = summarize(partial)
    except BackupError as error:
        partial.unlink(missing_ok=True)
        return _say("backup", f"the copy received does not check: {error}", EXIT_UNAVAILABLE)
    os.replace(partial, args.out)
    _sync_directory(args.out.resolve().parent)
    sys.stdout.write(f"{args.out}: {_described(summary)}\n")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    try:
        summary = restore(args.file, args.data)
    except BackupError as error:
        return _say("restore", str(error), EXIT_USAGE)
    sys.stdout.write(f"{args.data}: restored {_described(summary)}; start the node on it\n")
    return 0


def _sync_directory(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename is on disk before the command says it is done
    finally:
        os.close(directory)


def _described(summary: BackupSummary) -> str:
    return (
        f"{summary.messages} messages in {summary.rooms} rooms, "
        f"{summary.size_bytes} bytes, schema {summary.schema_version}"
    )


def _refused(command: str, status: int, body: bytes) -> int:
    try:
        error = json.loads(body)["error"]
        reason = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        reason = f"HTTP {status}"
    if status == HTTPStatus.UNAUTHORIZED:
        return _say(command, reason, EXIT_UNAUTHORIZED)
    return _say(command, reason, EXIT_UNAVAILABLE if status >= 500 else EXIT_REFUSED)


def _say(command: str, message: str, code: int) -> int:
    sys.stderr.write(f"meshchat {command}: {message}\n")
    return code
