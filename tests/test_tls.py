"""TLS on the client port and the HTTP API, as clients and operators use it: real nodes
started with --tls-cert/--tls-key (or by `meshchat up --tls`), real clients, curl."""

import asyncio
import contextlib
import datetime
import json
import os
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from mesh.cli.exit_codes import EXIT_UNREACHABLE
from mesh.client import runtime
from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeConnection, parse_servers
from mesh.client.status import fetch_status
from mesh.client.tls import client_context
from mesh.local.certificates import make_local_ca, make_node_certificate, prepare_local_tls
from mesh.wire import protocol
from mesh.wire.framing import encode_frame
from mesh.wire.protocol import Hello, StatusReply
from mesh.wire.tls import CertificateFiles
from tests.chat_helpers import TEST_SETTINGS, next_messages
from tests.processes import HOST, Cluster, NodeProcess, meshchat_command, run_async, wait_for

pytestmark = pytest.mark.processes

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateFiles:
    return make_local_ca(tmp_path / "tls", NOW)


def add_tls_node(
    cluster: Cluster,
    ca: CertificateFiles,
    *,
    host: str = HOST,
    node_id: str = "n1",
    seeds: list[str] | None = None,
    options: list[str] | None = None,
) -> NodeProcess:
    """A node whose client port and HTTP API use a certificate for `host`, signed by `ca`."""
    files = make_node_certificate(ca, ca.cert.parent, node_id, host, NOW)
    tls = ["--tls-cert", str(files.cert), "--tls-key", str(files.key), *(options or [])]
    return cluster.add(node_id, seeds=seeds, options=tls, http=True)


def start_tls_node(cluster: Cluster, ca: CertificateFiles, host: str = HOST) -> NodeProcess:
    """One node, n1, serving TLS clients."""
    node = add_tls_node(cluster, ca, host=host).start()
    wait_for(lambda: status_over_tls(node, ca, "localhost"), 10.0, node.log)
    return node


def status_over_tls(
    node: NodeProcess, ca: CertificateFiles, host: str = HOST
) -> StatusReply | None:
    try:
        return runtime.run(
            fetch_status([(host, node.client_port)], "tester", 1.0, client_context(ca.cert))
        )
    except (OSError, TimeoutError):
        return None


def handshake_failures(node: NodeProcess, ca: CertificateFiles) -> int:
    reply = status_over_tls(node, ca)
    assert reply is not None, node.log()
    return reply.counters["client_tls_handshake_failures"]


def run_cli(
    *arguments: str, input_text: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*meshchat_command(), *arguments],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )


def exchange(port: int, data: bytes) -> bytes:
    """What a plaintext client sending `data` hears back before the node hangs up."""
    with socket.create_connection((HOST, port), timeout=5.0) as raw:
        raw.sendall(data)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := raw.recv(65536):
                answer += chunk
    return answer


def test_plain_clients_are_refused_counted_and_the_node_serves_on(
    cluster: Cluster, ca: CertificateFiles
) -> None:
    node = start_tls_node(cluster, ca)
    before = handshake_failures(node, ca)
    # A framed hello in plaintext, as a client without TLS would send it: no welcome,
    # at most a TLS alert record (content type 21).
    hello = encode_frame(protocol.encode(Hello(versions=[protocol.PROTOCOL_VERSION], token="x")))
    answer = exchange(node.client_port, hello)
    assert answer == b"" or answer[0] == 21, answer
    wait_for(lambda: handshake_failures(node, ca) == before + 1, 5.0, node.log)
    answer = exchange(node.client_port, b"\x16\x03\x01\x00\x05garbage-garbage-garbage")
    assert b"welcome" not in answer
    wait_for(lambda: handshake_failures(node, ca) == before + 2, 5.0, node.log)

    async def plain_library() -> None:
        with pytest.raises(OSError):  # ConnectionError or an invalid frame: no welcome
            await NodeConnection.open(HOST, node.client_port, token="mallory", timeout_s=3.0)
        client = ChatClient(parse_servers(node.client_address), "mallory", TEST_SETTINGS)
        try:
            with pytest.raises(TimeoutError):  # it keeps trying, and is refused each time
                await client.connect(timeout_s=1.0)
        finally:
            await client.close()

    run_async(plain_library())
    wait_for(lambda: handshake_failures(node, ca) >= before + 4, 5.0, node.log)
    # The node is up and serves TLS clients; the log says why, without a traceback.
    run_async(_send_and_receive_over_tls(node, ca))
    assert node.process is not None and node.process.poll() is None
    log = node.log()
    assert "TLS handshake failed" in log and "wrong version number" in log, log
    assert "Traceback" not in log, log


async def _send_and_receive_over_tls(node: NodeProcess, ca: CertificateFiles) -> None:
    servers = parse_servers(node.client_address)
    context = client_context(ca.cert)
    async with (
        ChatClient(servers, "ann", TEST_SETTINGS, ssl_context=context) as ann,
        ChatClient(servers, "bob", TEST_SETTINGS, ssl_context=context) as bob,
    ):
        await bob.join("lobby")
        sent = await ann.send("lobby", "over tls")
        (received,) = await next_messages(bob, 1)
        assert (received.id, received.body) == (sent.id, "over tls")


