"""Overload at a node's door: past its sends in flight, a send waits its turn, and one that
waited too long is refused with `unavailable` and a wait drawn from the real backlog. A
refused send was never accepted, so a client that retries after the wait gets every
message stored once and in its order."""

import asyncio
from collections.abc import Callable

import httpx
import msgspec
import pytest

from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeConnection, NodeError
from mesh.node.doors.send_admission import HELD_S_PRIOR, SendAdmission
from mesh.node.drain_rate import DRAIN_WAIT_MAX_S, DRAIN_WAIT_UNKNOWN_S, DrainRate
from mesh.wire.errors import ErrorCode
from mesh.wire.pacing import RETRY_AFTER_S_MIN
from mesh.wire.protocol import Send, Sent
from router.config import RouterConfig
from router.effects import Complete, Effect, Load, Refused, SendPeer
from router.engine import RoomEngine
from router.events import Loaded, SendMessage, StorageDone, Tick
from router.limits import (
    BUSY_WAIT_S_MAX,
    BUSY_WAIT_S_MIN,
    PUSHES_BEHIND_FOR_WRITES_MAX,
    ROOM_WRITES_IN_FLIGHT_MAX,
)
from router.records import RoomMessage
from router.wire import ForwardReply, Posted
from router.writes import LocalOrigin, PendingForward, RemoteOrigin, SendRequest
from tests.processes import HOST, Cluster, NodeProcess, counters, run_async, wait_for

# ---- the drain rate, sans-IO ----


def test_a_steady_rate_is_measured_and_the_wait_is_the_backlog_over_it() -> None:
    rate = DrainRate(half_life_s=1.0)
    for step in range(1000):  # 100 per second for 10 s
        rate.finished(step / 100)
    assert rate.per_s(10.0) == pytest.approx(100, rel=0.05)
    assert rate.wait_s(10.0, ahead=50) == pytest.approx(0.5, rel=0.05)
    assert rate.per_s(20.0) < 1  # ten half-lives later it has all but faded


def test_nothing_finished_lately_means_a_short_wait_and_a_huge_backlog_the_longest() -> None:
    assert DrainRate().wait_s(5.0, ahead=1) == DRAIN_WAIT_UNKNOWN_S
    rate = DrainRate()
    rate.finished(0.0, count=1000)
    assert rate.wait_s(0.0, ahead=10_000_000) == DRAIN_WAIT_MAX_S
    assert 0 < rate.wait_s(0.0, ahead=1) < 0.01


# ---- the admission gate, on a real event loop ----


def test_past_the_bound_sends_wait_in_turn_and_take_the_freed_slots() -> None:
    async def scenario() -> None:
        gate = SendAdmission(in_flight_max=2, wait_max_s=5.0)
        assert await gate.admit() == 0.0 and await gate.admit() == 0.0
        order: list[str] = []

        async def wait(name: str) -> None:
            assert await gate.admit() == 0.0
            order.append(name)

        waiters = [asyncio.create_task(wait(name)) for name in ("a", "b", "c")]
        await asyncio.sleep(0.01)
        assert gate.waiting == 3 and gate.in_flight == 2 and not order
        gate.finished(0.1)
        gate.finished(0.1)
        await asyncio.sleep(0.01)
        assert order == ["a", "b"] and gate.in_flight == 2 and gate.waiting == 1
        for _ in range(3):
            gate.finished(0.1)
        await asyncio.gather(*waiters)
        assert order == ["a", "b", "c"] and gate.in_flight == 0 and gate.waiting == 0

    asyncio.run(scenario())


def test_a_send_that_waited_too_long_is_told_when_the_backlog_will_have_drained() -> None:
    async def scenario() -> None:
        gate = SendAdmission(in_flight_max=10, wait_max_s=0.02)
        for _ in range(10):
            assert await gate.admit() == 0.0
        assert await gate.admit() == pytest.approx(HELD_S_PRIOR / 10)  # no send finished yet
        for _ in range(500):  # sends take 0.2 s each, so 10 in flight finish 50 a second
            gate.finished(0.2)
            assert await gate.admit() == 0.0
        waits = await asyncio.gather(*(gate.admit() for _ in range(9)))
        assert gate.in_flight == 10 and gate.waiting == 0 and gate.stats.refused == 10
        # Refused together, the first still had eight waiting behind: nine slots to free.
        assert max(waits) == pytest.approx(9 * 0.2 / 10, rel=0.01)
        assert min(waits) >= RETRY_AFTER_S_MIN

    asyncio.run(scenario())


