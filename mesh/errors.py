"""Error codes of the client protocol: stable strings a client may switch on."""

import enum


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    UNSUPPORTED_VERSION = "unsupported_version"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """The remote side broke the protocol; `code` is what to answer, `close` whether to hang up."""

    def __init__(self, code: ErrorCode, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
