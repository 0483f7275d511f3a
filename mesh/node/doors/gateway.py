"""The client port: accepts TCP sessions, runs the handshake, and answers requests.

A session's failures stay in that session: a frame that cannot be decoded or is over
the limit gets an error and a close; a request that decodes but is invalid gets an
error and the session goes on. Nothing a client sends can stop the server loop.
"""

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

from mesh.node.config import ClientLimits
from mesh.node.doors.auth import Authenticator, AuthError
from mesh.node.doors.chat import (
    HISTORY_FRAME_ENVELOPE_BYTES,
    ChatService,
    knows_relations,
    shown_to_clients,
    to_wire,
)
from mesh.node.doors.rate_limit import UserSendLimits
from mesh.node.doors.read_markers import ReadMarkers
from mesh.node.doors.read_markers import answer as answer_unread
from mesh.node.doors.relations import RelationRefusedError, checked_target, relation_request
from mesh.node.doors.room_admin import RoomAdmin, answer_room
from mesh.node.doors.send_admission import SendAdmission
from mesh.node.doors.session import Session
from mesh.node.doors.token_scope import Operation
from mesh.node.room_requests import FINAL_CODES, RoomUnavailableError
from mesh.node.storage import SendResult, StorageError, StorageOverloadedError
from mesh.wire import protocol
from mesh.wire.bodies import body_problem
from mesh.wire.display_text import terminal_safe
from mesh.wire.errors import ErrorCode, ProtocolError
from mesh.wire.framing import (
    FrameReader,
    FrameTooLargeError,
    TruncatedFrameError,
    encode_frame,
    read_frame,
)
from mesh.wire.protocol import (
    ChangeRoom,
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
    Ok,
    Ping,
    Placement,
    Pong,
    React,
    RoomList,
    Send,
    Sent,
    ShowRoom,
    StatusReply,
    StatusRequest,
    Typing,
    Welcome,
    Where,
    Who,
)
from router.page_bytes import MESSAGE_OVERHEAD_BYTES
from router.writes import SendRequest

log = logging.getLogger(__name__)

StatusProvider = Callable[[int], StatusReply]
Writing = Send | Edit | Delete | React  # requests answered with sent
PlacementProvider = Callable[[int, str], Placement]
AckObserver = Callable[[float], None]  # seconds from receiving a send to acknowledging it
# How long a closing session may take to flush its last frames (an error, say).
CLOSE_FLUSH_TIMEOUT_S = 1.0
DRAINING = "this node is draining (about to restart): connect to another node"
# What each request does, as a token's `ops` claim names it (token_scope.py); requests
# not here (leave, ping, status, where) any token may make.
REQUEST_OPERATIONS: dict[type, Operation] = {
    Send: "post",
    Edit: "post",
    Delete: "post",
    React: "post",
    Typing: "post",
    Join: "read",
    History: "read",
    Who: "read",
    MarkRead: "read",
    GetUnread: "read",
    ListRooms: "read",
    ShowRoom: "read",
    ChangeRoom: "moderate",
    Where: "read",
}
# Requests about no room's content, which every token may make. A request in neither
# table is refused to a scoped token: a new kind of request is closed until it is listed.
UNSCOPED_REQUESTS: frozenset[type] = frozenset({Hello, LeaveRoom, Ping, StatusRequest})


@dataclass(slots=True)
class GatewayStatistics:
    sessions_opened: int = 0
    sessions_refused: int = 0
    sessions_cut_off: int = 0
    requests: int = 0
    errors_by_code: collections.Counter[str] = field(default_factory=collections.Counter)


def _frame(message: protocol.NodeMessage) -> bytes:
    return encode_frame(protocol.encode(message))


