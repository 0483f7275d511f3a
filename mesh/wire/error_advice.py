"""What a person can do about a refusal, by its code: the second half of the one sentence
a command line or the chat tool shows ("too_large: the message is 20000 bytes, over the
node's 16384; send less, or split it")."""

from typing import Final

# Per code: the advice, and words whose presence in the node's own message means the
# message already says what to do.
_ADVICE: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "unauthorized": (
        "give a token with --token or $MESHCHAT_TOKEN (the mesh's operator issues them)",
        ("meshchat token", "--token", "token is"),
    ),
    "forbidden": ("ask the room's owner or a moderator", ("first", "scope", "owner", "only")),
    "not_found": ("check the room's name and the message id", ()),
    "too_large": ("send less, or split it", ()),
    "rate_limited": ("wait a moment, then send again", ()),
    "unavailable": (
        "try again shortly, or through another node (--server HOST:PORT,HOST:PORT)",
        ("try again", "retry"),
    ),
    "internal": ("try again through another node; that node's log says what failed", ()),
    "unsupported_version": ("upgrade this client or the node", ("upgrade",)),
}


def with_advice(code: str, message: str) -> str:
    """The node's message, followed by what to do when it does not say so itself."""
    advice = _ADVICE.get(code)
    if advice is None:
        return message
    text, already = advice
    lowered = message.lower()
    if any(words in lowered for words in already):
        return message
    return f"{message.rstrip('. ')}; {text}"
