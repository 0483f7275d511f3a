"""Every decoder of outside input raises its own error type and nothing else, whatever
it is fed.

Client frames (mesh/wire/protocol.py), replies as the client library reads them, peer frames
(mesh/node/peer_codec.py, peers/wire.py), tokens (mesh/node/doors/auth.py), the client
framing, and the HTTP API's bodies, query and path parameters and headers through a real
node. Inputs: arbitrary bytes, arbitrary msgpack and JSON values, valid messages with
mutated fields, unknown fields, huge integers, wrong types, and nesting far deeper than
msgspec's recursion limit, built directly as bytes.
"""

import asyncio
import contextlib
import json
import random
import struct
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.client.chat_client import ChatClient, ClientSettings
from mesh.client.connection import NodeConnection
from mesh.node import peer_codec
from mesh.node.doors.auth import Authenticator, AuthError
from mesh.wire import protocol
from mesh.wire.errors import ErrorCode, ProtocolError
from mesh.wire.framing import FrameTooLargeError, TruncatedFrameError, encode_frame, read_frame
from peers.limits import PEER_FRAME_BYTES_MAX
from peers.records import MemberRecord
from peers.wire import PeerDecodeError, decode_peer_message
from tests.fuzz_ports import (
    JSON,
    MSGPACK,
    SECRET,
    HttpRequest,
    HttpResponse,
    Mutator,
    bad_tokens,
    check_http_response,
    client_corpus,
    crafted_token,
    http_request,
    node_corpus,
    peer_corpus,
    read_http_response,
    token_for,
)
from tests.processes import HOST, Cluster, NodeProcess, run_async, wait_for

DECODER_EXAMPLES = 400
HTTP_EXAMPLES = 150
fuzz_settings = settings(
    max_examples=DECODER_EXAMPLES,
    deadline=None,  # a 400 KB frame of nesting takes a few ms to build and to refuse
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
http_settings = settings(
    max_examples=HTTP_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---- inputs ----

MEMBER = MemberRecord("n2", "127.0.0.1:7201", 1_700_000_000_000)
TARGET = MemberRecord("n1", "127.0.0.1:7200", 1_700_000_000_000)
CLIENT_CORPUS = client_corpus(token_for("ann"))
NODE_CORPUS = node_corpus()
PEER_CORPUS = peer_corpus(MEMBER, TARGET)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=12)),
)
msgpack_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=12) | st.integers(-5, 5), children, max_size=5)
    ),
    max_leaves=25,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: JSON has no integer limit
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def deep_msgpack(draw: st.DrawFn, corpus: list[Any]) -> bytes:
    """Nesting deeper than any recursion limit, alone or in a field of a valid message."""
    depth = draw(st.sampled_from([999, 1_001, 5_000, 20_000, 200_000]))
    level = draw(st.sampled_from([b"\x91", b"\x81\xa1k", b"\x92\xc0", b"\xdc\x00\x01"]))
    deep = level * depth + b"\xc0"
    message = dict(draw(st.sampled_from(corpus)))
    where = draw(st.sampled_from(["alone", "unknown field", "known field"]))
    if where == "alone":
        return deep
    key = "x" if where == "unknown field" else draw(st.sampled_from(sorted(message)))
    message[key] = "\x00deep\x00"
    return msgspec.msgpack.encode(message).replace(msgspec.msgpack.encode("\x00deep\x00"), deep)


@st.composite
def mutated_field(draw: st.DrawFn, corpus: list[Any], values: st.SearchStrategy[Any]) -> Any:
    """A valid message with one field replaced, removed, or an unknown one added."""
    message = dict(draw(st.sampled_from(corpus)))
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    key = draw(st.sampled_from(sorted(message)))
    if action == "replace":
        message[key] = draw(values)
    elif action == "remove":
        del message[key]
    else:
        message[draw(st.text(max_size=12))] = draw(values)
    return message


@st.composite
def engine_mutations(draw: st.DrawFn, corpus: list[Any], codec: Any, limit: int) -> bytes:
    """The mutation fuzzer's own frames, with its randomness drawn from hypothesis."""
    rng = draw(st.randoms(use_true_random=False))
    assert isinstance(rng, random.Random)
    return Mutator(rng, codec, limit).frame(corpus)[1]


