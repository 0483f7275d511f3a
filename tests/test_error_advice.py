"""A refusal shown to a person says what to do, once: the node's own words when they say
it already, the code's advice otherwise."""

from mesh.cli.chat import node_error_text
from mesh.client.connection import NodeError
from mesh.wire.error_advice import with_advice
from router.error_codes import ErrorCode

# Codes whose message is the whole story: the request's own fault, named with its rule.
SELF_EXPLAINING = {ErrorCode.BAD_REQUEST, ErrorCode.CONFLICT}


def test_every_code_a_person_can_act_on_comes_with_advice() -> None:
    for code in set(ErrorCode) - SELF_EXPLAINING:
        shown = with_advice(code.value, "something went wrong.")
        assert shown.startswith("something went wrong; ") and len(shown) > 30, code


def test_advice_is_left_out_when_the_node_said_what_to_do() -> None:
    told = "invalid token: it is not a signed token: ask its operator for one (`meshchat token`)"
    assert with_advice("unauthorized", told) == told
    assert with_advice("forbidden", "join room lobby first") == "join room lobby first"
    only = "only ann, who sent it, may edit it"
    assert with_advice("forbidden", only) == only  # no moderator can help there
    assert with_advice("bad_request", "room must be at most 64 characters long") == (
        "room must be at most 64 characters long"
    )


def test_a_terminal_line_is_the_code_the_reason_and_what_to_do() -> None:
    error = NodeError(ErrorCode.TOO_LARGE, "the message is 20000 bytes, over the node's 16384")
    assert node_error_text(error) == (
        "too_large: the message is 20000 bytes, over the node's 16384; send less, or split it"
    )
    escaped = node_error_text(NodeError(ErrorCode.UNAVAILABLE, "no replica\x1b[2J is alive"))
    assert "\x1b" not in escaped and escaped.endswith("(--server HOST:PORT,HOST:PORT)")
