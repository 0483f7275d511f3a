"""One connection per simulated user, the same three calls for every target.

`publish` returns when the target has taken the message: for meshchat when it is on disk
(acknowledged), for Redis when PUBLISH answered, for NATS when the client library has
buffered it (core NATS has no acknowledgement; its delivery latency is the fair figure).
"""

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Protocol

import nats
import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg as NatsMessage

from mesh.client.chat_client import ChatClient, ClientSettings
from mesh.client.connection import parse_servers
from mesh.wire.protocol import MessageEvent, RelationEvent
from perf.workload import MESHCHAT_TARGETS, RELATION_SHARE, reaction_key, reaction_payload

OnPayload = Callable[[str], None]
REDIS_PUBLISH_CONNECTIONS = 32


class Driver(Protocol):
    async def connect(self) -> None: ...
    async def subscribe(self, room: str, on_payload: OnPayload) -> None: ...
    async def publish(self, room: str, body: str) -> None: ...
    async def close(self) -> None: ...


class MeshchatDriver:
    def __init__(
        self,
        endpoints: list[str],
        user: str,
        ssl_context: ssl.SSLContext | None = None,
        *,
        relation_share: float = 0.0,
    ) -> None:
        settings = ClientSettings(
            client_name="meshchat-perf",
            request_timeout_s=60.0,
            events_max=100_000,
            backoff_max_s=0.5,
        )
        self.client = ChatClient(
            parse_servers(",".join(endpoints)),
            token=user,
            settings=settings,
            ssl_context=ssl_context,
        )
        self._reader: asyncio.Task[None] | None = None
        # Every 1/relation_share-th write edits the previous message (its payload the new
        # body) or reacts to it (its payload the key), in turn.
        self._relation_share = relation_share
        self._relation_credit = 0.0
        self._relations = 0
        self._last_sent: str | None = None

    async def connect(self) -> None:
        await self.client.connect(timeout_s=30.0)

    async def subscribe(self, room: str, on_payload: OnPayload) -> None:
        await self.client.join(room)

        async def read() -> None:
            async for event in self.client.events():
                if isinstance(event, MessageEvent):
                    on_payload(event.message.body)
                elif isinstance(event, RelationEvent) and event.kind == "edit":
                    on_payload(event.body)
                elif isinstance(event, RelationEvent) and event.kind == "reaction":
                    on_payload(_reaction_text(event))

        self._reader = asyncio.create_task(read())

    async def publish(self, room: str, body: str) -> None:
        self._relation_credit += self._relation_share
        if self._relation_credit >= 1.0 and self._last_sent is not None:
            self._relation_credit -= 1.0
            self._relations += 1
            if self._relations % 2:
                await self.client.edit(room, self._last_sent, body)
            else:
                await self.client.react(room, self._last_sent, reaction_key(body))
            return
        self._last_sent = (await self.client.send(room, body)).id

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.client.close()


class RedisDriver:
    def __init__(self, endpoint: str) -> None:
        host, port = endpoint.rsplit(":", 1)
        # Many sends in flight share a few connections (waiting for one) rather than each
        # opening its own: redis-py's pool refuses past its limit.
        pool = aioredis.BlockingConnectionPool(
            host=host, port=int(port), max_connections=REDIS_PUBLISH_CONNECTIONS, timeout=None
        )
        self.publisher = aioredis.Redis.from_pool(pool)  # closing it closes the pool
        self.subscriber = aioredis.Redis(host=host, port=int(port))
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.publisher.ping()

    async def subscribe(self, room: str, on_payload: OnPayload) -> None:
        pubsub = self.subscriber.pubsub()
        await pubsub.subscribe(room)

        async def read() -> None:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    on_payload(message["data"].decode())

        self._reader = asyncio.create_task(read())

    async def publish(self, room: str, body: str) -> None:
        await self.publisher.publish(room, body)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.publisher.aclose()
        await self.subscriber.aclose()


class NatsDriver:
    def __init__(self, endpoint: str) -> None:
        self.url = f"nats://{endpoint}"
        self.connection: NatsClient | None = None

    async def connect(self) -> None:
        self.connection = await nats.connect(self.url, max_reconnect_attempts=5)

    async def subscribe(self, room: str, on_payload: OnPayload) -> None:
        assert self.connection is not None

        async def received(message: NatsMessage) -> None:
            on_payload(message.data.decode())

        await self.connection.subscribe(room, cb=received)
        await self.connection.flush()

    async def publish(self, room: str, body: str) -> None:
        assert self.connection is not None
        await self.connection.publish(room, body.encode())

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.drain()


def _reaction_text(event: RelationEvent) -> str:
    """What a harness reaction stands for; "" (counted as foreign) for any other."""
    try:
        return reaction_payload(event.sender, event.key)
    except ValueError:
        return ""


def driver_for(
    target: str, endpoints: list[str], client: int, ssl_context: ssl.SSLContext | None = None
) -> Driver:
    """`ssl_context`: meshchat clients connect on TLS with it (None: plaintext)."""
    # Spread users over the endpoints; meshchat clients keep the rest for failover.
    first = client % len(endpoints)
    ordered = endpoints[first:] + endpoints[:first]
    if target in MESHCHAT_TARGETS:
        share = RELATION_SHARE if target == "meshchat-relations" else 0.0
        return MeshchatDriver(ordered, f"perf{client}", ssl_context, relation_share=share)
    if target == "redis":
        return RedisDriver(ordered[0])
    return NatsDriver(ordered[0])
