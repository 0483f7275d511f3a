"""`meshchat keys` and the peer-link options of `node` and `up`.

meshchat keys new    --id ID --out DIR       # DIR/ID.key (public), DIR/ID.key_secret (0600)
meshchat keys list   DIR                     # the node ids and key fingerprints in DIR
meshchat keys trust  FILE --trusted DIR      # copy a node's public certificate into DIR
meshchat keys revoke --id ID --trusted DIR   # remove it: running nodes drop that node
"""

import argparse
import shutil
import sys
from pathlib import Path

from mesh.cli.exit_codes import EXIT_USAGE
from mesh.cli.help_format import examples
from peers.keys import (
    PUBLIC_SUFFIX,
    NodeKeyError,
    create_key_pair,
    fingerprint,
    is_node_id,
    load_trusted,
    read_public_key,
)


def add_peer_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("peer links (CURVE)")
    group.add_argument(
        "--node-key",
        type=Path,
        metavar="FILE",
        help="this node's secret certificate ID.key_secret (default: made in DATA/keys)",
    )
    group.add_argument(
        "--trusted-keys",
        type=Path,
        metavar="DIR",
        help="the public certificates ID.key of every node accepted (default DATA/trusted)",
    )
    group.add_argument(
        "--insecure-peers",
        action="store_true",
        help="plaintext, unauthenticated peer links: for development only",
    )
    group.add_argument(
        "--clock-skew-max",
        type=float,
        default=60.0,
        metavar="S",
        help="ids and incarnations further ahead of this node's clock are refused "
        "(default %(default)s)",
    )


def peer_arguments(args: argparse.Namespace) -> list[str]:
    """The peer options `up` passes to every node (keys are per node: with_peer_keys)."""
    arguments = ["--clock-skew-max", str(args.clock_skew_max)]
    if args.insecure_peers:
        arguments.append("--insecure-peers")
    return arguments


def add_keys_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    keys = commands.add_parser(
        "keys",
        help="make, list, trust and revoke node keys",
        epilog=examples(
            "meshchat keys new --id n4 --out /etc/meshchat/keys",
            "meshchat keys trust /tmp/n4.key --trusted /var/lib/meshchat/trusted",
            "meshchat keys revoke --id n4 --trusted /var/lib/meshchat/trusted",
        ),
    )
    actions = keys.add_subparsers(
        dest="keys_command", required=True, metavar="ACTION", help="what to do with keys"
    )
    new = actions.add_parser(
        "new",
        help="make a node's key pair",
        epilog=examples(
            "meshchat keys new --id n4 --out /etc/meshchat/keys",
            "meshchat keys new --id n4 --out . && scp n4.key ops@n1:/tmp/",
        ),
    )
    new.add_argument("--id", required=True, help="the node's id")
    new.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="where ID.key and ID.key_secret go"
    )
    listing = actions.add_parser(
        "list",
        help="the nodes a trusted directory accepts",
        epilog=examples(
            "meshchat keys list /var/lib/meshchat/trusted",
            "meshchat keys list .meshchat/trusted   # a local mesh's, made by `up`",
        ),
    )
    listing.add_argument(
        "directory", type=Path, metavar="DIR", help="a trusted directory of ID.key files"
    )
    trust = actions.add_parser(
        "trust",
        help="accept a node: copy its public certificate",
        epilog=examples(
            "meshchat keys trust /tmp/n4.key --trusted /var/lib/meshchat/trusted",
            "meshchat keys trust n4.key --trusted .meshchat/trusted",
        ),
    )
    trust.add_argument(
        "certificate", type=Path, metavar="FILE", help="the node's public certificate ID.key"
    )
    trust.add_argument(
        "--trusted", type=Path, required=True, metavar="DIR", help="the trusted directory"
    )
    revoke = actions.add_parser(
        "revoke",
        help="stop accepting a node",
        epilog=examples(
            "meshchat keys revoke --id n4 --trusted /var/lib/meshchat/trusted",
            "meshchat keys revoke --id n4 --trusted .meshchat/trusted",
        ),
    )
    revoke.add_argument("--id", required=True, help="the node's id")
    revoke.add_argument(
        "--trusted", type=Path, required=True, metavar="DIR", help="the trusted directory"
    )


def run_keys(args: argparse.Namespace) -> int:
    try:
        match args.keys_command:
            case "new":
                public, secret = create_key_pair(args.out, args.id)
                _out(f"{public}  (public: copy it into every node's trusted directory)")
                _out(f"{secret}  (secret: this node's --node-key; keep it private)")
            case "list":
                for node_id, key in sorted(load_trusted(args.directory).items()):
                    _out(f"{node_id}  {fingerprint(key)}")
            case "trust":
                return _trust(args.certificate, args.trusted)
            case "revoke":
                return _revoke(args.id, args.trusted)
    except NodeKeyError as error:
        return _fail(str(error))
    return 0


def _trust(certificate: Path, trusted: Path) -> int:
    node_id = certificate.name.removesuffix(PUBLIC_SUFFIX)
    if not certificate.name.endswith(PUBLIC_SUFFIX) or not is_node_id(node_id):
        return _fail(f"{certificate} is not a public certificate named ID{PUBLIC_SUFFIX}")
    public = read_public_key(certificate)  # before anything is replaced: NodeKeyError
    trusted.mkdir(parents=True, exist_ok=True)
    target = trusted / certificate.name
    temporary = target.with_suffix(".tmp")
    shutil.copyfile(certificate, temporary)
    temporary.replace(target)  # running nodes never read half a file
    _out(f"trusting {node_id} ({fingerprint(public)})")
    return 0


def _revoke(node_id: str, trusted: Path) -> int:
    path = trusted / f"{node_id}{PUBLIC_SUFFIX}"
    if not is_node_id(node_id) or not path.exists():
        return _fail(f"{trusted} trusts no node {node_id!r}")
    path.unlink()
    _out(f"revoked {node_id}: running nodes drop it within a few seconds")
    return 0


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _fail(message: str) -> int:
    sys.stderr.write(f"meshchat keys: {message}\n")
    return EXIT_USAGE
