"""A request the schema refuses is answered in words, naming the field and the rule."""

import msgspec
import pytest

from mesh.wire import protocol
from mesh.wire.errors import ErrorCode, ProtocolError
from mesh.wire.validation_words import in_words


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"room": "x" * 65}, "room must be at most 64 characters long"),
        ({"room": "bad room!"}, "room must be 1-64 of A-Z a-z 0-9 _ . # -"),
        ({"room": 7}, "room must be text, not a whole number"),
        ({}, "the request has no room"),
    ],
)
def test_a_bad_join_is_refused_in_words(fields: dict[str, object], said: str) -> None:
    payload = msgspec.msgpack.encode({"type": "join", "request_id": 1, **fields})
    with pytest.raises(ProtocolError) as refused:
        protocol.decode_client_message(payload)
    assert refused.value.code == ErrorCode.BAD_REQUEST
    assert refused.value.message == said
    assert "`" not in refused.value.message and "$." not in refused.value.message


def test_an_unknown_shape_keeps_the_validators_words_after_the_field() -> None:
    assert in_words("Something new - at `$.limit`") == "limit: Something new"
    assert in_words("Expected `str` matching regex '\\\\S'", field="body") == (
        "body must be text with a character that is not a space"
    )
    assert len(in_words("Invalid value '" + "x" * 500 + "' - at `$.kind`")) < 120