def msgpack_frames(corpus: list[Any], limit: int) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=2048),
        msgpack_values.map(msgspec.msgpack.encode),
        mutated_field(corpus, msgpack_values).map(msgspec.msgpack.encode),
        deep_msgpack(corpus),
        engine_mutations(corpus, MSGPACK, limit),
    )


def only_raises(error_type: type[Exception], decode: Callable[[bytes], Any], data: bytes) -> None:
    with contextlib.suppress(error_type):
        decode(data)


# ---- client to node ----


@fuzz_settings
@given(msgpack_frames(CLIENT_CORPUS, protocol.CLIENT_FRAME_BYTES_MAX))
def test_client_frames_raise_only_protocol_errors(frame: bytes) -> None:
    try:
        message = protocol.decode_client_message(frame)
    except ProtocolError as error:
        assert error.code == ErrorCode.BAD_REQUEST
    else:
        assert isinstance(message, protocol.ClientMessage)
    request_id = protocol.request_id_of(frame)  # never raises
    assert request_id is None or 0 <= request_id <= 2**63 - 1


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
def test_deep_client_frames_are_bad_requests_the_session_survives(depth: int) -> None:
    """The 5 KB frame that used to give a traceback per frame: answered, not fatal."""
    nested = b"\x83\xa4type\xa4ping\xaarequest_id\x07\xa1x" + b"\x91" * depth + b"\xc0"
    with pytest.raises(ProtocolError) as raised:
        protocol.decode_client_message(nested)
    assert raised.value.code == ErrorCode.BAD_REQUEST and not raised.value.close
    # Finding the request id means skipping the nesting too: it may be lost, never raised.
    assert protocol.request_id_of(nested) in (None, 7)


def test_request_ids_are_found_without_building_the_frame() -> None:
    """A frame of a million empty arrays is skipped, not built (once: a second and 60 MiB)."""
    frame = b"\x82\xaarequest_id\x05\xa1x\xdd\x00\x10\x00\x00" + b"\x90" * (1 << 20)
    started = time.perf_counter()
    assert protocol.request_id_of(frame) == 5
    assert time.perf_counter() - started < 0.2


# ---- node to client ----


@fuzz_settings
@given(msgpack_frames(NODE_CORPUS, protocol.CLIENT_FRAME_BYTES_MAX))
def test_node_replies_raise_only_node_reply_errors(frame: bytes) -> None:
    only_raises(protocol.NodeReplyError, protocol.decode_node_message, frame)


@fuzz_settings
@given(st.binary(max_size=64), st.integers(0, 2**32 - 1))
def test_client_framing_raises_only_its_own_errors(tail: bytes, length: int) -> None:
    data = struct.pack(">I", length) + tail

    async def read_all() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        while await read_frame(reader, protocol.CLIENT_FRAME_BYTES_MAX) is not None:
            pass

    with contextlib.suppress(FrameTooLargeError, TruncatedFrameError):
        asyncio.run(read_all())


# ---- peer to peer ----


@fuzz_settings
@given(msgpack_frames(PEER_CORPUS, PEER_FRAME_BYTES_MAX))
def test_peer_frames_raise_only_peer_decode_errors(frame: bytes) -> None:
    only_raises(PeerDecodeError, peer_codec.decode_peer_frame, frame)
    only_raises(PeerDecodeError, decode_peer_message, frame)


DECODERS: list[tuple[str, Callable[[bytes], Any], type[Exception]]] = [
    ("client", protocol.decode_client_message, ProtocolError),
    ("node", protocol.decode_node_message, protocol.NodeReplyError),
    ("peer", peer_codec.decode_peer_frame, PeerDecodeError),
    ("membership", decode_peer_message, PeerDecodeError),
]


@pytest.mark.parametrize(("name", "decode", "error_type"), DECODERS, ids=[d[0] for d in DECODERS])
def test_nesting_is_refused_deep_in_the_stack(
    name: str, decode: Callable[[bytes], Any], error_type: type[Exception]
) -> None:
    """A node decodes inside its event loop, some frames down: nesting still gives the
    decoder's own error there, for a frame of the very heartbeat that killed a node."""
    frame = b"\x82\xa4type\xa9heartbeat\xa1x" + b"\x91" * 5000 + b"\xc0"

    def at_depth(levels: int) -> None:
        if levels:
            at_depth(levels - 1)
            return
        with pytest.raises(error_type):
            decode(frame)

    for margin in (600, 200, 50):
        at_depth(max(0, sys.getrecursionlimit() - margin - len(traceback.extract_stack())))


