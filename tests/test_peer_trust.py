"""The peer port against strangers and lying members: real nodes on CURVE links, and
attackers that speak ZeroMQ as a stranger or with a trusted key of their own."""

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import msgspec
import pytest
import zmq

from mesh.node.peer_codec import encode_peer_frame
from peers.records import MemberRecord
from peers.wire import Heartbeat, Leave
from router.records import RoomMessage
from router.wire import Announce, Forward, Posted, Replicate
from tests.chat_helpers import client_for, next_messages
from tests.processes import (
    DEAD_AFTER_S,
    HOST,
    Cluster,
    NodeProcess,
    counters,
    free_ports,
    holds_for,
    run_async,
    run_cli,
    wait_for,
)

pytestmark = pytest.mark.processes

FAR_FUTURE_ID = "ffffffffffff0000.n9"


def members(node: NodeProcess) -> dict[str, tuple[str, int]]:
    reply = node.status()
    assert reply is not None, node.log()
    return {member.id: (member.state, member.incarnation) for member in reply.members}


class PeerActor:
    """A ZeroMQ peer under the test's control: a DEALER towards one node's peer port,
    optionally with CURVE keys, and a ROUTER of its own where a node would answer it."""

    def __init__(
        self,
        target: NodeProcess,
        *,
        keys: tuple[bytes, bytes] | None,
        server_key: bytes | None,
        routing_id: bytes | None = None,
    ) -> None:
        self.context = zmq.Context()
        self.inbox = self.context.socket(zmq.ROUTER)
        (port,) = free_ports(1)
        self.address = f"{HOST}:{port}"
        self.dealer = self.context.socket(zmq.DEALER)
        if keys is not None:
            public, secret = keys
            for socket_ in (self.inbox, self.dealer):
                socket_.curve_publickey, socket_.curve_secretkey = public, secret
            self.inbox.curve_server = True
            self.dealer.curve_serverkey = server_key
        if routing_id is not None:
            self.dealer.setsockopt(zmq.ROUTING_ID, routing_id)
        self.inbox.bind(f"tcp://{self.address}")
        self.dealer.connect(f"tcp://{target.peer_address}")

    def send(self, *messages: object) -> None:
        for message in messages:
            frame = (
                message if isinstance(message, bytes) else encode_peer_frame(message)  # type: ignore[arg-type]
            )
            self.dealer.send(frame)

    def heard_anything(self, within_s: float) -> bool:
        return bool(self.inbox.poll(int(within_s * 1000)))

    def close(self) -> None:
        self.dealer.close(linger=0)
        self.inbox.close(linger=0)
        self.context.term()


@contextmanager
def actor(
    cluster: Cluster,
    target: str,
    keys: tuple[bytes, bytes] | None,
    routing_id: bytes | None = None,
) -> Iterator[PeerActor]:
    key = cluster.server_key(target)
    peer = PeerActor(cluster.nodes[target], keys=keys, server_key=key, routing_id=routing_id)
    try:
        yield peer
    finally:
        peer.close()


def record(node_id: str, address: str, incarnation: int | None = None, left: bool = False):
    return MemberRecord(node_id, address, incarnation or int(time.time() * 1000), left)


def heartbeat(sender: MemberRecord, gossip: list[MemberRecord] | None = None) -> Heartbeat:
    return Heartbeat(sender=sender, sequence=1, gossip=gossip or [])


def logged(node: NodeProcess, text: str) -> bool:
    return text in node.log()


def dropped(node: NodeProcess, node_id: str) -> bool:
    return node_id not in members(node)


def wait_trusted(node: NodeProcess, node_id: str) -> None:
    wait_for(lambda: f"{node_id} added" in node.log(), 5.0, node.log)


@pytest.fixture
def two_nodes(cluster: Cluster) -> Cluster:
    first = cluster.add("n1").start()
    cluster.add("n2", seeds=[first.peer_address]).start()
    cluster.wait_sees("n1", "n2", "alive")
    cluster.wait_sees("n2", "n1", "alive")
    return cluster


