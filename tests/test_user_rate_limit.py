"""The send limit is per user on a node: all their sessions and both doors (TCP, HTTP) share
one bucket, and every refusal says when to retry (retry_after_s > 0, Retry-After >= 1)."""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.client.connection import NodeConnection, NodeError
from mesh.node.doors.rate_limit import UserSendLimits
from mesh.wire.errors import ErrorCode
from mesh.wire.pacing import RETRY_AFTER_S_MIN, retry_after_s
from mesh.wire.protocol import Send, Sent
from tests.processes import HOST, Cluster, NodeProcess, run_async, wait_for

RATE_PER_S = 5
BURST = 5
SESSIONS = 5
DURATION_S = 2.0
# Sends that may pass beyond burst + rate * elapsed: the node's clock starts a moment
# before the test's, and one refill may land while the last replies are in flight.
SLACK = 2


# ---- the registry, sans-IO ----


def test_a_user_gets_the_burst_then_the_rate() -> None:
    limits = UserSendLimits(rate_per_s=5, burst=5)
    assert [limits.take("ann", 100.0) for _ in range(5)] == [0.0] * 5
    assert limits.take("ann", 100.0) == pytest.approx(0.2)
    assert limits.take("bob", 100.0) == 0.0  # a user of their own
    assert limits.take("ann", 100.2) == 0.0
    assert limits.take("ann", 100.2) > 0


def test_idle_buckets_are_forgotten_and_the_count_is_bounded() -> None:
    limits = UserSendLimits(rate_per_s=10, burst=5, users_max=3)
    for n, user in enumerate(("a", "b", "c")):
        limits.take(user, 100.0 + n * 0.01)
    assert len(limits) == 3
    limits.take("d", 100.05)  # a busy fourth: the least recently seen goes
    assert len(limits) == 3 and limits.stats.forgotten_busy == 1
    limits.take("e", 100.05 + limits.refill_s)  # all others have refilled: forgotten
    assert len(limits) == 1
    assert limits.stats.forgotten_idle == 3


@given(
    rate_per_s=st.floats(0.01, 10_000),
    burst=st.integers(1, 1000),
    steps_s=st.lists(st.floats(0, 5), min_size=1, max_size=60),
)
def test_a_refusal_always_says_a_wait_and_the_wait_is_enough(
    rate_per_s: float, burst: int, steps_s: list[float]
) -> None:
    limits = UserSendLimits(rate_per_s, burst)
    now = 10_000.0
    for step_s in steps_s:
        now += step_s
        while (wait_s := limits.take("ann", now)) == 0.0:
            pass
        assert wait_s >= RETRY_AFTER_S_MIN
        assert limits.take("ann", now + wait_s) == 0.0, (now, wait_s)
        now += wait_s


@given(st.floats(0, 10_000))
def test_retry_after_is_never_zero_and_never_short(wait_s: float) -> None:
    told = retry_after_s(wait_s)
    assert told >= RETRY_AFTER_S_MIN and told >= wait_s


# ---- a real node ----


@dataclass
class Tally:
    accepted: int = 0
    retry_afters_s: list[float] = field(default_factory=list)
    retry_after_headers: list[str] = field(default_factory=list)


@pytest.fixture
def node(cluster: Cluster) -> NodeProcess:
    options = ["--sends-per-s", str(RATE_PER_S), "--send-burst", str(BURST)]
    node = cluster.add("n1", http=True, options=options).start()
    wait_for(lambda: _healthy(node), 10.0, node.log)
    return node


