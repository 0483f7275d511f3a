"""The chat commands of the `meshchat` command line: send, history, tail, chat."""

import argparse
import asyncio
import collections
import datetime
import json
import os
import ssl
import sys
from pathlib import Path

from mesh.client import runtime
from mesh.client.chat_client import ChatClient, ClientSettings
from mesh.client.connection import NodeError, parse_servers
from mesh.client.tls import client_context
from mesh.wire.display_text import json_safe, terminal_safe
from mesh.wire.names import ROOM_NAME_RULE, USER_NAME_RULE, is_room_name, is_user_name
from mesh.wire.protocol import HISTORY_LIMIT_MAX, Message, MessageEvent

# Sends from stdin in flight at once: enough to fill the node's commit batches.
SEND_WINDOW = 512


def user_name(text: str) -> str:
    """An argparse type: a name the node would accept, refused here with the rule."""
    if not is_user_name(text):
        raise argparse.ArgumentTypeError(f"not a user name: {text!r} ({USER_NAME_RULE})")
    return text


def room_name(text: str) -> str:
    if not is_room_name(text):
        raise argparse.ArgumentTypeError(f"not a room name: {text!r} ({ROOM_NAME_RULE})")
    return text


def add_chat_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    send = commands.add_parser("send", help="send a message, or each line of stdin with -")
    add_client_options(send)
    send.add_argument("room", type=room_name)
    send.add_argument("text", help="the message, or - to send each line of stdin")

    history = commands.add_parser("history", help="print a room's messages, oldest first")
    add_client_options(history)
    history.add_argument("room", type=room_name)
    history.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    position = history.add_mutually_exclusive_group()
    position.add_argument("--before", metavar="ID", help="only messages before this id")
    position.add_argument("--after", metavar="ID", help="only messages after this id")
    history.add_argument("--json", action="store_true", help="one JSON object per line")

    tail = commands.add_parser("tail", help="print a room's messages live, until interrupted")
    add_client_options(tail)
    tail.add_argument("room", type=room_name)
    tail.add_argument("--since", metavar="ID", help="first every message after this id")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")

    chat = commands.add_parser("chat", help="the terminal chat tool")
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


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        required=True,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="nodes to use, in order of preference",
    )
    parser.add_argument("--user", required=True, type=user_name, help="who you are")
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


def open_client(args: argparse.Namespace) -> ChatClient:
    return ChatClient(
        parse_servers(args.server),
        token=args.token or args.user,
        settings=ClientSettings(client_name=f"meshchat-{args.command}"),
        ssl_context=tls_client_context(args),
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
    moment = datetime.datetime.fromtimestamp(message.time_ms / 1000, tz=datetime.UTC)
    sender = terminal_safe(message.sender)
    if message.deleted is not None:
        by = terminal_safe(message.deleted.by)
        return f"{moment:%Y-%m-%d %H:%M:%S} {sender}: (deleted by {by})"
    line = f"{moment:%Y-%m-%d %H:%M:%S} {sender}: {terminal_safe(message.body)}"
    if message.edited_at_ms is not None:
        line += " (edited)"
    if message.reactions:
        counts = ", ".join(
            f"{terminal_safe(key)} {len(users)}" for key, users in message.reactions.items()
        )
        line += f" [{counts}]"
    return line


async def run_send(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        if args.text != "-":
            sent = await client.send(args.room, args.text)
            write_line(sent.id)
            return 0
        window: collections.deque[asyncio.Task[object]] = collections.deque()
        try:
            for line in sys.stdin:
                text = line.rstrip("\n")
                if not text:
                    continue
                window.append(asyncio.ensure_future(client.send(args.room, text)))
                while len(window) >= SEND_WINDOW or (window and window[0].done()):
                    write_line((await window.popleft()).id)  # type: ignore[attr-defined]
            while window:
                write_line((await window.popleft()).id)  # type: ignore[attr-defined]
        finally:
            for task in window:
                task.cancel()
    return 0


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
    for message in collected:
        write_line(format_message(message, args.json))
    return 0


async def run_tail(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        await client.join(args.room, since=args.since)
        async for event in client.events():
            if isinstance(event, MessageEvent):
                write_line(format_message(event.message, args.json))
                sys.stdout.flush()
    return 0


def run_chat(args: argparse.Namespace) -> int:
    rooms = args.room or ["lobby"]
    if args.plain:
        from tools.chat_plain import run_plain  # noqa: PLC0415 - only the chat tool needs it

        return runtime.run(run_plain(open_client(args), rooms))
    from tools.chat_app import ChatApp  # noqa: PLC0415 - Textual loads only for the chat tool

    ChatApp(open_client(args), args.user, rooms).run()
    return 0


def report_node_error(command: str, error: NodeError) -> str:
    return f"meshchat {command}: {error.code}: {terminal_safe(error.message)}"
