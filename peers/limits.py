"""Bounds on everything the peer layer holds or accepts, each with the reason for its value."""

from typing import Final

# A node id is a short operator-chosen name ("n1", "eu-west-3"); longer is a typo or an attack.
NODE_ID_LENGTH_MAX: Final = 64
# "host:port" with a DNS name of at most 253 characters and a port.
ADDRESS_LENGTH_MAX: Final = 260
# The mesh is a full mesh of heartbeats: past a few hundred nodes that is the wrong design anyway.
MEMBERS_MAX: Final = 256
# Gossip rides on every heartbeat; 64 records keep a heartbeat near 4 KiB and still
# spread a whole 256-node table in four rounds.
GOSSIP_RECORDS_MAX: Final = 64
# Peer frames carry membership now and message batches later; 4 MiB bounds one batch.
PEER_FRAME_BYTES_MAX: Final = 4 * 1024 * 1024
# Messages queued towards one peer before further sends to it are dropped and counted.
PEER_OUTBOX_MESSAGES_MAX: Final = 1000
# Room messages to one peer gathered over one turn of the event loop go as one frame
# (mesh/node/peer_bundles.py): up to this many, and a new frame once this many bytes are
# in one, well inside a frame, so that one large reply never waits for a full bundle.
PEER_BUNDLE_MESSAGES_MAX: Final = 1024
PEER_BUNDLE_BYTES_MAX: Final = 1024 * 1024
