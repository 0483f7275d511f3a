"""The client library's memory of a room: what reached the caller, where a resume starts."""

from mesh.client.room_cursor import SEEN_IDS_PER_ROOM_MAX, RoomCursor
from mesh.wire.protocol import Message


def sent(message_id: str, client_msg_id: str, sender: str = "ann") -> Message:
    return Message(
        id=message_id,
        room="lobby",
        sender=sender,
        time_ms=0,
        body="hi",
        client_msg_id=client_msg_id,
    )


def test_a_send_reaches_the_caller_once_by_id_and_by_its_client_message_id() -> None:
    cursor = RoomCursor()
    first = sent("0000000f7a6c0000.n2", "c17")
    assert cursor.is_new(first)
    cursor.record(first)
    assert not cursor.is_new(first)
    # Its twin (the same send stored under a smaller id by another coordinator) is not
    # news; another sender's message with the same client message id is.
    assert not cursor.is_new(sent("0000000f58010000.n5", "c17"))
    assert cursor.is_new(sent("0000000f58010000.n5", "c17", sender="bob"))
    # Messages without a client message id are told apart by id alone.
    assert cursor.is_new(sent("0000000f7a6d0000.n2", ""))
    assert cursor.last_id == first.id


def test_every_id_a_resume_could_bring_again_is_remembered_however_busy_the_room() -> None:
    cursor = RoomCursor()
    start_ms = 0xF7A6C000
    burst = [  # 30,000 messages in 300 ms: three times the count bound, all within reach
        sent(f"{start_ms + n // 100:012x}{n % 100:04x}.n2", f"c{n}") for n in range(30_000)
    ]
    for message in burst:
        cursor.record(message)
    assert not cursor.is_new(burst[0]), "a resume from its margin would replay it"
    assert len(cursor.seen) == 30_000
    a_minute_on = sent(f"{start_ms + 60_000:012x}0000.n2", "c-minute")
    cursor.record(a_minute_on)  # a resume now may still replay the burst as late arrivals
    assert len(cursor.seen) == 30_001 and not cursor.is_new(burst[0])
    later = sent(f"{start_ms + 11 * 60_000:012x}0000.n2", "c-later")  # past late replays
    cursor.record(later)
    assert len(cursor.seen) == SEEN_IDS_PER_ROOM_MAX  # the burst is out of reach now
    assert not cursor.is_new(later) and len(cursor.sends) <= len(cursor.seen)
