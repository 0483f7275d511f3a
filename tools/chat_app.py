"""`meshchat chat`: the full-screen terminal chat tool, on Textual.

The app is a view of ChatState (chat_state.py) and a driver of the client library: it
shows what the state holds, turns keys into commands and sends, and feeds the client's
events into the state. Reconnecting, resuming and retrying are the client library's job;
the app only shows them (status bar, pending lines).
"""

import contextlib
import time
from collections.abc import Awaitable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message as TextualMessage
from textual.widgets import Input, Static

from mesh.client.chat_client import ChatClient, ConnectionChanged
from mesh.client.connection import NodeError
from mesh.wire.display_text import terminal_safe
from mesh.wire.message_keys import new_client_msg_id
from mesh.wire.protocol import (
    Message,
    MessageEvent,
    PresenceEvent,
    ReadMarkerEvent,
    RelationEvent,
    RoomStateEvent,
    TypingEvent,
)
from tools.chat_moderation import MODERATION_COMMANDS, describe, parse_moderation
from tools.chat_read_marks import ReadMarking
from tools.chat_render import room_label, room_text
from tools.chat_state import (
    ACTION_PREFIX,
    COMMANDS,
    KEYS_HELP,
    ChatState,
    parse_command,
    room_name_problem,
)

HISTORY_PAGE = 50
# The least time between two typing notices for one room.
TYPING_NOTICE_INTERVAL_S = 3.0


def now_ms() -> int:
    return int(time.time() * 1000)


class MessagePane(VerticalScroll):
    """The current room's lines; scrolling to the top asks for older history."""

    class ReachedTop(TextualMessage):
        """The user scrolled to the top: time to load older messages."""

    def compose(self) -> ComposeResult:
        yield Static(id="messages-text")

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 < old_value:
            self.post_message(self.ReachedTop())


class ChatInput(Input):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete", "complete", show=False, priority=True),
        Binding("up", "recall(-1)", "previous line", show=False),
        Binding("down", "recall(1)", "next line", show=False),
    ]

    def __init__(self, state: ChatState, **options: object) -> None:
        super().__init__(placeholder="message, or /help", **options)  # type: ignore[arg-type]
        self.state = state
        self.recall_index: int | None = None

    def action_complete(self) -> None:
        completed = self.state.complete(self.value)
        if completed != self.value:
            self.value = completed
            self.cursor_position = len(completed)

    def action_recall(self, step: int) -> None:
        history = self.state.sent_lines
        if step < 0 and not self.value and self.recall_index is None and self._edit_last():
            self.recall_index = len(history)  # Up again recalls what was sent before
            return
        if not history:
            return
        index = len(history) if self.recall_index is None else self.recall_index
        index = max(0, min(len(history), index + step))
        self.recall_index = index
        self.value = history[index] if index < len(history) else ""
        self.cursor_position = len(self.value)

    def _edit_last(self) -> bool:
        """Up on an empty line: our last message of the room, ready to edit."""
        room = self.state.current
        last = None if room is None else self.state.last_message(room, own=True)
        if last is None or last.is_action:
            return False
        self.value = f"/edit {last.body}"
        self.cursor_position = len(self.value)
        return True


