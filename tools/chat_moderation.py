"""The chat tool's moderation commands and the notices of a room's state changes.

/invite, /kick, /ban, /unban, /op, /topic and /mode become room changes of the current
room (docs/rooms.md has who may make which); every change, ours or anyone's, shows as a
notice when its `room_state` event arrives.
"""

from dataclasses import dataclass
from typing import Final

from mesh.wire.names import is_user_name
from mesh.wire.protocol import RoomOp, RoomStateEvent

MODERATION_COMMANDS: Final = {
    "invite": "/invite USER: let a user into this room",
    "kick": "/kick USER: take a user out of this room",
    "ban": "/ban USER: keep a user out of this room",
    "unban": "/unban USER: lift a user's ban",
    "op": "/op USER [owner|moderator|member]: give a user a role (default moderator)",
    "topic": "/topic TEXT: set this room's topic",
    "mode": "/mode open|invite|read_only: who may join and post here",
}
_USER_OPS: Final[dict[str, RoomOp]] = {
    "invite": "invite",
    "kick": "kick",
    "ban": "ban",
    "unban": "unban",
}
_ROLES: Final = ("owner", "moderator", "member")
_POLICIES: Final = ("open", "invite", "read_only")


@dataclass(frozen=True, slots=True)
class RoomChange:
    op: RoomOp
    user: str | None = None
    value: str = ""


def parse_moderation(name: str, argument: str) -> RoomChange | str:
    """The change a command asks for, or what is wrong with it (a line to show)."""
    words = argument.split()
    if name in _USER_OPS or name == "op":
        if not words or not is_user_name(words[0]):
            return MODERATION_COMMANDS[name]
        if name != "op":
            return RoomChange(_USER_OPS[name], words[0])
        role = words[1] if len(words) > 1 else "moderator"
        if role not in _ROLES:
            return MODERATION_COMMANDS[name]
        return RoomChange("set_role", words[0], role)
    if name == "topic":
        return RoomChange("set_topic", value=argument)
    if len(words) != 1 or words[0] not in _POLICIES:
        return MODERATION_COMMANDS[name]
    return RoomChange("set_policy", value=words[0])


def describe(event: RoomStateEvent) -> str:
    """A state change as a line of the room."""
    who, user, value = event.sender, event.user or "", event.value
    match event.op:
        case "create":
            return f"{who} created {event.room} ({value or 'open'})"
        case "set_policy":
            return f"{who} made {event.room} {value.replace('_', '-')}"
        case "set_role":
            return f"{who} made {user} {value}"
        case "set_topic":
            return f"{who} set the topic: {value}" if value else f"{who} cleared the topic"
        case "unban":
            return f"{who} lifted {user}'s ban"
        case _:
            verb = {"invite": "invited", "kick": "kicked", "ban": "banned"}[event.op]
            return f"{who} {verb} {user}"
