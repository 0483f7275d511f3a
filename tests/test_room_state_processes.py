"""Room state across a real 3-node mesh: who may join, read, post and moderate, by role
and policy, through TCP and REST; a kicked user leaves the live stream at once, on every
node; a ban hides what the banned user writes."""

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeError
from mesh.wire.errors import ErrorCode
from mesh.wire.protocol import MessageEvent, RoomStateEvent
from tests.chat_helpers import client_for, wait_serving
from tests.processes import Cluster, NodeProcess, run_async, run_cli

pytestmark = pytest.mark.processes

POLICIES = ("open", "invite", "read_only")
ROLES = ("owner", "moderator", "member", "outsider")
USER_OF_ROLE = {"owner": "ann", "moderator": "mod", "member": "mem", "outsider": "out"}
READS = ("join", "history", "who", "show")
POSTS = ("send", "react", "typing")
MODERATES = ("invite", "kick", "ban", "topic", "policy", "role")


def allowed(operation: str, role: str, policy: str) -> bool:
    """The table docs/rooms.md gives, written out once more."""
    if operation in READS:
        return not (policy == "invite" and role == "outsider")
    if operation in POSTS:
        if policy == "open":
            return True
        if policy == "invite":
            return role != "outsider"
        return role in {"owner", "moderator"}
    return role in {"owner", "moderator"}


@pytest.fixture
def web_mesh(cluster: Cluster) -> Iterator[dict[str, NodeProcess]]:
    """Three nodes with the HTTP API, each seeing the others alive and serving rooms."""
    first = cluster.add("n1", http=True).start()
    for node_id in ("n2", "n3"):
        cluster.add(node_id, seeds=[first.peer_address], http=True).start()
    for observer in cluster.nodes:
        for member in cluster.nodes:
            if member != observer:
                cluster.wait_sees(observer, member, "alive", timeout_s=10.0)
    run_async(wait_serving(*cluster.nodes.values()))  # each past its join settle
    yield cluster.nodes


async def _set_up(owner: ChatClient, room: str, policy: str) -> str:
    """The room with its moderator and member; the id of a message of the owner's."""
    await owner.change_room(room, "create", value=policy)
    await owner.change_room(room, "set_role", user="mod", value="moderator")
    await owner.change_room(room, "set_role", user="mem", value="member")
    return (await owner.send(room, "react to me")).id


def _tcp_operation(
    client: ChatClient, room: str, operation: str, target: str, fresh: str
) -> Callable[[], Awaitable[Any]]:
    async def typing() -> None:
        with contextlib.suppress(NodeError):  # typing needs a join; refused, it is too
            await client.join(room)
        await client.typing(room)

    operations: dict[str, Callable[[], Awaitable[Any]]] = {
        "join": lambda: client.join(room),
        "history": lambda: client.history(room),
        "who": lambda: client.who(room),
        "show": lambda: client.show_room(room),
        "send": lambda: client.send(room, "hello"),
        "react": lambda: client.react(room, target, "+1"),
        "typing": typing,
        "invite": lambda: client.change_room(room, "invite", user=fresh),
        "kick": lambda: client.change_room(room, "kick", user=fresh),
        "ban": lambda: client.change_room(room, "ban", user=fresh),
        "topic": lambda: client.change_room(room, "set_topic", value="news"),
        "policy": lambda: client.change_room(room, "set_policy", value=_policy_of(room)),
        "role": lambda: client.change_room(room, "set_role", user=fresh, value="member"),
    }
    return operations[operation]


def _policy_of(room: str) -> str:
    return room.split("-", 1)[1].replace("-", "_")