def test_a_waiting_send_cancelled_gives_up_its_place_and_loses_no_slot() -> None:
    async def scenario() -> None:
        gate = SendAdmission(in_flight_max=1, wait_max_s=5.0)
        assert await gate.admit() == 0.0
        cancelled = asyncio.create_task(gate.admit())
        later = asyncio.create_task(gate.admit())
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.sleep(0.01)
        assert gate.waiting == 1
        gate.finished(0.1)
        assert await later == 0.0
        gate.finished(0.1)
        assert gate.in_flight == 0 and gate.waiting == 0

    asyncio.run(scenario())


# ---- a room's coordinator, sans-IO ----


def alone_engine() -> RoomEngine:
    """A node that is the whole mesh: every room's coordinator, with no peers."""
    return RoomEngine(
        "n1",
        RouterConfig(),
        epoch=1,
        wall_offset_ms=1_700_000_000_000,
        local_users=lambda room: [],
        alone=True,
    )


def test_a_room_s_coordinator_refuses_writes_past_its_bound_but_not_retries_of_open_ones() -> None:
    engine = alone_engine()
    engine.handle(Tick(), 0.0)

    def send(ticket: int, key: str, room: str = "busy") -> list[Effect]:
        effects = engine.handle(SendMessage(ticket, SendRequest(room, "ann", key, "x")), 0.1)
        for effect in list(effects):
            if isinstance(effect, Load) and effect.state_only:  # the room's state: none
                effects += engine.handle(StorageDone(effect, Loaded([])), 0.1)
        return effects

    for n in range(ROOM_WRITES_IN_FLIGHT_MAX):  # stored, never completed: all stay open
        assert not [e for e in send(n, f"k{n}") if isinstance(e, Complete)]
    (refused,) = [e for e in send(-1, "one more") if isinstance(e, Complete)]
    assert isinstance(refused.outcome, Refused)
    assert refused.outcome.code is ErrorCode.UNAVAILABLE
    assert refused.outcome.retry_after_s == BUSY_WAIT_S_MIN  # the oldest opened just now
    assert engine.stats.writes_refused_busy == 1
    assert not [e for e in send(-2, "k0") if isinstance(e, Complete)], "a retry joins its write"
    assert not [e for e in send(-3, "k", room="quiet") if isinstance(e, Complete)]


def test_a_busy_room_s_refusal_tells_how_long_writes_take_now_through_a_forward_too() -> None:
    engine = alone_engine()
    engine.handle(Tick(), 0.0)
    coordinator = engine._coordinator  # the role itself: the backlog is what it is told
    for n in range(ROOM_WRITES_IN_FLIGHT_MAX):  # opened at 0.5, never completed
        coordinator.coordinate(LocalOrigin(n), SendRequest("busy", "ann", f"k{n}", "x"), 0.5)
    request = SendRequest("busy", "ann", "one more", "x")
    steps = coordinator.coordinate(RemoteOrigin("n3", 7), request, 2.0)
    (sent,) = [step for step in steps if isinstance(step, SendPeer)]
    assert isinstance(sent.message, ForwardReply) and sent.message.retry_after_s == 1.5
    # The gateway that forwarded it passes the wait on to its client.
    gateway = alone_engine()._forwarding
    gateway._forwards[7] = PendingForward(11, request, 10.0, "n1", 0.0)
    (answered,) = gateway.replied(
        msgspec.msgpack.decode(msgspec.msgpack.encode(sent.message), type=ForwardReply), 2.0
    )
    assert isinstance(answered, Complete) and isinstance(answered.outcome, Refused)
    assert answered.outcome.retry_after_s == 1.5
    late = coordinator.coordinate(LocalOrigin(-1), request, 60.0)
    (capped,) = [step for step in late if isinstance(step, Complete)]
    assert isinstance(capped.outcome, Refused) and capped.outcome.retry_after_s == BUSY_WAIT_S_MAX


