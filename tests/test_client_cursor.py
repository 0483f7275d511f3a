"""The client library's memory of a room: what reached the caller, where a resume starts."""

from mesh.client.chat_client import _RoomCursor
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
    cursor = _RoomCursor()
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