def test_every_operation_by_every_role_under_every_policy_over_tcp(
    web_mesh: dict[str, NodeProcess],
) -> None:
    nodes = list(web_mesh.values())
    fresh_users = (f"new{n}" for n in itertools.count())

    async def scenario() -> None:
        clients = {
            role: client_for(nodes[n % 3], user=user)
            for n, (role, user) in enumerate(USER_OF_ROLE.items())
        }
        async with clients["owner"], clients["moderator"], clients["member"], clients["outsider"]:
            wrong: list[str] = []
            for policy in POLICIES:
                room = f"t-{policy.replace('_', '-')}"
                target = await _set_up(clients["owner"], room, policy)
                for role, client in clients.items():
                    for operation in (*READS, *POSTS, *MODERATES):
                        run = _tcp_operation(client, room, operation, target, next(fresh_users))
                        try:
                            await run()
                            outcome = True
                        except NodeError as error:
                            if error.code != ErrorCode.FORBIDDEN:
                                wrong.append(f"{policy} {role} {operation}: {error}")
                                continue
                            outcome = False
                        if outcome != allowed(operation, role, policy):
                            wrong.append(f"{policy} {role} {operation}: {outcome}")
            assert not wrong, "\n".join(wrong)

    run_async(scenario())


def _rest_operations(room: str, fresh: str) -> dict[str, tuple[str, str, Any]]:
    base = f"/v1/rooms/{room}"
    return {
        "history": ("GET", f"{base}/messages", None),
        "show": ("GET", base, None),
        "who": ("GET", f"{base}/members", None),
        "send": ("POST", f"{base}/messages", {"body": "hello over REST"}),
        "invite": ("POST", f"{base}/invites", {"user": fresh}),
        "kick": ("POST", f"{base}/kicks", {"user": fresh}),
        "ban": ("PUT", f"{base}/bans/{fresh}", None),
        "topic": ("PUT", f"{base}/topic", {"topic": "rest news"}),
        "policy": ("PUT", f"{base}/policy", {"policy": _policy_of(room)}),
        "role": ("PUT", f"{base}/roles/{fresh}", {"role": "member"}),
    }


def test_every_operation_by_every_role_under_every_policy_over_rest(
    web_mesh: dict[str, NodeProcess],
) -> None:
    nodes = list(web_mesh.values())
    fresh_users = (f"web{n}" for n in itertools.count())

    async def set_up() -> None:
        async with client_for(nodes[0], user="ann") as owner:
            for policy in POLICIES:
                await _set_up(owner, f"r-{policy.replace('_', '-')}", policy)

    run_async(set_up())
    wrong: list[str] = []
    for n, (policy, (role, user)) in enumerate(itertools.product(POLICIES, USER_OF_ROLE.items())):
        room = f"r-{policy.replace('_', '-')}"
        url = nodes[n % 3].http_url
        headers = {"Authorization": f"Bearer {user}"}
        for operation, (method, path, body) in _rest_operations(room, next(fresh_users)).items():
            response = httpx.request(method, url + path, json=body, headers=headers, timeout=10)
            if response.status_code == 403:
                assert response.json()["error"]["code"] == "forbidden"
            elif response.status_code not in {200, 201}:
                wrong.append(f"{policy} {role} {operation}: {response.status_code} {response.text}")
                continue
            if (response.status_code != 403) != allowed(operation, role, policy):
                wrong.append(f"{policy} {role} {operation}: {response.status_code}")
    assert not wrong, "\n".join(wrong)


def test_a_kicked_user_stops_receiving_the_room_within_a_second_on_every_node(
    web_mesh: dict[str, NodeProcess],
) -> None:
    n1, n2, n3 = web_mesh.values()

    async def scenario() -> None:
        ann = client_for(n2, user="ann")
        bob = client_for(n1, user="bob")
        carol = client_for(n3, user="carol")
        async with ann, bob, carol:
            await ann.change_room("club", "create", value="invite")
            for user in ("bob", "carol"):
                await ann.change_room("club", "invite", user=user)
            await bob.join("club")
            await carol.join("club")
            await carol.send("club", "before")
            kicked_at = time.monotonic()
            await ann.change_room("club", "kick", user="bob")
            heard: list[Any] = []

            async def listen() -> None:
                async for event in bob.events():
                    heard.append((time.monotonic(), event))

            listening = asyncio.create_task(listen())
            try:
                await carol.send("club", "after the kick")
                await asyncio.sleep(1.5)  # what bob hears in this window is the test
            finally:
                listening.cancel()
            kicks = [at for at, event in heard if isinstance(event, RoomStateEvent)]
            after = [
                event
                for _, event in heard
                if isinstance(event, MessageEvent) and event.message.body == "after the kick"
            ]
            assert kicks and kicks[0] - kicked_at < 1.0, heard
            assert after == [], heard
            with pytest.raises(NodeError) as again:
                await bob.join("club")
            assert again.value.code == ErrorCode.FORBIDDEN
            assert "club" not in await bob.rooms()

    run_async(scenario())


