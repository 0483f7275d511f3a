"""The chat tool's slash commands: each checks its arguments before anything is sent, and
a command the node refuses changes nothing on screen but a notice saying why.

The commands drive the app (chat_app.py): its state, its client, and its workers.
"""

import contextlib
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from mesh.client.connection import NodeError
from mesh.wire.display_text import terminal_safe
from mesh.wire.errors import ErrorCode
from mesh.wire.names import USER_NAME_RULE, is_user_name
from tools.chat_direct import direct_room_name
from tools.chat_keys import keys_help
from tools.chat_moderation import MODERATION_COMMANDS, parse_moderation
from tools.chat_state import (
    ACTION_PREFIX,
    COMMANDS,
    KEYS_HELP,
    client_msg_id_of,
    parse_command,
    room_name_problem,
)

if TYPE_CHECKING:
    from tools.chat_app import ChatApp

HISTORY_PAGE = 50
# What a failed request may raise: the node's refusal, no reply in time, no connection.
REQUEST_ERRORS = (NodeError, TimeoutError, ConnectionError)


def now_ms() -> int:
    return int(time.time() * 1000)


class ChatCommands:
    def __init__(self, app: "ChatApp") -> None:
        self.app = app
        self.state = app.state
        self.client = app.client

    def submit(self, text: str) -> None:
        """A line the user entered: a message for the current room, or a command."""
        command = parse_command(text)
        if command is None:
            self.app.post(text[1:] if text.startswith("//") else text)
        else:
            self.run(command.name, command.argument, text)

    def _notice(self, text: str, room: str | None = None) -> None:
        self.state.notice(room, text, now_ms())

    def run(self, name: str, argument: str, text: str) -> None:
        room, start = self.state.current, self.app.start
        match name:
            case "join" if argument and (problem := room_name_problem(argument)):
                self._notice(problem)  # nothing is sent, no tab made
            case "join" if argument:
                self.app.open_and_join(argument)
            case "leave":
                self._leave(argument or room)
            case "msg":
                self._message(argument)
            case "retry":
                self._retry()
            case "me" if argument:
                self.app.post(ACTION_PREFIX + argument)
            case "reply" | "edit" | "delete" | "react":
                self._change(name, argument)
            case _ if name in MODERATION_COMMANDS:
                self._moderate(name, argument)
            case "who" if room:
                start(self._who(room))
            case "history":
                count = int(argument) if argument.isdigit() else HISTORY_PAGE
                if room:
                    start(self.app.load_older(room, count))
            case "rooms":
                start(self._rooms())
            case "help":
                for line in (*COMMANDS.values(), KEYS_HELP, *keys_help(self.app.key_map)):
                    self._notice(line)
            case "quit":
                self.app.exit()
                return
            case "join" | "me" | "who":
                self._notice(COMMANDS[name] if name != "who" else "/who: join a room first")
            case _:
                self._notice(f"not a command: {text} (try /help)")
        self.app.refresh_all()

    # ---- rooms ----

    def _leave(self, target: str | None) -> None:
        if not target:
            self._notice("/leave: you are in no room")
        elif problem := room_name_problem(target):
            self._notice(problem)  # checked here: the node never sees a bad name
        elif target not in self.state.rooms:
            self._notice(f"you are not in {terminal_safe(target)}")
        else:
            self.app.start(self._left(target))

    async def _left(self, room: str) -> None:
        try:
            await self.client.leave(room)
        except NodeError as error:
            if error.code != ErrorCode.NOT_FOUND:  # a refused leave changes nothing
                self._notice(f"could not leave {room}: {error}", room)
                self.app.refresh_all()
                return
            self.state.close_room(room)  # not in it any more (kicked, or not rejoined)
        except REQUEST_ERRORS as error:
            self._notice(f"could not leave {room}: {error}", room)
        else:
            self.state.close_room(room)
        self.app.refresh_all()

    def _message(self, argument: str) -> None:
        """/msg USER TEXT: TEXT in the room for the two of us (chat_direct.py)."""
        other, _, body = argument.partition(" ")
        body = body.strip()
        if not other or not body:
            self._notice(COMMANDS["msg"])
        elif not is_user_name(other):
            self._notice(f"not a user name: {terminal_safe(other)!r} ({USER_NAME_RULE})")
        elif other == self.state.user:
            self._notice("/msg: that is you; write to someone else")
        else:
            self.app.start(self._direct(other, body))

    async def _direct(self, other: str, body: str) -> None:
        room = direct_room_name(self.state.user, other)
        if room not in self.state.rooms and (problem := await self._claim_direct(room, other)):
            self._notice(f"/msg {terminal_safe(other)}: {problem}")
            self.app.refresh_all()
            return
        if await self.app.open_and_join_now(room):  # or only switches to it, if open
            self.app.post(body, room=room)

    async def _claim_direct(self, room: str, other: str) -> str | None:
        """The direct room is invite-only, made by one of the two, with the other invited;
        why not, if another user holds the name (nothing is said there then)."""
        try:
            # Refused when made already (by either of us, or someone else): read who, below.
            with contextlib.suppress(NodeError):
                await self.client.change_room(room, "create", value="invite")
        except (TimeoutError, ConnectionError) as error:
            return f"could not open {room}: {error}"
        try:
            info = await self.client.show_room(room)
            if info.created_by not in {self.state.user, other}:
                owner = terminal_safe(info.created_by or "nobody")
                return f"{room} was made by {owner}, not by either of you: not used"
            if info.created_by == self.state.user and other not in info.invited:
                await self.client.change_room(room, "invite", user=other)
        except NodeError as error:
            if error.code == ErrorCode.FORBIDDEN:  # closed to us: neither of us made it
                return f"{room} is someone else's room, closed to you: not used"
            return f"could not open {room}: {error}"
        except (TimeoutError, ConnectionError) as error:
            return f"could not open {room}: {error}"
        return None

    def _retry(self) -> None:
        failed = self.state.take_last_failed()
        if failed is None:
            self._notice("/retry: nothing failed to send")
            return
        room, line = failed
        self._notice(f"sending again: {terminal_safe(line.body)}", room)
        # The same client message id: if the first try was stored after all, the node
        # answers with that message instead of storing it twice.
        client_msg_id = client_msg_id_of(line.key)
        self.app.post(
            line.body,
            reply_to=line.reply_to,
            room=room,
            recalled=False,
            client_msg_id=client_msg_id,
        )

    async def _who(self, room: str) -> None:
        try:
            users = await self.client.who(room)
        except REQUEST_ERRORS as error:
            self._notice(f"/who failed: {error}", room)
        else:
            self.state.set_members(room, users)
            self._notice(f"in {room}: {', '.join(users) or 'nobody'}", room)
        self.app.refresh_all()

    async def _rooms(self) -> None:
        try:
            rooms = await self.client.rooms()
        except REQUEST_ERRORS as error:
            self._notice(f"/rooms failed: {error}")
        else:
            self._notice(f"your rooms: {', '.join(rooms) or 'none'}")
        self.app.refresh_all()

    # ---- messages and room state ----

    def _change(self, name: str, argument: str) -> None:
        """/reply, /edit, /delete and /react, on the last message (our last, for edit
        and delete) of the current room."""
        room = self.state.current
        target = (
            None if room is None else self.state.last_message(room, own=name in {"edit", "delete"})
        )
        if room is None or target is None:
            self._notice(f"/{name}: no message to {name} here")
            return
        match name:
            case "reply" if argument:
                self.app.post(argument, reply_to=target.key)
            case "edit" if argument:
                self.app.start(self._changed_by(room, self.client.edit(room, target.key, argument)))
            case "delete":
                self.app.start(self._changed_by(room, self.client.delete(room, target.key)))
            case "react" if argument:
                key, _, flag = argument.partition(" ")
                remove = flag.strip() == "--remove"
                pending = self.client.react(room, target.key, key, remove=remove)
                self.app.start(self._changed_by(room, pending))
            case _:
                self._notice(COMMANDS[name])

    def _moderate(self, name: str, argument: str) -> None:
        """A change of the current room's state, shown when its event arrives."""
        change, room = parse_moderation(name, argument), self.state.current
        if isinstance(change, str) or room is None:
            self._notice(change if isinstance(change, str) else "join first")
            return
        pending = self.client.change_room(room, change.op, user=change.user, value=change.value)
        self.app.start(self._changed_by(room, pending))

    async def _changed_by(self, room: str, pending: Awaitable[object]) -> None:
        """The change shows when its relation event arrives; only a refusal is told."""
        try:
            await pending
        except REQUEST_ERRORS as error:
            self._notice(f"not done: {error}", room)
            self.app.refresh_room(room)
