"""The error codes explained, as the page GET /v1/docs/errors serves: every error body's
`docs` link points at its code's section there, or under the node's configured URL."""

import html
import re
from dataclasses import dataclass

from router.error_codes import ErrorCode

# Where error bodies link by default: the page this node serves itself.
ERRORS_DOCS_PATH = "/v1/docs/errors"


@dataclass(frozen=True, slots=True)
class ErrorDoc:
    status: int  # over HTTP; the TCP protocol sends the code alone
    meaning: str
    remedy: str


ERROR_DOCS: dict[ErrorCode, ErrorDoc] = {
    ErrorCode.BAD_REQUEST: ErrorDoc(
        400,
        "The request is not valid: malformed JSON, a field of the wrong type, a bad room "
        "name or cursor, an empty message. The message names the field and its rule.",
        "Fix the request as the message says; sending it again unchanged fails again.",
    ),
    ErrorCode.UNAUTHORIZED: ErrorDoc(
        401,
        "No token, or a forged, malformed or expired one, or a user name the mesh does not accept.",
        "Send a valid token as `Authorization: Bearer TOKEN`; ask the mesh's operator for "
        "one (`meshchat token`).",
    ),
    ErrorCode.FORBIDDEN: ErrorDoc(
        403,
        "The room's state (invite-only, banned, read-only) or the token's scope does not "
        "let you do this; or it is another user's message.",
        "Ask the room's owner or a moderator, or use a token whose `rooms` and `ops` cover it.",
    ),
    ErrorCode.NOT_FOUND: ErrorDoc(
        404,
        "No such room, message or path: a room with no messages, a message deleted or "
        "held by no replica.",
        "Check the room name and message id; a new room exists once its first message is sent.",
    ),
    ErrorCode.CONFLICT: ErrorDoc(
        409,
        "The request clashes with what exists: an idempotency key already used for "
        "another event, or creating a room that exists.",
        "Use a new idempotency key for a new event; join the existing room instead.",
    ),
    ErrorCode.TOO_LARGE: ErrorDoc(
        413,
        "The body is over the node's limit (16 KiB of UTF-8 by default, announced to "
        "TCP clients in the welcome).",
        "Send less: split the text, or link to a file instead of including it.",
    ),
    ErrorCode.RATE_LIMITED: ErrorDoc(
        429,
        "More sends than your per-user rate on this node (TCP and HTTP together).",
        "Wait `retry_after_s` seconds (the `Retry-After` header), then send again.",
    ),
    ErrorCode.UNAVAILABLE: ErrorDoc(
        503,
        "The node could not make the write durable now (too few replicas reachable), "
        "or it is busy, joining or draining. Nothing was stored.",
        "Retry after `Retry-After`, or through another node; the same idempotency key "
        "makes the retry safe.",
    ),
    ErrorCode.UNSUPPORTED_VERSION: ErrorDoc(
        404,
        "A path under an API version (or a protocol version) this node does not speak.",
        "Use /v1/ paths, or upgrade the client or the node.",
    ),
    ErrorCode.INTERNAL: ErrorDoc(
        500,
        "The node failed (its disk, say). Nothing was stored.",
        "Retry through another node, and tell the mesh's operator: the node's log says why.",
    ),
}


def docs_link(base: str, code: ErrorCode) -> str:
    """The link an error body carries: its code's section under `base`."""
    return f"{base}#{code.value}"


def _in_html(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def errors_page() -> str:
    """The page of every code, each section anchored by its code."""
    sections = [
        f'<section id="{code.value}"><h2><code>{code.value}</code> '
        f"(HTTP {doc.status})</h2><p>{_in_html(doc.meaning)}</p>"
        f"<p><strong>What to do:</strong> {_in_html(doc.remedy)}</p></section>"
        for code, doc in ERROR_DOCS.items()
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>meshchat error codes</title></head><body><h1>meshchat error codes</h1>"
        "<p>Every error a node answers, over HTTP and the TCP protocol alike, carries one "
        "of these codes and a message in words.</p>" + "".join(sections) + "</body></html>"
    )