class ChatApp(App[None]):
    CSS = """
    #rooms { width: 22; height: 100%; border-right: solid $primary-darken-2; padding: 0 1; }
    #main { width: 1fr; }
    #messages { height: 1fr; padding: 0 1; }
    #typing { height: 1; color: $text-muted; padding: 0 1; }
    #members { width: 18; height: 100%; border-left: solid $primary-darken-2; padding: 0 1; }
    #status { dock: bottom; height: 1; background: $primary-darken-2; padding: 0 1; }
    ChatInput { height: 3; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "step_room(1)", "next room"),
        Binding("ctrl+p", "step_room(-1)", "previous room"),
        Binding("ctrl+q", "quit", "quit"),
        *(Binding(f"alt+{n}", f"jump_room({n})", show=False) for n in range(1, 10)),
    ]

    def __init__(self, client: ChatClient, user: str, rooms: list[str]) -> None:
        super().__init__()
        self.client = client
        self.state = ChatState(user)
        self.initial_rooms = rooms
        self.connection = "connecting"
        self._typing_sent: dict[str, float] = {}
        self._loading_older: set[str] = set()
        self.read_marking = ReadMarking(
            self.state,
            client,
            lambda marking: self.run_worker(marking, exit_on_error=False),
            self._refresh_room,
        )
        self.shown_text = ""  # the message pane's text, as a person reads it

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Static(id="rooms")
            with Vertical(id="main"):
                yield MessagePane(id="messages")
                yield Static(id="typing")
                yield ChatInput(self.state, id="input")
            yield Static(id="members")
        yield Static(id="status")

    def on_mount(self) -> None:
        self.title = "meshchat"
        self.query_one(ChatInput).focus()
        self.set_interval(0.5, self._refresh_status)
        self.run_worker(self._run_client(), name="client", exit_on_error=True)
        self._refresh_all()

    async def on_unmount(self) -> None:
        await self.client.close()

    # ---- the client ----

    async def _run_client(self) -> None:
        try:
            await self.client.connect(timeout_s=24 * 3600)
        except NodeError as error:
            self.connection = f"refused: {error}"
            self.state.notice(None, f"the node refused us: {error}", now_ms())
            self._refresh_all()
            return
        for room in self.initial_rooms:
            await self._join(room)
        async for event in self.client.events():
            match event:
                case MessageEvent(message=message):
                    if self.state.add_message(message):
                        self._refresh_room(message.room)
                        if message.room == self.state.current:
                            self.read_marking.soon(message.room)
                case ReadMarkerEvent(room=room):
                    self.state.apply_read_marker(
                        room,
                        event.read_up_to,
                        event.unread,
                        event.unread_capped,
                        event.unread_through,
                    )
                    self._refresh_room(room)
                case RelationEvent(room=room):
                    if self.state.apply_relation(event):
                        self._refresh_room(room)
                case RoomStateEvent(room=room):
                    self.state.notice(room, describe(event), now_ms())
                    if event.op in {"kick", "ban"} and event.user == self.state.user:
                        self.state.notice(room, f"you are no longer in {room}", now_ms())
                    self._refresh_room(room)
                case PresenceEvent(room=room, user=user, state=presence):
                    self.state.presence(room, user, presence == "joined", now_ms())
                    self._refresh_room(room)
                case TypingEvent(room=room, user=user):
                    self.state.typing(room, user, time.monotonic())
                    self._refresh_typing()
                case ConnectionChanged(state=connection, node=node, reason=reason):
                    self.connection = connection
                    if connection == "connected" and self.client.user:
                        self.state.user = self.client.user  # a token's user, not a guess
                    if connection == "disconnected":
                        self.state.notice(None, f"lost {node}: {reason}; reconnecting", now_ms())
                    elif connection == "connected" and self.client.reconnects:
                        self.state.notice(None, f"connected to {node}; resumed", now_ms())
                    self._refresh_all()

    async def _join(self, room: str, *, new: bool = True) -> None:
        """`new`: the tab was opened for this join, and goes again if the join fails."""
        self.state.open_room(room)
        self._refresh_all()
        try:
            members = await self.client.join(room)
            page = await self.client.history(room, limit=HISTORY_PAGE)
        except (NodeError, TimeoutError) as error:
            if new:  # a failed join changes nothing: no tab is left behind
                self.state.close_room(room)
            self.state.notice(None if new else room, f"could not join {room}: {error}", now_ms())
            self._refresh_all()
            return
        self.state.set_members(room, members)
        unread = self.client.unread_of(room)
        if unread is not None and unread.read_up_to is not None:
            self.state.apply_read_marker(
                room, unread.read_up_to, unread.count, unread.capped, unread.through
            )
        self.state.add_history(room, page.messages, page.cursor is not None)
        self._refresh_all()
        if room == self.state.current:
            self.read_marking.soon(room)

    async def _send(
        self, room: str, body: str, client_msg_id: str, reply_to: str | None = None
    ) -> None:
        try:
            sent = await self.client.send(
                room, body, client_msg_id=client_msg_id, reply_to=reply_to
            )
        except (NodeError, TimeoutError, ConnectionError) as error:
            self.state.fail(client_msg_id, str(error))
        else:
            stored = Message(
                id=sent.id,
                room=room,
                sender=self.state.user,
                time_ms=sent.time_ms,
                body=body,
                client_msg_id=client_msg_id,
                reply_to=reply_to,
            )
            self.state.confirm(client_msg_id, stored)
        self._refresh_room(room)

    async def _load_older(self, room: str, count: int) -> None:
        view = self.state.rooms.get(room)
        if view is None or view.history_exhausted or room in self._loading_older:
            return
        self._loading_older.add(room)
        try:
            pane = self.query_one(MessagePane)
            height_before, y_before = pane.virtual_size.height, pane.scroll_y
            remaining = count
            while remaining > 0 and not view.history_exhausted:
                page = await self.client.history(
                    room, before=view.oldest_loaded, limit=min(200, remaining)
                )
                self.state.add_history(room, page.messages, page.cursor is not None)
                remaining -= len(page.messages)
                if not page.messages:
                    break
            if room == self.state.current:
                self._render_messages(stick_to_bottom=False)
                # Keep the lines the user was reading where they were: move down by what
                # was added above them.
                self.call_after_refresh(
                    lambda: pane.scroll_to(
                        y=y_before + pane.virtual_size.height - height_before, animate=False
                    )
                )
        except (NodeError, TimeoutError) as error:
            self.state.notice(room, f"could not load history: {error}", now_ms())
            self._refresh_room(room)
        finally:
            self._loading_older.discard(room)

    # ---- input ----

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.value = ""
        self.query_one(ChatInput).recall_index = None
        if not text:
            return
        command = parse_command(text)
        if command is None:
            self._post(text[1:] if text.startswith("//") else text)
        else:
            self._command(command.name, command.argument, text)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        room = self.state.current
        if room is None or not event.value or event.value.startswith("/"):
            return
        now = time.monotonic()
        if now - self._typing_sent.get(room, 0.0) >= TYPING_NOTICE_INTERVAL_S:
            self._typing_sent[room] = now
            self.run_worker(self._typing(room), exit_on_error=False)

    async def _typing(self, room: str) -> None:
        # Typing notices are best effort: a lost one is replaced by the next.
        with contextlib.suppress(NodeError, TimeoutError, ConnectionError):
            await self.client.typing(room)

    def _post(self, body: str, reply_to: str | None = None) -> None:
        room = self.state.current
        if room is None:
            self.state.notice(None, "join a room first: /join ROOM", now_ms())
            self._refresh_all()
            return
        client_msg_id = new_client_msg_id()
        self.state.add_pending(room, client_msg_id, body, now_ms())
        self._refresh_room(room)
        self.run_worker(self._send(room, body, client_msg_id, reply_to), exit_on_error=False)

    def _change(self, name: str, argument: str) -> None:
        """/reply, /edit, /delete and /react, on the last message (our last, for edit
        and delete) of the current room."""
        room = self.state.current
        target = (
            None if room is None else self.state.last_message(room, own=name in {"edit", "delete"})
        )
        if room is None or target is None:
            self.state.notice(None, f"/{name}: no message to {name} here", now_ms())
            return
        match name:
            case "reply" if argument:
                self._post(argument, reply_to=target.key)
            case "edit" if argument:
                self.run_worker(
                    self._changed_by(room, self.client.edit(room, target.key, argument))
                )
            case "delete":
                self.run_worker(self._changed_by(room, self.client.delete(room, target.key)))
            case "react" if argument:
                key, _, flag = argument.partition(" ")
                remove = flag.strip() == "--remove"
                pending = self.client.react(room, target.key, key, remove=remove)
                self.run_worker(self._changed_by(room, pending))
            case _:
                self.state.notice(None, COMMANDS[name], now_ms())

    def _moderate(self, name: str, argument: str) -> None:
        """A change of the current room's state, shown when its event arrives."""
        change, room = parse_moderation(name, argument), self.state.current
        if isinstance(change, str) or room is None:
            self.state.notice(None, change if isinstance(change, str) else "join first", now_ms())
            return
        pending = self.client.change_room(room, change.op, user=change.user, value=change.value)
        self.run_worker(self._changed_by(room, pending), exit_on_error=False)

    async def _changed_by(self, room: str, pending: Awaitable[object]) -> None:
        """The change shows when its relation event arrives; only a refusal is told."""
        try:
            await pending
        except (NodeError, TimeoutError, ConnectionError) as error:
            self.state.notice(room, f"not done: {error}", now_ms())
            self._refresh_room(room)

    def _command(self, name: str, argument: str, text: str) -> None:
        room = self.state.current
        match name:
            case "join" if argument and (problem := room_name_problem(argument)):
                self.state.notice(None, problem, now_ms())  # nothing is sent, no tab made
            case "join" if argument:
                new = argument not in self.state.rooms
                self.state.leave_view()
                self.state.open_room(argument)
                self.state.switch_to(argument)
                self.run_worker(self._join(argument, new=new), exit_on_error=False)
            case "leave":
                target = argument or room
                if target and target not in self.state.rooms:
                    self.state.notice(None, f"you are not in {terminal_safe(target)}", now_ms())
                elif target:
                    self.run_worker(self._leave(target), exit_on_error=False)
            case "me" if argument:
                self._post(ACTION_PREFIX + argument)
            case "reply" | "edit" | "delete" | "react":
                self._change(name, argument)
            case _ if name in MODERATION_COMMANDS:
                self._moderate(name, argument)
            case "who" if room:
                self.run_worker(self._who(room), exit_on_error=False)
            case "history":
                count = int(argument) if argument.isdigit() else HISTORY_PAGE
                if room:
                    self.run_worker(self._load_older(room, count), exit_on_error=False)
            case "rooms":
                self.run_worker(self._rooms(), exit_on_error=False)
            case "help":
                for line in (*COMMANDS.values(), KEYS_HELP):
                    self.state.notice(None, line, now_ms())
            case "quit":
                self.exit()
                return
            case _:
                self.state.notice(None, f"not a command: {text} (try /help)", now_ms())
        self._refresh_all()

    async def _leave(self, room: str) -> None:
        try:
            await self.client.leave(room)
        except (NodeError, TimeoutError) as error:
            self.state.notice(room, f"could not leave {room}: {error}", now_ms())
        else:
            self.state.close_room(room)
        self._refresh_all()

    async def _who(self, room: str) -> None:
        try:
            users = await self.client.who(room)
        except (NodeError, TimeoutError) as error:
            self.state.notice(room, f"/who failed: {error}", now_ms())
        else:
            self.state.set_members(room, users)
            self.state.notice(room, f"in {room}: {', '.join(users) or 'nobody'}", now_ms())
        self._refresh_all()

    async def _rooms(self) -> None:
        try:
            rooms = await self.client.rooms()
        except (NodeError, TimeoutError) as error:
            self.state.notice(None, f"/rooms failed: {error}", now_ms())
        else:
            self.state.notice(None, f"your rooms: {', '.join(rooms) or 'none'}", now_ms())
        self._refresh_all()

    # ---- keys ----

    def action_step_room(self, offset: int) -> None:
        if room := self.state.step(offset):
            self._refresh_all()
            self.read_marking.soon(room)

    def action_jump_room(self, position: int) -> None:
        if room := self.state.jump(position):
            self._refresh_all()
            self.read_marking.soon(room)

    @on(MessagePane.ReachedTop)
    def _reached_top(self) -> None:
        if self.state.current:
            self.run_worker(self._load_older(self.state.current, HISTORY_PAGE), exit_on_error=False)

    # ---- drawing ----

    def _refresh_all(self) -> None:
        # Events may still arrive while the app is closing and its widgets are gone.
        with contextlib.suppress(NoMatches):
            self._render_rooms()
            self._render_messages(stick_to_bottom=True)
            self._render_members()
            self._refresh_status()

    def _refresh_room(self, room: str) -> None:
        with contextlib.suppress(NoMatches):
            self._render_rooms()
            if room == self.state.current:
                self._render_messages(stick_to_bottom=True)
                self._render_members()

    def _render_rooms(self) -> None:
        labels = [
            room_label(self.state, room, position).markup
            for position, room in enumerate(self.state.rooms.values(), start=1)
        ]
        self.query_one("#rooms", Static).update("\n".join(labels) or "no rooms: /join ROOM")

    def _render_messages(self, stick_to_bottom: bool) -> None:
        pane = self.query_one(MessagePane)
        at_bottom = pane.scroll_y >= pane.max_scroll_y - 1
        room = self.state.rooms.get(self.state.current or "")
        text = room_text(room) if room is not None else None
        self.shown_text = "" if text is None else text.plain
        self.query_one("#messages-text", Static).update(text if text is not None else "")
        if stick_to_bottom and at_bottom:
            self.call_after_refresh(lambda: pane.scroll_end(animate=False))

    def _render_members(self) -> None:
        room = self.state.rooms.get(self.state.current or "")
        members = room.members if room else []
        # Text, not a str: a str is read as Rich markup, and a name like "[/]" would break it.
        shown = Text("\n".join(terminal_safe(member) for member in members))
        self.query_one("#members", Static).update(shown)

    def _refresh_typing(self) -> None:
        with contextlib.suppress(NoMatches):
            self.query_one("#typing", Static).update(Text(self.state.typing_line(time.monotonic())))

    def _refresh_status(self) -> None:
        client = self.client
        rtt = "" if client.round_trip_s is None else f" · rtt {client.round_trip_s * 1000:.1f} ms"
        node = f"{client.node} ({client.address})" if client.node else "no node yet"
        with contextlib.suppress(NoMatches):
            self.query_one("#status", Static).update(
                Text(terminal_safe(f"{self.state.user} @ {node} · {self.connection}{rtt}"))
            )
        self._refresh_typing()
