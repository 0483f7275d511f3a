"""The room engine's fixed bounds, each with the reason for its value.

Tunable settings (quorums, timeouts, rates) are in router/config.py; these are not meant
to be changed per mesh. Frame and page limits of the wire are in router/wire.py and
router/page_bytes.py, those of membership in peers/limits.py.
"""

from typing import Final

# Numbers (request ids, registrations, storage tokens) one start may give out; with
# epochs that are millisecond incarnations this stays below 2**63 for millennia.
EPOCH_NUMBERS: Final = 1_000_000
# A message arriving this long after its id's time is late: a resuming client, which
# starts a little (mesh/client/room_cursor.py RESUME_MARGIN_MS) before its last seen id,
# would skip it.
LATE_AFTER_MS: Final = 2_000
# Late arrivals remembered per room for resuming sessions, and late messages waiting for
# their room to have a coordinator (past it anti-entropy and resumes' reads still bring
# them, only without a push).
LATE_ARRIVALS_MAX: Final = 1_000
# Ids given to a room's sessions kept beyond any catch-up's reach (router/delivered_ids.py),
# for a late message pushed again: a few minutes of a busy room.
PAST_REACH_IDS_MAX: Final = 4_096
# How long a presence change waits for its room to have a coordinator (this node is
# still joining, or the room's replicas are down): past it, it is news no longer.
PRESENCE_HELD_MAX_MS: Final = 30_000
# Messages read per page when a node catches a room up after it may have missed pushes:
# a few seconds of a busy room, within one peer frame (router/page_bytes.py cuts it).
CATCH_UP_PAGE: Final = 500
# Retransmitted pushes per peer per tick: a returning peer is refilled at a bounded pace.
PUSH_RETRIES_PER_TICK: Final = 256
# Push streams one start may open, as the low part of their epoch (epoch * this + count):
# a stream reopened to a node that came back must look newer than the one it replaces.
STREAMS_PER_EPOCH: Final = 1024
# How often an owner with no hints left is looked at again, and how often the bounds
# are applied. An owner with hints gets its next batch as soon as the last one is
# acknowledged, as the replay rate allows.
REPLAY_INTERVAL_S: Final = 0.5
EXPIRE_INTERVAL_S: Final = 10.0
# A replayed hint not acknowledged by then is sent again in a later batch.
REPLAY_TIMEOUT_S: Final = 5.0
# Differing buckets compared per round; the rest wait for the room's next round.
BUCKETS_PER_ROUND: Final = 8
# A change not acknowledged by one of the user's nodes is sent again this many times,
# the wait doubling from the retry interval up to SPREAD_RETRY_MAX_S (some 7 minutes in
# all at the default interval), before that node is left out.
SPREAD_ATTEMPTS_MAX: Final = 20
SPREAD_RETRY_MAX_S: Final = 30.0
# Changes being spread at once; past it the oldest is left to the gateway's own copy.
SPREADING_MAX: Final = 10_000
# Writes of one room a coordinator has open (not yet published in order); past it a send
# is refused as `unavailable`. Each node's doors admit 4,096 sends at a time, so this is
# met only when many gateways pour into one room: then it slows them, not the room.
ROOM_WRITES_IN_FLIGHT_MAX: Final = 8_192
# Pushes a node interested in a room may be behind (unacknowledged) before the room's
# coordinator takes no new writes: senders wait rather than members fall ever further
# behind. Well under RouterConfig.push_unacked_max, past which the node is given up.
PUSHES_BEHIND_FOR_WRITES_MAX: Final = 4_096
# The wait told to a sender the room's coordinator refused as busy (the age of the
# room's oldest open write), kept within these.
BUSY_WAIT_S_MIN: Final = 0.05
BUSY_WAIT_S_MAX: Final = 5.0
# The longest wait a peer may tell a gateway to pass on.
RETRY_AFTER_S_MAX: Final = 60.0
# The longest a peer may say it is still joining (it is asked again after).
JOINING_FOR_S_MAX: Final = 60.0
# Events arriving ahead of a gap, held until it fills (later ones are retransmitted anyway).
EARLY_EVENTS_MAX: Final = 4096
# Rooms whose state (router/room_state.py) a coordinator holds folded in memory, the
# least recently used ones dropped past it (and read from its disk again when needed).
ROOM_STATES_HELD_MAX: Final = 10_000
# Writes waiting at a coordinator for their room's state to be read from its disk: past
# it, writes are refused as unavailable until the reads catch up.
WRITES_AWAITING_STATE_MAX: Final = 4_096
# State events read from the disk per page while a coordinator folds a room's state.
STATE_PAGE: Final = 1_000
