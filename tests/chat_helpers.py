"""Helpers for tests that chat with real nodes through the client library."""

import asyncio

from mesh.client.chat_client import ChatClient, ClientEvent, ClientSettings
from mesh.client.connection import NodeError, parse_servers
from mesh.wire.protocol import Message, MessageEvent
from tests.processes import NodeProcess

# Quick to notice a dead node, patient enough for a restart.
TEST_SETTINGS = ClientSettings(
    client_name="meshchat-test",
    request_timeout_s=20.0,
    keepalive_interval_s=0.5,
    keepalive_timeout_s=1.0,
    backoff_max_s=0.5,
)


def client_for(*nodes: NodeProcess, user: str, token: str | None = None) -> ChatClient:
    servers = parse_servers(",".join(node.client_address for node in nodes))
    return ChatClient(servers, token=token or user, settings=TEST_SETTINGS)


async def next_messages(client: ChatClient, count: int, timeout_s: float = 10.0) -> list[Message]:
    """The next `count` messages from a client's events (other events are skipped)."""
    messages: list[Message] = []

    async def gather() -> None:
        async for event in client.events():
            if isinstance(event, MessageEvent):
                messages.append(event.message)
                if len(messages) == count:
                    return

    try:
        async with asyncio.timeout(timeout_s):
            await gather()
    except TimeoutError:
        raise AssertionError(f"got {len(messages)} of {count} messages: {messages[-3:]}") from None
    return messages


async def next_event(client: ChatClient, kind: type, timeout_s: float = 5.0) -> ClientEvent:
    async with asyncio.timeout(timeout_s):
        async for event in client.events():
            if isinstance(event, kind):
                return event
    raise AssertionError("events ended")


async def wait_serving(*nodes: NodeProcess, room: str = "lobby", timeout_s: float = 10.0) -> None:
    """Until each node serves rooms: alive in its peers' eyes is not enough, a node joins
    a moment after it first hears the mesh (the join settle)."""
    for node in nodes:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    async with client_for(node, user="prober") as prober:
                        await prober.history(room, limit=1)
                        break
                except NodeError as error:
                    if error.code != "unavailable":
                        raise
                await asyncio.sleep(0.1)
