"""`meshchat room`: create a room and change or show its state (docs/rooms.md)."""

import argparse
import json

import msgspec

from mesh.cli.chat import room_name, write_line
from mesh.cli.client_options import add_client_options, open_client, user_name
from mesh.cli.help_format import examples
from mesh.wire.display_text import json_safe, terminal_safe
from mesh.wire.protocol import RoomInfo, RoomOp

POLICY_CHOICES = ("open", "invite", "read_only")
ROLE_CHOICES = ("owner", "moderator", "member")
# Subcommands about one user, and the state event each one is.
USER_OPS: dict[str, RoomOp] = {"invite": "invite", "kick": "kick", "ban": "ban", "unban": "unban"}
POLICY_HELP = "open: anyone; invite: the invited; read_only: anyone reads, moderators post"


def add_room_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    room = commands.add_parser(
        "room",
        help="create a room; show or change its state",
        epilog=examples(
            "meshchat room create club --policy invite",
            "meshchat room invite club bob",
            "meshchat room show club --json",
        ),
    )
    actions = room.add_subparsers(
        dest="room_command", required=True, metavar="ACTION", help="what to do to the room"
    )

    create = actions.add_parser(
        "create",
        help="create a room, which you then own",
        epilog=examples(
            "meshchat room create club", "meshchat room create news --policy read_only"
        ),
    )
    _add_room(create)
    create.add_argument("--policy", choices=POLICY_CHOICES, default="open", help=POLICY_HELP)
    for name, op in USER_OPS.items():
        about = actions.add_parser(
            name,
            help=f"{op} a user",
            epilog=examples(
                f"meshchat room {name} club bob", f"meshchat room {name} club bob --json"
            ),
        )
        _add_room(about)
        about.add_argument("member", metavar="USER", type=user_name, help=f"the user to {op}")
    role = actions.add_parser(
        "role",
        help="give a user a role",
        epilog=examples(
            "meshchat room role club bob moderator", "meshchat room role club bob member"
        ),
    )
    _add_room(role)
    role.add_argument("member", metavar="USER", type=user_name, help="the user")
    role.add_argument("role", choices=ROLE_CHOICES, help="their role from now on")
    policy = actions.add_parser(
        "policy",
        help="set who may join and post",
        epilog=examples("meshchat room policy club invite", "meshchat room policy news read_only"),
    )
    _add_room(policy)
    policy.add_argument("policy", choices=POLICY_CHOICES, help=POLICY_HELP)
    topic = actions.add_parser(
        "topic",
        help="set the topic",
        epilog=examples(
            "meshchat room topic club 'Fridays at 6'",
            "meshchat room topic club 'new members: say hi' --user ann",
        ),
    )
    _add_room(topic)
    topic.add_argument("text", help="the new topic")
    show = actions.add_parser(
        "show",
        help="the room's policy, topic, roles, members and bans",
        epilog=examples("meshchat room show club", "meshchat room show club --json | jq .roles"),
    )
    _add_room(show)
    for parser in (create, role, policy, topic, show, *(actions.choices[n] for n in USER_OPS)):
        add_client_options(parser)
        parser.add_argument("--json", action="store_true", help="print the state as JSON")


def _add_room(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("room", type=room_name, help="the room's name")


def format_room(info: RoomInfo, as_json: bool) -> str:
    if as_json:
        document = msgspec.to_builtins(info)
        for tag_or_id in ("type", "request_id"):
            document.pop(tag_or_id, None)
        return json_safe(json.dumps(document, ensure_ascii=False, separators=(",", ":")))
    roles = ", ".join(f"{user} ({role})" for user, role in info.roles.items()) or "-"
    lines = [
        f"room      {info.room}",
        f"owner     {info.created_by or '- (nobody created it: open to all)'}",
        f"policy    {info.policy}",
        f"topic     {info.topic or '-'}",
        f"roles     {roles}",
        f"invited   {', '.join(info.invited) or '-'}",
        f"banned    {', '.join(info.banned) or '-'}",
    ]
    return terminal_safe("\n".join(lines))


async def run_room(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        action = args.room_command
        if action == "show":
            info = await client.show_room(args.room)
        elif action == "create":
            info = await client.change_room(args.room, "create", value=args.policy)
        elif action in USER_OPS:
            info = await client.change_room(args.room, USER_OPS[action], user=args.member)
        elif action == "role":
            info = await client.change_room(
                args.room, "set_role", user=args.member, value=args.role
            )
        elif action == "policy":
            info = await client.change_room(args.room, "set_policy", value=args.policy)
        else:
            info = await client.change_room(args.room, "set_topic", value=args.text)
        write_line(format_room(info, args.json))
    return 0
