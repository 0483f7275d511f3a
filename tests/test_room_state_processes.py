"""Room state across a real 3-node mesh: who may join, read, post and moderate, by role
and policy, through TCP and REST; a kicked user leaves the live stream at once."""

import asyncio
import time

import httpx
import pytest

from mesh.client.connection import NodeError
from mesh.wire.errors import ErrorCode
from mesh.wire.protocol import MessageEvent, RoomStateEvent
from tests.chat_helpers import client_for
from tests.processes import NodeProcess, run_async

pytestmark = pytest.mark.processes


def test_smoke(mesh: dict[str, NodeProcess]) -> None:
    async def scenario() -> None:
        ann = client_for(mesh["n1"], user="ann")
        bob = client_for(mesh["n2"], user="bob")
        async with ann, bob:
            info = await ann.change_room("club", "create", value="invite")
            assert info.created_by == "ann" and info.policy == "invite"
            with pytest.raises(NodeError) as refused:
                await bob.join("club")
            assert refused.value.code == ErrorCode.FORBIDDEN
            with pytest.raises(NodeError) as refused:
                await bob.send("club", "let me in")
            assert refused.value.code == ErrorCode.FORBIDDEN
            await ann.change_room("club", "invite", user="bob")
            await bob.join("club")
            await bob.send("club", "thanks")
            shown = await bob.show_room("club")
            assert shown.invited == ["bob"], shown

    run_async(scenario())
