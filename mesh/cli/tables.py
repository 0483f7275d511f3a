"""What `status`, `where` and `history` print: on a terminal, aligned tables with colour
(none under NO_COLOR); piped, plain space-aligned lines whose layout scripts rely on.

Text from the mesh goes into tables as rich `Text`, never as markup: a message body that
reads "[red]" is shown as written, after display_text has escaped its control characters.
"""

import datetime
import sys
import zlib
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mesh.wire.display_text import terminal_safe
from mesh.wire.protocol import Message, Placement, StatusReply

STATE_STYLES = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
# Each sender keeps one colour in every listing: picked by a stable hash of the name.
SENDER_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")


def terminal_console() -> Console | None:
    """A console on stdout when it is a terminal, else None (piped: plain lines).
    Rich drops the colours, and keeps the table, when NO_COLOR is set."""
    if not sys.stdout.isatty():
        return None
    return Console(file=sys.stdout, highlight=False, emoji=False)


def _write(lines: Sequence[str]) -> None:
    for line in lines:
        sys.stdout.write(line + "\n")


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _heard(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _oldest(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


def status_lines(reply: StatusReply) -> list[str]:
    lines = [
        f"node {reply.node} sees {len(reply.members)} member(s)",
        f"{'ID':<12} {'ADDRESS':<22} {'STATE':<8} {'INCARNATION':>14} {'HEARD':>8} "
        f"{'DROPPED':>8} {'HINTS':>7} {'OLDEST':>8}",
    ]
    for member in reply.members:
        heard, oldest = _heard(member.last_heard_s), _oldest(member.oldest_hint_s)
        lines.append(
            f"{member.id:<12} {member.address:<22} {member.state:<8} "
            f"{member.incarnation:>14} {heard:>8} {member.dropped:>8} "
            f"{member.hints:>7} {oldest:>8}"
        )
    return lines


def status_table(reply: StatusReply) -> Table:
    table = Table()
    table.add_column("ID", style="bold")
    table.add_column("ADDRESS")
    table.add_column("STATE")
    for heading in ("INCARNATION", "HEARD", "DROPPED", "HINTS", "OLDEST"):
        table.add_column(heading, justify="right")
    for member in reply.members:
        table.add_row(
            Text(member.id),
            Text(member.address),
            _state(member.state),
            str(member.incarnation),
            _heard(member.last_heard_s),
            Text(str(member.dropped), style="red" if member.dropped else ""),
            Text(str(member.hints), style="yellow" if member.hints else ""),
            _oldest(member.oldest_hint_s),
        )
    return table


def print_status(reply: StatusReply) -> None:
    console = terminal_console()
    if console is None:
        _write(status_lines(reply))
    else:
        console.print(Text(status_lines(reply)[0], style="bold"))
        console.print(status_table(reply))


def _placement_title(reply: Placement) -> str:
    return (
        f"room {reply.room}: {len(reply.replicas)} of {reply.replicas_wanted} replicas, "
        f"coordinator {reply.coordinator or 'none alive'}"
    )


def where_lines(reply: Placement) -> list[str]:
    lines = [_placement_title(reply)]
    for position, replica in enumerate(reply.replicas, start=1):
        lines.append(f"  {position}. {replica.id:<12} {replica.state}")
    return lines


def where_table(reply: Placement) -> Table:
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("NODE", style="bold")
    table.add_column("STATE")
    table.add_column("ROLE")
    for position, replica in enumerate(reply.replicas, start=1):
        role = "coordinator" if replica.id == reply.coordinator else "replica"
        table.add_row(str(position), Text(replica.id), _state(replica.state), role)
    return table


def print_where(reply: Placement) -> None:
    console = terminal_console()
    if console is None:
        _write(where_lines(reply))
    else:
        console.print(Text(_placement_title(reply), style="bold"))
        console.print(where_table(reply))


def message_time(message: Message) -> str:
    moment = datetime.datetime.fromtimestamp(message.time_ms / 1000, tz=datetime.UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def shown_body(message: Message) -> str:
    """A message's body for a terminal, escaped, with its edit, deletion and reactions."""
    if message.deleted is not None:
        return f"(deleted by {terminal_safe(message.deleted.by)})"
    text = terminal_safe(message.body)
    if message.edited_at_ms is not None:
        text += " (edited)"
    if message.reactions:
        counts = ", ".join(
            f"{terminal_safe(key)} {len(users)}" for key, users in message.reactions.items()
        )
        text += f" [{counts}]"
    return text


def sender_style(sender: str) -> str:
    return SENDER_STYLES[zlib.crc32(sender.encode()) % len(SENDER_STYLES)]


def history_table(messages: Sequence[Message]) -> Table:
    table = Table()
    table.add_column("TIME (UTC)", style="dim", no_wrap=True)
    table.add_column("SENDER", no_wrap=True)
    table.add_column("MESSAGE", overflow="fold")
    for message in messages:
        style = "dim italic" if message.deleted is not None else ""
        table.add_row(
            message_time(message),
            Text(terminal_safe(message.sender), style=sender_style(message.sender)),
            Text(shown_body(message), style=style),
        )
    return table
