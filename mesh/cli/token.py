"""`meshchat token`: issue a signed token, optionally scoped to rooms and operations."""

import argparse
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from mesh.cli.chat import write_line
from mesh.cli.client_options import user_name
from mesh.cli.help_format import examples
from mesh.node.doors.auth import SigningKey, issue_token, load_secret, parse_duration
from mesh.node.doors.token_scope import OPERATIONS, ScopeError, TokenScope


def add_token_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    token = commands.add_parser(
        "token",
        help="issue a signed token for a user",
        epilog=examples(
            "meshchat token --secret-file /etc/meshchat/secret --user ann",
            "meshchat token --key-file signing.pem --kid 2026-01 --user ann --ttl 15m",
            "meshchat token --secret-file secret --user dash --rooms 'status*' --ops read",
            "export MESHCHAT_TOKEN=$(meshchat token --secret-file secret --user ops --ops operate)",
        ),
    )
    signing = token.add_mutually_exclusive_group(required=True)
    signing.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="sign with this HS256 secret (it or --key-file is required)",
    )
    signing.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="sign with this PEM private key (RSA: RS256, Ed25519: EdDSA; "
        "it or --secret-file is required)",
    )
    token.add_argument(
        "--kid", help="the key id the nodes' key file gives this key (default: no kid)"
    )
    token.add_argument("--user", required=True, type=user_name, help="the token's user")
    token.add_argument("--ttl", default="1d", help="lifetime: 90s, 15m, 12h, 1d (default 1d)")
    token.add_argument(
        "--rooms",
        nargs="+",
        metavar="PATTERN",
        help="only rooms matching these patterns (* any run of characters, ? one; "
        "default: every room)",
    )
    token.add_argument(
        "--ops",
        nargs="+",
        choices=sorted(OPERATIONS),
        help="only these operations (default: all but operate)",
    )
    token.add_argument(
        "--audience",
        help="the aud claim: the nodes' --token-audience (default: none, for nodes without one)",
    )
    token.add_argument(
        "--issuer",
        help="the iss claim: the nodes' --token-issuer (default: none, for nodes without one)",
    )


def run_token(args: argparse.Namespace) -> int:
    try:
        given = {"rooms": args.rooms, "ops": args.ops}
        scope = TokenScope.from_claims({name: value for name, value in given.items() if value})
    except ScopeError as error:
        raise ValueError(str(error)) from error
    key = load_secret(args.secret_file) if args.secret_file else load_private_key(args.key_file)
    token = issue_token(
        key,
        args.user,
        parse_duration(args.ttl),
        time.time(),
        scope=scope,
        kid=args.kid,
        audience=args.audience,
        issuer=args.issuer,
    )
    write_line(token)
    return 0


def load_private_key(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: not an unencrypted PEM private key: {error}") from error
    if not isinstance(key, RSAPrivateKey | Ed25519PrivateKey):
        raise ValueError(f"{path}: an RSA or Ed25519 private key is needed")
    return key
