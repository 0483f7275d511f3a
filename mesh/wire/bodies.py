"""What a message body must be, checked the same way by the node's doors and the client."""

from mesh.wire.errors import ErrorCode

# The kinds of event whose body is text a person wrote: never empty. A reaction, a
# deletion or a room state event has no body or a value of its own.
TEXT_KINDS = frozenset({"message", "edit"})
# The same rule as a schema pattern (searched, not anchored): a character not a space.
TEXT_PATTERN = r"\S"
TEXT_RULE = "text with a character that is not a space"


def body_problem(
    body: str, body_bytes_max: int, kind: str = "message"
) -> tuple[ErrorCode, str] | None:
    """Why `body` cannot be stored in an event of `kind`, as (code, one sentence); None
    if it can."""
    if kind in TEXT_KINDS and not body.strip():
        return ErrorCode.BAD_REQUEST, "the message is empty: write some text to send"
    size = len(body.encode())
    if size > body_bytes_max:
        return (
            ErrorCode.TOO_LARGE,
            f"the message is {size} bytes and this node takes at most {body_bytes_max}: "
            "split it into shorter messages",
        )
    return None
