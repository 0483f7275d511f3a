"""The asyncio client library: a list of nodes, failover, gap-free resume, safe retries.

    async with ChatClient(parse_servers("127.0.0.1:7100,127.0.0.1:7101"), token="ann") as chat:
        await chat.join("lobby")
        await chat.send("lobby", "hello")
        async for event in chat.events():
            ...

One task owns the connection. When it drops (or a node stops answering pings), the client
connects to the next node in its list, with backoff once all were tried; rejoins every
room from the last message id it saw there; and writes every request still unanswered
again, in its original order. Sends carry a client message id, so a send retried through
any node is stored once. Messages are de-duplicated by id before they reach `events()`,
so the caller sees each message once and none of its sends twice.
"""

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from mesh.client.connection import NodeError, NodeFrames, open_stream
from mesh.client.reach import CLOSED_AT_HELLO, UnreachableError, read_first_frame, reason_in_words
from mesh.client.rejoin import ConnectAttempts, RejoinRefused, refused_rejoin
from mesh.client.room_cursor import RoomCursor
from mesh.client.send_window import SendWindow
from mesh.client.unread_book import UnreadBook
from mesh.wire import protocol
from mesh.wire.bodies import body_problem
from mesh.wire.errors import ErrorCode
from mesh.wire.framing import encode_frame
from mesh.wire.message_keys import new_client_msg_id
from mesh.wire.pacing import TokenBucket
from mesh.wire.protocol import (
    Delete,
    Edit,
    ErrorReply,
    GetUnread,
    Hello,
    History,
    HistoryPage,
    Join,
    Joined,
    LeaveRoom,
    ListRooms,
    MarkRead,
    Members,
    MessageEvent,
    Ping,
    PresenceEvent,
    React,
    ReadMarkerEvent,
    RelationEvent,
    RoomStateEvent,
    Send,
    Sent,
    StatusReply,
    StatusRequest,
    Typing,
    TypingEvent,
    UnreadCount,
    UnreadCounts,
    Welcome,
    Who,
)
from router.message_ids import ORIGIN

log = logging.getLogger(__name__)

R = TypeVar("R")

# Errors after which connecting again is pointless: the caller must change something.
FATAL_CODES = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.UNSUPPORTED_VERSION})
# Errors a request may simply be retried after (the node says when, or we back off).
RETRYABLE_CODES = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE})
# The share of the node's announced send rate the client paces itself to, leaving room
# for the two clocks to disagree a little.
PACE_SHARE = 0.95


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    """Not from the wire: the client's own news, delivered in `events()` like the rest."""

    state: Literal["connected", "disconnected", "failed"]
    node: str | None
    address: str | None
    reason: str = ""


ClientEvent = (
    MessageEvent
    | RelationEvent
    | RoomStateEvent
    | ReadMarkerEvent
    | PresenceEvent
    | TypingEvent
    | ConnectionChanged
    | RejoinRefused
)


@dataclass(slots=True)
class _Pending:
    build: Callable[[int], protocol.ClientMessage]
    future: "asyncio.Future[protocol.NodeMessage]"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    client_name: str = "meshchat"
    connect_timeout_s: float = 3.0
    # A command line's client: if no server can be reached at the first attempt, fail at
    # once with each one's reason (UnreachableError) instead of retrying until a timeout.
    fail_fast_unreachable: bool = False
    request_timeout_s: float = 30.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    # After losing its node, a client waits a random share of this before it connects to
    # the next: the thousands of clients of a stopped node then arrive spread out.
    reconnect_spread_s: float = 0.5
    # Ping an idle connection this often; no answer within the timeout means a hung node.
    keepalive_interval_s: float = 2.0
    keepalive_timeout_s: float = 3.0
    events_max: int = 10_000


