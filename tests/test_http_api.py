"""The HTTP API v1 of a real node: every endpoint, pagination, idempotency, every error path,
schemathesis against the live OpenAPI document, Prometheus metrics and JSON logs."""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.core.warnings import SchemathesisWarning

from mesh.client import runtime
from mesh.client.status import fetch_status
from mesh.node.doors.auth import issue_token
from mesh.node.doors.token_scope import OPERATIONS, TokenScope
from router.error_codes import ErrorCode
from tests.chat_helpers import client_for
from tests.processes import HOST, Cluster, NodeProcess, free_ports, run_async, wait_for

pytestmark = pytest.mark.processes

SECRET = b"s" * 40


ALL = TokenScope(ops=OPERATIONS)
QUIET_WARNINGS = {SchemathesisWarning.MISSING_DESERIALIZER, SchemathesisWarning.LOW_VALID_RATE}


def token(user: str, ttl_s: float = 3600) -> str:
    return issue_token(SECRET, user, ttl_s, time.time())


def auth(user: str = "ann") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


def start(cluster: Cluster, tmp_path: Path, *options: str) -> NodeProcess:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    node = cluster.add("n1", http=True, options=["--secret-file", str(secret), *options])
    node.start()
    wait_for(lambda: _healthy(node), 10.0, node.log)
    return node


