"""How rooms are replicated and served; the same for every node of a mesh."""

from dataclasses import dataclass

from router.ring import VNODES_DEFAULT


@dataclass(frozen=True, slots=True)
class RouterConfig:
    replicas: int = 3  # N: nodes holding each room
    # A peer's message carrying an id or time further ahead of this node's wall clock is
    # refused: NTP keeps honest clocks within milliseconds, a minute is a broken one.
    clock_skew_max_ms: int = 60_000
    write_quorum: int = 2  # W: copies on disk before a send is acknowledged
    read_quorum: int = 1  # R: replicas asked for each history page
    vnodes: int = VNODES_DEFAULT
    # A send not on W disks by then fails with `unavailable` (retrying it is safe).
    write_timeout_s: float = 2.0
    # Unanswered forwards and replications are sent again this often.
    retry_interval_s: float = 0.5
    read_timeout_s: float = 1.0
    # Interest registrations are renewed this often and lapse when not renewed in time.
    interest_refresh_s: float = 2.0
    interest_lapse_s: float = 7.0
    push_retry_s: float = 0.5
    # Pushes a coordinator holds unacknowledged for one node before it gives up on that
    # node's interest (the node catches up from history when it registers again).
    push_unacked_max: int = 20_000
    # A node that may have missed pushes re-reads the room from this far before the last
    # message it delivered: ids of messages acknowledged by a failed coordinator can lie
    # a little behind those of its successor.
    catch_up_margin_ms: int = 10_000
    # Anti-entropy: one room compared with one other replica this often, sending at most
    # this many messages per second (its share of the node next to live traffic).
    anti_entropy_interval_s: float = 1.0
    anti_entropy_messages_per_s: float = 2000.0
    # Messages newer than this that a replica receives only by repair are pushed to the
    # room again (members cut off with that replica may have missed them).
    late_post_window_ms: int = 10 * 60 * 1000
    # Hinted handoff: hints older than the window, or beyond the count or bytes held for
    # one owner, are dropped (counted, logged) and left to anti-entropy.
    hint_window_s: float = 3 * 3600.0
    hints_per_owner_max: int = 100_000
    hint_bytes_per_owner_max: int = 256 * 1024 * 1024
    # Hints replayed to a returning owner per second, so that it is not flooded.
    hint_replay_per_s: float = 1000.0
    # A node serves rooms this long after it first hears a peer, once gossip has told it
    # the rest of the mesh (a few heartbeats; it serves at once when it expects no peers).
    join_settle_s: float = 1.5
    # A gap this long between two ticks means the node was stopped (SIGSTOP, a paused VM,
    # a long stall): its peers may have given it up and written around it, so it catches
    # every room up.
    stall_after_s: float = 1.0
    # Ids remembered per room so that no message reaches a node's sessions twice are kept
    # as far back as a catch-up may read (router/delivered_ids.py); this bounds them at
    # about 8 MiB for a room busier than any one client could follow.
    delivered_ids_per_room_max: int = 50_000
    # Pushes held per room while a catch-up runs; past it, newer ones are left to the
    # catch-up (see router/subscriptions.py).
    held_pushes_max: int = 10_000

    @property
    def resume_quorum(self) -> int:
        """Replicas a resume or catch-up reads: just enough to overlap every write quorum
        (R + W > N), so no acknowledged message is missed even when one replica is
        behind (back from a crash, say), while N - W replicas may be down."""
        return self.replicas - self.write_quorum + 1

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("replicas (N) must be at least 1")
        if not 1 <= self.write_quorum <= self.replicas:
            raise ValueError("write quorum (W) must be between 1 and N")
        if not 1 <= self.read_quorum <= self.replicas:
            raise ValueError("read quorum (R) must be between 1 and N")
        for name in ("write_timeout_s", "retry_interval_s", "read_timeout_s", "push_retry_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.anti_entropy_interval_s <= 0 or self.anti_entropy_messages_per_s < 1:
            raise ValueError(
                "the anti-entropy interval must be positive and its rate at least 1 message/s"
            )
        if self.hint_window_s <= 0 or self.hint_replay_per_s <= 0:
            raise ValueError("the hint window and replay rate must be positive")
        if self.interest_lapse_s <= 2 * self.interest_refresh_s:
            raise ValueError("interest_lapse_s must exceed two refresh intervals")
