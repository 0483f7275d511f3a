"""The error codes of the client protocol, from the room engine up to the front doors.

Stable strings a client may switch on; the engine refuses with them, the gateway and
the HTTP API answer with them, and a peer's reply naming any other is read as
`unavailable` (a retry is safe).
"""

import enum


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    UNSUPPORTED_VERSION = "unsupported_version"
    INTERNAL = "internal"

    @classmethod
    def from_peer(cls, text: str) -> "ErrorCode":
        """A code a peer sent: the mesh's own, and a request it found invalid, in
        conflict or not allowed (a retry would be too); anything else read as unavailable."""
        if text in {cls.INTERNAL, cls.BAD_REQUEST, cls.CONFLICT, cls.FORBIDDEN}:
            return cls(text)
        return cls.UNAVAILABLE
