"""`meshchat chat`: the full-screen terminal chat tool, on Textual.

The app is a view of ChatState (chat_state.py) and a driver of the client library: it
shows what the state holds, turns keys into actions (chat_keys.py) and lines into
commands (chat_commands.py) and sends, and feeds the client's events into the state.
Reconnecting, resuming and retrying are the client library's job; the app only shows
them (the status bar says why it is not connected and when it retries; pending lines).
"""

import contextlib
import time
from collections.abc import Coroutine
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Input, Static

from mesh.client.chat_client import ChatClient, ConnectionChanged
from mesh.client.connection import NodeError
from mesh.client.rejoin import RejoinRefused
from mesh.wire.display_text import terminal_safe
from mesh.wire.message_keys import new_client_msg_id
from mesh.wire.protocol import (
    HistoryPage,
    Message,
    MessageEvent,
    PresenceEvent,
    ReadMarkerEvent,
    RelationEvent,
    RoomStateEvent,
    TypingEvent,
)
from tools.chat_commands import HISTORY_PAGE, REQUEST_ERRORS, ChatCommands, now_ms
from tools.chat_keys import ACTIONS, KeyMap, bound_keys, config_path, keys_help, load_key_map
from tools.chat_moderation import describe
from tools.chat_read_marks import ReadMarking
from tools.chat_render import room_label, room_text, status_line
from tools.chat_state import COMMANDS, KEYS_HELP, ChatState
from tools.chat_widgets import ChatInput, HelpScreen, MessagePane

__all__ = ["ChatApp", "ChatInput", "HelpScreen", "MessagePane"]