def _healthy(node: NodeProcess) -> bool:
    try:
        return httpx.get(f"{node.http_url}/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def node(cluster: Cluster, tmp_path: Path) -> NodeProcess:
    return start(cluster, tmp_path, "--sends-per-s", "100000", "--send-burst", "100000")


def post(
    node: NodeProcess, room: str, body: str, key: str | None = None, user: str = "ann"
) -> httpx.Response:
    headers = auth(user) | ({"Idempotency-Key": key} if key else {})
    return httpx.post(
        f"{node.http_url}/v1/rooms/{room}/messages",
        json={"body": body},
        headers=headers,
        timeout=10,
    )


def get(node: NodeProcess, path: str, user: str = "ann") -> httpx.Response:
    return httpx.get(f"{node.http_url}{path}", headers=auth(user), timeout=10)


def error_of(response: httpx.Response) -> str:
    document: dict[str, Any] = response.json()
    fields = set(document["error"])
    assert {"code", "message", "docs"} <= fields <= {"code", "message", "docs", "retry_after_s"}
    return str(document["error"]["code"])


def test_every_endpoint(node: NodeProcess) -> None:
    assert httpx.get(f"{node.http_url}/v1/health").json() == {"status": "ok", "node": "n1"}
    created = post(node, "lobby", "hello over http")
    assert created.status_code == 201
    message = created.json()
    assert set(message) == {"id", "room", "sender", "time", "body"}
    assert (message["room"], message["sender"], message["body"]) == (
        "lobby",
        "ann",
        "hello over http",
    )
    page = get(node, "/v1/rooms/lobby/messages").json()
    assert page == {"messages": [message], "prev": None, "next": None}

    async def online() -> tuple[list[str], list[str]]:
        async with client_for(node, user="bob", token=token("bob")) as bob:
            await bob.join("lobby")
            members = get(node, "/v1/rooms/lobby/members", user="bob").json()
            rooms = get(node, "/v1/rooms", user="bob").json()
            return members["members"], rooms["rooms"]

    assert run_async(online()) == (["bob"], ["lobby"])
    status = get(node, "/v1/status").json()
    assert status["node"] == "n1" and status["members"][0]["id"] == "n1"
    document = httpx.get(f"{node.http_url}/v1/openapi.json").json()
    assert set(document["paths"]) == {
        "/v1/rooms/{room}/messages",
        "/v1/rooms/{room}/messages/{message_id}",
        "/v1/rooms/{room}/messages/{message_id}/reactions/{key}",
        "/v1/rooms",
        "/v1/rooms/{room}/members",
        "/v1/rooms/{room}/read-marker",
        "/v1/rooms/{room}",
        "/v1/rooms/{room}/policy",
        "/v1/rooms/{room}/topic",
        "/v1/rooms/{room}/roles/{user}",
        "/v1/rooms/{room}/invites",
        "/v1/rooms/{room}/kicks",
        "/v1/rooms/{room}/bans/{user}",
        "/v1/status",
        "/v1/health",
        "/v1/openapi.json",
        "/v1/node/backup",
        "/v1/node/drain",
        "/v1/ready",
        "/v1/docs/errors",
    }


def test_error_bodies_link_to_their_code_on_a_page_the_node_serves(node: NodeProcess) -> None:
    missing = get(node, "/v1/no/such/path")
    assert error_of(missing) == "not_found"
    assert missing.json()["error"]["docs"] == "/v1/docs/errors#not_found"
    page = httpx.get(f"{node.http_url}/v1/docs/errors", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for code in ErrorCode:
        assert f'<section id="{code.value}">' in page.text, code
    assert "What to do" in page.text


def test_error_bodies_link_to_the_docs_url_the_node_is_given(
    cluster: Cluster, tmp_path: Path
) -> None:
    node = start(cluster, tmp_path, "--errors-docs-url", "https://docs.example.com/chat/errors")
    refused = httpx.get(f"{node.http_url}/v1/rooms/lobby/messages", timeout=10)
    assert error_of(refused) == "unauthorized"
    assert refused.json()["error"]["docs"] == "https://docs.example.com/chat/errors#unauthorized"


def test_walking_prev_to_the_start_returns_every_message_once_in_order(node: NodeProcess) -> None:
    ids = [post(node, "lobby", f"m{n}").json()["id"] for n in range(130)]
    seen: list[str] = []
    path: str | None = "/v1/rooms/lobby/messages?limit=50"
    pages = 0
    while path is not None:
        page = get(node, path).json()
        assert len(page["messages"]) == 50 or page["prev"] is None  # never short mid-room
        seen[:0] = [m["id"] for m in page["messages"]]
        path = page["prev"]
        pages += 1
    assert pages == 3 and seen == ids
    # And forward again from the oldest page, along `next`.
    forward: list[str] = []
    path = f"/v1/rooms/lobby/messages?after={ids[0]}&limit=50"
    while path is not None:
        page = get(node, path).json()
        forward += [m["id"] for m in page["messages"]]
        path = page["next"]
    assert forward == ids[1:]


def test_a_post_retried_with_its_idempotency_key_is_stored_once(node: NodeProcess) -> None:
    first = post(node, "lobby", "once", key="retry-1")
    again = post(node, "lobby", "once", key="retry-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    # The key is the TCP protocol's client message id: a retry through either path is safe.

    async def through_tcp() -> bool:
        async with client_for(node, user="ann", token=token("ann")) as ann:
            sent = await ann.send("lobby", "once", client_msg_id="retry-1")
            return sent.duplicate and sent.id == first.json()["id"]

    assert run_async(through_tcp())
    assert len(get(node, "/v1/rooms/lobby/messages").json()["messages"]) == 1
    # The same key for a message in another room is a mistake, not a retry.
    elsewhere = post(node, "random", "once", key="retry-1")
    assert (elsewhere.status_code, error_of(elsewhere)) == (409, "conflict")


def test_edits_deletes_and_reactions_over_rest_show_in_the_room_s_view(node: NodeProcess) -> None:
    message = f"{node.http_url}/v1/rooms/lobby/messages"
    typo = post(node, "lobby", "helo").json()["id"]
    doomed = post(node, "lobby", "a secret").json()["id"]
    answer = httpx.post(
        message, json={"body": "hi", "reply_to": typo}, headers=auth("bob"), timeout=10
    )
    assert answer.status_code == 201

    edited = httpx.patch(f"{message}/{typo}", json={"body": "hello"}, headers=auth(), timeout=10)
    assert edited.status_code == 200, edited.text
    assert (edited.json()["body"], "edited_at" in edited.json()) == ("hello", True)
    not_yours = httpx.patch(
        f"{message}/{typo}", json={"body": "x"}, headers=auth("bob"), timeout=10
    )
    assert (not_yours.status_code, error_of(not_yours)) == (403, "forbidden")
    for _ in range(2):  # idempotent in effect
        reacted = httpx.put(
            f"{message}/{typo}/reactions/%F0%9F%91%8D", headers=auth("bob"), timeout=10
        )
        assert reacted.status_code == 200, reacted.text
        assert reacted.json()["reactions"] == {"👍": ["bob"]}
    httpx.put(f"{message}/{typo}/reactions/ok", headers=auth(), timeout=10)
    removed = httpx.delete(f"{message}/{typo}/reactions/ok", headers=auth(), timeout=10)
    assert removed.json()["reactions"] == {"👍": ["bob"]}
    for _ in range(2):
        deleted = httpx.delete(f"{message}/{doomed}", headers=auth(), timeout=10)
        assert deleted.status_code == 204, deleted.text
    gone = httpx.put(f"{message}/{doomed}/reactions/ok", headers=auth(), timeout=10)
    assert (gone.status_code, error_of(gone)) == (404, "not_found")
    unknown = httpx.delete(f"{message}/0000000000000001.n9", headers=auth(), timeout=10)
    assert (unknown.status_code, error_of(unknown)) == (404, "not_found")

    shown = {m["id"]: m for m in get(node, "/v1/rooms/lobby/messages").json()["messages"]}
    assert shown[typo]["body"] == "hello" and shown[typo]["reactions"] == {"👍": ["bob"]}
    assert shown[doomed]["body"] == "" and shown[doomed]["deleted"]["by"] == "ann"
    assert shown[answer.json()["id"]]["reply_to"] == typo
    one = get(node, f"/v1/rooms/lobby/messages/{typo}")
    assert (one.status_code, one.json()) == (200, shown[typo])
    assert get(node, f"/v1/rooms/lobby/messages/{doomed}").status_code == 404


def test_the_read_marker_moves_forward_only_and_rooms_list_unread_counts(
    node: NodeProcess,
) -> None:
    async def join_as_bob() -> None:
        async with client_for(node, user="bob", token=token("bob")) as bob:
            await bob.join("lobby")

    post(node, "lobby", "before bob joined")
    run_async(join_as_bob())
    ids = [post(node, "lobby", f"news {n}").json()["id"] for n in range(3)]
    rooms = get(node, "/v1/rooms", user="bob").json()
    assert rooms["rooms"] == ["lobby"]
    assert rooms["unread"]["lobby"]["count"] == 3 and not rooms["unread"]["lobby"]["capped"]

    def mark(body: dict[str, Any]) -> httpx.Response:
        return httpx.put(
            f"{node.http_url}/v1/rooms/lobby/read-marker",
            json=body,
            headers=auth("bob"),
            timeout=10,
        )

    marked = mark({"up_to": ids[0]})
    assert marked.status_code == 200
    assert marked.json() == {"room": "lobby", "read_up_to": ids[0], "count": 2, "capped": False}
    assert mark({"up_to": ids[0]}).json() == marked.json()  # idempotent
    newest = mark({})
    assert (newest.json()["read_up_to"], newest.json()["count"]) == (ids[-1], 0)
    behind = mark({"up_to": ids[1]})
    assert behind.json()["read_up_to"] == ids[-1]  # a marker never moves back
    assert get(node, "/v1/rooms", user="bob").json()["unread"]["lobby"]["count"] == 0
    missing = mark({"up_to": "0000000000010000.n9"})
    assert (missing.status_code, error_of(missing)) == (404, "not_found")
    assert error_of(mark({"up_to": "nonsense"})) == "bad_request"


def test_every_error_path_answers_its_status_and_code(cluster: Cluster, tmp_path: Path) -> None:
    node = start(
        cluster, tmp_path, "--sends-per-s", "2", "--send-burst", "2", "--body-bytes-max", "1000"
    )
    url = f"{node.http_url}/v1/rooms/lobby/messages"
    assert post(node, "lobby", "first").status_code == 201
    no_token = httpx.get(url)
    assert (no_token.status_code, error_of(no_token)) == (401, "unauthorized")
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    forged = issue_token(b"f" * 40, "ann", 60, time.time())
    for bad in (forged, issue_token(SECRET, "ann", 60, time.time() - 120), "nonsense"):
        response = httpx.get(url, headers={"Authorization": f"Bearer {bad}"})
        assert (response.status_code, error_of(response)) == (401, "unauthorized")
    bad_json = httpx.post(url, content=b"{not json", headers=auth())
    assert (bad_json.status_code, error_of(bad_json)) == (400, "bad_request")
    oversize = post(node, "lobby", "x" * 1001)
    assert (oversize.status_code, error_of(oversize)) == (413, "too_large")
    bad_cursor = get(node, "/v1/rooms/lobby/messages?before=yesterday")
    assert (bad_cursor.status_code, error_of(bad_cursor)) == (400, "bad_request")
    unknown_room = get(node, "/v1/rooms/nowhere/messages")
    assert (unknown_room.status_code, error_of(unknown_room)) == (404, "not_found")
    bad_room = get(node, "/v1/rooms/no%20spaces/messages")
    assert (bad_room.status_code, error_of(bad_room)) == (400, "bad_request")
    other_version = get(node, "/v2/rooms")
    assert (other_version.status_code, error_of(other_version)) == (404, "unsupported_version")
    # Post faster than the allowed rate until refused (bounded: a slow machine refills
    # the bucket between posts now and then, so a fixed count could pass unrefused).
    limited = post(node, "lobby", "burst")
    for n in range(50):
        if limited.status_code == 429:
            break
        limited = post(node, "lobby", f"burst {n}")
    assert (limited.status_code, error_of(limited)) == (429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["retry_after_s"] > 0
    # After all of it, the node still serves, and counted every refusal by its code.
    assert httpx.get(f"{node.http_url}/v1/health").status_code == 200
    assert get(node, "/v1/rooms/lobby/messages").status_code == 200
    status = runtime.run(fetch_status([(HOST, node.client_port)], token("operator"), 2.0))
    seen = status.counters
    assert seen["http_errors_unauthorized"] >= 4
    assert seen["http_errors_bad_request"] >= 3
    assert seen["http_errors_too_large"] == 1
    assert seen["http_errors_rate_limited"] >= 1


def test_schemathesis_finds_nothing_against_the_live_document(node: NodeProcess) -> None:
    post(node, "lobby", "a message for the generated requests to find")
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{node.http_url}/v1/openapi.json",
            "-H",  # every operation, operating the node (a backup) too
            f"Authorization: Bearer {issue_token(SECRET, 'tester', 3600, time.time(), scope=ALL)}",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--exclude-path",  # a drained node takes no sessions: it has its own test
            "/v1/node/drain",
            "--warnings",  # as by default, and not one: a backup is SQLite, which it cannot read
            ",".join(w for w in SchemathesisWarning if w not in QUIET_WARNINGS),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "No issues found" in result.stdout, result.stdout[-3000:]


def test_metrics_move_as_messages_flow(node: NodeProcess) -> None:
    def sample(name: str) -> float:
        text = httpx.get(f"{node.http_url}/metrics").text
        for family in text_string_to_metric_families(text):
            for metric in family.samples:
                if metric.name == name:
                    return float(metric.value)
        raise AssertionError(f"{name} not exposed:\n{text}")

    before = sample("meshchat_messages_accepted_total")
    acks_before = sample("meshchat_send_ack_seconds_count")
    for n in range(5):
        post(node, "lobby", f"counted {n}")
    assert sample("meshchat_messages_accepted_total") == before + 5
    assert sample("meshchat_send_ack_seconds_count") == acks_before + 5
    assert sample("meshchat_storage_commit_seconds_count") >= 5
    assert sample("meshchat_client_sessions") == 0


def test_json_logs_follow_a_message_by_its_trace_id(cluster: Cluster, tmp_path: Path) -> None:
    node = start(cluster, tmp_path, "--log-format", "json", "--log-level", "DEBUG")
    message_id = post(node, "lobby", "trace me").json()["id"]

    def traced() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in node.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("trace_id") == message_id]

    lines = wait_for(traced, 5.0, node.log)
    assert all(line["node"] == "n1" and line["room"] == "lobby" for line in lines)
    assert all(
        json.loads(line)["node"] == "n1" for line in node.log().splitlines() if line.startswith("{")
    )


def test_a_real_prometheus_scrapes_the_node(node: NodeProcess) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    post(node, "lobby", "for prometheus to count")
    (port,) = free_ports(1)
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: meshchat\n"
            f"    static_configs: [{{targets: ['{HOST}:{node.http_port}']}}]\n"
        )
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work}/data",
                f"--web.listen-address={HOST}:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            def scraped() -> float | None:
                try:
                    answer = httpx.get(
                        f"http://{HOST}:{port}/api/v1/query",
                        params={"query": "meshchat_messages_accepted_total"},
                        timeout=2,
                    ).json()
                except (httpx.HTTPError, ValueError):
                    return None
                results = answer.get("data", {}).get("result", [])
                return float(results[0]["value"][1]) if results else None

            assert wait_for(scraped, 30.0, lambda: "prometheus never saw the metric") >= 1
        finally:
            server.terminate()
            server.wait(timeout=10)
