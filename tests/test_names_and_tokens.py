"""Names are matched whole (no trailing newline), and a token's times must be finite numbers:
in the schemas, in the authenticator, on the TCP port, over HTTP and on the command line."""

import math
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from jwt.api_jws import PyJWS

from mesh.client.connection import NodeConnection, NodeError
from mesh.node.doors.auth import ALGORITHM, Authenticator, AuthError, issue_token
from mesh.wire import protocol
from mesh.wire.errors import ErrorCode, ProtocolError
from mesh.wire.names import ROOM_NAME_PATTERN, USER_NAME_PATTERN, is_room_name, is_user_name
from mesh.wire.protocol import History, Join, Send, Sent
from peers.records import MemberRecord
from router.message_ids import MESSAGE_ID_PATTERN, MessageId, is_message_id
from tests.processes import HOST, Cluster, NodeProcess, meshchat_command, run_async, wait_for

processes = pytest.mark.processes

SECRET = b"k" * 40
NOW_S = 1_800_000_000.0
MESSAGE_ID = "0193a1b2c3d40000.n1"


def signed(payload: bytes) -> str:
    """A real HS256 token over exactly these JSON bytes (so 1e400 stays 1e400)."""
    return PyJWS().encode(payload, SECRET, algorithm=ALGORITHM)


def claims_token(**claims: Any) -> str:
    return jwt.encode(claims, SECRET, algorithm=ALGORITHM)


FUTURE = int(NOW_S) + 3600
BAD_TOKENS = {
    "sub with a newline": claims_token(sub="bob\n", exp=FUTURE),
    "sub with ESC": claims_token(sub="b\x1bob", exp=FUTURE),
    "sub with a bidi override": claims_token(sub="b\u202eob", exp=FUTURE),
    "sub not a string": signed(b'{"sub": 7, "exp": %d}' % FUTURE),
    'exp "inf"': claims_token(sub="bob", exp="inf"),
    "exp Infinity": claims_token(sub="bob", exp=math.inf),
    "exp 1e400": signed(b'{"sub": "bob", "exp": 1e400}'),
    "exp -1e400": signed(b'{"sub": "bob", "exp": -1e400}'),
    "exp NaN": claims_token(sub="bob", exp=math.nan),
    "exp a huge integer": signed(b'{"sub": "bob", "exp": 1' + b"0" * 400 + b"}"),
    "exp true": claims_token(sub="bob", exp=True),
    "exp a numeric string": claims_token(sub="bob", exp=str(FUTURE)),
    "exp a list": claims_token(sub="bob", exp=[FUTURE]),
    "no exp": claims_token(sub="bob"),
    "expired": claims_token(sub="bob", exp=int(NOW_S) - 1),
    "nbf NaN": claims_token(sub="bob", exp=FUTURE, nbf=math.nan),
    "nbf a string": claims_token(sub="bob", exp=FUTURE, nbf="0"),
    "nbf in an hour": claims_token(sub="bob", exp=FUTURE + 3600, nbf=FUTURE),
    "iat Infinity": claims_token(sub="bob", exp=FUTURE, iat=math.inf),
    "iat false": claims_token(sub="bob", exp=FUTURE, iat=False),
    "iat tomorrow": claims_token(sub="bob", exp=FUTURE + 86400, iat=FUTURE + 80000),
}


# ---- the patterns and the authenticator, without a node ----


@pytest.mark.parametrize("name", ["lobby\n", "lobby\r\n", "\nlobby", "lob by", "", "x" * 65])
def test_a_room_name_is_matched_whole(name: str) -> None:
    assert not is_room_name(name)
    with pytest.raises(ProtocolError) as refused:
        protocol.decode_client_message(protocol.encode(Join(request_id=1, room=name)))
    assert refused.value.code is ErrorCode.BAD_REQUEST
    assert is_room_name("lobby") and is_room_name("#ops.eu-1")


@pytest.mark.parametrize("name", ["bob\n", "bob\r", "b ob", "b\x1bob", "b\x9bob", "b\u2066ob"])
def test_a_user_name_is_matched_whole_and_printable(name: str) -> None:
    assert not is_user_name(name)
    with pytest.raises(AuthError):
        Authenticator(None).user_of(name, NOW_S)
    with pytest.raises(ValueError, match="user name"):
        issue_token(SECRET, name, 60, NOW_S)
    assert is_user_name("bob") and is_user_name("émilie") and is_user_name("ann@example.org")


