"""How a line of chat looks, shared by the full-screen app and the line mode."""

import datetime

from rich.text import Text

from tools.chat_state import ACTION_PREFIX, ChatState, Delivery, Line, RoomView, colour_of

NEW_MESSAGES_MARKER = "──── new messages ────"


def clock(time_ms: int) -> str:
    return datetime.datetime.fromtimestamp(time_ms / 1000).strftime("%H:%M")


def line_text(line: Line) -> Text:
    text = Text(f"{clock(line.time_ms)} ", style="dim")
    if line.notice:
        text.append(f"-- {line.body}", style="dim italic")
        return text
    if line.is_action:
        text.append(
            f"* {line.sender} {line.body[len(ACTION_PREFIX) :]}",
            style=f"italic {colour_of(line.sender)}",
        )
    else:
        text.append(line.sender, style=f"bold {colour_of(line.sender)}")
        text.append(f": {line.body}")
    if line.delivery is Delivery.PENDING:
        text.stylize("dim")
        text.append("  (sending…)", style="dim")
    elif line.delivery is Delivery.FAILED:
        text.append(f"  (not sent: {line.error})", style="bold red")
    return text


def line_plain(line: Line) -> str:
    return line_text(line).plain


def room_text(room: RoomView) -> Text:
    """A room's whole view, with the new-messages marker where unread messages start."""
    text = Text()
    first = True
    for key, line in room.lines.items():
        if room.first_unread is not None and key == room.first_unread:
            if not first:
                text.append("\n")
            text.append(NEW_MESSAGES_MARKER, style="bold red")
            first = False
        if not first:
            text.append("\n")
        text.append_text(line_text(line))
        first = False
    return text


def room_label(state: ChatState, room: RoomView, position: int) -> Text:
    marker = ">" if room.name == state.current else " "
    label = Text(f"{marker}{position} {room.name}")
    if room.unread:
        label.append(f" ({room.unread})", style="bold yellow")
    return label