def _healthy(node: NodeProcess) -> bool:
    try:
        return httpx.get(f"{node.http_url}/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def send_request(room: str, client_msg_id: str) -> Callable[[int], Send]:
    return lambda i: Send(request_id=i, room=room, client_msg_id=client_msg_id, body="x")


async def send_over_tcp(
    connection: NodeConnection, tally: Tally, name: str, until: float, room: str = "lobby"
) -> None:
    """Send as fast as allowed: on a refusal, wait what the node said, then send again."""
    n = 0
    while time.monotonic() < until:
        n += 1
        try:
            reply = await connection.request(send_request(room, f"{name}-{n}"))
        except NodeError as error:
            assert error.code is ErrorCode.RATE_LIMITED, error
            assert error.retry_after_s is not None and error.retry_after_s > 0, error
            tally.retry_afters_s.append(error.retry_after_s)
            await asyncio.sleep(error.retry_after_s)
            continue
        assert isinstance(reply, Sent)
        tally.accepted += 1


async def post_over_http(
    http: httpx.AsyncClient, node: NodeProcess, tally: Tally, user: str, until: float
) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        response = await http.post(
            f"{node.http_url}/v1/rooms/lobby/messages",
            json={"body": "x"},
            headers={"Authorization": f"Bearer {user}", "Idempotency-Key": f"http-{n}"},
        )
        if response.status_code == 201:
            tally.accepted += 1
            continue
        assert response.status_code == 429, response.text
        error = response.json()["error"]
        assert error["code"] == "rate_limited"
        assert error["retry_after_s"] > 0, error
        assert int(response.headers["retry-after"]) >= 1, response.headers
        tally.retry_afters_s.append(error["retry_after_s"])
        tally.retry_after_headers.append(response.headers["retry-after"])
        # The body's wait, not the header's whole seconds: the test wants to press hard.
        await asyncio.sleep(error["retry_after_s"])


processes = pytest.mark.processes


@processes
def test_five_sessions_and_http_of_one_user_share_one_limit(node: NodeProcess) -> None:
    async def scenario() -> tuple[Tally, float]:
        tally = Tally()
        sessions = [
            await NodeConnection.open(HOST, node.client_port, token="ann") for _ in range(SESSIONS)
        ]
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                started = time.monotonic()
                until = started + DURATION_S
                async with asyncio.TaskGroup() as senders:
                    for index, session in enumerate(sessions):
                        senders.create_task(send_over_tcp(session, tally, f"s{index}", until))
                    senders.create_task(post_over_http(http, node, tally, "ann", until))
                elapsed_s = time.monotonic() - started
        finally:
            for session in sessions:
                await session.close()
        return tally, elapsed_s

    tally, elapsed_s = run_async(scenario())
    allowed = BURST + RATE_PER_S * elapsed_s + SLACK
    assert BURST < tally.accepted <= allowed, (tally.accepted, elapsed_s)
    assert tally.retry_afters_s and min(tally.retry_afters_s) > 0
    # Per session (5 buckets) the same run would have let through about 6 times as many.
    counters = node.status().counters  # type: ignore[union-attr]
    assert counters["client_errors_rate_limited"] >= 1, counters


@processes
def test_tcp_and_http_draw_on_the_same_bucket_and_others_are_not_slowed(
    cluster: Cluster, tmp_path: Path
) -> None:
    # A slow refill (one token per 10 s) so the order of events, not timing, decides.
    options = ["--sends-per-s", "0.1", "--send-burst", "3"]
    node = cluster.add("n1", http=True, options=options).start()
    wait_for(lambda: _healthy(node), 10.0, node.log)

    def post(user: str, key: str) -> httpx.Response:
        return httpx.post(
            f"{node.http_url}/v1/rooms/lobby/messages",
            json={"body": "x"},
            headers={"Authorization": f"Bearer {user}", "Idempotency-Key": key},
            timeout=10,
        )

    async def send(connection: NodeConnection, key: str) -> NodeError | None:
        try:
            await connection.request(send_request("lobby", key))
        except NodeError as error:
            return error
        return None

    async def scenario() -> None:
        ann = await NodeConnection.open(HOST, node.client_port, token="ann")
        bob = await NodeConnection.open(HOST, node.client_port, token="bob")
        try:
            for n in range(3):
                assert await send(ann, f"a{n}") is None
            refused = post("ann", "a-http")  # TCP spent ann's burst: HTTP is refused
            assert refused.status_code == 429
            assert refused.json()["error"]["retry_after_s"] > 0
            assert int(refused.headers["retry-after"]) >= 1
            for n in range(3):
                assert post("bob", f"b{n}").status_code == 201  # bob is not ann
            limited = await send(bob, "b-tcp")  # HTTP spent bob's burst: TCP is refused
            assert limited is not None and limited.code is ErrorCode.RATE_LIMITED
            assert limited.retry_after_s is not None and limited.retry_after_s > 0
            carol = await NodeConnection.open(HOST, node.client_port, token="carol")
            assert await send(carol, "c0") is None
            await carol.close()
        finally:
            await ann.close()
            await bob.close()

    run_async(scenario())