def test_a_lone_surrogate_is_no_user_name() -> None:
    assert not is_user_name("b\ud800ob")


def test_message_ids_and_node_ids_are_matched_whole_too() -> None:
    assert not is_message_id(MESSAGE_ID + "\n")
    with pytest.raises(ValueError):
        MessageId.parse(MESSAGE_ID + "\n")
    with pytest.raises(ProtocolError):
        protocol.decode_client_message(
            protocol.encode(History(request_id=1, room="lobby", before=MESSAGE_ID + "\n"))
        )
    for node_id, valid in (("n1\n", False), ("n1", True)):
        record = msgspec.msgpack.encode([node_id, "127.0.0.1:7000", 1, False])
        try:
            msgspec.msgpack.decode(record, type=MemberRecord)
        except msgspec.ValidationError:
            assert not valid
        else:
            assert valid


def test_the_patterns_mean_the_same_in_json_schema() -> None:
    # The OpenAPI document carries these; a JSON Schema (ECMAScript) engine must agree.
    import jsonschema_rs  # noqa: PLC0415 - only this test needs it

    for pattern, good in (
        (ROOM_NAME_PATTERN, "lobby"),
        (USER_NAME_PATTERN, "bob"),
        (MESSAGE_ID_PATTERN, MESSAGE_ID),
    ):
        validator = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
        assert validator.is_valid(good), pattern
        assert not validator.is_valid(good + "\n"), pattern


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_a_token_with_a_bad_name_or_time_is_refused(case: str) -> None:
    with pytest.raises(AuthError):
        Authenticator(SECRET).user_of(BAD_TOKENS[case], NOW_S)


def test_a_good_token_names_its_user() -> None:
    authenticator = Authenticator(SECRET)
    assert authenticator.user_of(issue_token(SECRET, "bob", 60, NOW_S), NOW_S) == "bob"
    fractional = claims_token(sub="bob", exp=NOW_S + 0.5, nbf=NOW_S - 1.5, iat=NOW_S)
    assert authenticator.user_of(fractional, NOW_S) == "bob"
    # An issuer's clock a little ahead is tolerated for nbf and iat, never for exp.
    ahead = claims_token(sub="bob", exp=FUTURE, nbf=NOW_S + 5, iat=NOW_S + 5)
    assert authenticator.user_of(ahead, NOW_S) == "bob"


def test_a_token_lifetime_must_be_finite() -> None:
    for ttl_s in (math.inf, math.nan, 0, -1):
        with pytest.raises(ValueError, match="lifetime"):
            issue_token(SECRET, "bob", ttl_s, NOW_S)


# ---- a real node ----


def start(cluster: Cluster, tmp_path: Path, secret: bool) -> NodeProcess:
    options = []
    if secret:
        (tmp_path / "secret").write_bytes(SECRET)
        options = ["--secret-file", str(tmp_path / "secret")]
    node = cluster.add("n1", http=True, options=options).start()
    wait_for(lambda: _healthy(node), 10.0, node.log)
    return node


