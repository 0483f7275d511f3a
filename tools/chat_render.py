"""How a line of chat looks, shared by the full-screen app and the line mode.

Every text from others (senders, bodies, room names, notices quoting the node) is shown
through `terminal_safe`: one line, control and bidi characters escaped.
"""

import datetime

from rich.text import Text

from mesh.client.chat_client import ChatClient
from mesh.wire.display_text import terminal_safe
from tools.chat_state import ACTION_PREFIX, ChatState, Delivery, Line, RoomView, colour_of

NEW_MESSAGES_MARKER = "──── new since you last read ────"
# A message naming the user, and the mark on its room's tab while the user looks elsewhere.
HIGHLIGHT_STYLE = "bold black on yellow"
HIGHLIGHT_MARK = "!"


def clock(time_ms: int) -> str:
    return datetime.datetime.fromtimestamp(time_ms / 1000).strftime("%H:%M")


# How much of a quoted message a reply shows.
QUOTE_CHARS = 60


def quote_text(quoted: Line | None) -> Text:
    """The line above a reply: who said what it answers."""
    if quoted is None:
        return Text("      ↳ (an earlier message)", style="dim")
    sender = terminal_safe(quoted.sender)
    if quoted.changes.deleted_by is not None:
        said = f"{sender}: (deleted)"
    elif quoted.is_action:  # quoted as shown: "* ann waves"
        said = f"* {sender} {terminal_safe(_shortened(quoted.body[len(ACTION_PREFIX) :]))}"
    else:
        said = f"{sender}: {terminal_safe(_shortened(quoted.body))}"
    return Text(f"      ↳ {said}", style="dim")


def _shortened(body: str) -> str:
    return body if len(body) <= QUOTE_CHARS else body[: QUOTE_CHARS - 1] + "…"


def line_text(line: Line) -> Text:
    text = Text(f"{clock(line.time_ms)} ", style="dim")
    if line.notice:
        text.append(f"-- {terminal_safe(line.body)}", style="dim italic")
        return text
    sender = terminal_safe(line.sender)
    if line.changes.deleted_by is not None:
        text.append(sender, style=f"bold {colour_of(line.sender)}")
        text.append(": (deleted)", style="dim italic")
        return text
    if line.is_action:
        text.append(
            f"* {sender} {terminal_safe(line.body[len(ACTION_PREFIX) :])}",
            style=f"italic {colour_of(line.sender)}",
        )
    else:
        text.append(sender, style=f"bold {colour_of(line.sender)}")
        body_style = HIGHLIGHT_STYLE if line.highlight else ""
        text.append(f": {terminal_safe(line.body)}", style=body_style)
    if line.delivery is Delivery.PENDING:
        text.stylize("dim")
        text.append("  (sending…)", style="dim")
    elif line.delivery is Delivery.FAILED:
        text.append(f"  (not sent: {terminal_safe(line.error)})", style="bold red")
    if line.changes.edited_at is not None:
        text.append(" (edited)", style="dim")
    if reactions := line.changes.reactions():
        shown = "  ".join(f"{terminal_safe(key)} {count}" for key, count in reactions.items())
        text.append(f"  [{shown}]", style="yellow")
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
        if line.reply_to is not None and not line.notice:
            if not first:
                text.append("\n")
            text.append_text(quote_text(room.lines.get(line.reply_to)))
            first = False
        if not first:
            text.append("\n")
        text.append_text(line_text(line))
        first = False
    return text


def room_label(state: ChatState, room: RoomView, position: int) -> Text:
    marker = ">" if room.name == state.current else " "
    label = Text(f"{marker}{position} {terminal_safe(room.name)}")
    if room.unread:
        count = f"{room.unread}+" if room.unread_capped else str(room.unread)
        label.append(f" ({count})", style="bold yellow")
    if room.highlighted and room.name != state.current:
        label.append(f" {HIGHLIGHT_MARK}", style=HIGHLIGHT_STYLE)
    return label


def status_line(
    user: str, client: ChatClient, now_monotonic_s: float, given_up: str | None = None
) -> str:
    """The bottom line: who, where, and when not connected, why and when it retries."""
    if client.connected:
        rtt_s = client.round_trip_s
        rtt = "" if rtt_s is None else f" · rtt {rtt_s * 1000:.1f} ms"
        return terminal_safe(f"{user} @ {client.node} ({client.address}) · connected{rtt}")
    attempts = client.attempts
    if given_up is not None:  # unauthorized, a certificate nobody trusts: retrying is no use
        return terminal_safe(f"{user} · not connected: {given_up} · not retrying")
    reason, retry_in_s = attempts.reason(), attempts.retry_in_s(now_monotonic_s)
    if not reason:
        return terminal_safe(f"{user} · connecting…")
    if retry_in_s is None:
        retry = ""
    elif retry_in_s <= 0:
        retry = " · trying again now"
    else:  # tenths below a second: a test's or a fast backoff's wait is not "0s"
        retry = f" · retrying in {retry_in_s:.{1 if retry_in_s < 1 else 0}f}s"
    return terminal_safe(f"{user} · not connected: {reason}{retry}")