def test_a_stranger_without_a_trusted_key_gets_nothing(two_nodes: Cluster) -> None:
    n1 = two_nodes.nodes["n1"]
    failures_before = counters(n1)["peer_handshake_failures"]
    strangers = [
        (actor(two_nodes, "n1", None, routing_id=b"n2"), "--insecure-peers"),
        (actor(two_nodes, "n1", zmq.curve_keypair()), "its key is not trusted here"),
    ]
    for stranger_context, refusal in strangers:
        with stranger_context as stranger:
            evil = record("evil", stranger.address)
            stranger.send(
                heartbeat(evil),
                Forward(1, "lobby", "mallory", "c1", "forged"),
                Replicate(1, RoomMessage("0190000000000000.n1", "lobby", "bob", "c", 1, "x")),
            )
            # No welcome, no member table, no room traffic: nothing comes back at all.
            assert not stranger.heard_anything(within_s=1.5)
            # The refusal is said once, with its reason, however often the stranger retries.
            wait_for(partial(logged, n1, refusal), 10.0, n1.log)
    wait_for(lambda: counters(n1)["peer_handshake_failures"] >= failures_before + 2, 5.0, n1.log)
    assert set(members(n1)) == {"n1", "n2"}

    async def history_is_clean() -> None:
        async with client_for(n1, user="ann") as ann:
            page = await ann.history("lobby")
            assert page.messages == []

    run_async(history_is_clean())


def test_a_trusted_key_cannot_speak_for_another_node(two_nodes: Cluster) -> None:
    n1, n2 = two_nodes.nodes["n1"], two_nodes.nodes["n2"]
    keys = two_nodes.member_key("n9")
    wait_trusted(n1, "n9")
    n2_before = members(n1)["n2"]
    rejected_before = counters(n1)["peer_frames_rejected"]
    # n9's key, n2's routing id: once enough to take over n2's pipe (ROUTER_HANDOVER).
    with actor(two_nodes, "n1", keys, routing_id=b"n2") as liar:
        impostor = record("n2", n2.peer_address, n2_before[1] + 1000)
        liar.send(
            heartbeat(impostor),  # a newer start of n2, said by n9
            Leave(sender=MemberRecord("n2", n2.peer_address, n2_before[1], left=True)),
            Forward(1, "lobby", "mallory", "c1", "forged"),  # n9 is no member yet
            Announce(Posted(RoomMessage("0190000000000000.n2", "lobby", "bob", "c", 1, "x"))),
        )
        wait_for(lambda: counters(n1)["peer_frames_rejected"] >= rejected_before + 4, 5.0, n1.log)
        # n2's own link is untouched: it stays alive past a whole dead window.
        holds_for(lambda: members(n1)["n2"] == n2_before, DEAD_AFTER_S * 2, n1.log)
        reply = n1.status()
        assert reply is not None
        (n2_row,) = [row for row in reply.members if row.id == "n2"]
        assert n2_row.last_heard_s is not None and n2_row.last_heard_s < DEAD_AFTER_S
    assert "n9" not in members(n1)


