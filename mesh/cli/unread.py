"""The commands for what a user has read: unread and mark-read."""

import argparse
import json

from mesh.cli.chat import room_name, write_line
from mesh.cli.client_options import add_client_options, open_client
from mesh.cli.events import message_id
from mesh.cli.help_format import examples
from mesh.wire.display_text import json_safe
from mesh.wire.protocol import UnreadCount


def add_unread_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    unread = commands.add_parser(
        "unread",
        help="unread messages per room (of every room you are in, or of one)",
        epilog=examples(
            "meshchat unread",
            "meshchat unread lobby --user ann",
            "meshchat unread --json | jq -r 'select(.count > 0) | .room'",
        ),
    )
    add_client_options(unread)
    unread.add_argument("room", type=room_name, nargs="?", help="one room (default: all yours)")
    unread.add_argument("--json", action="store_true", help="one JSON object per line")

    mark = commands.add_parser(
        "mark-read",
        help="mark a room read up to a message (default: its newest)",
        epilog=examples(
            "meshchat mark-read lobby",
            "meshchat mark-read lobby 0193a5c2e4f80000.n1",
        ),
    )
    add_client_options(mark)
    mark.add_argument("room", type=room_name, help="the room you have read")
    mark.add_argument(
        "id",
        type=message_id,
        nargs="?",
        help="the last message you have read (default: the room's newest)",
    )
    mark.add_argument("--json", action="store_true", help="print the result as JSON")


def format_unread(unread: UnreadCount, as_json: bool) -> str:
    """`room  count` (over 1,000: `1000+`), or the count as JSON."""
    if as_json:
        document = {
            "room": unread.room,
            "read_up_to": unread.read_up_to,
            "count": unread.count,
            "capped": unread.capped,
        }
        return json_safe(json.dumps(document, ensure_ascii=False, separators=(",", ":")))
    count = f"{unread.count}+" if unread.capped else str(unread.count)
    return f"{unread.room}  {count}"


async def run_unread(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        for unread in await client.unread(args.room):
            write_line(format_unread(unread, args.json))
    return 0


async def run_mark_read(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        write_line(format_unread(await client.mark_read(args.room, args.id), args.json))
    return 0
