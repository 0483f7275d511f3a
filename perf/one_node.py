"""Sends and deliveries per second through one node, driven by the `meshchat` command line.

    python -m perf.one_node --messages 100000 --readers 2

Starts a node in a temp dir (rate limit raised so the client is the only brake), starts
READERS `meshchat tail` processes on one room, pipes MESSAGES lines into one
`meshchat send ROOM -`, and reports:
- sends/s: acknowledged sends per second, over the whole `send` command (connect included);
- deliveries/s: messages printed by all tails per second, from the first send to the last
  line printed by the slowest tail.
"""

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mesh.local.launcher import LocalNode, node_command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _count_lines(process: "subprocess.Popen[bytes]", expected: int, done_at: list[float]) -> None:
    assert process.stdout is not None
    for count, _ in enumerate(process.stdout, start=1):
        if count == expected:
            done_at.append(time.monotonic())
            return


def measure(messages: int, readers: int, body_size: int) -> dict[str, object]:
    meshchat = [sys.executable, "-m", "mesh"]
    with tempfile.TemporaryDirectory() as data:
        node = LocalNode("n1", "127.0.0.1", _free_port(), _free_port(), Path(data) / "n1")
        limits = ["--sends-per-s", "1000000", "--send-burst", "1000000", "--log-level", "WARNING"]
        server = subprocess.Popen(node_command(node, [node], limits))
        tails: list[subprocess.Popen[bytes]] = []
        try:
            _wait_listening(node.client_port)
            address = f"127.0.0.1:{node.client_port}"
            done_at: list[float] = []
            counters = []
            for index in range(readers):
                tail = subprocess.Popen(
                    [*meshchat, "tail", "--server", address, "--user", f"reader{index}", "bench"],
                    stdout=subprocess.PIPE,
                )
                tails.append(tail)
                counter = threading.Thread(target=_count_lines, args=(tail, messages, done_at))
                counter.start()
                counters.append(counter)
            time.sleep(1.0)  # let the tails join before the first send
            lines = "".join(f"{n:08d} {'x' * max(0, body_size - 9)}\n" for n in range(messages))
            started = time.monotonic()
            sent = subprocess.run(
                [*meshchat, "send", "--server", address, "--user", "writer", "bench", "-"],
                input=lines.encode(),
                capture_output=True,
                check=True,
            )
            send_s = time.monotonic() - started
            acknowledged = len(sent.stdout.split())
            for counter in counters:
                counter.join(timeout=120)
            delivered_s = max(done_at) - started if len(done_at) == readers else None
        finally:
            for tail in tails:
                tail.terminate()
            server.terminate()
            for process in [*tails, server]:
                process.wait(timeout=10)
    return {
        "messages": messages,
        "readers": readers,
        "body_bytes": body_size,
        "acknowledged": acknowledged,
        "send_seconds": round(send_s, 2),
        "sends_per_s": round(acknowledged / send_s),
        "deliveries": messages * readers if delivered_s else None,
        "deliveries_per_s": round(messages * readers / delivered_s) if delivered_s else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--body-size", type=int, default=32)
    args = parser.parse_args(argv)
    result = measure(args.messages, args.readers, args.body_size)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