def test_a_refusal_for_a_member_node_far_behind_tells_no_wait_it_cannot_know() -> None:
    engine = alone_engine()
    engine.handle(Tick(), 0.0)
    coordinator = engine._coordinator
    behind = ("n2", PUSHES_BEHIND_FOR_WRITES_MAX)
    steps = coordinator.coordinate(
        LocalOrigin(1), SendRequest("busy", "ann", "k", "x"), 2.0, behind
    )
    (refused,) = [step for step in steps if isinstance(step, Complete)]
    assert isinstance(refused.outcome, Refused) and refused.outcome.retry_after_s is None


def test_a_peer_s_wait_is_taken_only_within_bounds() -> None:
    fine = {"type": "forward_reply", "forward_id": 1, "retry_after_s": 1.0}
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(fine), type=ForwardReply).retry_after_s
    for wait_s in (0.0, 61.0, float("nan")):
        encoded = msgspec.msgpack.encode(
            {"type": "forward_reply", "forward_id": 1, "retry_after_s": wait_s}
        )
        with pytest.raises(msgspec.ValidationError):
            msgspec.msgpack.decode(encoded, type=ForwardReply)


def test_a_room_s_coordinator_takes_no_new_write_while_a_member_node_is_far_behind() -> None:
    engine = alone_engine()
    engine.handle(Tick(), 0.0)
    coordinator = engine._coordinator  # the role itself: the backlog is what it is told
    request = SendRequest("busy", "ann", "k1", "x")
    steps = coordinator.coordinate(
        LocalOrigin(1), request, 0.1, ("n2", PUSHES_BEHIND_FOR_WRITES_MAX)
    )
    (refused,) = [step for step in steps if isinstance(step, Complete)]
    assert isinstance(refused.outcome, Refused) and "n2" in refused.outcome.reason
    steps = coordinator.coordinate(
        LocalOrigin(2), request, 0.2, ("n2", PUSHES_BEHIND_FOR_WRITES_MAX - 1)
    )
    assert not [step for step in steps if isinstance(step, Complete)], "taken: it is stored"


def test_a_member_node_that_takes_nothing_for_an_interest_s_lapse_no_longer_holds_writes() -> None:
    engine = alone_engine()
    fan_out = engine._fan_out  # the role itself: a stream as a stuck node leaves it
    fan_out.interest.register("n2", ["busy"], 0.0)
    stream = fan_out._stream_to("n2")
    for n in range(PUSHES_BEHIND_FOR_WRITES_MAX):
        stream.push(Posted(RoomMessage("busy", f"{n:016x}.n1", "ann", f"k{n}", 0, "x")), 1.0)
    assert fan_out.furthest_behind("busy", 1.0) == ("n2", PUSHES_BEHIND_FOR_WRITES_MAX)
    lapse_s = RouterConfig().interest_lapse_s
    assert fan_out.furthest_behind("busy", 1.0 + lapse_s) == ("n2", PUSHES_BEHIND_FOR_WRITES_MAX)
    assert fan_out.furthest_behind("busy", 1.1 + lapse_s) == ("", 0), "given up"
    assert "n2" not in fan_out.interest.nodes("busy")


# ---- a real node, flooded ----

processes = pytest.mark.processes
FLOOD_SESSIONS = 6
FLOOD_SENDS = 40
SENDERS = 12
SENDS_EACH = 30


@pytest.fixture
def narrow_node(cluster: Cluster) -> NodeProcess:
    """A node that takes two sends at a time and makes none wait: most of a flood is
    refused, each with a wait (rate limits out of the way)."""
    options = [
        *("--sends-in-flight-max", "2", "--send-wait-max-s", "0"),
        *("--sends-per-s", "100000", "--send-burst", "100000"),
    ]
    node = cluster.add("n1", http=True, options=options).start()
    wait_for(lambda: node.status() is not None, 10.0, node.log)
    return node


