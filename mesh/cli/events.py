"""The commands that change a message already sent: edit, delete and react."""

import argparse
import re

from mesh.cli.chat import room_name, write_line
from mesh.cli.client_options import add_client_options, open_client
from mesh.cli.help_format import examples
from mesh.wire.protocol import REACTION_KEY_LENGTH_MAX, REACTION_KEY_PATTERN
from router.message_ids import is_message_id


def message_id(text: str) -> str:
    """An argparse type: a message id as `history` prints it."""
    if not is_message_id(text):
        raise argparse.ArgumentTypeError(f"not a message id: {text!r}")
    return text


def add_event_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    edit = commands.add_parser(
        "edit",
        help="give one of your messages a new body",
        epilog=examples(
            "meshchat edit lobby 0193a5c2e4f80000.n1 'hello, world!'",
            "meshchat edit lobby \"$(meshchat send lobby draft)\" 'final text'",
        ),
    )
    add_client_options(edit)
    edit.add_argument("room", type=room_name, help="the message's room")
    edit.add_argument("id", type=message_id, help="the message's id (history --json shows it)")
    edit.add_argument("text", help="its new body")

    delete = commands.add_parser(
        "delete",
        help="take back one of your messages: its body and reactions are erased",
        epilog=examples(
            "meshchat delete lobby 0193a5c2e4f80000.n1",
            "meshchat delete lobby 0193a5c2e4f80000.n1 --server 10.0.0.2:7100 --user ann",
        ),
    )
    add_client_options(delete)
    delete.add_argument("room", type=room_name, help="the message's room")
    delete.add_argument("id", type=message_id, help="the message's id")

    react = commands.add_parser(
        "react",
        help="react to a message (or take it back)",
        epilog=examples(
            "meshchat react lobby 0193a5c2e4f80000.n1 +1",
            "meshchat react lobby 0193a5c2e4f80000.n1 🎉",
            "meshchat react lobby 0193a5c2e4f80000.n1 +1 --remove",
        ),
    )
    add_client_options(react)
    react.add_argument("room", type=room_name, help="the message's room")
    react.add_argument("id", type=message_id, help="the message's id")
    react.add_argument("key", help="the reaction, up to 16 characters: an emoji, +1, ...")
    react.add_argument("--remove", action="store_true", help="take the reaction back")


async def run_edit(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        write_line((await client.edit(args.room, args.id, args.text)).id)
    return 0


async def run_delete(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        write_line((await client.delete(args.room, args.id)).id)
    return 0


async def run_react(args: argparse.Namespace) -> int:
    if not 1 <= len(args.key) <= REACTION_KEY_LENGTH_MAX or not re.search(
        REACTION_KEY_PATTERN, args.key
    ):
        raise ValueError(
            f"a reaction is 1 to {REACTION_KEY_LENGTH_MAX} characters, no spaces or controls"
        )
    async with open_client(args) as client:
        write_line((await client.react(args.room, args.id, args.key, remove=args.remove)).id)
    return 0
