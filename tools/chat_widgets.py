"""The chat tool's own widgets: the message log, the input line, the help screen."""

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message as TextualMessage
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from tools.chat_state import ChatState


class MessagePane(VerticalScroll):
    """The current room's lines; scrolling to the top asks for older history."""

    class ReachedTop(TextualMessage):
        """The user scrolled to the top: time to load older messages."""

    def compose(self) -> ComposeResult:
        yield Static(id="messages-text")

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # A shorter room's lines put the view at the top too: that is no scrolling up.
        if new_value <= 0 < old_value and self.max_scroll_y > 0:
            self.post_message(self.ReachedTop())


class ChatInput(Input):
    """The line the user types; Tab, Up/Down and, on an empty line, Home/End are chat keys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "recall(-1)", "previous line", show=False),
        Binding("down", "recall(1)", "next line", show=False),
    ]

    def __init__(
        self,
        state: ChatState,
        scroll_log: Callable[[str], None],
        app_keys: frozenset[str] = frozenset(),
        **options: object,
    ) -> None:
        super().__init__(placeholder="message, or /help", **options)  # type: ignore[arg-type]
        self.state = state
        self.scroll_log = scroll_log
        self.app_keys = app_keys
        self.recall_index: int | None = None

    def check_consume_key(self, key: str, character: str | None = None) -> bool:
        # The app's keys stay the app's, even those that read as a character: tmux's
        # Alt-1 (ESC 1) arrives as the key for "¡", which an Input would otherwise type.
        return key not in self.app_keys and super().check_consume_key(key, character)

    async def _on_key(self, event: events.Key) -> None:
        # Tab is handled here, in the line's own queue, in order with the letters before
        # and after it: a binding runs as the key arrives at the app (priority) or after
        # it went round the widgets, either way out of order in a burst ("/jo" Tab "ki").
        if event.key == "tab":
            event.stop()
            event.prevent_default()
            self.action_complete()
            return
        await super()._on_key(event)

    def action_complete(self) -> None:
        completed = self.state.complete(self.value)
        if completed != self.value:
            self.value = completed
            self.cursor_position = len(completed)

    def action_home(self, select: bool = False) -> None:
        if self.value or select:
            super().action_home(select)
        else:  # nothing to move through: Home goes to the top of the log, as in irssi
            self.scroll_log("home")

    def action_end(self, select: bool = False) -> None:
        if self.value or select:
            super().action_end(select)
        else:
            self.scroll_log("end")

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


class HelpScreen(ModalScreen[None]):
    """The keys and commands, over the chat; Escape (or F1, or q) closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "close", show=False),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help-text { width: 90%; height: auto; max-height: 90%; border: round $primary;
                 background: $surface; padding: 0 1; }
    """

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-text"):
            shown = ["Keys and commands (Esc closes this)", "", *self.lines]
            yield Static(Text("\n".join(shown)), id="help-body")
