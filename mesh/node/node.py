"""The node: composes the peer transport, membership and the client gateway on one event loop.

The shell owns every clock read and every socket; the membership state machine only
sees events and times, and answers with effects that this module carries out.
"""

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from mesh.node.config import NodeConfig
from mesh.node.data_lock import DataDirLock
from mesh.node.doors.auth import Authenticator
from mesh.node.doors.chat import ChatService, SessionDeliveries
from mesh.node.doors.drain import drain
from mesh.node.doors.gateway import Gateway
from mesh.node.doors.http_api import bind_http_socket, build_app, serve_http
from mesh.node.doors.http_common import HttpBackend
from mesh.node.doors.rate_limit import UserSendLimits
from mesh.node.doors.rooms import RoomHub
from mesh.node.doors.send_admission import SendAdmission
from mesh.node.doors.token_keys import KeyFile
from mesh.node.identity import next_incarnation
from mesh.node.metrics import NodeMetrics
from mesh.node.peer_book import load_peer_addresses, save_peer_addresses
from mesh.node.peer_bundles import PeerBundler, unbundled
from mesh.node.peer_codec import PeerBundle, decode_peer_frame, encode_peer_frame
from mesh.node.peer_security import PeerKeys, describe_security, load_security, parse_seed
from mesh.node.room_driver import RoomDriver, members_changed
from mesh.node.room_requests import PendingTickets, RoomRequests
from mesh.node.service_notify import notify
from mesh.node.sqlite_disk import SqliteDisk
from mesh.node.storage import Storage, StorageError, StorageLostError
from mesh.node.tls import ServerTls
from mesh.wire.display_text import terminal_safe
from mesh.wire.protocol import MemberStatus, Placement, Replica, StatusReply
from peers.membership import (
    Anomaly,
    Effect,
    Membership,
    MemberState,
    RememberedPeerForgotten,
    SeedUnanswered,
    SendTo,
    StateChanged,
)
from peers.records import MemberRecord
from peers.transport import PeerTransport, PortInUseError
from peers.wire import Heartbeat, Leave, PeerDecodeError
from router.engine import RoomEngine
from router.events import PeerMessage, Tick
from router.wire import RouterMessage

log = logging.getLogger(__name__)
# Connections the kernel queues before the node accepts them: the clients of a stopped
# node arrive together, and a full queue drops their SYNs into the kernel's 1-3-7 s retry
# steps (asyncio's default is 100). Capped by net.core.somaxconn (4096 by default).
CLIENT_ACCEPT_BACKLOG = 4096

# Log the first rejected peer frames one by one, then only every Nth, so a flood of
# garbage cannot flood the log as well.
REJECTED_FRAME_LOG_EVERY = 1000
# How often the room engine checks its timers: retransmissions, timeouts, acks of pushes.
ROOM_TICK_INTERVAL_S = 0.05
# How long a stopping node keeps trying to reach peers whose connection is not up yet.
LEAVE_ANNOUNCE_TIMEOUT_S = 0.5
# How often the trusted key directory is re-read: a revocation takes effect within it.
TRUSTED_KEYS_RELOAD_S = 1.0
# How often an idle node checks that its database and lock file are still there (every
# commit checks too): a few stat calls, and a vanished dir is noticed within a second.
DATA_DIR_CHECK_INTERVAL_S = 1.0


