"""What the chat tool shows, as plain data: rooms, their messages, unread counts, pending sends.

The Textual app (chat_app.py) and the line mode (chat_plain.py) both render this state;
neither decides anything about it. It takes events (a message arrived, a send was
acknowledged, the user switched rooms) and the current time, and is tested without a
terminal.
"""

import enum
import re
import zlib
from dataclasses import dataclass, field

from sortedcontainers import SortedDict

from mesh.wire.display_text import terminal_safe
from mesh.wire.names import ROOM_NAME_RULE, is_room_name
from mesh.wire.protocol import Message, RelationEvent
from router.room_view import UNREAD_COUNTED_MAX
from tools.chat_moderation import MODERATION_COMMANDS
from tools.chat_relations import Changes, changes_of, fold

# Messages kept per room in memory; older ones are dropped from view (history reloads them).
ROOM_MESSAGES_MAX = 5000
# How long "x is typing" shows after the last typing event.
TYPING_SHOWN_S = 4.0
ACTION_PREFIX = "/me "

USER_COLOURS = (
    "bright_cyan",
    "bright_green",
    "bright_magenta",
    "bright_yellow",
    "bright_blue",
    "bright_red",
    "cyan",
    "green",
    "magenta",
    "yellow",
    "blue",
    "red",
)


def colour_of(user: str) -> str:
    """A colour per user, the same in every session and on every machine."""
    return USER_COLOURS[zlib.crc32(user.encode()) % len(USER_COLOURS)]


def pending_key(now_ms: int, client_msg_id: str) -> str:
    """A pending line's key: it sorts after every stored id ("~" > hex digits), so pending
    lines sit at the bottom, and it ends with the send's client message id."""
    return f"~{now_ms:016d}{client_msg_id}"


def client_msg_id_of(key: str) -> str:
    return key[PENDING_KEY_PREFIX_LENGTH:]


PENDING_KEY_PREFIX_LENGTH = 17  # "~" and 16 digits of milliseconds