def test_send_history_status_and_chat_plain_work_with_the_ca_file(
    cluster: Cluster, ca: CertificateFiles
) -> None:
    node = start_tls_node(cluster, ca)
    server = ["--server", node.client_address]
    sent = run_cli("send", *server, "--user", "ann", "--ca-file", str(ca.cert), "lobby", "hi")
    assert sent.returncode == 0, sent.stderr
    # The CA from the environment, which implies --tls.
    history = run_cli(
        "history", *server, "--user", "ann", "lobby", env={"MESHCHAT_CA_FILE": str(ca.cert)}
    )
    assert history.returncode == 0, history.stderr
    assert history.stdout.rstrip().endswith("ann: hi"), history.stdout
    chat = run_cli(
        "chat",
        *server,
        "--user",
        "bob",
        "--ca-file",
        str(ca.cert),
        "--plain",
        input_text="hello from chat\n",
    )
    assert chat.returncode == 0, chat.stderr
    shown = [line.split(" ", 2)[-1] for line in chat.stdout.splitlines()]
    assert "ann: hi" in shown and "bob: hello from chat" in shown, chat.stdout
    status = run_cli("status", *server, "--ca-file", str(ca.cert), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["node"] == "n1"
    where = run_cli("where", "lobby", *server, "--tls", "--ca-file", str(ca.cert))
    assert where.returncode == 0 and "coordinator n1" in where.stdout, where.stderr
    # Without TLS the same commands are refused: the port speaks nothing else.
    plain = run_cli("status", *server, "--timeout", "2")
    assert plain.returncode == EXIT_UNREACHABLE and "--tls" in plain.stderr, plain.stderr


def test_curl_with_the_ca_reads_the_https_api(cluster: Cluster, ca: CertificateFiles) -> None:
    node = start_tls_node(cluster, ca)
    assert node.http_port is not None
    base = f"https://{HOST}:{node.http_port}"
    health = _curl("--cacert", str(ca.cert), f"{base}/v1/health")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "ok", "node": "n1"}
    posted = _curl(
        "--cacert",
        str(ca.cert),
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer ann",
        "-H",
        "Idempotency-Key: tls-1",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"body": "over https"}',
        f"{base}/v1/rooms/lobby/messages",
    )
    assert posted.returncode == 0, posted.stderr
    page = _curl(
        "--cacert",
        str(ca.cert),
        "-H",
        "Authorization: Bearer ann",
        f"{base}/v1/rooms/lobby/messages",
    )
    assert page.returncode == 0 and "over https" in page.stdout, page.stdout + page.stderr
    # Without the CA curl refuses the certificate (60); plain HTTP gets no answer (52/56).
    assert _curl(f"{base}/v1/health").returncode == 60
    assert _curl(f"http://{HOST}:{node.http_port}/v1/health").returncode in {52, 56}
    assert _curl("--cacert", str(ca.cert), f"{base}/v1/health").returncode == 0
    assert "Traceback" not in node.log(), node.log()


def _curl(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", "--max-time", "10", *arguments],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_a_wrong_ca_and_a_wrong_host_name_fail_verification(
    cluster: Cluster, ca: CertificateFiles, tmp_path: Path
) -> None:
    # The node's certificate names mesh.example and localhost, not 127.0.0.1.
    node = start_tls_node(cluster, ca, "mesh.example")
    other_ca = make_local_ca(tmp_path / "other", NOW)
    port = str(node.client_port)
    wrong_ca = run_cli(
        "send", "--server", f"localhost:{port}", "--user", "ann", "--ca-file", str(other_ca.cert),
        "lobby", "never",
    )  # fmt: skip
    assert wrong_ca.returncode == 2, wrong_ca.stderr
    assert "certificate is not trusted" in wrong_ca.stderr, wrong_ca.stderr
    wrong_name = run_cli(
        "send", "--server", f"{HOST}:{port}", "--user", "ann", "--ca-file", str(ca.cert),
        "lobby", "never",
    )  # fmt: skip
    assert wrong_name.returncode == 2, wrong_name.stderr
    assert "mismatch" in wrong_name.stderr, wrong_name.stderr
    right_name = run_cli(
        "send", "--server", f"localhost:{port}", "--user", "ann", "--ca-file", str(ca.cert),
        "lobby", "once",
    )  # fmt: skip
    assert right_name.returncode == 0, right_name.stderr

    async def library() -> None:
        for ca_file, host in ((other_ca.cert, "localhost"), (ca.cert, HOST)):
            context = client_context(ca_file)
            client = ChatClient(
                [(host, node.client_port)], "ann", TEST_SETTINGS, ssl_context=context
            )
            try:
                with pytest.raises(ssl.SSLCertVerificationError):
                    await client.connect(timeout_s=5.0)
            finally:
                await client.close()

    run_async(library())
    assert node.process is not None and node.process.poll() is None
    assert "Traceback" not in node.log()


