"""Scoped tokens on real nodes: a bot that may only post into `alerts-*`, a dashboard that
may only read, over TCP and REST; tokens signed by RS256, EdDSA and HS256 keys named by
kid, issued by `meshchat token`; an audience the nodes require; keys rotated while the
nodes run."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

from mesh.client.connection import NodeError
from mesh.node.doors.auth import issue_token
from mesh.wire.errors import ErrorCode
from tests.chat_helpers import client_for
from tests.processes import Cluster, NodeProcess, run_async, run_cli, wait_for

pytestmark = pytest.mark.processes

AUDIENCE = "chat.example"
HMAC_KEY = b"h" * 40


@pytest.fixture
def signing(tmp_path: Path) -> dict[str, Path]:
    """PEM private keys for `meshchat token`, and the nodes' JWK Set of the public ones."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    paths = {"rsa": tmp_path / "bot.pem", "ed": tmp_path / "dashboard.pem"}
    for name, key in (("rsa", rsa_key), ("ed", ed_key)):
        paths[name].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    keys = [
        {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "bots-1"},
        {**OKPAlgorithm.to_jwk(ed_key.public_key(), as_dict=True), "kid": "dash-1"},
        {**HMACAlgorithm.to_jwk(HMAC_KEY, as_dict=True), "kid": "admin-1"},
    ]
    paths["keys"] = tmp_path / "keys.json"
    paths["keys"].write_text(json.dumps({"keys": keys}))
    return paths


@pytest.fixture
def mesh(cluster: Cluster, signing: dict[str, Path]) -> Iterator[list[NodeProcess]]:
    options = ["--token-keys", str(signing["keys"]), "--token-audience", AUDIENCE]
    first = cluster.add("n1", options=options, http=True).start()
    cluster.add("n2", seeds=[first.peer_address], options=options).start()
    for node in cluster.nodes.values():
        node.status_token = admin_token("tester")
        wait_for(node.accepts_clients, 10.0, node.log)
    cluster.wait_sees("n1", "n2", "alive", timeout_s=10.0)
    yield list(cluster.nodes.values())


def cli_token(key_file: Path, kid: str, user: str, *scope: str) -> str:
    issued = run_cli(
        "token",
        *("--key-file", str(key_file), "--kid", kid, "--user", user),
        *("--audience", AUDIENCE, "--ttl", "1h"),
        *scope,
    )
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.strip()


def admin_token(user: str) -> str:
    return issue_token(HMAC_KEY, user, 3600, time.time(), kid="admin-1", audience=AUDIENCE)


async def refused(call: Any) -> str:
    """The code a request was refused with."""
    with pytest.raises(NodeError) as error:
        await call
    return error.value.code.value


def test_a_bot_token_posts_into_its_rooms_only_and_reads_nothing(
    mesh: list[NodeProcess], signing: dict[str, Path]
) -> None:
    n1, n2 = mesh
    bot = cli_token(signing["rsa"], "bots-1", "alertbot", "--rooms", "alerts-*", "--ops", "post")

    async def scenario() -> None:
        async with client_for(n2, user="alertbot", token=bot) as client:
            assert client.user == "alertbot"
            await client.send("alerts-db", "disk 91% full")
            assert await refused(client.send("lobby", "hi")) == "forbidden"
            assert await refused(client.history("alerts-db")) == "forbidden"
            assert await refused(client.join("alerts-db")) == "forbidden"
            assert await refused(client.change_room("alerts-x", "create")) == "forbidden"
        async with client_for(n1, user="ann", token=admin_token("ann")) as ann:
            page = await ann.history("alerts-db")
            assert [message.body for message in page.messages] == ["disk 91% full"]

    run_async(scenario())
    with httpx.Client(base_url=n1.http_url, headers={"Authorization": f"Bearer {bot}"}) as http:
        posted = http.post("/v1/rooms/alerts-web/messages", json={"body": "5xx up"})
        assert posted.status_code == 201, posted.text
        for method, path, body in (
            ("POST", "/v1/rooms/lobby/messages", {"body": "hi"}),
            ("GET", "/v1/rooms/alerts-web/messages", None),
            ("GET", "/v1/rooms/alerts-web/members", None),
            ("GET", "/v1/rooms", None),
            ("POST", "/v1/rooms", {"room": "alerts-new"}),
        ):
            answer = http.request(method, path, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "forbidden"


def test_a_dashboard_token_reads_its_rooms_and_writes_nothing(
    mesh: list[NodeProcess], signing: dict[str, Path]
) -> None:
    n1, n2 = mesh

    async def scenario() -> str:
        async with client_for(n2, user="dash", token=admin_token("dash")) as unscoped:
            for room in ("status", "secret-plans"):
                await unscoped.join(room)
                await unscoped.send(room, f"in {room}")
        dash = cli_token(signing["ed"], "dash-1", "dash", "--rooms", "status", "--ops", "read")
        async with client_for(n1, user="dash", token=dash) as client:
            page = await client.history("status")
            assert [message.body for message in page.messages] == ["in status"]
            assert await client.rooms() == ["status"]  # secret-plans is not shown
            assert await refused(client.history("secret-plans")) == "forbidden"
            assert await refused(client.send("status", "hi")) == "forbidden"
        return dash

    dash = run_async(scenario())
    with httpx.Client(base_url=n1.http_url, headers={"Authorization": f"Bearer {dash}"}) as http:
        page = http.get("/v1/rooms/status/messages")
        assert page.status_code == 200, page.text
        assert list(http.get("/v1/rooms").json()["rooms"]) == ["status"]
        answer = http.post("/v1/rooms/status/messages", json={"body": "hi"})
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"


def test_nodes_require_their_audience_and_take_rotated_keys_while_running(
    mesh: list[NodeProcess], signing: dict[str, Path]
) -> None:
    n1, _ = mesh
    no_audience = issue_token(HMAC_KEY, "ann", 3600, time.time(), kid="admin-1")
    new_key = b"n" * 40
    rotated = issue_token(new_key, "ann", 3600, time.time(), kid="admin-2", audience=AUDIENCE)
    old = admin_token("ann")

    def accepted(token: str) -> bool:
        answer = httpx.get(f"{n1.http_url}/v1/status", headers={"Authorization": f"Bearer {token}"})
        return answer.status_code == 200

    assert not accepted(no_audience) and accepted(old) and not accepted(rotated)
    keys = json.loads(signing["keys"].read_text())["keys"]
    added = {**HMACAlgorithm.to_jwk(new_key, as_dict=True), "kid": "admin-2"}
    signing["keys"].write_text(json.dumps({"keys": [*keys, added]}))
    wait_for(lambda: accepted(rotated), 10.0, n1.log)
    assert accepted(old)  # both at once
    without_old = [key for key in keys if key["kid"] != "admin-1"]
    signing["keys"].write_text(json.dumps({"keys": [*without_old, added]}))
    wait_for(lambda: not accepted(old), 10.0, n1.log)

    async def over_tcp() -> None:
        async with client_for(n1, user="ann", token=rotated) as ann:
            assert ann.user == "ann"
        with pytest.raises(NodeError) as refusal:
            await client_for(n1, user="ann", token=old).connect(timeout_s=5)
        assert refusal.value.code is ErrorCode.UNAUTHORIZED

    run_async(over_tcp())