def _healthy(node: NodeProcess) -> bool:
    try:
        return httpx.get(f"{node.http_url}/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def live_bad_tokens() -> dict[str, str]:
    """BAD_TOKENS for a node on today's clock (the unit tests use a fixed one)."""
    future = int(time.time()) + 3600
    return {
        "sub bob\\n": claims_token(sub="bob\n", exp=future),
        'exp "inf"': claims_token(sub="bob", exp="inf"),
        "exp Infinity": claims_token(sub="bob", exp=math.inf),
        "exp 1e400": signed(b'{"sub": "bob", "exp": 1e400}'),
        "exp NaN": claims_token(sub="bob", exp=math.nan),
        "exp true": claims_token(sub="bob", exp=True),
        "exp a string": claims_token(sub="bob", exp=str(future)),
        "nbf NaN": claims_token(sub="bob", exp=future, nbf=math.nan),
    }


@processes
def test_the_tcp_port_refuses_bad_tokens_and_names(cluster: Cluster, tmp_path: Path) -> None:
    node = start(cluster, tmp_path, secret=True)

    async def scenario() -> None:
        for case, token in live_bad_tokens().items():
            with pytest.raises(NodeError) as refused:
                await NodeConnection.open(HOST, node.client_port, token=token)
            assert refused.value.code is ErrorCode.UNAUTHORIZED, case
        good = issue_token(SECRET, "bob", 60, time.time())
        connection = await NodeConnection.open(HOST, node.client_port, token=good)
        try:
            assert connection.welcome.user == "bob"
            for request in (
                lambda i: Join(request_id=i, room="lobby\n"),
                lambda i: Send(request_id=i, room="lobby\n", client_msg_id="c1", body="x"),
                lambda i: History(request_id=i, room="lobby", before=MESSAGE_ID + "\n"),
            ):
                with pytest.raises(NodeError) as refused:
                    await connection.request(request)
                assert refused.value.code is ErrorCode.BAD_REQUEST
            # The session survived every refusal.
            sent = await connection.request(
                lambda i: Send(request_id=i, room="lobby", client_msg_id="c2", body="ok")
            )
            assert isinstance(sent, Sent)
        finally:
            await connection.close()

    run_async(scenario())


@processes
def test_without_a_secret_the_name_itself_is_checked(cluster: Cluster, tmp_path: Path) -> None:
    node = start(cluster, tmp_path, secret=False)

    async def scenario() -> None:
        for name in ("bob\n", "bob\r\n", "b\x1bob", "b\u202eob"):
            with pytest.raises(NodeError) as refused:
                await NodeConnection.open(HOST, node.client_port, token=name)
            assert refused.value.code is ErrorCode.UNAUTHORIZED, ascii(name)
        connection = await NodeConnection.open(HOST, node.client_port, token="bob")
        await connection.close()

    run_async(scenario())
    # HTTP cannot carry a newline in a header; bytes that decode to C1 or bidi controls it can.
    for name in (b"b\x9bob", "b\u202eob".encode()):
        response = httpx.get(
            f"{node.http_url}/v1/rooms", headers={b"Authorization": b"Bearer " + name}
        )
        assert response.status_code == 401, name
    assert httpx.get(
        f"{node.http_url}/v1/rooms", headers={"Authorization": "Bearer bob"}
    ).is_success


@processes
def test_http_refuses_bad_tokens_and_room_names(cluster: Cluster, tmp_path: Path) -> None:
    node = start(cluster, tmp_path, secret=True)
    for case, token in live_bad_tokens().items():
        response = httpx.get(
            f"{node.http_url}/v1/rooms", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401, case
        assert response.json()["error"]["code"] == "unauthorized", case
    good = {"Authorization": f"Bearer {issue_token(SECRET, 'bob', 60, time.time())}"}
    for room in ("lobby%0A", "lobby%0D%0A", "%0Alobby"):
        url = f"{node.http_url}/v1/rooms/{room}/messages"
        posted = httpx.post(url, json={"body": "x"}, headers=good)
        assert (posted.status_code, posted.json()["error"]["code"]) == (400, "bad_request"), room
        read = httpx.get(url, headers=good)
        assert (read.status_code, read.json()["error"]["code"]) == (400, "bad_request"), room
    cursor = httpx.get(
        f"{node.http_url}/v1/rooms/lobby/messages",
        params={"before": MESSAGE_ID + "\n"},
        headers=good,
    )
    assert cursor.status_code == 400
    posted = httpx.post(
        f"{node.http_url}/v1/rooms/lobby/messages", json={"body": "fine"}, headers=good
    )
    assert posted.status_code == 201
    assert httpx.get(f"{node.http_url}/v1/rooms/lobby/messages", headers=good).status_code == 200


@processes
@pytest.mark.parametrize(
    "arguments",
    [
        ["token", "--secret-file", "unused", "--user", "bob\n"],
        ["send", "--server", "127.0.0.1:1", "--user", "bob\n", "lobby", "hi"],
        ["send", "--server", "127.0.0.1:1", "--user", "bob", "lobby\n", "hi"],
        ["history", "--server", "127.0.0.1:1", "--user", "b\x1bob", "lobby"],
        ["tail", "--server", "127.0.0.1:1", "--user", "bob", "lob by"],
        ["chat", "--server", "127.0.0.1:1", "--user", "bob", "--room", "lobby\n", "--plain"],
    ],
)
def test_the_command_line_refuses_such_names(arguments: list[str]) -> None:
    result = subprocess.run(
        [*meshchat_command(), *arguments],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 2, result
    assert "not a user name" in result.stderr or "not a room name" in result.stderr, result.stderr