def test_failover_and_resume_work_over_tls(cluster: Cluster, ca: CertificateFiles) -> None:
    quorum = ["--replicas", "2", "--write-quorum", "1"]  # one node alone still acknowledges
    first = add_tls_node(cluster, ca, node_id="n1", options=quorum)
    second = add_tls_node(cluster, ca, node_id="n2", seeds=[first.peer_address], options=quorum)
    first.start()
    second.start()

    def both_alive() -> bool:
        replies = [status_over_tls(node, ca) for node in (first, second)]
        return all(r is not None and [m.state for m in r.members] == ["alive"] * 2 for r in replies)

    wait_for(both_alive, 10.0, lambda: first.log() + second.log())

    async def scenario() -> None:
        context = client_context(ca.cert)
        servers = parse_servers(f"{first.client_address},{second.client_address}")
        async with ChatClient(servers, "bob", TEST_SETTINGS, ssl_context=context) as bob:
            await bob.join("lobby")
            before = await bob.send("lobby", "before failover")
            assert bob.node == "n1"
            await asyncio.to_thread(first.stop)
            ann_servers = parse_servers(second.client_address)
            async with ChatClient(ann_servers, "ann", TEST_SETTINGS, ssl_context=context) as ann:
                after = await ann.send("lobby", "after failover")
            received = await next_messages(bob, 2, timeout_s=20.0)
            assert [m.id for m in received] == [before.id, after.id]
            assert bob.node == "n2" and bob.reconnects >= 1

    run_async(scenario())


def test_bad_certificate_files_are_one_line_and_exit_2(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    base = ["node", "--id", "n1", "--peer-port", "1", "--client-port", "2"]
    for tls in (
        ["--tls-cert", str(garbage), "--tls-key", str(garbage)],
        ["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(garbage)],
        ["--tls-cert", str(garbage)],
    ):
        result = run_cli(*base, "--data", str(tmp_path / "n1"), *tls)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("meshchat node: "), result.stderr
    missing_ca = run_cli(
        "send", "--server", "127.0.0.1:1", "--user", "ann", "--ca-file", str(garbage), "r", "x"
    )
    assert missing_ca.returncode == 2 and "--ca-file" in missing_ca.stderr, missing_ca.stderr


def test_up_tls_makes_its_ca_once_and_clients_trust_it(tmp_path: Path) -> None:
    base_port = _free_up_ports()
    data = tmp_path / "mesh"
    kept: list[bytes] = []
    for _ in range(2):
        with _up_tls(base_port, data) as ca_path:
            assert ca_path == data / "tls" / "ca.pem"
            wait_for(lambda: _accepts(base_port), 10.0, lambda: "the node never listened")
            sent = run_cli(
                "send", "--server", f"{HOST}:{base_port}", "--user", "ann",
                "--ca-file", str(ca_path), "lobby", "hi",
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
        kept.append(ca_path.read_bytes() + (data / "tls" / "n1.pem").read_bytes())
    assert kept[0] == kept[1], "the second run made new certificates"
    for key in ("ca.key", "n1.key"):
        assert stat.S_IMODE((data / "tls" / key).stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate((data / "tls" / "n1.pem").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [HOST]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _up_tls(base_port: int, data: Path) -> Iterator[Path]:
    """`meshchat up --tls` with one node: the CA path it printed; stopped afterwards."""
    command = [
        *meshchat_command(), "up", "--tls", "--nodes", "1", "--base-port", str(base_port),
        "--data", str(data),
    ]  # fmt: skip
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert up.stdout is not None
        lines = [up.stdout.readline() for _ in range(3)]
        printed = [line for line in lines if line.startswith("TLS: clients need --ca-file ")]
        assert len(printed) == 1, lines
        yield Path(printed[0].split("--ca-file ", 1)[1].strip())
        up.terminate()
        assert up.wait(timeout=10.0) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def _free_up_ports() -> int:
    """A base port whose client, peer and HTTP ports for one node (+0, +100, +200) are free."""
    for base in range(20_500, 60_000, 1000):
        probes: list[socket.socket] = []
        try:
            for offset in (0, 100, 200):
                probe = socket.socket()
                probes.append(probe)
                probe.bind((HOST, base + offset))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError("no free port block")


def test_local_certificates_are_reused_while_good_and_made_anew_otherwise(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    ca, first = prepare_local_tls(directory, ["n1"], HOST, NOW)
    again, second = prepare_local_tls(directory, ["n1"], HOST, NOW)
    assert (ca, first) == (again, second)
    pem = first["n1"].cert.read_bytes()
    _, same = prepare_local_tls(directory, ["n1"], HOST, NOW + datetime.timedelta(days=30))
    assert same["n1"].cert.read_bytes() == pem
    # Another host, or a certificate near its end, gets a new certificate from the same CA.
    ca_pem = ca.cert.read_bytes()
    prepare_local_tls(directory, ["n1"], "mesh.example", NOW)
    assert first["n1"].cert.read_bytes() != pem and ca.cert.read_bytes() == ca_pem
    renewed = first["n1"].cert.read_bytes()
    prepare_local_tls(directory, ["n1"], "mesh.example", NOW + datetime.timedelta(days=800))
    assert first["n1"].cert.read_bytes() != renewed