class Node:
    def __init__(self, config: NodeConfig, data_lock: DataDirLock) -> None:
        """`data_lock` is the held lock of the data dir: only its owner may touch the dir."""
        assert data_lock.path.parent == config.data_dir, "the lock of another dir"
        self.config = config
        self.data_lock = data_lock
        self.data_dir_lost: str | None = None  # why the node stopped, if its dir went away
        security = (
            None
            if config.insecure_peers
            else load_security(
                config.node_id, config.data_dir, config.node_key, config.trusted_keys
            )
        )
        self.peer_keys = PeerKeys(security)
        self.transport = PeerTransport(config.node_id, config.bind_host, config.peer_port, security)
        self.metrics = NodeMetrics(lambda: self.status(0))
        self.storage = Storage(config.data_dir, on_commit=self.metrics.observe_commit)
        self.incarnation = next_incarnation(
            config.data_dir, config.node_id, int(time.time() * 1000)
        )
        self.engine = RoomEngine(
            config.node_id,
            config.router,
            epoch=self.incarnation,
            wall_offset_ms=int(time.time() * 1000 - time.monotonic() * 1000),
            local_users=self._local_users,
        )
        hub = RoomHub()
        self.deliveries = SessionDeliveries(hub)
        self.disk = SqliteDisk(self.storage, _wall_clock_ms)
        self.pending = PendingTickets()
        self.bundler = PeerBundler(self._send_frame, _call_soon)
        self.rooms_driver = RoomDriver(
            self.engine,
            disk=self.disk,
            wire=self.bundler,
            sessions=self.deliveries,
            completions=self.pending,
            clock=time.monotonic,
        )
        self.chat = ChatService(
            config.node_id, RoomRequests(self.rooms_driver, self.pending), hub, _wall_clock_ms
        )
        self.chat.deliver_through(self.deliveries)
        self.authenticator = Authenticator(
            config.secret,
            keys=None if config.token_keys is None else KeyFile(config.token_keys),
            audience=config.token_audience,
            issuer=config.token_issuer,
        )
        # One per node: a user's sends count against one limit over every session, TCP or HTTP.
        limits = config.client_limits
        self.send_limits = UserSendLimits(limits.sends_per_s, limits.send_burst)
        self.admission = SendAdmission(limits.sends_in_flight_max, limits.send_wait_max_s)
        self.gateway = Gateway(
            config.node_id,
            config.client_limits,
            self.chat,
            self.authenticator,
            self.status,
            placement=self.placement,
            send_limits=self.send_limits,
            admission=self.admission,
            on_ack=self.metrics.observe_ack,
        )
        self.client_tls = (  # TLS on the client port and the HTTP API, if configured
            None
            if config.tls is None
            else ServerTls(config.tls, config.client_limits.handshake_timeout_s)
        )
        self.membership: Membership | None = None
        self._addresses: dict[str, str] = {}  # node id -> peer address, from membership
        self._hint_summary: dict[str, tuple[int, int]] = {}
        self.peer_frames_rejected = 0
        self.http_backend: HttpBackend | None = None  # made in run() when there is an HTTP port
        self.anomalies = 0
        self._peer_book_dirty = False
        self._remembered_texts: dict[str, str] = {}  # address -> ID@HOST:PORT, from the book

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then leave the mesh cleanly."""
        server, http_listener = await self._open()
        self._join_mesh()
        notify(f"READY=1\nSTATUS=serving clients on {self.config.host}:{self.config.client_port}")
        try:
            async with asyncio.TaskGroup() as tasks:
                loops = [
                    tasks.create_task(self._receive_loop(), name="peer-receive"),
                    tasks.create_task(self._tick_loop(), name="membership-tick"),
                    tasks.create_task(self.transport.watch_handshakes(), name="peer-monitor"),
                    tasks.create_task(self._refresh_hint_summary(), name="hint-summary"),
                    tasks.create_task(self._reload_trusted_keys(), name="trusted-keys"),
                    tasks.create_task(self._watch_data_dir(stop), name="data-dir-watch"),
                ]
                http_stop = asyncio.Event()
                http = None
                if http_listener is not None:
                    http = tasks.create_task(
                        self._serve_http(http_listener, http_stop), name="http"
                    )
                await stop.wait()
                notify("STOPPING=1")
                for loop in loops:
                    loop.cancel()
                http_stop.set()
                if http is not None:
                    await http
        finally:
            await self._close(server)
        if self.data_dir_lost is not None:
            raise StorageLostError(self.data_dir_lost)

    async def _open(self) -> tuple[asyncio.Server, "socket.socket | None"]:
        """Bind every port and open storage; on any failure undo what was done."""
        config = self.config
        self.transport.bind()
        http_listener = None
        try:
            if config.http_port is not None:
                http_listener = _bind(config.bind_host, config.http_port)
            await self.storage.open()
            if not self.engine.observe_stored(self.storage.highest_id, time.monotonic()):
                log.warning(
                    "the newest stored id %s lies beyond the allowed clock skew; "
                    "new ids do not follow it",
                    self.storage.highest_id,
                )
            server = await asyncio.start_server(
                self.gateway.serve_connection,
                config.bind_host,
                config.client_port,
                backlog=CLIENT_ACCEPT_BACKLOG,
                **(self.client_tls.server_options() if self.client_tls else {}),
            )
        except BaseException as error:
            if http_listener is not None:
                http_listener.close()
            await self.storage.close()
            await self.transport.close()
            if isinstance(error, PortInUseError):
                raise
            if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
                raise PortInUseError(config.bind_host, config.client_port) from error
            raise
        return server, http_listener

    def _join_mesh(self) -> None:
        """Start membership from the seeds and the peer book, and say how the node runs."""
        config = self.config
        remembered = load_peer_addresses(config.data_dir)
        configured = self._seed_addresses(list(config.seeds))
        from_book = [a for a in self._seed_addresses(remembered) if a not in configured]
        self._remembered_texts = _texts_by_address(remembered)
        seeds = [*configured, *from_book]
        # A book it cannot use (plain addresses from before CURVE) still says the node was
        # part of a mesh: it must not act alone, and its peers will find it.
        self.engine.expect_peers(bool(config.seeds or remembered))
        security = self.peer_keys.security
        self.membership = Membership(
            own=MemberRecord(config.node_id, config.peer_address, self.incarnation),
            seeds=tuple(dict.fromkeys(seeds)),
            remembered=frozenset(from_book),
            config=config.membership,
            now=time.monotonic(),
            wall_offset_ms=_wall_offset_ms(),
            trusted=None if security is None else security.trusted.nodes(),
        )
        log.log(*describe_security(security, config.peer_port))
        log.info(
            "node up: peer %s, client %s:%d, incarnation %d, seeds %s, remembered peers %d",
            config.peer_address,
            config.host,
            config.client_port,
            self.incarnation,
            ", ".join(config.seeds) or "none",
            len(remembered),
        )

    async def _serve_http(self, listener: "socket.socket", stop: asyncio.Event) -> None:
        config = self.config
        self.http_backend = HttpBackend(
            config.node_id,
            self.chat,
            self.authenticator,
            config.client_limits,
            lambda: self.status(0),
            self.metrics,
            self.send_limits,
            self.admission,
            data_dir=config.data_dir,
            drain=partial(drain, self.gateway),
            not_ready=self._not_ready,
            errors_docs_url=config.errors_docs_url,
        )
        tls = None if self.client_tls is None else self.client_tls.context
        scheme = "http" if tls is None else "https"
        log.info("HTTP API on %s://%s:%d/v1", scheme, config.host, config.http_port)
        await serve_http(build_app(self.http_backend), listener, stop, tls)

    def _not_ready(self) -> str | None:
        if self.gateway.draining:
            return "draining: it takes no new sessions"
        if not self.engine.joined:
            return "joining the mesh: it serves rooms once joined"
        return None

    async def _close(self, server: asyncio.Server) -> None:
        """Close the doors, save the peer book, tell the peers, close storage."""
        server.close()
        await self.gateway.close_sessions()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await server.wait_closed()
        if self.data_dir_lost is None:  # else the dir may be gone: recreate nothing
            save_peer_addresses(self.config.data_dir, self._peer_book())
        self.pending.close()
        await self.disk.close()
        self.bundler.flush()  # what this turn had for the peers leaves before the Leave
        await self._announce_leave()
        await self.transport.close()
        await self.storage.close()
        log.info("node stopped")

    async def _watch_data_dir(self, stop: asyncio.Event) -> None:
        """Stop the node once its database or lock file is deleted or replaced: it must not
        acknowledge writes into a file nobody will read, nor share its id with a newcomer."""
        while True:
            lost = self.storage.check_files() or self.data_lock.lost()
            if lost is not None:
                self.data_dir_lost = lost
                log.error("data dir %s lost: %s; stopping", self.config.data_dir, lost)
                stop.set()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DATA_DIR_CHECK_INTERVAL_S):
                    await self.storage.wait_lost()

    async def _announce_leave(self) -> None:
        """Tell every peer we are leaving, retrying briefly where no connection is up yet."""
        assert self.membership is not None
        pending = [
            (effect.address, encode_peer_frame(effect.message), effect.node_id)
            for effect in self.membership.leave(time.monotonic())
            if isinstance(effect, SendTo)
        ]
        deadline = time.monotonic() + LEAVE_ANNOUNCE_TIMEOUT_S
        while pending:
            pending = [
                (address, frame, node_id)
                for address, frame, node_id in pending
                if not self.transport.send(address, frame, self.peer_keys.key_for(node_id, address))
            ]
            if not pending or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        for address, _, _ in pending:
            # Routine when the whole mesh stops at once; the peer notices our silence.
            log.info("could not tell %s that we are leaving; it will notice", address)

    def status(self, request_id: int) -> StatusReply:
        membership = self.membership
        assert membership is not None
        members = [
            MemberStatus(
                id=view.id,
                address=view.address,
                state=view.state.value,
                incarnation=view.incarnation,
                last_heard_s=None if view.last_heard_s is None else round(view.last_heard_s, 3),
                dropped=self._dropped_towards(view.id, view.address),
                **self._hints_for(view.id),
            )
            for view in membership.members(time.monotonic())
        ]
        return StatusReply(
            request_id=request_id,
            node=self.config.node_id,
            members=members,
            counters=self.counters(),
        )

    def placement(self, request_id: int, room: str) -> Placement:
        """A room's preference list on this node's ring, with each replica's state."""
        membership = self.membership
        assert membership is not None
        states = {view.id: view.state.value for view in membership.members(time.monotonic())}
        replicas = [
            Replica(id=node, state=states.get(node, "unknown"))
            for node in self.engine.preference_list(room)
        ]
        alive = [replica.id for replica in replicas if replica.state == "alive"]
        return Placement(
            request_id=request_id,
            room=room,
            replicas_wanted=self.config.router.replicas,
            replicas=replicas,
            coordinator=alive[0] if alive else None,
        )

    def _hints_for(self, member_id: str) -> dict[str, Any]:
        count, oldest_ms = self._hint_summary.get(member_id, (0, None))
        if not count or oldest_ms is None:
            return {}
        age_s = max(0.0, time.time() - oldest_ms / 1000)
        return {"hints": count, "oldest_hint_s": round(age_s, 1)}

    async def _refresh_hint_summary(self) -> None:
        """Hints held per member, for `status`, read from disk once a second."""
        while True:
            with contextlib.suppress(StorageError):
                self._hint_summary = await self.storage.hint_summary()
            await asyncio.sleep(1.0)

    def _dropped_towards(self, member_id: str, address: str) -> int:
        return 0 if member_id == self.config.node_id else self.transport.dropped(address)

    def _peer_counters(self) -> dict[str, int]:
        """The peer port and membership: traffic, and what was refused or ignored."""
        assert self.membership is not None
        transport, membership = self.transport.stats, self.membership.stats
        return {
            "peer_frames_received": transport.frames_received,
            "peer_frames_sent": transport.frames_sent,
            "peer_frames_dropped": transport.frames_dropped,
            # Room messages sent, and the frames (one message, or a bundle) they went in.
            "peer_room_messages_sent": self.bundler.stats.messages_sent,
            "peer_room_frames_sent": self.bundler.stats.frames_sent,
            "peer_frames_rejected": self.peer_frames_rejected + transport.malformed_envelopes,
            "peer_handshake_failures": transport.handshake_failures,
            "heartbeats_sent": membership.heartbeats_sent,
            "heartbeats_received": membership.heartbeats_received,
            "refutations_sent": membership.refutations_sent,
            "welcomes_sent": membership.welcomes_sent,
            "stale_peer_messages": membership.stale_messages,
            "membership_anomalies": self.anomalies,
            "peer_records_untrusted": membership.untrusted_records,
            "peer_incarnations_refused": membership.future_incarnations,
            "peer_hearsay_ignored": membership.hearsay_ignored,
        }

    def counters(self) -> dict[str, int]:
        gateway = self.gateway.stats
        counters = {
            **self._peer_counters(),
            "send_limit_users": len(self.send_limits),
            "send_limit_refusals": self.send_limits.stats.refused,
            "send_limit_users_forgotten_busy": self.send_limits.stats.forgotten_busy,
            "sends_in_flight": self.admission.in_flight,
            "sends_waiting_for_room": self.admission.waiting,
            "sends_that_waited_for_room": self.admission.stats.waited,
            "sends_refused_busy": self.admission.stats.refused,
            "client_sessions_open": self.gateway.session_count,
            "client_tls_handshake_failures": (
                self.client_tls.handshake_failures if self.client_tls else 0
            ),
            "client_sessions_opened": gateway.sessions_opened,
            "client_sessions_refused": gateway.sessions_refused,
            "client_requests": gateway.requests,
        }
        storage = self.storage.stats
        counters.update(
            {
                "client_sessions_cut_off": gateway.sessions_cut_off,
                "messages_stored": self.rooms_driver.stats.copies_stored,
                "messages_delivered": self.deliveries.messages_delivered,
                "storage_commits": storage.commits,
                "storage_writes": storage.writes,
                "storage_duplicates": storage.duplicates,
                "storage_failures": storage.failures,
            }
        )
        counters.update(self.engine.statistics())
        driver = self.rooms_driver.stats
        counters["room_storage_failures"] = driver.storage_failures
        if self.http_backend is not None:
            for code, count in sorted(self.http_backend.errors_by_code.items()):
                counters[f"http_errors_{code}"] = count
        for code, count in sorted(gateway.errors_by_code.items()):
            counters[f"client_errors_{code}"] = count
        return counters

    async def _receive_loop(self) -> None:
        assert self.membership is not None
        while True:
            received = await self.transport.receive()
            if isinstance(received, str):
                self._reject(received)
                continue
            sender_id, frame = received
            try:
                message = decode_peer_frame(frame)
            except PeerDecodeError as error:
                self._reject(f"from {sender_id[:64]!r}: {error}")
                continue
            if not isinstance(message, Heartbeat | Leave):
                if sender_id in self._addresses:
                    self._room_messages(sender_id, message)
                else:
                    self._reject(f"a room message from {sender_id[:64]!r}, not a member")
                continue
            if message.sender.id != sender_id:
                self._reject(f"routing id {sender_id!r} sent a message as {message.sender.id!r}")
                continue
            self._apply(self.membership.handle_message(message, time.monotonic()))

    def _room_messages(self, sender_id: str, message: RouterMessage | PeerBundle) -> None:
        for each in unbundled(message):
            self.rooms_driver.handle(PeerMessage(sender_id, each))

    async def _tick_loop(self) -> None:
        assert self.membership is not None
        tick_interval_s = min(ROOM_TICK_INTERVAL_S, self.config.membership.heartbeat_interval_s / 2)
        while True:
            # The wall clock may be stepped (NTP) after start: clock-skew bounds follow it.
            self.membership.wall_offset_ms = _wall_offset_ms()
            self.engine.set_wall_offset_ms(self.membership.wall_offset_ms)
            self._apply(self.membership.tick(time.monotonic()))
            self.rooms_driver.handle(Tick())
            if self._peer_book_dirty and self.data_dir_lost is None:
                self._peer_book_dirty = False
                try:
                    save_peer_addresses(self.config.data_dir, self._peer_book())
                except OSError as error:  # the dir going away is the watcher's to report
                    log.warning("could not save the peer book: %s", error)
            await asyncio.sleep(tick_interval_s)

    def _reject(self, reason: str) -> None:
        self.peer_frames_rejected += 1
        count = self.peer_frames_rejected
        if count <= 10 or count % REJECTED_FRAME_LOG_EVERY == 0:
            # The reason quotes the frame: no control character from a peer reaches the log.
            log.warning("peer port: rejected frame #%d: %s", count, terminal_safe(reason))

    def _local_users(self, room: str) -> list[str]:
        return self.chat.hub.users(room)

    def _send_frame(self, node: str, frame: bytes) -> None:
        """The bundler's way out: a frame of room messages to a member, if it has an
        address."""
        address = self._addresses.get(node)
        if address is not None:
            self.transport.send(address, frame, self.peer_keys.key_for_node(node))

    def _seed_addresses(self, texts: list[str]) -> list[str]:
        """Seeds (configured, or remembered peers) as addresses; their node ids (written
        ID@HOST:PORT) are noted for the keys the links need. A remembered entry that is
        unusable is skipped: the book is a shortcut, never a reason not to start."""
        addresses = []
        skipped = []
        for text in texts:
            try:
                node_id, address = parse_seed(text)
            except ValueError:
                skipped.append(text)
                continue
            if node_id is None and self.peer_keys.security is not None:
                skipped.append(text)
                continue
            self.peer_keys.learn_seed(node_id, address)
            addresses.append(address)
        if skipped:
            log.warning(
                "ignoring %d remembered peer(s) that name no node (CURVE needs ID@HOST:PORT), "
                "e.g. %r; the node rejoins through its seeds or when a peer reaches it",
                len(skipped),
                skipped[0][:80],
            )
        return addresses

    def _peer_book(self) -> list[str]:
        """The peers to remember, as ID@HOST:PORT."""
        assert self.membership is not None
        records = self.membership.records_to_remember(time.monotonic())
        book = {f"{record.id}@{record.address}" for record in records}
        # Remembered peers not heard yet keep their place until their window ends.
        for address in self.membership.remembered_addresses():
            book.add(self._remembered_texts.get(address, address))
        return sorted(book)

    async def _reload_trusted_keys(self) -> None:
        """Re-read the trusted directory every second: a new key joins, a removed one is
        revoked at once (its member dropped, its links closed, its frames refused)."""
        security = self.peer_keys.security
        if security is None:
            return
        while True:
            await asyncio.sleep(TRUSTED_KEYS_RELOAD_S)
            changed, revoked = security.trusted.reload()
            if not changed and not revoked:
                continue
            log.info(
                "trusted keys reloaded: %s added or changed, %s revoked",
                ", ".join(sorted(changed)) or "none",
                ", ".join(sorted(revoked)) or "none",
            )
            for node_id in changed | revoked:
                address = self._addresses.get(node_id)
                if address is not None:
                    self.transport.forget(address)
            assert self.membership is not None
            self._apply(self.membership.set_trusted(security.trusted.nodes(), time.monotonic()))

    def _members_changed(self) -> None:
        """Tell the room engine who is alive; it re-places rooms and re-registers interest."""
        assert self.membership is not None
        views = self.membership.members(time.monotonic())
        current = [view for view in views if view.state is not MemberState.LEFT]
        self._addresses = {
            view.id: view.address for view in current if view.id != self.config.node_id
        }
        self.rooms_driver.handle(members_changed(current))

    def _apply(self, effects: list[Effect]) -> None:
        members_changed = False
        for effect in effects:
            match effect:
                case SendTo(address, message, node_id):
                    key = self.peer_keys.key_for(node_id, address)
                    self.transport.send(address, encode_peer_frame(message), key)
                case StateChanged() as change:
                    members_changed = True
                    if change.new_incarnation:
                        self._peer_book_dirty = True
                        # Drop what is queued for the old start, wherever it was.
                        previous = self._addresses.get(change.member_id)
                        if previous is not None:
                            self.transport.forget(previous)
                        if change.before is not None:
                            self.transport.forget(change.address)
                    log.info(
                        "member %s at %s incarnation %d: %s -> %s",
                        change.member_id,
                        change.address,
                        change.incarnation,
                        change.before.value if change.before else "new",
                        change.after.value,
                        extra={"member": change.member_id, "state": change.after.value},
                    )
                case SeedUnanswered(address, attempts, retry_in_s) as unanswered:
                    log.log(
                        logging.WARNING if unanswered.worth_a_warning else logging.DEBUG,
                        "seed %s has not answered %d attempt(s); retrying in %.1fs",
                        address,
                        attempts,
                        retry_in_s,
                    )
                case RememberedPeerForgotten(address, silent_s):
                    self._peer_book_dirty = True
                    log.info(
                        "forgetting remembered peer %s: silent for %.0fs since this start",
                        address,
                        silent_s,
                    )
                case Anomaly(reason):
                    self.anomalies += 1
                    log.warning("membership: %s", reason)
        if members_changed:
            self._members_changed()


def _texts_by_address(texts: list[str]) -> dict[str, str]:
    """The book's entries by address: how each is written back while it is remembered."""
    by_address = {}
    for text in texts:
        try:
            _, address = parse_seed(text)
        except ValueError:
            continue  # skipped at start already, and said so
        by_address[address] = text
    return by_address


def _call_soon(callback: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_soon(callback)


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


def _wall_offset_ms() -> int:
    """Wall-clock ms minus monotonic ms: turns the shell's monotonic times into wall time."""
    return int(time.time() * 1000 - time.monotonic() * 1000)


def _bind(host: str, port: int) -> "socket.socket":
    """The HTTP API's listening socket, bound before anything starts (a taken port fails early)."""
    try:
        return bind_http_socket(host, port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from error
        raise