class ChatClient:
    def __init__(
        self,
        servers: list[tuple[str, int]],
        token: str,
        settings: ClientSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user_expected: str | None = None,
    ) -> None:
        """With `ssl_context`, every connection is on TLS and each node's certificate must
        name the host it is reached at; a certificate that no node passes is fatal. With
        `user_expected`, a token the node reads as another user's is fatal."""
        if not servers:
            raise ValueError("at least one server is needed")
        self.servers = list(servers)
        self.token = token
        self.user_expected = user_expected
        self.settings = settings or ClientSettings()
        self.node: str | None = None
        self.user: str | None = None
        self.address: str | None = None
        self.limits: dict[str, float] = {}
        self._send_window = SendWindow()  # within the announced send_window_max
        self.round_trip_s: float | None = None
        self.reconnects = 0
        self.attempts = ConnectAttempts()  # why we are not connected, and when we retry
        self._request_ids = itertools.count(1)
        self._rejoins: dict[int, str] = {}  # request id -> room, of the joins a reconnect sent
        self._pending: dict[int, _Pending] = {}
        self._rooms: dict[str, RoomCursor] = {}
        self._unread = UnreadBook()
        self._events: asyncio.Queue[ClientEvent] = asyncio.Queue(self.settings.events_max)
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._fatal: NodeError | ssl.SSLCertVerificationError | UnreachableError | None = None
        self._ever_connected = False
        self._first_round_failed = False  # fail-fast judges the first round only
        self.ssl_context = ssl_context
        self._closing = False
        self._next_server = 0
        self._runner: asyncio.Task[None] | None = None
        self._send_order = asyncio.Lock()
        self._send_bucket: TokenBucket | None = None
        self._jitter = random.Random()

    # ---- lifecycle ----

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self, timeout_s: float | None = None) -> None:
        """Start the connection task and wait until a node has welcomed us."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="chat-client")
        deadline = timeout_s if timeout_s is not None else self.settings.request_timeout_s
        async with asyncio.timeout(deadline):
            await self._wait_connected()

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(ConnectionError("the client was closed"))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ---- requests ----

    async def join(self, room: str, since: str | None = None) -> list[str]:
        """Enter a room; with `since`, every stored message after it arrives as events first."""
        new = room not in self._rooms
        cursor = self._rooms.setdefault(room, RoomCursor())
        cursor.advance(since)
        start = cursor.last_id
        try:
            reply = await self._request(
                lambda i: Join(request_id=i, room=room, since=start), Joined
            )
        except (NodeError, TimeoutError, ConnectionError):
            if new:  # a failed join leaves nothing to rejoin after a reconnect
                self._rooms.pop(room, None)
            raise
        # Without a cursor yet, resume from the room's newest message at the time of joining
        # (from its very start, if it was empty).
        cursor.advance(reply.head or ORIGIN)
        if cursor.floor is None:
            cursor.floor = cursor.last_id
        self._unread.note_joined(reply)
        return reply.members

    async def leave(self, room: str) -> None:
        try:
            await self._request(lambda i: LeaveRoom(request_id=i, room=room))
        except NodeError as error:
            if error.code == ErrorCode.NOT_FOUND:
                self._rooms.pop(room, None)  # not in it: nothing to rejoin either
            raise  # refused: still in the room, and rejoined after a reconnect
        except (TimeoutError, ConnectionError):
            self._rooms.pop(room, None)  # the node may have done it: never undo a leave
            raise
        self._rooms.pop(room, None)

    def in_room(self, room: str) -> bool:
        """Is `room` one this client is in (joined, and rejoined after reconnects)?"""
        return room in self._rooms

    async def send(
        self,
        room: str,
        body: str,
        client_msg_id: str | None = None,
        *,
        reply_to: str | None = None,
    ) -> Sent:
        """Store a message (answering `reply_to`, a message id); retried (same client
        message id) until acknowledged or timed out.

        Concurrent sends are written in call order, paced to the rate the node announced
        and kept within its send window, so the node stores them in that order and rarely
        has to refuse one as too fast.
        """
        self._check_body(body)
        key = client_msg_id or new_client_msg_id()
        return await self._write_event(
            lambda i: Send(request_id=i, room=room, client_msg_id=key, body=body, reply_to=reply_to)
        )

    async def edit(
        self, room: str, message_id: str, body: str, client_msg_id: str | None = None
    ) -> Sent:
        """Give one of our messages a new body (the latest edit wins everywhere)."""
        self._check_body(body, "edit")
        key = client_msg_id or new_client_msg_id()
        return await self._write_event(
            lambda i: Edit(request_id=i, room=room, client_msg_id=key, id=message_id, body=body)
        )

    async def delete(self, room: str, message_id: str, client_msg_id: str | None = None) -> Sent:
        """Take back one of our messages: its body and reactions are erased on every replica."""
        key = client_msg_id or new_client_msg_id()
        return await self._write_event(
            lambda i: Delete(request_id=i, room=room, client_msg_id=key, id=message_id)
        )

    async def react(
        self,
        room: str,
        message_id: str,
        key: str,
        *,
        remove: bool = False,
        client_msg_id: str | None = None,
    ) -> Sent:
        """Add our reaction `key` to a message, or take it back with `remove`."""
        send_key = client_msg_id or new_client_msg_id()
        return await self._write_event(
            lambda i: React(
                request_id=i,
                room=room,
                client_msg_id=send_key,
                id=message_id,
                key=key,
                remove=remove,
            )
        )

    def _check_body(self, body: str, kind: str = "message") -> None:
        """Refused here as the node would refuse it: never sent, so never resent."""
        limit = int(self.limits.get("body_bytes_max", 0)) or sys.maxsize  # before a welcome
        problem = body_problem(body, limit, kind)
        if problem is not None:
            raise NodeError(*problem)

    async def _write_event(self, build: Callable[[int], protocol.ClientMessage]) -> Sent:
        async with self._send_order:
            await self._send_window.acquire(int(self.limits.get("send_window_max", 0)))
            try:
                await self._pace()
            except BaseException:
                self._send_window.release()
                raise
            reply = self._request(build, Sent)
            # Start the request (and so write its frame) before the next send may.
            task = asyncio.ensure_future(reply)
            task.add_done_callback(lambda _: self._send_window.release())
            await asyncio.sleep(0)
        return await task

    async def _pace(self) -> None:
        rate = self.limits.get("sends_per_s")
        burst = self.limits.get("send_burst")
        if not rate or not burst:
            return
        if self._send_bucket is None or self._send_bucket.rate_per_s != rate * PACE_SHARE:
            self._send_bucket = TokenBucket(rate * PACE_SHARE, max(1.0, burst * PACE_SHARE))
        while (wait_s := self._send_bucket.take(time.monotonic())) > 0:
            await asyncio.sleep(wait_s)

    async def history(
        self, room: str, *, before: str | None = None, after: str | None = None, limit: int = 50
    ) -> HistoryPage:
        return await self._request(
            lambda i: History(request_id=i, room=room, before=before, after=after, limit=limit),
            HistoryPage,
        )

    async def mark_read(self, room: str, up_to: str | None = None) -> UnreadCount:
        """Move our read marker of a room to message `up_to`, or to its newest message;
        it never moves back. Returns the unread count after it (every device sees it)."""
        reply = await self._request(
            lambda i: MarkRead(request_id=i, room=room, up_to=up_to), UnreadCounts
        )
        for unread in reply.rooms:
            self._unread.note(unread)
        return reply.rooms[0]

    async def unread(self, room: str | None = None) -> list[UnreadCount]:
        """Unread counts of one room, or of every room we are in."""
        reply = await self._request(lambda i: GetUnread(request_id=i, room=room), UnreadCounts)
        for unread in reply.rooms:
            self._unread.note(unread)
        return reply.rooms

    def unread_of(self, room: str) -> UnreadCount | None:
        """The latest count the node told for a room (on joining, on a mark, or from
        another of our sessions moving the marker); None before any."""
        return self._unread.get(room)

    async def change_room(
        self,
        room: str,
        op: protocol.RoomOp,
        *,
        user: str | None = None,
        value: str = "",
    ) -> protocol.RoomInfo:
        """Create a room (`value`: its policy) or change its state: invite, kick, ban or
        unban `user`, give `user` a role (`value`), set the policy or the topic. Returns
        the room's state after it; a retry after a reconnect changes it once."""
        client_msg_id = f"room-{uuid.uuid4().hex}"
        return await self._request(
            lambda i: protocol.ChangeRoom(
                request_id=i, room=room, op=op, user=user, value=value, client_msg_id=client_msg_id
            ),
            protocol.RoomInfo,
        )

    async def show_room(self, room: str) -> protocol.RoomInfo:
        """A room's state: policy, topic, roles, invitations and bans."""
        reply = protocol.RoomInfo
        return await self._request(lambda i: protocol.ShowRoom(request_id=i, room=room), reply)

    async def rooms(self) -> list[str]:
        reply = await self._request(lambda i: ListRooms(request_id=i), protocol.RoomList)
        return reply.rooms

    async def who(self, room: str) -> list[str]:
        return (await self._request(lambda i: Who(request_id=i, room=room), Members)).users

    async def typing(self, room: str) -> None:
        await self._request(lambda i: Typing(request_id=i, room=room))

    async def ping(self) -> float:
        started = time.monotonic()
        await self._request(lambda i: Ping(request_id=i), protocol.Pong)
        self.round_trip_s = time.monotonic() - started
        return self.round_trip_s

    async def status(self) -> StatusReply:
        return await self._request(lambda i: StatusRequest(request_id=i), StatusReply)

    def last_seen(self, room: str) -> str | None:
        cursor = self._rooms.get(room)
        return None if cursor is None else cursor.last_id

    async def events(self) -> AsyncIterator[ClientEvent]:
        while True:
            if self._fatal is not None and self._events.empty():
                raise self._fatal
            yield await self._events.get()

    async def _request(
        self, build: Callable[[int], protocol.ClientMessage], expected: type[R] | None = None
    ) -> R:
        """Send a request and wait for its reply, across reconnects, retrying where safe."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        backoff_s = self.settings.backoff_initial_s
        # One request id across retries, so a resend after reconnecting keeps its place.
        request_id = next(self._request_ids)
        while True:
            future: asyncio.Future[protocol.NodeMessage] = (
                asyncio.get_running_loop().create_future()
            )
            self._pending[request_id] = _Pending(build, future)
            if self._writer is not None:
                self._write(build(request_id))
            try:
                async with asyncio.timeout_at(_loop_deadline(deadline)):
                    reply = await future
            except TimeoutError:
                raise TimeoutError(
                    f"no reply within {self.settings.request_timeout_s:g}s "
                    f"(connected to {self.address if self.connected else 'no node'})"
                ) from None
            except NodeError as error:
                if error.code not in RETRYABLE_CODES or time.monotonic() >= deadline:
                    raise
                wait_s = error.retry_after_s if error.retry_after_s else backoff_s
                backoff_s = min(backoff_s * 2, self.settings.backoff_max_s)
                await asyncio.sleep(min(wait_s, max(0.0, deadline - time.monotonic())))
                continue
            finally:
                self._pending.pop(request_id, None)
            if expected is not None and not isinstance(reply, expected):
                raise NodeError(ErrorCode.INTERNAL, f"expected {expected.__name__}, got {reply!r}")
            return reply  # type: ignore[return-value]

    # ---- the connection task ----

    async def _wait_connected(self) -> None:
        while not self._connected.is_set():
            if self._fatal is not None:
                raise self._fatal
            waiter = asyncio.create_task(self._connected.wait())
            runner = self._runner
            assert runner is not None
            done, _ = await asyncio.wait({waiter, runner}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if runner in done and self._fatal is not None:
                raise self._fatal

    async def _run(self) -> None:
        backoff_s = self.settings.backoff_initial_s
        while not self._closing:
            opened = None if self._fatal is not None else await self._open_any()
            if opened is None:
                if self._fatal is not None:
                    self._fail_all(self._fatal)
                    await self._emit(ConnectionChanged("failed", None, None, str(self._fatal)))
                    return
                # Jittered: clients that failed together must not all retry at one instant.
                self.attempts.retry_in(wait_s := self._jitter.uniform(backoff_s / 2, backoff_s))
                await asyncio.sleep(wait_s)
                backoff_s = min(backoff_s * 2, self.settings.backoff_max_s)
                continue
            backoff_s = self.settings.backoff_initial_s
            reader, writer, address = opened
            reason = "connection closed"
            pause_s = 0.0
            self._rejoins.clear()
            try:
                self._writer = writer
                self._connected.set()
                await self._emit(ConnectionChanged("connected", self.node, address))
                self._resume()
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._keepalive(writer))
                    await self._read_loop(reader)
                    raise ConnectionError("the node closed the connection")
            except* (ConnectionError, TimeoutError, OSError) as group:
                reason = str(group.exceptions[0])
                if isinstance(group.exceptions[0], protocol.NodeReplyError):
                    self._next_server += 1  # a node that sent garbage is tried last, not first
            except* NodeError as group:
                error = group.exceptions[0]
                assert isinstance(error, NodeError)
                reason = str(error)
                if error.code in FATAL_CODES:
                    self._fatal = error
                else:
                    pause_s = self._jitter.uniform(0.5, 1.0) * self.settings.backoff_max_s
            finally:
                self._writer = None
                self._connected.clear()
                writer.close()
            self.reconnects += 1
            log.info("disconnected from %s: %s; reconnecting", address, reason)
            await self._emit(ConnectionChanged("disconnected", self.node, address, reason))
            pause_s = pause_s or self._jitter.uniform(0, self.settings.reconnect_spread_s)
            self.attempts.retry_in(pause_s, lost=reason)
            await asyncio.sleep(pause_s)

    async def _open_any(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str] | None:
        """Try each server once, starting after the last one used; None if none would do."""
        untrusted = 0  # servers whose certificate failed verification: retrying cannot help
        reasons = self.attempts.start_round()
        for _ in range(len(self.servers)):
            host, port = self.servers[self._next_server % len(self.servers)]
            self._next_server += 1
            address = f"{host}:{port}"
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    reader, writer = await open_stream(host, port, self.ssl_context)
                    try:
                        welcome = await self._handshake(reader, writer)
                    except BaseException:
                        writer.close()
                        raise
            except NodeError as error:
                log.warning("node %s refused us: %s", address, error)
                self.attempts.refused[address] = str(error)
                if error.code in FATAL_CODES:
                    self._fatal = error
                    return None
                continue
            except ssl.SSLCertVerificationError as error:
                log.warning("node %s: certificate not trusted: %s", address, error.verify_message)
                untrusted += 1
                if untrusted == len(self.servers):
                    self._fatal = error
                    return None
                continue
            except (OSError, TimeoutError, ConnectionError) as error:
                log.debug("cannot reach %s: %r", address, error)
                reasons[address] = reason_in_words(error, self.settings.connect_timeout_s)
                continue
            if self.user_expected not in {None, welcome.user}:
                writer.close()
                self._fatal = NodeError(
                    ErrorCode.UNAUTHORIZED,
                    f"the token is {welcome.user}'s, not {self.user_expected}'s: "
                    f"give {self.user_expected}'s token, or do not name a user",
                )
                return None
            self.node, self.user, self.address = welcome.node, welcome.user, address
            self.limits = dict(welcome.limits)
            self._next_server -= 1  # stay with this node next time, if it comes back first
            self._ever_connected = True
            self.attempts.connected()
            return reader, writer, address
        everywhere = len(reasons) == len(set(self.servers))  # no node even refused us
        first_round = not self._ever_connected and not self._first_round_failed
        if self.settings.fail_fast_unreachable and first_round and everywhere:
            self._fatal = UnreachableError(reasons)
        self._first_round_failed = True
        return None

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Welcome:
        hello = Hello(
            versions=[protocol.PROTOCOL_VERSION],
            minor=protocol.PROTOCOL_MINOR,
            client=self.settings.client_name,
            token=self.token,
        )
        writer.write(encode_frame(protocol.encode(hello)))
        payload = await read_first_frame(reader)
        if payload is None:
            raise ConnectionError(CLOSED_AT_HELLO)
        reply = protocol.decode_node_message(payload)
        if isinstance(reply, ErrorReply):
            raise NodeError(reply.code, reply.message)
        if not isinstance(reply, Welcome):
            raise ConnectionError(f"expected welcome, got {type(reply).__name__}")
        return reply

    def _resume(self) -> None:
        """After (re)connecting: rejoin rooms from their last ids, then resend in order."""
        for room, cursor in self._rooms.items():
            since = cursor.resume_point()
            request_id = next(self._request_ids)
            self._rejoins[request_id] = room
            self._write(Join(request_id=request_id, room=room, since=since))
        for request_id in sorted(self._pending):
            pending = self._pending[request_id]
            if not pending.future.done():
                self._write(pending.build(request_id))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        frames = NodeFrames(reader)
        while True:
            payload = await frames.next()
            if payload is None:
                return
            message = protocol.decode_node_message(payload)
            match message:
                case MessageEvent(message=body):
                    cursor = self._rooms.get(body.room)
                    if cursor is not None and cursor.is_new(body):
                        await self._emit(message)
                        cursor.record(body)
                case RelationEvent():
                    cursor = self._rooms.get(message.room)
                    if cursor is not None and cursor.is_new(message):
                        await self._emit(message)
                        cursor.record(message)
                case RoomStateEvent():
                    cursor = self._rooms.get(message.room)
                    if cursor is not None and cursor.is_new(message):
                        await self._emit(message)
                        cursor.record(message)
                    removed = message.op in {"kick", "ban"} and message.user == self.user
                    if removed:  # the node took this session out of the room
                        self._rooms.pop(message.room, None)
                case PresenceEvent() | TypingEvent():
                    if message.room in self._rooms:
                        await self._emit(message)
                case ReadMarkerEvent():
                    self._unread.note_event(message)
                    if message.room in self._rooms:
                        await self._emit(message)
                case Joined(request_id=request_id) if request_id in self._rejoins:
                    del self._rejoins[request_id]
                    marker = self._unread.note_joined(message)
                    if marker is not None and message.room in self._rooms:
                        await self._emit(marker)
                case ErrorReply(request_id=None):
                    # Said just before the node closes this session.
                    raise NodeError(message.code, message.message)
                case ErrorReply(request_id=request_id) if request_id in self._rejoins:
                    # Final (the room's name or state): dropped and told. Else raised:
                    # connect again (after a pause) rather than carry on without it.
                    room = self._rejoins.pop(request_id)
                    await self._emit(refused_rejoin(room, message))
                    self._rooms.pop(room, None)
                case ErrorReply(request_id=request_id):
                    pending = self._pending.get(request_id)  # type: ignore[arg-type]
                    if pending is not None and not pending.future.done():
                        pending.future.set_exception(
                            NodeError(message.code, message.message, message.retry_after_s)
                        )
                case _:
                    request_id = getattr(message, "request_id", None)
                    pending = self._pending.get(request_id) if request_id is not None else None
                    if pending is not None and not pending.future.done():
                        pending.future.set_result(message)

    async def _keepalive(self, writer: asyncio.StreamWriter) -> None:
        """Notice a node that stopped answering (paused, cut off) while we are idle."""
        while True:
            await asyncio.sleep(self.settings.keepalive_interval_s)
            request_id = next(self._request_ids)
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[request_id] = _Pending(lambda i: Ping(request_id=i), future)
            started = time.monotonic()
            try:
                self._write(Ping(request_id=request_id))
                async with asyncio.timeout(self.settings.keepalive_timeout_s):
                    await future
                self.round_trip_s = time.monotonic() - started
            except TimeoutError:
                raise TimeoutError(
                    f"no answer to a ping in {self.settings.keepalive_timeout_s}s"
                ) from None
            finally:
                self._pending.pop(request_id, None)

    def _write(self, message: protocol.ClientMessage) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode_frame(protocol.encode(message)))

    async def _emit(self, event: ClientEvent) -> None:
        # A caller that stops reading events fills this queue; we then stop reading the
        # socket, the node cuts us off as too slow, and we resume later: nothing is lost.
        if self._events.full():
            await self._events.put(event)
        else:
            self._events.put_nowait(event)  # the usual case, without a coroutine per event

    def _fail_all(self, error: Exception) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)


def _loop_deadline(deadline_monotonic: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline_monotonic - time.monotonic())
