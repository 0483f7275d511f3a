"""Running tests/writer.py as a process, from the side of the test that owns it."""

import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.processes import NODE_START_S, wait_for

WRITER = Path(__file__).with_name("writer.py")
# A writer stops after its send in flight, which may wait out one failover, then reads
# every room back.
WRITER_STOP_S = 60.0


@dataclass(frozen=True)
class WriterPlan:
    senders: int  # each preferring another server
    rate: float  # sends/s per sender


@dataclass
class WriterProcess:
    name: str
    out: Path
    process: "subprocess.Popen[bytes]"

    @classmethod
    def start(
        cls,
        name: str,
        servers: str,
        plan: WriterPlan,
        root: Path,
        *,
        python: str,
        launcher: list[str] | None = None,
    ) -> "WriterProcess":
        """`python` runs the script (`-I`: its own installed meshchat); `launcher` runs
        that (`ip netns exec NS`). Returns once its clients are connected."""
        out = root / f"{name}.json"
        command = [*(launcher or []), python, "-I", str(WRITER), "--servers", servers]
        command += ["--name", name, "--senders", str(plan.senders), "--rate", str(plan.rate)]
        log = open(root / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it until it exits
        process = subprocess.Popen(
            [*command, "--out", str(out)], stdout=log, stderr=subprocess.STDOUT, cwd=root
        )
        log.close()
        wait_for(lambda: out.with_suffix(".ready").exists(), NODE_START_S, lambda: f"{name} ready")
        return cls(name, out, process)

    def stop(self) -> dict[str, Any]:
        """SIGTERM, and what it wrote (tests/writer.py's docstring says what that is)."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=WRITER_STOP_S)
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
