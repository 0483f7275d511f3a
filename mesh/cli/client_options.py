"""How a command reaches the mesh as a user: --server, --user, --token, TLS, and the
client it opens with them."""

import argparse
import getpass
import os
import ssl
from pathlib import Path

from mesh.client.chat_client import ChatClient, ClientSettings
from mesh.client.connection import parse_servers
from mesh.client.tls import client_context
from mesh.wire.names import USER_NAME_RULE, is_user_name

# Where a local mesh's first node takes clients (`meshchat up`'s default base port).
DEFAULT_SERVER = "127.0.0.1:7100"


def user_name(text: str) -> str:
    """An argparse type: a name the node would accept, refused here with the rule."""
    if not is_user_name(text):
        raise argparse.ArgumentTypeError(f"not a user name: {text!r} ({USER_NAME_RULE})")
    return text


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("MESHCHAT_SERVER") or DEFAULT_SERVER,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="nodes' client ports, in order of preference "
        f"(default $MESHCHAT_SERVER, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--user",
        type=user_name,
        help="who you are (default $MESHCHAT_USER, else your login name; "
        "with --token, the token's user)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("MESHCHAT_TOKEN"),
        help="a signed token (default $MESHCHAT_TOKEN; without a cluster "
        "secret the user name is enough)",
    )
    add_tls_client_options(parser)


def add_tls_client_options(parser: argparse.ArgumentParser) -> None:
    """--tls and --ca-file, for every command that connects to a node's client port."""
    ca_file = os.environ.get("MESHCHAT_CA_FILE") or None
    parser.add_argument(
        "--tls", action="store_true", help="connect with TLS, verifying the node's host name"
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=None if ca_file is None else Path(ca_file),
        metavar="FILE",
        help="trust the nodes' certificates this CA signed (implies --tls; "
        "default $MESHCHAT_CA_FILE, else the system's CAs)",
    )


def tls_client_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client side of --tls / --ca-file: None for plaintext."""
    if not args.tls and args.ca_file is None:
        return None
    return client_context(args.ca_file)


def named_user(args: argparse.Namespace) -> str | None:
    """The user the command was told it is: --user, else $MESHCHAT_USER."""
    if args.user is not None:
        return str(args.user)
    from_environment = os.environ.get("MESHCHAT_USER")
    if from_environment:
        return user_name_or_error(from_environment, "$MESHCHAT_USER")
    return None


def user_name_or_error(text: str, source: str) -> str:
    if not is_user_name(text):
        raise ValueError(f"{source} {text!r} is not a user name ({USER_NAME_RULE}): pass --user")
    return text


def acting_user(args: argparse.Namespace) -> str:
    """Who the command acts as, for display: the named user, else the login name."""
    return named_user(args) or user_name_or_error(getpass.getuser(), "your login name")


def open_client(args: argparse.Namespace, *, fail_fast: bool = True) -> ChatClient:
    """A client for the command: with a token, the token's user (and a different --user is
    refused once a node has read the token); without, the acting user's name.
    `fail_fast`: if no node can be reached at the first attempt, fail with the reasons."""
    token = args.token or acting_user(args)
    return ChatClient(
        parse_servers(args.server),
        token=token,
        settings=ClientSettings(
            client_name=f"meshchat-{args.command}", fail_fast_unreachable=fail_fast
        ),
        ssl_context=tls_client_context(args),
        user_expected=named_user(args) if args.token else None,
    )
