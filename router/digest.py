"""Compact summaries of what a replica holds of a room, for anti-entropy.

A room's ids are grouped in buckets by the first 8 hex digits of their time (about 65 s
each). A bucket's digest is its count and the sum of a 31-bit hash of each id: cheap to
compute in SQL (the hash is stored with each message), independent of order, and equal
on two replicas that hold the same ids (a difference goes unseen with odds of about one
in two billion per bucket, and the next change in the bucket shows it).
"""

import hashlib
from typing import Final

BUCKET_DIGITS: Final = 8  # hex digits of the id's time: buckets of 2**16 ms
ID_HASH_BITS: Final = 31

Digest = dict[str, tuple[int, int]]  # bucket -> (count, sum of id hashes)


def id_hash(message_id: str) -> int:
    raw = hashlib.blake2b(message_id.encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big") & ((1 << ID_HASH_BITS) - 1)


def bucket_of(message_id: str) -> str:
    return message_id[:BUCKET_DIGITS]


def bucket_bounds(bucket: str) -> tuple[str, str]:
    """(after, before): the ids strictly between them are exactly the bucket's (a prefix
    sorts before every longer string it starts)."""
    return bucket, f"{int(bucket, 16) + 1:0{BUCKET_DIGITS}x}"


def digest_of(message_ids: list[str]) -> Digest:
    digest: Digest = {}
    for message_id in message_ids:
        bucket = bucket_of(message_id)
        count, total = digest.get(bucket, (0, 0))
        digest[bucket] = (count + 1, total + id_hash(message_id))
    return digest


def differing(mine: Digest, theirs: Digest) -> list[str]:
    """Buckets whose contents differ, oldest first (one side may lack a bucket)."""
    return sorted(
        bucket for bucket in mine.keys() | theirs.keys() if mine.get(bucket) != theirs.get(bucket)
    )
