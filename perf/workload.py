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
# meshchat-relations: as meshchat, with RELATION_SHARE of the writes edits of and
# reactions to the sender's previous message, in turn (each carries its payload, so it
# is timed as well: an edit as its body, a reaction as its key, see reaction_key);
# meshchat-invite: as meshchat, in invite-only rooms where every sender is invited.
TargetName = Literal[
    "meshchat",
    "meshchat-plain",
    "meshchat-tls",
    "meshchat-relations",
    "meshchat-invite",
    "redis",
    "nats",
]
TARGET_NAMES: tuple[TargetName, ...] = get_args(TargetName)
MESHCHAT_TARGETS: frozenset[TargetName] = frozenset(
    {"meshchat", "meshchat-plain", "meshchat-tls", "meshchat-relations", "meshchat-invite"}
)
RELATION_SHARE: Final = 0.1
# A reaction's payload: its key names the sequence number; the sender is the user.
REACTION_KEY_PREFIX: Final = "s"
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

    @property
    def interval_ns(self) -> int:
        return int(1e9 / self.per_client_rate)

    def due_ns(self, start_ns: int, client: int, sequence: int) -> int:
        """When a client's send `sequence` is due: clients start out of step, so the load
        is smooth rather than in bursts."""
        interval_ns = self.interval_ns
        return start_ns + interval_ns * client // self.clients + sequence * interval_ns


def encode_payload(client: int, sequence: int, due_ns: int, size: int) -> str:
    head = f"{client}:{sequence}:{due_ns}:"
    return head + "x" * max(0, size - len(head))


def decode_payload(text: str) -> tuple[int, int, int]:
    """(client, sequence, due_ns); ValueError for a payload this harness did not write.
    A due time of -1 is not carried: the receiver knows the schedule (Workload.due_ns)."""
    client, sequence, due_ns, _ = text.split(":", 3)
    return int(client), int(sequence), int(due_ns)


def reaction_key(body: str) -> str:
    """The key a reaction carries in place of `body` (a payload): its sequence number."""
    _, sequence, _ = decode_payload(body)
    return f"{REACTION_KEY_PREFIX}{sequence:x}"


def reaction_payload(user: str, key: str) -> str:
    """The payload a reaction by `user` (perfN) with `key` stands for, its due time left
    to the receiver."""
    if not user.startswith("perf") or not key.startswith(REACTION_KEY_PREFIX):
        raise ValueError(f"not a harness reaction: {user} {key}")
    return f"{int(user[4:])}:{int(key[1:], 16)}:-1:"
