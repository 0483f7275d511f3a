"""Member records: what the mesh gossips about each node, and how two views merge.

A record names a node (id), where to reach it (address) and which start of it this is
(incarnation: each start of a node takes a larger one). The merge is a join on a
semilattice, so views can be exchanged in any order, any number of times, and every
node ends with the same table:

- the larger incarnation wins outright: a restarted node replaces its old self;
- at the same incarnation, `left` wins: a departure is final for that start;
- anything else equal, the larger address wins, only so the merge stays commutative.

Liveness (alive / suspect / dead) is not part of a record: each node judges it from
the heartbeats it hears itself (see failure_detector.py), so a node cut off from one
peer never talks the rest of the mesh into believing that peer is gone.
"""

from collections.abc import Iterable, Mapping
from typing import Annotated

import msgspec

from peers.limits import ADDRESS_LENGTH_MAX, NODE_ID_LENGTH_MAX

# `(?!\n)`: Python's `$` alone also matches before a final newline ("n1\n").
NODE_ID_PATTERN = r"^[A-Za-z0-9_.-]+$(?!\n)"
NodeId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=NODE_ID_LENGTH_MAX, pattern=NODE_ID_PATTERN)
]
# HOST:PORT with a DNS name, an IPv4 address or a bracketed IPv6 one: anything else
# could not be connected to, and a record is a peer's claim until checked.
PEER_ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[1-9][0-9]{0,4}$(?!\n)"
PeerAddress = Annotated[
    str,
    msgspec.Meta(min_length=3, max_length=ADDRESS_LENGTH_MAX, pattern=PEER_ADDRESS_PATTERN),
]
Incarnation = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class MemberRecord(msgspec.Struct, frozen=True, array_like=True):
    """What the mesh knows of one start of one node."""

    id: NodeId
    address: PeerAddress
    incarnation: Incarnation
    left: bool = False

    def order_key(self) -> tuple[int, bool, str]:
        return (self.incarnation, self.left, self.address)


def merge_record(current: MemberRecord, incoming: MemberRecord) -> MemberRecord:
    """The newer of two records about the same node."""
    assert current.id == incoming.id, (current.id, incoming.id)
    return incoming if incoming.order_key() > current.order_key() else current


def merge_tables(
    table: Mapping[str, MemberRecord], records: Iterable[MemberRecord]
) -> dict[str, MemberRecord]:
    """A new table holding, per node id, the newest record of either side."""
    merged = dict(table)
    for record in records:
        known = merged.get(record.id)
        merged[record.id] = record if known is None else merge_record(known, record)
    return merged