def _send(room: str, key: str) -> Callable[[int], Send]:
    return lambda i: Send(request_id=i, room=room, client_msg_id=key, body=key)


@processes
def test_a_flood_is_refused_with_a_wait_over_tcp_and_http(narrow_node: NodeProcess) -> None:
    async def flood_tcp(index: int) -> list[object]:
        connection = await NodeConnection.open(HOST, narrow_node.client_port, token=f"u{index}")
        try:
            builds = [_send("lobby", f"t{index}-{n}") for n in range(FLOOD_SENDS)]
            return list(await connection.pipeline(builds))
        finally:
            await connection.close()

    async def post(http: httpx.AsyncClient, n: int) -> httpx.Response:
        return await http.post(
            f"{narrow_node.http_url}/v1/rooms/lobby/messages",
            json={"body": "x"},
            headers={"Authorization": "Bearer web", "Idempotency-Key": f"h{n}"},
        )

    async def scenario() -> tuple[list[object], list[httpx.Response]]:
        async with httpx.AsyncClient(timeout=10) as http:
            tcp = asyncio.gather(*(flood_tcp(index) for index in range(FLOOD_SESSIONS)))
            web = asyncio.gather(*(post(http, n) for n in range(FLOOD_SENDS)))
            replies, responses = await asyncio.gather(tcp, web)
        return [reply for session in replies for reply in session], list(responses)

    replies, responses = run_async(scenario())
    refused = [reply for reply in replies if isinstance(reply, NodeError)]
    assert refused, "two in flight cannot take six pipelined sessions at once"
    for error in refused:
        assert error.code is ErrorCode.UNAVAILABLE, error
        assert error.retry_after_s is not None and 0 < error.retry_after_s <= DRAIN_WAIT_MAX_S
    assert all(isinstance(reply, Sent | NodeError) for reply in replies)
    for response in responses:
        assert response.status_code in (201, 503), response.text
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "unavailable"
            assert response.json()["error"]["retry_after_s"] > 0
            assert int(response.headers["retry-after"]) >= 1
    counted = counters(narrow_node)
    busy = len(refused) + sum(response.status_code == 503 for response in responses)
    assert counted["sends_refused_busy"] == busy, counted
    assert counted["sends_in_flight"] == 0 and counted["sends_waiting_for_room"] == 0


@processes
def test_clients_that_wait_what_they_are_told_get_every_message_once_in_order(
    narrow_node: NodeProcess,
) -> None:
    server = [(HOST, narrow_node.client_port)]

    async def sender(index: int) -> list[str]:
        # One at a time, as a person types: each is acknowledged before the next is sent.
        async with ChatClient(server, token=f"s{index}") as client:
            return [(await client.send("lobby", f"s{index}-{n}")).id for n in range(SENDS_EACH)]

    async def read_back() -> list[tuple[str, str]]:
        async with ChatClient(server, token="reader") as client:
            stored: list[tuple[str, str]] = []
            before: str | None = None
            while True:  # newest page first, back to the oldest
                page = await client.history("lobby", before=before, limit=100)
                stored = [(message.sender, message.body) for message in page.messages] + stored
                if page.cursor is None:
                    return stored
                before = page.cursor

    async def scenario() -> tuple[list[list[str]], list[tuple[str, str]]]:
        acknowledged = await asyncio.gather(*(sender(index) for index in range(SENDERS)))
        return list(acknowledged), await read_back()

    acknowledged, stored = run_async(scenario(), timeout_s=90.0)
    assert counters(narrow_node)["sends_refused_busy"] > 0, "the node was not overloaded"
    assert all(len(set(ids)) == SENDS_EACH for ids in acknowledged)
    assert len(stored) == SENDERS * SENDS_EACH, "each message stored once"
    for index in range(SENDERS):
        bodies = [body for sender, body in stored if sender == f"s{index}"]
        assert bodies == [f"s{index}-{n}" for n in range(SENDS_EACH)], "in each sender's order"