class Gateway:
    def __init__(
        self,
        node_id: str,
        limits: ClientLimits,
        chat: ChatService,
        authenticator: Authenticator,
        status: StatusProvider,
        *,
        placement: PlacementProvider,
        send_limits: UserSendLimits,
        admission: SendAdmission,
        on_ack: AckObserver | None = None,
    ) -> None:
        # Shared with the HTTP API: a user's send rate counts every session and both doors,
        # and the node's sends in flight count both doors.
        self.send_limits = send_limits
        self.admission = admission
        self._placement = placement
        self.node_id = node_id
        self._on_ack = on_ack
        self.limits = limits
        self.chat = chat
        self.read_markers = ReadMarkers(chat)
        self.room_admin = RoomAdmin(chat)
        self.authenticator = authenticator
        self.stats = GatewayStatistics()
        self._status = status
        self._connections: set[asyncio.Task[None]] = set()
        self.sessions: set[Session] = set()  # past the handshake: what a drain hands off
        self.draining = False  # set by mesh/node/doors/drain.py: new sessions are refused

    @property
    def session_count(self) -> int:
        return len(self._connections)

    async def close_sessions(self) -> None:
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- one connection ----

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        if self.draining or len(self._connections) >= self.limits.sessions_max:
            self.stats.sessions_refused += 1
            self._count(ErrorCode.UNAVAILABLE)
            reason = DRAINING if self.draining else "node is at its session limit"
            await self._write_now(writer, ErrorCode.UNAVAILABLE, reason)
            await _close(writer)
            return
        self._connections.add(task)
        self.stats.sessions_opened += 1
        try:
            session = await self._handshake(reader, writer, peer)
            if session is not None:
                await self._run_session(session, reader, writer, peer)
        except (ConnectionError, TimeoutError) as error:
            log.info("client %s: connection ended: %r", peer, error)
        except asyncio.CancelledError:
            # Only close_sessions() cancels a session, at shutdown; asyncio's stream server
            # would report a cancelled handler as an error, so end it as a normal return.
            log.debug("client %s: session closed by shutdown", peer)
        finally:
            self._connections.discard(task)
            await _close(writer)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> Session | None:
        try:
            async with asyncio.timeout(self.limits.handshake_timeout_s):
                first = await self._read(read_frame(reader, self.limits.frame_bytes_max))
            if first is None or reader.at_eof():
                return None  # gone before its hello was read: a storm's abandoned attempt
            hello = protocol.decode_client_message(first)
            if not isinstance(hello, Hello):
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST, "the first frame must be hello", close=True
                )
            if protocol.PROTOCOL_VERSION not in hello.versions:
                raise ProtocolError(
                    ErrorCode.UNSUPPORTED_VERSION,
                    f"this node speaks protocol version {protocol.PROTOCOL_VERSION}; "
                    f"the client offered {hello.versions}",
                    close=True,
                )
            try:
                principal = self.authenticator.principal_of(hello.token, time.time())
            except AuthError as error:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, str(error), close=True) from error
        except ProtocolError as error:
            self._count(error.code)
            message = terminal_safe(error.message)  # it may quote what the client sent
            log.warning("client %s: handshake refused: %s: %s", peer, error.code, message)
            await self._write_now(writer, error.code, error.message)
            return None
        welcome = Welcome(
            version=protocol.PROTOCOL_VERSION,
            minor=protocol.PROTOCOL_MINOR,
            node=self.node_id,
            user=principal.user,
            limits=self.limits.announced(),
        )
        writer.write(_frame(welcome))
        await writer.drain()
        return Session(principal.user, self.limits.session_queue_max, hello.minor, principal.scope)

    async def _run_session(
        self,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: object,
    ) -> None:
        """Requests are read in this task and frames written in one more: a connection
        costs two tasks. A writer that ends (the session cut off, or the socket broken)
        stops the reading by cancelling it."""
        handler = asyncio.current_task()
        assert handler is not None
        writing = asyncio.create_task(
            session.write_loop(writer), name=f"session-{session.session_id}-write"
        )
        reading = True

        def stop_reading(_: "asyncio.Task[None]") -> None:
            if reading:
                handler.cancel()

        writing.add_done_callback(stop_reading)
        self.sessions.add(session)
        if self.draining:  # its handshake ended after the drain had begun
            session.cut_off(DRAINING)
        try:
            try:
                try:
                    await self._read_loop(session, reader, peer)
                finally:
                    reading = False  # from here on, the writer ending stops nothing
            except asyncio.CancelledError:
                if not writing.done() or handler.cancelling() > 1:
                    raise  # the node is shutting down
                handler.uncancel()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT_S):
                        await session.wait_flushed()
            if session.cut_off_reason:
                self.stats.sessions_cut_off += 1
                self._count(ErrorCode.UNAVAILABLE)
                await self._write_now(writer, ErrorCode.UNAVAILABLE, session.cut_off_reason)
            elif writing.done() and not writing.cancelled() and writing.exception() is not None:
                raise writing.exception()  # type: ignore[misc]
        finally:
            self.sessions.discard(session)
            session.close()
            writing.cancel()
            await _settle(writing)
            self.chat.disconnect(session)

    async def _read_loop(
        self,
        session: Session,
        reader: asyncio.StreamReader,
        peer: object,
    ) -> None:
        frames = FrameReader(reader, self.limits.frame_bytes_max)
        while not session.cut_off_reason:  # frames already read are not served then
            payload: bytes | None = None
            try:
                payload = await self._read(frames.next())
                if payload is None:
                    return
                self.stats.requests += 1
                request = protocol.decode_client_message(payload)
            except ProtocolError as error:
                self._count(error.code)
                request_id = None
                if payload is not None and not error.close:
                    request_id = protocol.request_id_of(payload)
                session.push(
                    _frame(
                        ErrorReply(code=error.code, message=error.message, request_id=request_id)
                    )
                )
                if error.close:
                    message = terminal_safe(error.message)
                    log.warning("client %s: closing: %s: %s", peer, error.code, message)
                    return
                continue
            try:
                await self._handle(session, request)
            except ProtocolError as error:
                self._count(error.code)
                session.push(
                    _frame(
                        ErrorReply(
                            code=error.code,
                            message=error.message,
                            request_id=getattr(request, "request_id", None),
                        )
                    )
                )
            except StorageOverloadedError as error:
                self._reply_error(
                    session, request, ErrorCode.UNAVAILABLE, str(error), error.retry_after_s
                )
            except StorageError as error:
                self._reply_error(session, request, ErrorCode.INTERNAL, f"storage failed: {error}")
            except RoomUnavailableError as error:
                self._reply_unavailable(session, request, error)

    # ---- requests ----

    async def _handle(self, session: Session, request: protocol.ClientMessage) -> None:
        if not session.scope.unscoped and type(request) not in UNSCOPED_REQUESTS:
            operation = REQUEST_OPERATIONS.get(type(request))
            if operation is None:
                raise ProtocolError(ErrorCode.FORBIDDEN, "a scoped token may not make this request")
            room = getattr(request, "room", None)
            if (reason := session.scope.refusal(room, operation)) is not None:
                raise ProtocolError(ErrorCode.FORBIDDEN, reason)
        match request:
            case Send():
                await self._send(session, request)
            case Edit() | Delete() | React():
                await self._relate(session, request)
            case Join(request_id=request_id, room=room, since=since):
                await self._join(session, request_id, room, since)
            case LeaveRoom(request_id=request_id, room=room):
                if room not in session.rooms:
                    raise ProtocolError(ErrorCode.NOT_FOUND, f"not in room {room}")
                await self.chat.leave(session, room)
                session.push(_frame(Ok(request_id=request_id)))
            case History():
                await self._history(session, request)
            case MarkRead() | GetUnread():
                # Counting reads the room's log: such requests count against the send rate.
                if self._take_send_token(session, request):
                    session.push(_frame(await answer_unread(self.read_markers, session, request)))
            case ListRooms(request_id=request_id):
                rooms = [
                    room
                    for room in await self.chat.rooms_of(session.user)
                    if session.scope.covers(room)
                ]
                session.push(_frame(RoomList(request_id=request_id, rooms=rooms)))
            case Who(request_id=request_id, room=room):
                users = await self.chat.who(room, session.user)
                session.push(_frame(Members(request_id=request_id, room=room, users=users)))
            case Typing(request_id=request_id, room=room):
                self._require_joined(session, room)
                await self.chat.typing(session, room)
                session.push(_frame(Ok(request_id=request_id)))
            case Ping(request_id=request_id):
                session.push(_frame(Pong(request_id=request_id, time_ms=int(time.time() * 1000))))
            case StatusRequest(request_id=request_id):
                session.push(_frame(self._status(request_id)))
            case Where(request_id=request_id, room=room):
                session.push(_frame(self._placement(request_id, room)))
            case ChangeRoom() | ShowRoom():
                # A change is a write of the room's log: it counts against the send rate.
                if isinstance(request, ShowRoom) or self._take_send_token(session, request):
                    session.push(_frame(await answer_room(self.room_admin, session.user, request)))
            case Hello():
                raise ProtocolError(ErrorCode.BAD_REQUEST, "hello was already sent")

    async def _send(self, session: Session, request: Send) -> None:
        # Posting needs no join: a bot or a one-off `meshchat send` need not take the stream.
        self._check_body(request.body)
        write = SendRequest(
            request.room,
            session.user,
            request.client_msg_id,
            request.body,
            reply_to=request.reply_to,
        )
        await self._write(session, request, write)

    async def _relate(self, session: Session, request: Edit | Delete | React) -> None:
        """An edit, delete or reaction of a message the room's replicas hold; only the
        sender may edit or delete it, and no one may touch a deleted one."""
        if not knows_relations(session.minor):
            # The replies and events of one would not decode in an older client.
            raise ProtocolError(ErrorCode.BAD_REQUEST, "edits and reactions need protocol 1.4")
        write = relation_request(session.user, request)
        self._check_body(write.body, write.kind)
        # Taken before the target is read: a refused edit costs a read, and counts.
        if not self._take_send_token(session, request):
            return
        try:
            await checked_target(self.chat, write)
        except RelationRefusedError as error:
            raise ProtocolError(error.code, error.message) from error
        await self._write(session, request, write, token_taken=True)

    def _check_body(self, body: str, kind: str = "message") -> None:
        problem = body_problem(body, self.limits.body_bytes_max, kind)
        if problem is not None:
            raise ProtocolError(*problem)

    def _take_send_token(
        self, session: Session, request: Writing | MarkRead | GetUnread | ChangeRoom
    ) -> bool:
        """False, with the error told, when the user is over its send rate."""
        wait_s = self.send_limits.take(session.user, time.monotonic())
        if wait_s > 0:
            message = f"more than {self.limits.sends_per_s:g} sends per second by one user"
            self._reply_error(
                session, request, ErrorCode.RATE_LIMITED, f"{message} on this node", wait_s
            )
        return wait_s <= 0

    async def _write(
        self, session: Session, request: Writing, write: SendRequest, *, token_taken: bool = False
    ) -> None:
        if not token_taken and not self._take_send_token(session, request):
            return
        await session.wait_send_slot(self.limits.send_window_max)
        try:
            wait_s = await self.admission.admit()
        except BaseException:
            session.release_send_slot()
            raise
        if wait_s > 0:
            session.release_send_slot()
            self._reply_busy(session, request, wait_s)
            return
        received_at = time.perf_counter()
        try:
            future = self.chat.write(write)
        except BaseException:
            session.release_send_slot()
            self.admission.finished(time.perf_counter() - received_at)
            raise

        future.add_done_callback(
            functools.partial(self._answer_send, session, request, write, received_at)
        )

    def _answer_send(
        self,
        session: Session,
        request: Writing,
        write: SendRequest,
        received_at: float,
        done: "asyncio.Future[SendResult]",
    ) -> None:
        """A send's outcome, once the mesh has one: its slots are freed, then the reply."""
        session.release_send_slot()
        self.admission.finished(time.perf_counter() - received_at)
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            result = done.result()
            if self._on_ack is not None:
                self._on_ack(time.perf_counter() - received_at)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "send acknowledged to session %d",
                    session.session_id,
                    extra={
                        "trace_id": result.message.id,
                        "room": result.message.room,
                        "duplicate": result.duplicate,
                    },
                )
            session.push(
                _frame(
                    Sent(
                        request_id=request.request_id,
                        id=result.message.id,
                        time_ms=result.message.time_ms,
                        duplicate=result.duplicate,
                    )
                )
            )
        elif isinstance(error, RoomUnavailableError):
            self._reply_unavailable(session, request, error)
        elif isinstance(error, StorageOverloadedError):
            self._reply_error(
                session, request, ErrorCode.UNAVAILABLE, str(error), error.retry_after_s
            )
        else:
            self._reply_error(session, request, ErrorCode.INTERNAL, f"storage failed: {error}")

    async def _join(self, session: Session, request_id: int, room: str, since: str | None) -> None:
        if room in session.rooms:
            users = await self.chat.who(room, session.user)
            session.push(_frame(Joined(request_id=request_id, room=room, members=users)))
            return
        if len(session.rooms) >= self.limits.rooms_per_session_max:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"a session may be in at most {self.limits.rooms_per_session_max} rooms",
            )
        before = await self.read_markers.before_join(session.user)
        try:
            users, head = await self.chat.join(session, room, since)
        except BaseException:
            self.chat.unsubscribe(session, room)
            raise
        knows = session.minor >= protocol.MINOR_READ_MARKERS  # older clients get no count
        unread = await self.read_markers.joined(session.user, room, head, before, count=knows)
        joined = Joined(request_id=request_id, room=room, members=users, head=head)
        if unread is not None:
            joined = msgspec.structs.replace(
                joined,
                read_up_to=unread.read_up_to,
                unread=unread.count,
                unread_capped=unread.capped,
                unread_through=unread.through,
            )
        session.push(_frame(joined))
        if since is not None:
            try:
                await self.chat.replay(session, room, since)
            except RoomUnavailableError as error:
                # Joined is already said and live messages would pass the gap: end the
                # session instead, and the client resumes from what it really got.
                session.cut_off(f"the room's backlog could not be read ({error}); resume later")

    async def _history(self, session: Session, request: History) -> None:
        if request.before is not None and request.after is not None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "give before or after, not both")
        # The frame stays within the announced limit: a page cut short by bytes has a cursor.
        bytes_max = self.limits.frame_bytes_max - HISTORY_FRAME_ENVELOPE_BYTES
        # ClientLimits keeps bodies 512 bytes under the frame limit: a lone message fits.
        assert self.limits.body_bytes_max + MESSAGE_OVERHEAD_BYTES <= bytes_max
        page = await self.chat.history(
            request.room,
            session.user,
            before=request.before,
            after=request.after,
            limit=request.limit,
            bytes_max=bytes_max,
        )
        cursor = None
        if page.more and page.messages:
            cursor = page.messages[-1].id if request.after is not None else page.messages[0].id
        shown = [
            to_wire(message, page.relations.get(message.id), session.minor)
            for message in page.messages
            if shown_to_clients(message)
        ]
        session.push(
            _frame(
                HistoryPage(
                    request_id=request.request_id,
                    room=request.room,
                    messages=[message for message in shown if message is not None],
                    cursor=cursor,
                )
            )
        )

    def _require_joined(self, session: Session, room: str) -> None:
        if room not in session.rooms:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"join room {room} first")

    # ---- plumbing ----

    def _reply_unavailable(
        self, session: Session, request: protocol.ClientMessage, error: RoomUnavailableError
    ) -> None:
        code = _code_of(error)
        wait_s = error.retry_after_s if code == ErrorCode.UNAVAILABLE else None
        self._reply_error(session, request, code, str(error), wait_s)

    def _reply_error(
        self,
        session: Session,
        request: protocol.ClientMessage,
        code: ErrorCode,
        message: str,
        retry_after_s: float | None = None,
    ) -> None:
        self._count(code)
        if code == ErrorCode.CONFLICT and not knows_relations(session.minor):
            code = ErrorCode.BAD_REQUEST  # a code older clients cannot decode (since 1.4)
        request_id = getattr(request, "request_id", None)
        reply = ErrorReply(
            code=code, message=message, request_id=request_id, retry_after_s=retry_after_s
        )
        session.push(_frame(reply))

    def _reply_busy(self, session: Session, request: Writing, wait_s: float) -> None:
        admission = self.admission
        message = (
            f"the node has {admission.in_flight} sends in flight and {admission.waiting} "
            f"waiting (at most {admission.in_flight_max}); retry in {wait_s:g}s"
        )
        self._reply_error(session, request, ErrorCode.UNAVAILABLE, message, wait_s)

    def _count(self, code: ErrorCode) -> None:
        self.stats.errors_by_code[code.value] += 1

    async def _read(self, next_frame: Awaitable[bytes | None]) -> bytes | None:
        try:
            return await next_frame
        except FrameTooLargeError as error:
            raise ProtocolError(ErrorCode.TOO_LARGE, str(error), close=True) from error
        except TruncatedFrameError as error:
            raise ConnectionError(str(error)) from error

    async def _write_now(self, writer: asyncio.StreamWriter, code: ErrorCode, message: str) -> None:
        """Write an error outside any session queue (before one exists, or after it is cut)."""
        with contextlib.suppress(ConnectionError, TimeoutError):
            if writer.is_closing():
                return  # the client is gone: there is no one to tell
            writer.write(_frame(ErrorReply(code=code, message=message)))
            async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT_S):
                await writer.drain()


async def _settle(*tasks: "asyncio.Task[object]") -> None:
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT_S):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()  # a client that reads nothing cannot hold the socket open
    except ConnectionError:
        log.debug("client connection was already gone at close")


def _code_of(error: RoomUnavailableError) -> ErrorCode:
    if error.code in FINAL_CODES:
        return error.code
    return ErrorCode.UNAVAILABLE
