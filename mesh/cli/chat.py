"""The chat commands of the `meshchat` command line: send, history, tail, chat."""

import argparse
import datetime
import json
import sys

from mesh.cli import tables
from mesh.cli.client_options import acting_user, add_client_options, open_client
from mesh.cli.help_format import examples
from mesh.cli.send_stream import send_stream
from mesh.client import runtime
from mesh.client.connection import NodeError
from mesh.wire.display_text import json_safe, terminal_safe
from mesh.wire.error_advice import with_advice
from mesh.wire.names import ROOM_NAME_RULE, is_room_name
from mesh.wire.protocol import HISTORY_LIMIT_MAX, Message, MessageEvent


def room_name(text: str) -> str:
    if not is_room_name(text):
        raise argparse.ArgumentTypeError(f"not a room name: {text!r} ({ROOM_NAME_RULE})")
    return text


def add_chat_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    _add_send_and_history(commands)
    _add_tail_and_chat(commands)


def _add_send_and_history(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    send = commands.add_parser(
        "send",
        help="send a message, or each line of stdin with -",
        epilog=examples(
            "meshchat send lobby 'hello, world'",
            "meshchat send lobby hi --server 10.0.0.1:7100,10.0.0.2:7100 --user ann",
            "tail -f build.log | meshchat send builds -   # one message per line",
        ),
    )
    add_client_options(send)
    send.add_argument("room", type=room_name, help="the room to send to")
    send.add_argument(
        "text",
        help="the message, or - to send each line of stdin as it arrives "
        "(its id printed once acknowledged)",
    )

    history = commands.add_parser(
        "history",
        help="print a room's messages, oldest first",
        epilog=examples(
            "meshchat history lobby",
            "meshchat history lobby --limit 500 --json | jq -r .body",
            "meshchat history lobby --after 0193a5c2e4f80000.n1   # what came next",
        ),
    )
    add_client_options(history)
    history.add_argument("room", type=room_name, help="the room to read")
    history.add_argument("--limit", type=int, default=50, help="how many messages, at most")
    position = history.add_mutually_exclusive_group()
    position.add_argument(
        "--before", metavar="ID", help="only messages before this id (default: the newest)"
    )
    position.add_argument(
        "--after", metavar="ID", help="only messages after this id (default: the newest)"
    )
    history.add_argument(
        "--json", action="store_true", help="one JSON object per line, even on a terminal"
    )


def _add_tail_and_chat(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    tail = commands.add_parser(
        "tail",
        help="print a room's messages live, until interrupted",
        epilog=examples(
            "meshchat tail lobby",
            "meshchat tail lobby -n 20            # the last 20 first, then live",
            "meshchat tail lobby --json | jq -r '.sender + \": \" + .body'",
        ),
    )
    add_client_options(tail)
    tail.add_argument("room", type=room_name, help="the room to follow")
    start = tail.add_mutually_exclusive_group()
    start.add_argument(
        "-n",
        "--lines",
        type=int,
        default=0,
        metavar="N",
        help=f"first the room's last N messages (at most {HISTORY_LIMIT_MAX}; default %(default)s)",
    )
    start.add_argument(
        "--since",
        metavar="ID",
        help="first every message after this id (default: only new messages)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line")

    chat = commands.add_parser(
        "chat",
        help="the terminal chat tool",
        epilog=examples(
            "meshchat chat",
            "meshchat chat --room lobby --room ops --user ann",
            "meshchat chat --plain --room lobby < notes.txt",
        ),
    )
    add_client_options(chat)
    chat.add_argument(
        "--room",
        action="append",
        default=[],
        type=room_name,
        metavar="ROOM",
        help="a room to join at start (repeatable; default lobby)",
    )
    chat.add_argument(
        "--plain",
        action="store_true",
        help="line mode: stdin lines are sent, messages printed one per line",
    )


def write_line(line: str) -> None:
    sys.stdout.write(line + "\n")


def format_time(time_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_message(message: Message, as_json: bool) -> str:
    """One line for a terminal: other users' text escaped (display_text.py), JSON exact."""
    if as_json:
        deleted = message.deleted
        document = json.dumps(
            {
                "id": message.id,
                "room": message.room,
                "sender": message.sender,
                "time": format_time(message.time_ms),
                "body": message.body,
                "reply_to": message.reply_to,
                "edited_at": None
                if message.edited_at_ms is None
                else format_time(message.edited_at_ms),
                "deleted": None
                if deleted is None
                else {"by": deleted.by, "at": format_time(deleted.at_ms)},
                "reactions": message.reactions,
            },
            ensure_ascii=False,
        )
        return json_safe(document)
    sender = terminal_safe(message.sender)
    return f"{tables.message_time(message)} {sender}: {tables.shown_body(message)}"


async def run_send(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        if args.text == "-":
            return await send_stream(client, args.room, sys.stdin.fileno(), _write_id)
        sent = await client.send(args.room, args.text)
        write_line(sent.id)
    return 0


def _write_id(message_id: str) -> None:
    """Flushed at once: a reader of the pipe learns each line is stored when it is."""
    write_line(message_id)
    sys.stdout.flush()


async def run_history(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ValueError("--limit must be at least 1")
    async with open_client(args) as client:
        collected: list[Message] = []
        before, after = args.before, args.after
        # Pages of at most the protocol's limit, walked until enough messages are in hand.
        while len(collected) < args.limit:
            want = min(HISTORY_LIMIT_MAX, args.limit - len(collected))
            page = await client.history(args.room, before=before, after=after, limit=want)
            if after is not None:
                collected.extend(page.messages)
                after = page.cursor
            else:
                collected[:0] = page.messages
                before = page.cursor
            if page.cursor is None:
                break
    console = None if args.json else tables.terminal_console()
    if console is not None:
        console.print(tables.history_table(collected))
        return 0
    for message in collected:
        write_line(format_message(message, args.json))
    return 0


async def run_tail(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise ValueError("-n must be 0 or more")
    async with open_client(args) as client:
        since = args.since
        if args.lines and since is None:  # the last N first, then everything after them
            page = await client.history(args.room, limit=min(args.lines, HISTORY_LIMIT_MAX))
            for message in page.messages:
                write_line(format_message(message, args.json))
            since = page.messages[-1].id if page.messages else None
        sys.stdout.flush()
        await client.join(args.room, since=since)
        async for event in client.events():
            if isinstance(event, MessageEvent):
                write_line(format_message(event.message, args.json))
                sys.stdout.flush()
    return 0


def run_chat(args: argparse.Namespace) -> int:
    rooms = args.room or ["lobby"]
    if args.plain:
        from tools.chat_plain import run_plain  # noqa: PLC0415 - only the chat tool needs it

        return runtime.run(run_plain(open_client(args, fail_fast=False), rooms))
    from tools.chat_app import ChatApp  # noqa: PLC0415 - Textual loads only for the chat tool

    ChatApp(open_client(args, fail_fast=False), acting_user(args), rooms).run()
    return 0


def report_node_error(command: str, error: NodeError) -> str:
    return f"meshchat {command}: {node_error_text(error)}"


def node_error_text(error: NodeError) -> str:
    """A node's refusal for a terminal: its code, then its sentence and what to do."""
    return f"{error.code}: {with_advice(error.code, terminal_safe(error.message))}"
