"""`meshchat chat --plain`: line in, line out, for dumb terminals, scripts and screen readers.

Each stdin line is sent to the current room (the last one joined), or run as a command;
every incoming message is printed as one line, `[room] HH:MM sender: body`. At the end of
stdin the tool waits for its sends to be acknowledged, then exits. Every line goes out
through `terminal_safe`, so nothing another user wrote reaches the terminal raw.
"""

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mesh.client.chat_client import ChatClient, ConnectionChanged
from mesh.client.connection import NodeError
from mesh.client.rejoin import RejoinRefused
from mesh.wire.display_text import terminal_safe
from mesh.wire.protocol import (
    Message,
    MessageEvent,
    PresenceEvent,
    RelationEvent,
    RoomStateEvent,
)
from tools.chat_moderation import describe
from tools.chat_render import clock
from tools.chat_state import ACTION_PREFIX, COMMANDS, parse_command, room_name_problem

BACKLOG_ON_JOIN = 20

T = TypeVar("T")


def format_relation(event: RelationEvent) -> str:
    """A change of an earlier message, as a line of its own."""
    who, target = terminal_safe(event.sender), event.target
    match event.kind:
        case "edit":
            said = f"edited {target}: {terminal_safe(event.body)}"
        case "delete":
            said = f"deleted {target}"
        case "reaction":
            said = f"reacted {terminal_safe(event.key)} to {target}"
        case _:
            said = f"took back {terminal_safe(event.key)} on {target}"
    return f"[{terminal_safe(event.room)}] -- {who} {said}"


def format_message(message: Message) -> str:
    room, sender = terminal_safe(message.room), terminal_safe(message.sender)
    if message.body.startswith(ACTION_PREFIX):
        action = terminal_safe(message.body[len(ACTION_PREFIX) :])
        return f"[{room}] {clock(message.time_ms)} * {sender} {action}"
    return f"[{room}] {clock(message.time_ms)} {sender}: {terminal_safe(message.body)}"


class PlainChat:
    def __init__(self, client: ChatClient, rooms: list[str], write: Callable[[str], None]) -> None:
        self.client = client
        self.rooms = list(rooms)
        self.current = rooms[-1] if rooms else None
        # Presence, /who, /rooms and errors quote others too: every line is made safe, and
        # that leaves a line already made safe unchanged.
        self.write: Callable[[str], None] = lambda line: write(terminal_safe(line))
        self._shown: set[str] = set()
        self._sends: list[asyncio.Task[None]] = []

    async def run(self, lines: "asyncio.Queue[str | None]") -> int:
        await self.client.connect()
        for room in self.rooms:
            await self._join(room)
        events = asyncio.create_task(self._print_events())
        try:
            while (line := await lines.get()) is not None:
                if not await self._handle(line.rstrip("\n")):
                    break
            for send in self._sends:
                await send
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
        return 0

    async def _handle(self, line: str) -> bool:
        if not line.strip():
            return True
        command = parse_command(line)
        if command is None:
            self._send(line[1:] if line.startswith("//") else line)
            return True
        match command.name, command.argument:
            case "quit", _:
                return False
            case "join", room if room and (problem := room_name_problem(room)):
                self.write(f"! {problem}")
            case "join", room if room:
                await self._join(room)
            case "leave", room if room and (problem := room_name_problem(room)):
                self.write(f"! {problem}")
            case "leave", room:
                target = room or self.current
                if target:
                    await self._request(self.client.leave(target))
                    self.rooms = [r for r in self.rooms if r != target]
                    self.current = self.rooms[-1] if self.rooms else None
            case "me", text if text:
                self._send(ACTION_PREFIX + text)
            case "who", _ if self.current:
                users = await self._request(self.client.who(self.current))
                if users is not None:
                    self.write(f"-- in {self.current}: {', '.join(users) or 'nobody'}")
            case "rooms", _:
                rooms = await self._request(self.client.rooms())
                if rooms is not None:
                    self.write(f"-- your rooms: {', '.join(rooms) or 'none'}")
            case "history", count if self.current:
                page = await self._request(
                    self.client.history(self.current, limit=int(count) if count.isdigit() else 50)
                )
                if page is not None:
                    for message in page.messages:
                        self.write(format_message(message))
            case "help", _:
                for text in COMMANDS.values():
                    self.write(f"-- {text}")
            case _:
                self.write(f"! not a command: {line} (try /help)")
        return True

    async def _join(self, room: str) -> None:
        members = await self._request(self.client.join(room))
        if members is None:
            return
        if room not in self.rooms:
            self.rooms.append(room)
        self.current = room
        self.write(f"-- joined {room}")
        backlog = await self._request(self.client.history(room, limit=BACKLOG_ON_JOIN))
        for message in backlog.messages if backlog is not None else []:
            self._show(message)

    def _send(self, body: str) -> None:
        room = self.current
        if room is None:
            self.write("! join a room first: /join ROOM")
            return
        self._sends.append(asyncio.create_task(self._send_one(room, body)))

    async def _send_one(self, room: str, body: str) -> None:
        await self._request(self.client.send(room, body))

    async def _request(self, pending: Awaitable[T]) -> T | None:
        try:
            return await pending
        except (NodeError, TimeoutError, ConnectionError) as error:
            self.write(f"! {error}")
            return None

    async def _print_events(self) -> None:
        async for event in self.client.events():
            match event:
                case MessageEvent(message=message):
                    self._show(message)
                case RelationEvent():
                    self.write(format_relation(event))
                case RoomStateEvent(room=room):
                    self.write(f"[{room}] -- {describe(event)}")
                case PresenceEvent(room=room, user=user, state=state):
                    self.write(f"[{room}] -- {user} {state}")
                case ConnectionChanged(state="disconnected", node=node, reason=reason):
                    self.write(f"-- lost {node}: {reason}; reconnecting")
                case ConnectionChanged(state="connected", node=node) if self.client.reconnects:
                    self.write(f"-- connected to {node}; resumed")
                case RejoinRefused(room=room, code=code, reason=reason):
                    said = f"not rejoined after reconnecting: {code}: {terminal_safe(reason)}"
                    self.write(f"[{room}] -- {said}")

    def _show(self, message: Message) -> None:
        if message.id not in self._shown:
            self._shown.add(message.id)
            self.write(format_message(message))


async def run_plain(client: ChatClient, rooms: list[str]) -> int:
    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1000)

    async def read_stdin() -> None:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            await lines.put(line if line else None)
            if not line:
                return

    reader = asyncio.create_task(read_stdin())
    try:
        return await PlainChat(client, rooms, write).run(lines)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await client.close()