# ---- tokens ----

json_texts = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"[" * 5000, b'{"sub":' * 3000, b"1" + b"0" * 5000, b"NaN", b'"\\ud800"']),
)


@fuzz_settings
@given(st.one_of(st.text(max_size=300), st.sampled_from(bad_tokens()), json_texts, json_texts))
def test_tokens_raise_only_auth_errors(token: Any) -> None:
    tokens = [token] if isinstance(token, str) else [crafted_token(token, b"{}")]
    if isinstance(token, bytes):
        tokens.append(crafted_token(b'{"alg":"HS256","typ":"JWT"}', token))
    for secret in (SECRET, None):
        for text in tokens:
            with contextlib.suppress(AuthError):
                assert Authenticator(secret).user_of(text, time.time())


# ---- the client library against a node that sends garbage ----

GARBAGE_REPLIES = {
    "oversize header": struct.pack(">I", protocol.CLIENT_FRAME_BYTES_MAX + 1),
    "not msgpack": encode_frame(b"\xc1\xc1"),
    "deep nesting": encode_frame(b"\x91" * 50_000 + b"\xc0"),
    "wrong schema": encode_frame(msgspec.msgpack.encode({"type": "sent", "request_id": "x"})),
    "cut short": struct.pack(">I", 100) + b"abc",
}