def test_gossip_cannot_evict_a_member_or_fill_the_table(two_nodes: Cluster) -> None:
    n1, n2 = two_nodes.nodes["n1"], two_nodes.nodes["n2"]
    keys = two_nodes.member_key("n9")
    wait_trusted(n1, "n9")
    n2_state = members(n1)["n2"]
    with actor(two_nodes, "n1", keys) as member:
        own = record("n9", member.address)
        fakes = [record(f"fake{i}", f"{HOST}:{10000 + i}") for i in range(60)]
        lies = [
            MemberRecord("n2", n2.peer_address, 2**63 - 1, left=True),  # left, forever
            MemberRecord("n2", n2.peer_address, n2_state[1], left=True),  # left, now
        ]
        for round_ in range(5):
            member.send(heartbeat(own, [*lies, *fakes[round_ * 12 : round_ * 12 + 12]]))
            time.sleep(0.1)
        wait_for(lambda: members(n1).get("n9", ("?",))[0] == "alive", 5.0, n1.log)
        seen = counters(n1)
        assert seen["peer_records_untrusted"] >= 60
        assert seen["peer_incarnations_refused"] >= 1
        assert seen["peer_hearsay_ignored"] >= 1
        assert members(n1)["n2"] == n2_state
        assert set(members(n1)) == {"n1", "n2", "n9"}
    # A real new node still joins, and n2 was never evicted anywhere.
    n3 = two_nodes.add("n3", seeds=[n1.peer_address]).start()
    two_nodes.wait_sees("n1", "n3", "alive", timeout_s=10.0)
    two_nodes.wait_sees("n3", "n2", "alive", timeout_s=10.0)
    assert members(n1)["n2"][0] == "alive"
    assert n3.process is not None and n3.process.poll() is None


def test_a_far_future_id_is_refused_and_sends_keep_working(two_nodes: Cluster) -> None:
    n1 = two_nodes.nodes["n1"]
    keys = two_nodes.member_key("n9")
    wait_trusted(n1, "n9")
    with actor(two_nodes, "n1", keys) as member:
        own = record("n9", member.address)
        member.send(heartbeat(own))
        wait_for(lambda: members(n1).get("n9", ("?",))[0] == "alive", 5.0, n1.log)
        poisoned = RoomMessage(FAR_FUTURE_ID, "lobby", "mallory", "c-evil", 2**47, "from 10889")
        member.send(heartbeat(own), Replicate(7, poisoned), Replicate(0, poisoned))
        wait_for(lambda: counters(n1)["peer_ids_refused"] >= 2, 5.0, n1.log)
    assert "ahead of this node's clock" in n1.log()

    async def sends_work() -> list[str]:
        async with client_for(n1, user="ann") as ann, client_for(n1, user="bob") as bob:
            await bob.join("lobby")
            sent = [(await ann.send("lobby", f"m{i}")).id for i in range(5)]
            delivered = await next_messages(bob, 5)
            assert [message.id for message in delivered] == sent
            page = await ann.history("lobby")
            assert [message.id for message in page.messages][-5:] == sent
            assert FAR_FUTURE_ID not in [message.id for message in page.messages]
            return sent

    before = run_async(sends_work())
    assert all(message_id < FAR_FUTURE_ID for message_id in before)
    n1.stop()
    n1.start()
    two_nodes.wait_sees("n1", "n2", "alive", timeout_s=10.0)
    after = run_async(sends_work())
    assert all(message_id < FAR_FUTURE_ID for message_id in after)


def test_a_deeply_nested_frame_on_any_port_leaves_the_node_serving(two_nodes: Cluster) -> None:
    n1 = two_nodes.nodes["n1"]
    nested = b"\x82\xa4type\xa9heartbeat\xa1x" + b"\x91" * 5000 + b"\xc0"
    keys = two_nodes.member_key("n9")
    wait_trusted(n1, "n9")
    with actor(two_nodes, "n1", keys) as member:
        rejected_before = counters(n1)["peer_frames_rejected"]
        member.send(*[nested] * 20)
        wait_for(lambda: counters(n1)["peer_frames_rejected"] >= rejected_before + 20, 5.0, n1.log)
    client_nested = b"\x83\xa4type\xa4ping\xaarequest_id\x03\xa1x" + b"\x91" * 5000 + b"\xc0"
    hello = msgspec.msgpack.encode({"type": "hello", "versions": [1], "token": "eve"})
    with socket.create_connection((HOST, n1.client_port), timeout=5.0) as connection:
        ping = msgspec.msgpack.encode({"type": "ping", "request_id": 9})
        frames = [hello, *[client_nested] * 50, ping]
        connection.sendall(b"".join(len(f).to_bytes(4, "big") + f for f in frames))
        stream = connection.makefile("rb")
        replies = []
        for _ in range(52):
            length = int.from_bytes(stream.read(4), "big")
            replies.append(msgspec.msgpack.decode(stream.read(length)))
    assert replies[0]["type"] == "welcome"
    assert all(r["type"] == "error" and r["code"] == "bad_request" for r in replies[1:51])
    assert replies[51] == {"type": "pong", "request_id": 9, "time_ms": replies[51]["time_ms"]}

    async def everything_delivered_once() -> None:
        async with client_for(n1, user="ann") as ann, client_for(n1, user="bob") as bob:
            await bob.join("lobby")
            sent = [(await ann.send("lobby", f"after {i}")).id for i in range(10)]
            assert [m.id for m in await next_messages(bob, 10)] == sent

    run_async(everything_delivered_once())
    assert n1.process is not None and n1.process.poll() is None
    assert "Traceback" not in n1.log()
    assert "RecursionError" not in n1.log()