def test_a_ban_hides_what_the_user_writes_and_an_unban_lets_them_back(
    web_mesh: dict[str, NodeProcess],
) -> None:
    n1, n2, _ = web_mesh.values()

    async def scenario() -> None:
        ann = client_for(n1, user="ann")
        eve = client_for(n2, user="eve")
        async with ann, eve:
            await ann.change_room("plaza", "create")
            await eve.send("plaza", "hello before the ban")
            banned = await ann.change_room("plaza", "ban", user="eve")
            assert banned.banned == ["eve"]
            with pytest.raises(NodeError) as refused:
                await eve.send("plaza", "spam")
            assert refused.value.code == ErrorCode.FORBIDDEN
            with pytest.raises(NodeError):
                await eve.history("plaza")
            await ann.change_room("plaza", "unban", user="eve")
            await eve.send("plaza", "sorry")
            # A page is read from one replica (R=1): the third copy may come a moment later.
            wanted = ["hello before the ban", "sorry"]
            seen: list[str] = []
            async with asyncio.timeout(5.0):
                while seen != wanted:
                    page = await ann.history("plaza")
                    seen = [m.body for m in page.messages if m.sender == "eve"]
                    assert set(seen) <= set(wanted), seen
                    await asyncio.sleep(0.05)

    run_async(scenario())


def test_creating_a_room_in_use_is_a_conflict(web_mesh: dict[str, NodeProcess]) -> None:
    n1, _, n3 = web_mesh.values()

    async def scenario() -> None:
        async with client_for(n1, user="ann") as ann, client_for(n3, user="mallory") as mallory:
            await ann.send("lobby", "an open room in use")
            with pytest.raises(NodeError) as taken:
                await mallory.change_room("lobby", "create", value="invite")
            assert taken.value.code == ErrorCode.CONFLICT
            await ann.change_room("fresh", "create")
            with pytest.raises(NodeError) as twice:
                await mallory.change_room("fresh", "create")
            assert twice.value.code == ErrorCode.CONFLICT

    run_async(scenario())


def test_the_command_line_creates_changes_and_shows_a_room(
    web_mesh: dict[str, NodeProcess],
) -> None:
    n1, n2, _ = web_mesh.values()

    def room(*arguments: str, user: str = "ann", node: NodeProcess = n1) -> Any:
        return run_cli("room", *arguments, "--server", node.client_address, "--user", user)

    created = room("create", "ops", "--policy", "invite")
    assert created.returncode == 0, created.stderr
    assert "policy    invite" in created.stdout
    for arguments in (("invite", "ops", "bob"), ("role", "ops", "bob", "moderator")):
        changed = room(*arguments)
        assert changed.returncode == 0, changed.stderr
    assert room("topic", "ops", "on call", node=n2).returncode == 0
    refused = room("ban", "ops", "ann", user="eve", node=n2)
    assert refused.returncode == 1
    assert refused.stderr.startswith("meshchat room: forbidden: "), refused.stderr
    shown = room("show", "ops", "--json", user="bob", node=n2)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "room": "ops",
        "created_by": "ann",
        "policy": "invite",
        "topic": "on call",
        "roles": {"ann": "owner", "bob": "moderator"},
        "invited": [],
        "banned": [],
        "changed": None,
    }
    outsider = room("show", "ops", user="eve")
    assert outsider.returncode == 1 and "forbidden" in outsider.stderr
