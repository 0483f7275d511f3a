"""Hosts on real links: Linux network namespaces, one per host, on two switches.

Each host is a namespace with one interface, `eth0`, and its own address; its other end is
a port of bridge `a` or `b` in a switch namespace, and the two bridges are joined by a
trunk link. Taking a port down cuts one host off; taking the trunk down splits the hosts
of switch a from those of switch b, while each side still talks among itself. Both are
real link failures: the kernel drops the frames, and senders hear nothing.

Made with `ip` from iproute2; needs root. `close()` removes every namespace it made, and
with them their links, after killing whatever still runs in them.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass, field

SUBNET = "10.213.0"  # private, and only ever configured inside these namespaces
IP_TIMEOUT_S = 10.0


def _ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True, timeout=IP_TIMEOUT_S)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "no `ip` command (Debian's iproute2)"
    probe = f"mcprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as error:
        return f"`ip netns add` failed: {error.stderr.decode(errors='replace').strip()}"
    _ip("netns", "del", probe)
    return None


@dataclass
class Network:
    prefix: str  # namespace names start with it: unique per run
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address
    switches: dict[str, str] = field(default_factory=dict)  # name -> "a" or "b"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def launcher(self, host: str) -> list[str]:
        """What runs a command on `host`."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def create(self) -> "Network":
        _ip("netns", "add", self.switch)
        for bridge in ("a", "b"):
            _ip("-n", self.switch, "link", "add", f"br-{bridge}", "type", "bridge")
            _ip("-n", self.switch, "link", "set", f"br-{bridge}", "up")
        _ip("-n", self.switch, "link", "add", "trunk-a", "type", "veth", "peer", "name", "trunk-b")
        for bridge in ("a", "b"):
            _ip("-n", self.switch, "link", "set", f"trunk-{bridge}", "master", f"br-{bridge}")
        self.join_trunk()
        return self

    def add_host(self, name: str, switch: str) -> str:
        """A new host on switch `switch`; returns its address."""
        address = f"{SUBNET}.{len(self.hosts) + 1}"
        namespace = self.namespace(name)
        _ip("netns", "add", namespace)
        self.hosts[name], self.switches[name] = address, switch
        # Both ends made in their own namespaces: nothing is named in the caller's.
        peer = ("peer", "name", f"p-{name}", "netns", self.switch)
        _ip("link", "add", "eth0", "netns", namespace, "type", "veth", *peer)
        _ip("-n", self.switch, "link", "set", f"p-{name}", "master", f"br-{switch}", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        return address

    def cut_host(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", f"p-{name}", "down")

    def join_host(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", f"p-{name}", "up")

    def cut_trunk(self) -> None:
        _ip("-n", self.switch, "link", "set", "trunk-a", "down")

    def join_trunk(self) -> None:
        for end in ("trunk-a", "trunk-b"):
            _ip("-n", self.switch, "link", "set", end, "up")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Network":
        return cls(**json.loads(text))

    def close(self) -> None:
        for namespace in [*map(self.namespace, self.hosts), self.switch]:
            listed = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
            )
            for pid in listed.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