def test_nodes_of_different_modes_refuse_each_other_clearly(cluster: Cluster) -> None:
    secure = cluster.add("n1").start()
    insecure = cluster.add("n2", seeds=[secure.peer_address], options=["--insecure-peers"])
    insecure.start()
    wait_for(lambda: "--insecure-peers" in secure.log(), 10.0, secure.log)
    wait_for(lambda: "--insecure-peers" in insecure.log(), 10.0, insecure.log)
    assert set(members(secure)) == {"n1"}
    assert "n1" not in members(insecure) or members(insecure)["n1"][0] != "alive"


def test_a_revoked_node_is_dropped_and_a_trusted_one_returns(cluster: Cluster) -> None:
    first = cluster.add("n1").start()
    for node_id in ("n2", "n3"):
        cluster.add(node_id, seeds=[first.peer_address]).start()
    for observer in ("n1", "n2"):
        cluster.wait_sees(observer, "n3", "alive", timeout_s=10.0)
    revoked = run_cli("keys", "revoke", "--id", "n3", "--trusted", str(cluster.trusted_dir))
    assert revoked.returncode == 0, revoked.stderr
    listed = run_cli("keys", "list", str(cluster.trusted_dir))
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["n1", "n2"]
    for observer in ("n1", "n2"):
        node = cluster.nodes[observer]
        wait_for(partial(dropped, node, "n3"), 5.0, node.log)
    # n3 keeps knocking (frames on its open link, refused handshakes); it must stay out.
    n1 = cluster.nodes["n1"]

    def knocks() -> int:
        seen = counters(n1)
        return seen["peer_handshake_failures"] + seen["peer_frames_rejected"]

    before = knocks()
    wait_for(lambda: knocks() > before, 10.0, n1.log)
    holds_for(partial(dropped, n1, "n3"), DEAD_AFTER_S, n1.log)
    trusted = run_cli(
        "keys", "trust", str(cluster.keys_dir / "n3.key"), "--trusted", str(cluster.trusted_dir)
    )
    assert trusted.returncode == 0, trusted.stderr
    cluster.wait_sees("n1", "n3", "alive", timeout_s=10.0)


def test_keys_new_writes_a_private_secret_and_never_overwrites(tmp_path: Path) -> None:
    made = run_cli("keys", "new", "--id", "eu-1", "--out", str(tmp_path))
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "eu-1.key_secret").stat().st_mode & 0o777 == 0o600
    assert b"secret-key" not in (tmp_path / "eu-1.key").read_bytes()
    again = run_cli("keys", "new", "--id", "eu-1", "--out", str(tmp_path))
    assert again.returncode == 2 and "exists already" in again.stderr
    peer_port, client_port = free_ports(2)
    wrong = run_cli(
        "node", "--id", "eu-2", "--peer-port", str(peer_port), "--client-port",
        str(client_port), "--data", str(tmp_path / "d"),
        "--node-key", str(tmp_path / "eu-1.key_secret"),
    )  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr
    assert wrong.stderr.strip().splitlines() == [
        f"meshchat node: {tmp_path / 'eu-1.key_secret'} is not node eu-2's key "
        "(expected eu-2.key_secret)"
    ]


