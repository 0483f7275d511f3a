"""Client message ids begin with the time, so a node's idempotency index grows at its end."""

import msgspec

from mesh.wire.message_keys import new_client_msg_id
from mesh.wire.protocol import ClientMsgId


def test_ids_sort_by_time_and_differ_within_a_millisecond() -> None:
    same_ms = {new_client_msg_id(now_ms=1_700_000_000_000) for _ in range(1000)}
    assert len(same_ms) == 1000
    earlier = new_client_msg_id(now_ms=1_700_000_000_000)
    later = new_client_msg_id(now_ms=1_700_000_000_001)
    assert earlier < later
    assert all(len(key) == 32 and int(key, 16) >= 0 for key in same_ms)
    assert new_client_msg_id() > earlier  # today is after 2023


def test_ids_are_valid_client_message_ids() -> None:
    key = new_client_msg_id()
    assert msgspec.convert(key, ClientMsgId) == key
