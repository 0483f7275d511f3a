"""What a harness run does: who sends where, how fast, and what each message carries.

Client i is a member of room i mod R and sends there at rate/C messages per second. Every
payload names its sender, its sequence number and the moment it was due (CLOCK_MONOTONIC,
which all processes on the machine share), so any receiver can tell latency, loss and
duplicates without asking anyone.
"""

from typing import Final, Literal, get_args

import msgspec

# meshchat: CURVE peer links, plaintext clients (the default); meshchat-plain: plaintext,
# unauthenticated peer links (--insecure-peers); meshchat-tls: CURVE and clients on TLS;
# meshchat-edits: as meshchat, with EDIT_SHARE of the writes edits of the sender's
# previous message (each carries its payload as the new body, so it is timed as well).
TargetName = Literal[
    "meshchat", "meshchat-plain", "meshchat-tls", "meshchat-edits", "redis", "nats"
]
TARGET_NAMES: tuple[TargetName, ...] = get_args(TargetName)
MESHCHAT_TARGETS: frozenset[TargetName] = frozenset(
    {"meshchat", "meshchat-plain", "meshchat-tls", "meshchat-edits"}
)
EDIT_SHARE: Final = 0.1
PAYLOAD_HEADER_MAX = 40


class Workload(msgspec.Struct, frozen=True, kw_only=True):
    target: TargetName = "meshchat"
    clients: int = 8
    rooms: int = 2
    rate: float = 200.0  # messages per second, all clients together
    duration_s: float = 10.0
    warmup_s: float = 1.0
    body_size: int = 64

    def __post_init__(self) -> None:
        if self.clients < 1 or self.rooms < 1 or self.rooms > self.clients:
            raise ValueError("need 1 <= rooms <= clients")
        if self.rate <= 0 or self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("rate and duration must be positive, warmup not negative")
        if self.body_size < PAYLOAD_HEADER_MAX:
            raise ValueError(f"body size must be at least {PAYLOAD_HEADER_MAX} bytes")

    def room_of(self, client: int) -> str:
        return f"perf-{client % self.rooms}"

    def members(self, room: str) -> list[int]:
        return [client for client in range(self.clients) if self.room_of(client) == room]

    @property
    def per_client_rate(self) -> float:
        return self.rate / self.clients


def encode_payload(client: int, sequence: int, due_ns: int, size: int) -> str:
    head = f"{client}:{sequence}:{due_ns}:"
    return head + "x" * max(0, size - len(head))


def decode_payload(text: str) -> tuple[int, int, int]:
    """(client, sequence, due_ns); ValueError for a payload this harness did not write."""
    client, sequence, due_ns, _ = text.split(":", 3)
    return int(client), int(sequence), int(due_ns)