def test_a_node_refused_before_its_key_was_trusted_joins_once_it_is(cluster: Cluster) -> None:
    first = cluster.add("n1").start()
    late = cluster.add("n2", seeds=[first.peer_address])
    public_key = cluster.trusted_dir / "n2.key"
    public_key.unlink()  # n1 does not know n2 yet
    wait_for(partial(logged, first, "n2 revoked"), 5.0, first.log)
    late.start()
    wait_for(partial(logged, first, "its key is not trusted here"), 10.0, first.log)
    trusted = run_cli(
        "keys", "trust", str(cluster.keys_dir / "n2.key"), "--trusted", str(cluster.trusted_dir)
    )
    assert trusted.returncode == 0, trusted.stderr
    cluster.wait_sees("n1", "n2", "alive", timeout_s=15.0)
    cluster.wait_sees("n2", "n1", "alive", timeout_s=5.0)


def test_a_replaced_key_cuts_off_the_connection_made_with_the_old_one(two_nodes: Cluster) -> None:
    n1 = two_nodes.nodes["n1"]
    keys = two_nodes.member_key("n9")
    wait_trusted(n1, "n9")
    with actor(two_nodes, "n1", keys) as member:
        own = record("n9", member.address)
        member.send(heartbeat(own))
        wait_for(lambda: members(n1).get("n9", ("?",))[0] == "alive", 5.0, n1.log)
        # n9 gets a new key; the connection made with the old one must be heard no more.
        replacement = two_nodes.root / "replacement"
        assert run_cli("keys", "new", "--id", "n9", "--out", str(replacement)).returncode == 0
        trusted = run_cli(
            "keys", "trust", str(replacement / "n9.key"), "--trusted", str(two_nodes.trusted_dir)
        )
        assert trusted.returncode == 0, trusted.stderr
        wait_for(lambda: n1.log().count("n9 added or changed") >= 2, 5.0, n1.log)
        seen = counters(n1)
        refused_before = seen["peer_frames_rejected"] + seen["peer_handshake_failures"]
        deadline = time.monotonic() + 4 * DEAD_AFTER_S
        while time.monotonic() < deadline:  # the old key keeps talking, and is not heard
            member.send(heartbeat(own))
            time.sleep(0.05)
        assert members(n1)["n9"][0] == "dead"
        seen = counters(n1)
        assert seen["peer_frames_rejected"] + seen["peer_handshake_failures"] > refused_before


def test_a_member_record_with_an_address_nobody_can_reach_does_no_harm(
    two_nodes: Cluster,
) -> None:
    n1 = two_nodes.nodes["n1"]
    keys = two_nodes.member_key("n9")
    wait_trusted(n1, "n9")
    with actor(two_nodes, "n1", keys) as member:
        malformed = msgspec.msgpack.encode(
            {"type": "heartbeat", "sender": ["n9", "h:abc", int(time.time() * 1000)], "sequence": 1}
        )
        rejected_before = counters(n1)["peer_frames_rejected"]
        member.send(malformed)
        wait_for(lambda: counters(n1)["peer_frames_rejected"] > rejected_before, 5.0, n1.log)
        member.send(heartbeat(record("n9", "_:1")))  # fits the schema, libzmq refuses it
        wait_for(lambda: members(n1).get("n9", ("?",))[0] == "alive", 5.0, n1.log)
        wait_for(partial(logged, n1, "cannot connect to peer address"), 5.0, n1.log)
    n1.stop()
    assert n1.start() is n1
    two_nodes.wait_sees("n1", "n2", "alive", timeout_s=10.0)
    assert "Traceback" not in n1.log()
