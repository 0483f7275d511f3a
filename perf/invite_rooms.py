"""The rooms of the `meshchat-invite` target: invite-only, every sender invited, so that
a run measures what checking the room's state costs senders who may post."""

import asyncio

from mesh.client.chat_client import ChatClient, ClientSettings
from mesh.client.connection import parse_servers
from perf.workload import Workload

OWNER = "perf-owner"


def prepare_invite_rooms(workload: Workload, endpoints: list[str]) -> None:
    asyncio.run(_prepare(workload, endpoints))


async def _prepare(workload: Workload, endpoints: list[str]) -> None:
    settings = ClientSettings(client_name="meshchat-perf-setup")
    async with ChatClient(
        parse_servers(",".join(endpoints)), token=OWNER, settings=settings
    ) as owner:
        for room in sorted({workload.room_of(client) for client in range(workload.clients)}):
            await owner.change_room(room, "create", value="invite")
        for client in range(workload.clients):
            await owner.change_room(workload.room_of(client), "invite", user=f"perf{client}")
