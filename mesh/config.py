"""A node's configuration, validated once at start."""

from dataclasses import dataclass, field
from pathlib import Path

from peers.membership import MembershipConfig


@dataclass(frozen=True, slots=True)
class ClientLimits:
    frame_bytes_max: int = 1024 * 1024
    # Sessions beyond this are refused with `unavailable` rather than slowing everyone.
    sessions_max: int = 10_000
    handshake_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    host: str
    peer_port: int
    client_port: int
    data_dir: Path
    seeds: tuple[str, ...] = ()
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    client_limits: ClientLimits = field(default_factory=ClientLimits)

    @property
    def peer_address(self) -> str:
        return f"{self.host}:{self.peer_port}"