# The least time between two typing notices for one room.
TYPING_NOTICE_INTERVAL_S = 3.0


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
    # Off: its key, Ctrl-P, is "previous room" here, as in weechat and irssi.
    ENABLE_COMMAND_PALETTE: ClassVar[bool] = False

    def __init__(
        self, client: ChatClient, user: str, rooms: list[str], key_map: KeyMap | None = None
    ) -> None:
        super().__init__()
        self.client = client
        self.state = ChatState(user)
        self.initial_rooms = rooms
        for room in rooms:
            self.state.open_room(room)  # shown at once, joined once connected
        self.key_map = load_key_map(config_path()) if key_map is None else key_map
        self.bound_keys: set[str] = set()
        for name, keys in self.key_map.keys.items():
            action, description, _ = ACTIONS[name]
            # Priority: before the input line's own keys. App.bind has no priority
            # flag; the bindings map it calls has.
            if keys:
                self.bound_keys.update(bound_keys(keys).split(","))
                self._bindings.bind(bound_keys(keys), action, description, priority=True)
        self.commands = ChatCommands(self)
        self.connection = "connecting"  # the client's last news: connected, disconnected...
        self.given_up: str | None = None  # why the client stopped trying, if it did
        self._typing_sent: dict[str, float] = {}
        self._loading_older: set[str] = set()
        self.read_marking = ReadMarking(self.state, client, self.start, self.refresh_room)
        self.shown_text = ""  # the message pane's text, as a person reads it

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Static(id="rooms")
            with Vertical(id="main"):
                yield MessagePane(id="messages")
                yield Static(id="typing")
                keys = frozenset(self.bound_keys)
                yield ChatInput(self.state, self.action_scroll_log, keys, id="input")
            yield Static(id="members")
        yield Static(id="status")

    def on_mount(self) -> None:
        self.title = "meshchat"
        self.query_one(ChatInput).focus()
        self.set_interval(0.5, self._refresh_status)
        if self.key_map.problem:
            self.state.notice(None, self.key_map.problem, now_ms())
        self.run_worker(self._run_client(), name="client", exit_on_error=True)
        self.refresh_all()

    async def on_unmount(self) -> None:
        await self.client.close()

    def start(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` beside the app; its failure is its own notice, never the app's end."""
        self.run_worker(work, exit_on_error=False)

    # ---- the client ----

    async def _run_client(self) -> None:
        try:
            await self.client.connect(timeout_s=24 * 3600)
        except (NodeError, OSError) as error:  # OSError: TLS, and nothing reachable at all
            self.given_up = str(error)
            self.state.notice(None, f"not connected: {error}", now_ms())
            self.refresh_all()
            return
        self.state.user = self.client.user or self.state.user  # a token's user, first
        for room in self.initial_rooms:
            await self._join(room)
        async for event in self.client.events():
            self._handle(event)

    def _handle(self, event: object) -> None:
        match event:
            case MessageEvent(message=message):
                if self.state.add_message(message):
                    self.refresh_room(message.room)
                    self._refresh_typing()  # the sender's typing line goes with its message
                    if message.room == self.state.current:
                        self.read_marking.soon(message.room)
            case ReadMarkerEvent(room=room):
                self.state.apply_read_marker(
                    room, event.read_up_to, event.unread, event.unread_capped, event.unread_through
                )
                self.refresh_room(room)
            case RelationEvent(room=room):
                if self.state.apply_relation(event):
                    self.refresh_room(room)
            case RoomStateEvent(room=room):
                self.state.notice(room, describe(event), now_ms())
                if event.op in {"kick", "ban"} and event.user == self.state.user:
                    self.state.notice(room, f"you are no longer in {room}", now_ms())
                self.refresh_room(room)
            case PresenceEvent(room=room, user=user, state=presence):
                self.state.presence(room, user, presence == "joined", now_ms())
                self.refresh_room(room)
            case TypingEvent(room=room, user=user):
                self.state.typing(room, user, time.monotonic())
                self._refresh_typing()
            case RejoinRefused(room=room, code=code, reason=reason):
                said = f"not rejoined {room} after reconnecting: {code}: {reason}"
                self.state.notice(room, said, now_ms())
                if room != self.state.current:
                    self.state.notice(None, said, now_ms())
                self.refresh_all()
            case ConnectionChanged(state=connection, node=node, reason=reason):
                self.connection = connection
                if connection == "connected" and self.client.user:
                    self.state.user = self.client.user  # a token's user, not a guess
                if connection == "disconnected":
                    self.state.notice(None, f"lost {node}: {reason}; reconnecting", now_ms())
                elif connection == "connected" and self.client.reconnects:
                    self.state.notice(None, f"connected to {node}; resumed", now_ms())
                elif connection == "failed":
                    self.given_up = reason
                    self.state.notice(None, f"not connected: {reason}", now_ms())
                self.refresh_all()

    async def _join_request(self, room: str) -> tuple[list[str], HistoryPage]:
        members = await self.client.join(room)
        return members, await self.client.history(room, limit=HISTORY_PAGE)

    def _joined(self, room: str, members: list[str], page: HistoryPage) -> None:
        self.state.set_members(room, members)
        unread = self.client.unread_of(room)
        if unread is not None and unread.read_up_to is not None:
            self.state.apply_read_marker(
                room, unread.read_up_to, unread.count, unread.capped, unread.through
            )
        self.state.add_history(room, page.messages, page.cursor is not None)
        self.refresh_all()
        if room == self.state.current:
            self.read_marking.soon(room)

    async def _join(self, room: str) -> None:
        """One of the rooms given at start, its tab open already: it goes if the join fails."""
        try:
            members, page = await self._join_request(room)
        except REQUEST_ERRORS as error:
            self.state.close_room(room)
            self.state.notice(None, f"could not join {room}: {error}", now_ms())
            self.refresh_all()
            return
        self._joined(room, members, page)

    def open_and_join(self, room: str) -> None:
        self.start(self.open_and_join_now(room))

    async def open_and_join_now(self, room: str) -> bool:
        """/join: the room's tab opens, current, once the node let us in; a failed join
        changes nothing but a notice. True once in the room."""
        if room in self.state.rooms and self.client.in_room(room):
            self._switch(self.state.jump(list(self.state.rooms).index(room) + 1))
            return True
        self.state.notice(None, f"joining {room}…", now_ms())
        self.refresh_all()
        try:
            members, page = await self._join_request(room)
        except REQUEST_ERRORS as error:
            self.state.notice(None, f"could not join {room}: {error}", now_ms())
            self.refresh_all()
            return False
        self.state.open_room(room)  # a tab kept after a kick or a refused rejoin: in again
        self.state.leave_view()
        self.state.switch_to(room)
        self._joined(room, members, page)
        return True

    async def _send(
        self, room: str, body: str, client_msg_id: str, reply_to: str | None = None
    ) -> None:
        try:
            sent = await self.client.send(
                room, body, client_msg_id=client_msg_id, reply_to=reply_to
            )
        except REQUEST_ERRORS as error:
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
        self.refresh_room(room)

    async def load_older(self, room: str, count: int) -> None:
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
                self._render_messages(stick_to_bottom=True)  # if End was pressed meanwhile
                if pane.scroll_y == y_before:  # else the user scrolled while it loaded
                    self.call_after_refresh(self._keep_in_place, pane, y_before, height_before)
        except REQUEST_ERRORS as error:
            self.state.notice(room, f"could not load history: {error}", now_ms())
            self.refresh_room(room)
        finally:
            self._loading_older.discard(room)

    def _keep_in_place(self, pane: MessagePane, y_before: float, height_before: int) -> None:
        """Keep the lines the user was reading where they were: move down by what was
        added above them, unless the user scrolled away since."""
        if pane.scroll_y == y_before:
            added = pane.virtual_size.height - height_before
            pane.scroll_to(y=y_before + added, animate=False)

    # ---- input ----

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.value = ""
        self.query_one(ChatInput).recall_index = None
        if text:
            self.commands.submit(text)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        room = self.state.current
        if room is None or not event.value or event.value.startswith("/"):
            return
        now = time.monotonic()
        if now - self._typing_sent.get(room, 0.0) >= TYPING_NOTICE_INTERVAL_S:
            self._typing_sent[room] = now
            self.start(self._typing(room))

    async def _typing(self, room: str) -> None:
        # Typing notices are best effort: a lost one is replaced by the next.
        with contextlib.suppress(*REQUEST_ERRORS):
            await self.client.typing(room)

    def post(
        self,
        body: str,
        reply_to: str | None = None,
        room: str | None = None,
        *,
        recalled: bool = True,
        client_msg_id: str | None = None,
    ) -> None:
        """Send `body` to `room` (the current one by default), shown pending until stored;
        `client_msg_id`: a retry's, the same as the first try's."""
        room = room or self.state.current
        if room is None:
            self.state.notice(None, "join a room first: /join ROOM", now_ms())
            self.refresh_all()
            return
        client_msg_id = client_msg_id or new_client_msg_id()
        self.state.add_pending(room, client_msg_id, body, now_ms(), reply_to, recalled=recalled)
        self.refresh_room(room)
        self.start(self._send(room, body, client_msg_id, reply_to))

    # ---- keys ----

    def _switch(self, room: str | None) -> None:
        if room:
            self.refresh_all()
            self.read_marking.soon(room)

    def action_step_room(self, offset: int) -> None:
        self._switch(self.state.step(offset))

    def action_jump_room(self, position: int) -> None:
        self._switch(self.state.jump(position))

    def action_scroll_log(self, where: str) -> None:
        pane = self.query_one(MessagePane)
        page = pane.scrollable_content_region.height
        targets = {
            "page_up": pane.scroll_y - page,
            "page_down": pane.scroll_y + page,
            "home": 0,
            "end": pane.max_scroll_y,
        }
        # Immediate: a burst of PageDowns moves a page each, not one page from a stale y.
        pane.scroll_to(y=targets[where], animate=False, immediate=True)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
            return
        self.push_screen(HelpScreen([*COMMANDS.values(), KEYS_HELP, *keys_help(self.key_map)]))

    @on(MessagePane.ReachedTop)
    def _reached_top(self) -> None:
        if self.state.current:
            self.start(self.load_older(self.state.current, HISTORY_PAGE))

    # ---- drawing ----

    def refresh_all(self) -> None:
        # Events may still arrive while the app is closing and its widgets are gone.
        with contextlib.suppress(NoMatches):
            self._render_rooms()
            self._render_messages(stick_to_bottom=True)
            self._render_members()
            self._refresh_status()

    def refresh_room(self, room: str) -> None:
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
        room = self.state.rooms.get(self.state.current or "", self.state.no_room)
        text = room_text(room)
        self.shown_text = text.plain
        self.query_one("#messages-text", Static).update(text)
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
        line = status_line(self.state.user, self.client, time.monotonic(), self.given_up)
        with contextlib.suppress(NoMatches):
            self.query_one("#status", Static).update(Text(line))
        self._refresh_typing()