class Delivery(enum.Enum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    FAILED = "failed"


@dataclass(slots=True)
class Line:
    """One line of a room's view: a message, one of our sends, or a notice."""

    key: str  # a message id; "~<client_msg_id>" for a pending send; "!<n>" for a notice
    sender: str
    time_ms: int
    body: str
    delivery: Delivery = Delivery.CONFIRMED
    error: str = ""
    notice: bool = False
    reply_to: str | None = None  # the id of the message this one answers
    changes: Changes = field(default_factory=Changes)  # edits, a delete, reactions
    highlight: bool = False  # someone else's message that names the user

    @property
    def is_action(self) -> bool:
        return self.body.startswith(ACTION_PREFIX)


@dataclass
class RoomView:
    name: str
    lines: "SortedDict[str, Line]" = field(default_factory=SortedDict)
    unread: int = 0
    unread_capped: bool = False  # the node counted more than it tells ("1000+")
    highlighted: bool = False  # a message naming the user arrived while looking elsewhere
    first_unread: str | None = None  # where the "new since you last read" line goes
    read_up_to: str | None = None  # the user's read marker, as the node keeps it
    counted_through: str | None = None  # the newest message the node's count read
    members: list[str] = field(default_factory=list)
    typing: dict[str, float] = field(default_factory=dict)  # user -> shown until
    oldest_loaded: str | None = None
    history_exhausted: bool = False


class ChatState:
    def __init__(self, user: str) -> None:
        self.user = user
        self.rooms: dict[str, RoomView] = {}
        self.current: str | None = None
        self._pending: dict[str, tuple[str, str]] = {}  # client_msg_id -> (room, line key)
        self._failed: list[tuple[str, str]] = []  # (room, line key) of failed sends, oldest first
        self._notices = 0
        self.sent_lines: list[str] = []  # what the user typed, for Up/Down recall
        # Where notices go while no room is open (a bad first /join), so none is lost.
        self.no_room = RoomView("")

    # ---- rooms ----

    def open_room(self, name: str) -> RoomView:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = RoomView(name)
        if self.current is None:
            self.current = name
        return room

    def close_room(self, name: str) -> None:
        names = list(self.rooms)
        if name not in self.rooms:
            return
        index = names.index(name)
        del self.rooms[name]
        if self.current == name:
            rest = list(self.rooms)
            self.current = rest[min(index, len(rest) - 1)] if rest else None

    def switch_to(self, name: str) -> None:
        assert name in self.rooms, name
        self.current = name
        room = self.rooms[name]
        room.unread = 0
        room.unread_capped = False
        room.highlighted = False
        # The marker stays until the user leaves the room again; it is cleared on arrival
        # elsewhere so the next visit starts fresh.

    def leave_view(self) -> None:
        """The user looks away from the current room: unread counting starts from now."""
        if self.current is not None:
            self.rooms[self.current].first_unread = None

    def step(self, offset: int) -> str | None:
        names = list(self.rooms)
        if not names:
            return None
        index = names.index(self.current) if self.current in names else 0
        target = names[(index + offset) % len(names)]
        self.leave_view()
        self.switch_to(target)
        return target

    def jump(self, position: int) -> str | None:
        names = list(self.rooms)
        if not 1 <= position <= len(names):
            return None
        self.leave_view()
        self.switch_to(names[position - 1])
        return names[position - 1]

    # ---- messages ----

    def add_message(self, message: Message) -> bool:
        """A stored message arrived (live, replayed or from history); False if already shown."""
        room = self.open_room(message.room)
        if message.id in room.lines:
            return False
        pending = (
            self._pending.pop(message.client_msg_id, None) if message.sender == self.user else None
        )
        if pending is not None:
            room.lines.pop(pending[1], None)
        line = room.lines[message.id] = self._line_of(message)
        room.typing.pop(message.sender, None)  # what they typed is here: no longer typing
        if message.sender != self.user and message.room != self.current:
            if room.counted_through is None or message.id > room.counted_through:
                self._count_unread(room, 1)  # the node's count did not read it yet
            after_marker = room.read_up_to is None or message.id > room.read_up_to
            if after_marker and (room.first_unread is None or message.id < room.first_unread):
                room.first_unread = message.id
            room.highlighted = room.highlighted or (after_marker and line.highlight)
        if room.oldest_loaded is None or message.id < room.oldest_loaded:
            room.oldest_loaded = message.id
        self._trim(room)
        return True

    def apply_read_marker(
        self, room_name: str, read_up_to: str, unread: int, capped: bool, through: str | None
    ) -> None:
        """The node told where the user's marker is (on joining, after a mark, or from
        another device): its count, and the "new since you last read" line after it.
        Messages arriving later count on top only if the node's count did not read them."""
        room = self.open_room(room_name)
        if room.read_up_to is not None and read_up_to < room.read_up_to:
            return  # an older word than one already heard: a marker never moves back
        room.read_up_to = read_up_to
        room.counted_through = max(through or "", room.counted_through or "") or None
        if room_name != self.current:
            # Messages already here that the count did not read still count.
            later = room.lines.irange(minimum=room.counted_through, inclusive=(False, False))
            since = (
                0
                if room.counted_through is None
                else sum(_counts_as_unread(room.lines[key], self.user) for key in later)
            )
            room.unread, room.unread_capped = unread, capped
            self._count_unread(room, since)
        self._place_first_unread(room)

    def _count_unread(self, room: RoomView, more: int) -> None:
        """Exact up to UNREAD_COUNTED_MAX, then "1000+", as the node counts."""
        total = room.unread + more
        if total > UNREAD_COUNTED_MAX:
            total, room.unread_capped = UNREAD_COUNTED_MAX, True
        room.unread = total

    def _place_first_unread(self, room: RoomView) -> None:
        """The line goes before the first message after the marker that others sent."""
        if room.read_up_to is None or (self.current == room.name and room.first_unread):
            return  # a room on screen keeps its line until the user looks away
        room.first_unread = next(
            (
                key
                for key in room.lines.irange(minimum=room.read_up_to, inclusive=(False, False))
                if _counts_as_unread(room.lines[key], self.user)
            ),
            None,
        )

    def add_history(self, room_name: str, messages: list[Message], more: bool) -> int:
        """An older page arrived; returns how many lines it added above the view."""
        room = self.open_room(room_name)
        added = 0
        for message in messages:
            if message.id not in room.lines:
                room.lines[message.id] = self._line_of(message)
                added += 1
            if room.oldest_loaded is None or message.id < room.oldest_loaded:
                room.oldest_loaded = message.id
        if not more:
            room.history_exhausted = True
        if room.read_up_to is not None and room.first_unread is None:
            self._place_first_unread(room)
        return added

    def apply_relation(self, event: RelationEvent) -> bool:
        """An edit, delete or reaction arrived; True if a line on screen changed."""
        room = self.rooms.get(event.room)
        line = None if room is None else room.lines.get(event.target)
        if line is None or line.notice:
            return False
        body = fold(line.changes, line.sender, event)
        if body is not None:
            line.body = body
        return True

    def quoted(self, room_name: str, message_id: str) -> Line | None:
        room = self.rooms.get(room_name)
        line: Line | None = None if room is None else room.lines.get(message_id)
        return line

    def last_message(self, room_name: str, *, own: bool = False) -> Line | None:
        """The newest stored message on screen (ours, with `own`) that is not deleted."""
        room = self.rooms.get(room_name)
        if room is None:
            return None
        for key in reversed(room.lines.keys()):
            line: Line = room.lines[key]
            stored = not key.startswith("~") and not line.notice
            if stored and line.changes.deleted_by is None and (not own or line.sender == self.user):
                return line
        return None

    def add_pending(
        self,
        room_name: str,
        client_msg_id: str,
        body: str,
        now_ms: int,
        reply_to: str | None = None,
        *,
        recalled: bool = True,
    ) -> None:
        """`recalled`: the line joins what Up recalls (a retry is there already)."""
        room = self.open_room(room_name)
        key = pending_key(now_ms, client_msg_id)
        room.lines[key] = Line(key, self.user, now_ms, body, Delivery.PENDING, reply_to=reply_to)
        self._pending[client_msg_id] = (room_name, key)
        if recalled:
            self.sent_lines.append(body)

    def confirm(self, client_msg_id: str, message: Message) -> None:
        """Our send was acknowledged: its line becomes the stored message."""
        self.add_message(message)
        self._pending.pop(client_msg_id, None)

    def fail(self, client_msg_id: str, error: str) -> None:
        # Kept pending: a send that timed out may be stored yet, and its copy then
        # arriving replaces the failed line.
        pending = self._pending.get(client_msg_id)
        if pending is None:
            return
        room_name, key = pending
        line = self.rooms[room_name].lines.get(key) if room_name in self.rooms else None
        if line is not None:
            line.delivery = Delivery.FAILED
            line.error = error
            self._failed.append(pending)

    def take_last_failed(self) -> tuple[str, Line] | None:
        """The newest failed send still on screen, taken off it (for /retry): its room
        and line; None if there is none."""
        while self._failed:
            room_name, key = self._failed.pop()
            room = self.rooms.get(room_name)
            line = None if room is None else room.lines.get(key)
            if room is not None and line is not None and line.delivery is Delivery.FAILED:
                del room.lines[key]
                self._pending.pop(client_msg_id_of(key), None)
                return room_name, line
        return None

    def notice(self, room_name: str | None, text: str, now_ms: int) -> None:
        """A line from the tool itself (joins, errors, command output)."""
        target = room_name or self.current
        room = self.no_room if target is None else self.open_room(target)
        self._notices += 1
        key = self._notice_key(room)
        room.lines[key] = Line(key, "", now_ms, text, notice=True)
        self._trim(room)

    def _notice_key(self, room: RoomView) -> str:
        # Right after the newest stored message, before pending sends.
        stored = [k for k in reversed(room.lines.keys()) if not k.startswith("~")]
        base = stored[0] if stored else ""
        return f"{base}!{self._notices:08d}"

    def _trim(self, room: RoomView) -> None:
        while len(room.lines) > ROOM_MESSAGES_MAX:
            room.lines.popitem(0)
            room.history_exhausted = False
        if room.lines:
            first = room.lines.keys()[0]
            room.oldest_loaded = first if not first.startswith(("~", "!")) else room.oldest_loaded

    def _line_of(self, message: Message) -> Line:
        return Line(
            message.id,
            message.sender,
            message.time_ms,
            message.body,
            reply_to=message.reply_to,
            changes=changes_of(message),
            highlight=message.sender != self.user and mentions(message.body, self.user),
        )

    # ---- presence and typing ----

    def known_users(self) -> list[str]:
        """Everyone in any of our rooms but us, for completing /msg."""
        members = {member for room in self.rooms.values() for member in room.members}
        return sorted(members - {self.user})

    def set_members(self, room_name: str, members: list[str]) -> None:
        self.open_room(room_name).members = sorted(set(members))

    def presence(self, room_name: str, user: str, joined: bool, now_ms: int) -> None:
        room = self.open_room(room_name)
        members = set(room.members)
        (members.add if joined else members.discard)(user)
        room.members = sorted(members)
        room.typing.pop(user, None)
        self.notice(room_name, f"{user} {'joined' if joined else 'left'}", now_ms)

    def typing(self, room_name: str, user: str, now_s: float) -> None:
        if user != self.user:
            self.open_room(room_name).typing[user] = now_s + TYPING_SHOWN_S

    def typing_line(self, now_s: float) -> str:
        if self.current is None:
            return ""
        room = self.rooms[self.current]
        typing = room.typing.items()
        typists = sorted(terminal_safe(user) for user, until in typing if until > now_s)
        if not typists:
            return ""
        if len(typists) == 1:
            return f"{typists[0]} is typing…"
        if len(typists) <= 3:
            return f"{', '.join(typists[:-1])} and {typists[-1]} are typing…"
        return "several people are typing…"

    # ---- completion ----

    def complete(self, text: str) -> str:
        """Tab: complete the last word of `text` as a command, a room or a member."""
        head, _, word = text.rpartition(" ")
        if not word:
            return text
        if not head and word.startswith("/"):
            candidates = [f"/{name}" for name in COMMANDS]
        elif head in ("/join", "/leave"):
            candidates = list(self.rooms)
        elif head == "/msg":
            candidates = self.known_users()
        else:
            room = self.rooms.get(self.current or "")
            candidates = room.members if room else []
        matches = sorted(c for c in candidates if c.startswith(word) and c != word)
        if not matches:
            return text
        completed = _common_prefix(matches) if len(matches) > 1 else matches[0]
        suffix = " " if len(matches) == 1 else ""
        if not head and len(matches) == 1 and not word.startswith("/"):
            suffix = ": "  # a name at the start of a line addresses that person
        return (f"{head} " if head else "") + completed + suffix


def _common_prefix(words: list[str]) -> str:
    first, last = min(words), max(words)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def _counts_as_unread(line: Line, user: str) -> bool:
    stored = not line.key.startswith("~") and not line.notice
    return stored and line.sender != user and line.changes.deleted_by is None


def mentions(body: str, user: str) -> bool:
    """`body` names `user` as a word, in any case: "ann:", "@Ann", not "annex"."""
    pattern = rf"(?<!\w){re.escape(user)}(?!\w)"
    return re.search(pattern, body, re.IGNORECASE) is not None


COMMANDS = {
    "join": "/join ROOM: enter a room",
    "leave": "/leave [ROOM]: leave this or another room",
    "me": "/me TEXT: say what you are doing",
    "reply": "/reply TEXT: answer the last message",
    "edit": "/edit TEXT: give your last message this body",
    "delete": "/delete: take back your last message",
    "react": "/react KEY [--remove]: react to the last message (an emoji, +1, ...)",
    "who": "/who: who is in this room",
    "history": "/history N: load N older messages",
    "rooms": "/rooms: your rooms",
    "msg": "/msg USER TEXT: say TEXT to USER alone, in your direct room",
    "retry": "/retry: send again the last line that was not sent",
    **MODERATION_COMMANDS,
    "help": "/help: this list",
    "quit": "/quit: leave the chat",
}


KEYS_HELP = (
    "Tab completes; Up/Down recall; Ctrl-N/Ctrl-P, Alt-Left/Right or Alt-1..9 switch rooms; "
    "PageUp/PageDown, Home/End (on an empty line) scroll; F1 the keys; Esc closes it"
)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    argument: str


def room_name_problem(name: str) -> str | None:
    """Why `name` is not a room name, in a line for the screen; None when it is one."""
    if is_room_name(name):
        return None
    return f"not a room name: {terminal_safe(name)!r} (a room name is {ROOM_NAME_RULE})"


def parse_command(text: str) -> Command | None:
    """'/join lobby' as Command('join', 'lobby'); None for a plain message."""
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, argument = text[1:].partition(" ")
    return Command(name.lower(), argument.strip())
