"""A node's configuration, validated once at start."""

from dataclasses import dataclass, field
from pathlib import Path

from mesh.node.doors.error_docs import ERRORS_DOCS_PATH
from mesh.node.doors.send_admission import ADMISSION_WAIT_MAX_S, SENDS_IN_FLIGHT_MAX
from mesh.wire.protocol import CLIENT_FRAME_BYTES_MAX
from mesh.wire.tls import CertificateFiles
from peers.membership import MembershipConfig
from router.config import RouterConfig

# A message frame's fields other than the body, at their largest: 64-character user
# names and client message ids of 4-byte characters, the id, room and msgpack framing.
FRAME_FIELDS_BYTES_MAX = 1024
# The smallest frame limit a node may configure: a message with a 1 KiB body still fits.
FRAME_BYTES_MIN = 2 * FRAME_FIELDS_BYTES_MAX


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What one client may ask of a node; every value is announced in the welcome."""

    # A frame's payload, both directions.
    frame_bytes_max: int = CLIENT_FRAME_BYTES_MAX
    # A message body in UTF-8 bytes: a long chat message, not a file transfer.
    body_bytes_max: int = 16 * 1024
    rooms_per_session_max: int = 100
    # Sends per second per user on average (over all their sessions on this node, TCP and
    # HTTP), and the burst allowed above it.
    sends_per_s: float = 100.0
    send_burst: int = 200
    # Frames queued towards one client; a client that lets it fill is too slow and is cut off.
    session_queue_max: int = 4096
    # Sends of one session waiting for their commit; past it the node stops reading them.
    send_window_max: int = 1024
    # Sessions beyond this are refused with `unavailable` rather than slowing everyone.
    sessions_max: int = 10_000
    # Node-wide, not announced: sends in flight over all sessions and both doors, and how
    # long a send past that waits for room before `unavailable` (doors/send_admission.py).
    sends_in_flight_max: int = SENDS_IN_FLIGHT_MAX
    send_wait_max_s: float = ADMISSION_WAIT_MAX_S
    handshake_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not FRAME_BYTES_MIN <= self.frame_bytes_max <= CLIENT_FRAME_BYTES_MAX:
            raise ValueError(f"frame_bytes_max must be {FRAME_BYTES_MIN}..{CLIENT_FRAME_BYTES_MAX}")
        if not 1 <= self.body_bytes_max <= self.frame_bytes_max - FRAME_FIELDS_BYTES_MAX:
            raise ValueError("body_bytes_max must leave room for the frame's other fields")
        for name in (
            "rooms_per_session_max",
            "send_burst",
            "session_queue_max",
            "send_window_max",
            "sessions_max",
            "sends_in_flight_max",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.sends_per_s <= 0:
            raise ValueError("sends_per_s must be positive")
        if not 0 <= self.send_wait_max_s <= 60:
            raise ValueError("send_wait_max_s must be 0..60")

    def announced(self) -> dict[str, float]:
        return {
            "frame_bytes_max": self.frame_bytes_max,
            "body_bytes_max": self.body_bytes_max,
            "rooms_per_session_max": self.rooms_per_session_max,
            "sends_per_s": self.sends_per_s,
            "send_burst": self.send_burst,
            "session_queue_max": self.session_queue_max,
            "send_window_max": self.send_window_max,
        }


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
    secret: bytes | None = None
    # Tokens with a `kid` are checked with these keys (a JWK Set file); an audience or an
    # issuer, when given, must be named by every token's `aud` or `iss`.
    token_keys: Path | None = None
    token_audience: str | None = None
    token_issuer: str | None = None
    http_port: int | None = None  # None: no HTTP API
    errors_docs_url: str = ERRORS_DOCS_PATH  # HTTP error bodies link to URL#CODE
    router: RouterConfig = field(default_factory=RouterConfig)  # N, W, R and timeouts
    tls: CertificateFiles | None = None  # None: client port and HTTP API in plaintext
    # Peer links: CURVE with this node's key (None: made in DATA/keys) and the keys in
    # `trusted_keys` (None: DATA/trusted); or plaintext, unauthenticated, for development.
    node_key: Path | None = None
    trusted_keys: Path | None = None
    insecure_peers: bool = False
    # The address the ports are bound on, when not `host`: 0.0.0.0, or the one address of
    # a host whose `host` is a name or an address in front of it (NAT, a proxy).
    bind: str | None = None

    @property
    def peer_address(self) -> str:
        return f"{self.host}:{self.peer_port}"

    @property
    def bind_host(self) -> str:
        return self.bind or self.host
