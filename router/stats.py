"""What the room engine counts, shared by its roles (each adds to its own fields)."""

from dataclasses import dataclass


@dataclass(slots=True)
class EngineStatistics:
    writes_coordinated: int = 0
    writes_acknowledged: int = 0
    writes_failed: int = 0
    writes_refused_busy: int = 0  # too many open in the room, or a member node too far behind
    forwards_sent: int = 0
    copies_stored: int = 0
    reads_served: int = 0
    read_repairs: int = 0
    pushes_sent: int = 0
    push_retransmits: int = 0
    events_delivered: int = 0
    catch_ups: int = 0
    pushes_left_to_catch_up: int = 0  # let go while a catch-up ran; it read them
    delivered_ids_evicted: int = 0
    interest_dropped: int = 0
    late_posts: int = 0
    future_ids_refused: int = 0
    hints_stored: int = 0  # copies kept as hints, here or as a stand-in