@contextlib.asynccontextmanager
async def garbage_node(reply: bytes, after_welcome: bool) -> AsyncIterator[int]:
    """A server that answers a hello with `reply` (or with a welcome, then `reply`)."""
    welcome = protocol.Welcome(version=1, minor=3, node="bad", user="ann")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await read_frame(reader, protocol.CLIENT_FRAME_BYTES_MAX)
            if after_welcome:
                writer.write(encode_frame(protocol.encode(welcome)))
            writer.write(reply)
            if reply.startswith(struct.pack(">I", 100)):
                writer.write_eof()
            await writer.drain()
            await reader.read()  # hold the connection until the client gives up on it
        writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.fixture(scope="module")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node with a cluster secret and the HTTP API, shared by the tests below."""
    root = tmp_path_factory.mktemp("decoder-fuzz")
    cluster = Cluster(root)
    secret = root / "secret"
    secret.write_bytes(SECRET)
    node = cluster.add(
        "n1",
        http=True,
        options=["--secret-file", str(secret), "--replicas", "1", "--write-quorum", "1"],
    )
    node.start()
    try:
        wait_for(lambda: node.accepts_clients() and _http_up(node), 20.0, node.log)
        yield node
    finally:
        cluster.close()
    assert "Traceback" not in node.log(), node.log()[-3000:]


def _http_up(node: NodeProcess) -> bool:
    try:
        return httpx.get(f"{node.http_url}/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.processes
@pytest.mark.parametrize("after_welcome", [False, True], ids=["in-handshake", "in-session"])
@pytest.mark.parametrize("garbage", sorted(GARBAGE_REPLIES))
def test_the_client_library_fails_over_from_a_node_sending_garbage(
    real_node: NodeProcess, garbage: str, after_welcome: bool
) -> None:
    async def scenario() -> None:
        async with garbage_node(GARBAGE_REPLIES[garbage], after_welcome) as bad_port:
            settings = ClientSettings(backoff_max_s=0.2, request_timeout_s=15.0)
            servers = [(HOST, bad_port), (HOST, real_node.client_port)]
            async with ChatClient(servers, token_for("ann"), settings) as client:
                sent = await client.send("garbage-failover", "still here")
                assert client.node == "n1" and sent.id
            with pytest.raises(ConnectionError):  # the one-node connection, too
                connection = await NodeConnection.open(HOST, bad_port, token=token_for("ann"))
                await connection.request(lambda i: protocol.Ping(request_id=i))

    run_async(scenario(), timeout_s=30.0)


# ---- HTTP bodies, parameters and headers through the real app ----


@contextlib.contextmanager
def no_new_tracebacks(node: NodeProcess) -> Iterator[None]:
    before = node.log().count("Traceback")
    yield
    assert node.log().count("Traceback") == before, node.log()[-3000:]


def answer_of(node: NodeProcess, request: bytes) -> tuple[int, bytes]:
    """Send one raw request on its own connection and return (status, body)."""
    assert node.http_port is not None

    async def exchange() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(HOST, node.http_port)
        try:
            writer.write(request)
            await writer.drain()
            response = await read_http_response(reader)
            assert response is not None, request[:200]
            return response.status, response.body
        finally:
            writer.close()

    return run_async(exchange(), timeout_s=20.0)


def check_api_answer(node: NodeProcess, request: HttpRequest) -> None:
    status, body = answer_of(node, request.data)
    problem = check_http_response(request, HttpResponse(status, {}, body))
    assert problem is None, problem


json_bodies = st.one_of(
    json_values.map(msgspec.json.encode),
    mutated_field([{"body": "hello"}], json_values).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.sampled_from([b"[" * 100_000, b'{"body":"x","x":' + b"[" * 20_000 + b"]" * 20_000 + b"}"]),
    st.sampled_from([b'{"body":' + b"9" * 5000 + b"}", b'{"body":"\\ud800"}', b'{"body":NaN}']),
    engine_mutations([{"body": "hello"}], JSON, 100_000),
)


@pytest.mark.processes
def test_http_bodies_get_an_answer_in_the_api_shape(real_node: NodeProcess) -> None:
    headers = {"Authorization": f"Bearer {token_for('ann')}", "Content-Type": "application/json"}

    @http_settings
    @given(json_bodies)
    def post(body: bytes) -> None:
        check_api_answer(real_node, http_request("POST", "/v1/rooms/fuzz/messages", headers, body))

    with no_new_tracebacks(real_node):
        post()


parameter_texts = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80).map(lambda data: data.decode("latin-1")),
    st.sampled_from(["-1", "0", "201", "9" * 400, "1e3", "ffffffffffffffff.n1", "a\n", ""]),
)


@pytest.mark.processes
def test_http_query_and_path_parameters_get_an_answer_in_the_api_shape(
    real_node: NodeProcess,
) -> None:
    headers = {"Authorization": f"Bearer {token_for('ann')}"}

    @http_settings
    @given(
        st.sampled_from(["limit", "before", "after", "x"]),
        parameter_texts,
        parameter_texts,
        st.sampled_from(["messages", "members"]),
    )
    def get(name: str, value: str, room: str, endpoint: str) -> None:
        room_segment = quote(room, safe="") or "r"
        target = f"/v1/rooms/{room_segment}/{endpoint}?{name}={quote(value, safe='')}"
        check_api_answer(real_node, http_request("GET", target, headers))

    with no_new_tracebacks(real_node):
        get()


@pytest.mark.processes
def test_http_tokens_get_an_answer_in_the_api_shape(real_node: NodeProcess) -> None:
    @http_settings
    @given(st.one_of(st.sampled_from(bad_tokens()), st.text(max_size=200), json_texts))
    def get(token: Any) -> None:
        text = token if isinstance(token, str) else crafted_token(token, b"{}")
        header = text.encode("utf-8").decode("latin-1").replace("\r", "").replace("\n", "")
        request = http_request("GET", "/v1/rooms", {"Authorization": f"Bearer {header}"})
        check_api_answer(real_node, request)

    with no_new_tracebacks(real_node):
        get()


@pytest.mark.processes
@pytest.mark.parametrize("host", ["127.:.0.1", ":127.0.0.1", "[::1", "a:b:c", "h:99999"])
def test_a_junk_host_header_gets_an_answer_in_the_api_shape(
    real_node: NodeProcess, host: str
) -> None:
    """Litestar parses Host into request.url for its own error messages: never a crash."""
    auth = {"Authorization": f"Bearer {token_for('ann')}"}
    requests = [
        (http_request("GET", "/v1/nothing-here"), 404),
        (http_request("GET", "/v1/rooms/r/messages?limit=abc", auth), 400),
        (http_request("POST", "/v1/rooms/r/messages", auth, b"{}"), 400),
    ]
    with no_new_tracebacks(real_node):
        for request, expected in requests:
            data = request.data.replace(b"Host: 127.0.0.1", f"Host: {host}".encode())
            status, body = answer_of(real_node, data)
            assert status == expected and set(json.loads(body)["error"]) == {
                "code",
                "message",
                "docs",
            }, body
